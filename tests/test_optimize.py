"""The shared optimization loop: optax optimizers (L-BFGS included), hooks, masks, resumption."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxinterp as ji
from jaxinterp.optvis import hooks

A = jnp.array([[3.0, 0.5], [0.5, 1.0]])


def rosenbrock(p, k=None):
    """Per-example Rosenbrock losses for params `[B, 2]` (minimum 0 at (1, 1))."""
    x, y = p[:, 0], p[:, 1]
    return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2, None


START = jnp.array([[-1.2, 1.0], [0.5, -0.3]])


def test_adam_loop_equals_a_python_loop():
    opt = optax.adam(0.05)
    out = jax.jit(lambda p: ji.optimize(rosenbrock, p, steps=25, optimizer=opt))(START)
    p, s = START, opt.init(START)
    for i in range(25):
        v, g = jax.value_and_grad(lambda q: rosenbrock(q)[0].sum())(p)
        np.testing.assert_allclose(out.values[i].sum(), v, rtol=1e-6)
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
    np.testing.assert_allclose(out.params, p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reuse", [False, True])
def test_lbfgs_runs_in_the_loop_and_equals_optax_documented_loop(reuse):
    # float64: Rosenbrock's curvature amplifies float32 rounding (jit vs eager) over the steps
    with jax.enable_x64(True):
        opt, start = optax.lbfgs(), START.astype(jnp.float64)
        out = jax.jit(lambda p: ji.optimize(rosenbrock, p, steps=50, optimizer=opt,
                                            reuse_linesearch=reuse))(start)
        # optax's documented L-BFGS loop (optax docs, "L-BFGS"), in Python
        f = lambda q: rosenbrock(q)[0].sum()
        vg = optax.value_and_grad_from_state(f)

        @jax.jit
        def doc_step(p, s):
            v, g = vg(p, state=s)
            u, s = opt.update(g, s, p, value=v, grad=g, value_fn=f)
            return optax.apply_updates(p, u), s

        p, s = start, opt.init(start)
        for _ in range(50):
            p, s = doc_step(p, s)
        np.testing.assert_allclose(out.params, p, rtol=1e-9)
        assert float(rosenbrock(out.params)[0].sum()) < 1e-6  # L-BFGS solves it; Adam does not
        adam = jax.jit(lambda p: ji.optimize(rosenbrock, p, steps=30,
                                             optimizer=optax.adam(0.05)))(start)
        assert float(rosenbrock(adam.params)[0].sum()) > 1e-2


@pytest.mark.parametrize("opt", [optax.adam(0.05), optax.lbfgs()], ids=["adam", "lbfgs"])
def test_a_run_continued_from_its_state_equals_the_whole_run(opt):
    whole = jax.jit(lambda p: ji.optimize(rosenbrock, p, steps=20, optimizer=opt))(START)
    first = jax.jit(lambda p: ji.optimize(rosenbrock, p, steps=8, optimizer=opt))(START)
    rest = jax.jit(lambda p, s: ji.optimize(rosenbrock, p, steps=12, optimizer=opt, start=8,
                                            state=s))(first.params, first.state)
    np.testing.assert_array_equal(rest.params, whole.params)
    np.testing.assert_array_equal(jnp.concatenate([first.values, rest.values]), whole.values)


def test_keys_per_step_and_snapshots_at_thresholds():
    def noisy(p, k):  # the loss sees the step's key: a continued run must draw the same keys
        return ((p - jax.random.normal(k, p.shape)) ** 2).sum(1), None

    run = lambda steps, th=None: ji.optimize(noisy, START, steps=steps, optimizer=optax.sgd(0.1),
                                             key=jax.random.key(4), thresholds=th)
    full = run(10, (3, 7, 10))
    assert full.snapshots.shape == (3, 2, 2)
    np.testing.assert_array_equal(full.snapshots[0], run(3).params)
    np.testing.assert_array_equal(full.snapshots[1], run(7).params)
    np.testing.assert_array_equal(full.snapshots[2], full.params)
    with pytest.raises(ValueError, match="thresholds"):
        run(10, (0, 5))


def test_stop_mask_freezes_finished_examples_and_hooks_run_after_the_update():
    def loss(p, k):
        v = ((p - 2.0) ** 2).sum(1)
        return v, v < 1.5  # aux: "done" once close enough

    out = ji.optimize(loss, jnp.array([[0.0], [1.0]]), steps=50, optimizer=optax.sgd(0.05),
                      stop=lambda done: done)
    final = np.asarray(out.params)[:, 0]
    assert final[1] == 1.0  # done from the start: never moved
    # the other stopped at its first point inside (without the mask: 2 - 2 * 0.9 ** 50 ≈ 1.99)
    assert (final[0] - 2.0) ** 2 < 1.5 < (final[0] - 0.1 * (2.0 - final[0]) / 0.9 - 2.0) ** 2
    clipped = ji.optimize(loss, jnp.array([[0.0], [1.0]]), steps=50, optimizer=optax.sgd(0.05),
                          hook=hooks.Clip(0.0, 1.5))
    assert float(clipped.params.max()) == 1.5


def test_project_onto_the_balls():
    rng = np.random.default_rng(0)
    c = jnp.asarray(rng.uniform(0.2, 0.8, (3, 4, 4, 3)), jnp.float32)
    x = c + jnp.asarray(rng.normal(0, 0.3, c.shape), jnp.float32)
    inf = hooks.project(x, c, 0.05, "linf")
    assert float(jnp.abs(inf - c).max()) <= 0.05 + 1e-7
    assert float(inf.min()) >= 0 and float(inf.max()) <= 1
    l2 = hooks.project(x, c, jnp.array([0.1, 0.5, 100.0]), "l2")
    norms = np.sqrt(((np.asarray(l2) - np.asarray(c)) ** 2).sum((1, 2, 3)))
    np.testing.assert_allclose(norms[:2], [0.1, 0.5], rtol=1e-5)  # on the sphere...
    np.testing.assert_allclose(l2[2], jnp.clip(x[2], 0, 1))  # ...or inside: only the pixel clamp
