"""The optimization loop every "optimize the input" method shares (Lucid's `make_vis_T` core).

`optimize` minimizes a per-example loss over a pytree of parameters with any optax optimizer,
as `lax.scan`s (one per snapshot segment) that run inside the caller's `jit`. Feature
visualization, DeepDream, feature inversion, adversarial attacks and style transfer are presets
over it: each builds a loss, a starting point, an optimizer and a post-update hook, and owns no
loop of its own.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxinterp.optvis import transforms as tf_lib


class Optimized(NamedTuple):
    """What `optimize` returns.

    Attributes:
      params: the final parameters.
      images: `render(params)`.
      snapshots: `render(params)` after each threshold, stacked on a new leading axis `[T, ...]`.
      values: the per-example loss at each step, before that step's update, `[steps, B]`.
      state: the final optimizer state (pass it back with `start=` to continue the run).
    """

    params: Any
    images: Any
    snapshots: Any
    values: jax.Array
    state: Any


def optimize(loss: Callable, params: Any, *, steps: int,
             optimizer: optax.GradientTransformation, key: jax.Array | None = None,
             render: Callable | None = None, hook: Callable | None = None,
             stop: Callable | None = None, thresholds: Sequence[int] | None = None,
             start: int | jax.Array = 0, state: Any = None,
             reuse_linesearch: bool = False) -> Optimized:
    """Minimizes `loss(params, key)` for `steps` steps; traceable, so call it inside `jax.jit`.

    Each step evaluates the loss and its gradient, asks the optimizer for an update with
    `update(grad, state, params, value=, grad=, value_fn=)` (so line-search optimizers such as
    `optax.lbfgs` work unchanged), applies it, then the `hook`. Step `i` uses the key
    `fold_in(key, i)`, so a run continued from `start=i` with the returned `state` draws the same
    keys as an uninterrupted one.

    Args:
      loss: `loss(params, key) -> (values, aux)`, `values` the per-example losses `[B]`; their sum
        is minimized (examples are independent unless the loss couples them).
      params: the starting parameters (a pytree; leaves batched on axis 0 when `stop` is used).
      steps: number of steps (static).
      optimizer: an optax optimizer (static: reuse one object to reuse the compilation).
      key: PRNG key for the per-step keys (default `jax.random.key(0)`).
      render: `params -> images` for `images` and `snapshots` (default: the parameters).
      hook: `hook(step, params, grad) -> params` applied after each update (a projection,
        clipping, Yosinski's regularizers).
      stop: `stop(aux) -> [B] bool`: examples where it is true keep their parameters this step
        (an attack that already succeeded stops changing; the mask is applied inside the scan).
      thresholds: absolute step counts after which to snapshot (default: the last step); needs
        a Python int `start`.
      start: the step count the run starts from, for continuing a run (an int, or a traced
        scalar so that every chunk of a long run shares one compilation).
      state: the optimizer state to continue from (default: `optimizer.init(params)`).
      reuse_linesearch: with a line-search optimizer (`optax.lbfgs`), take each step's value and
        gradient from the state, where the previous step's line search left them
        (`optax.value_and_grad_from_state`): one network evaluation per step instead of two.
        Only for losses that do not depend on the step's key; `values` then holds the batch's
        total spread evenly over its examples (exact for B = 1), and `stop` is not supported.
    Returns:
      `Optimized(params, images, snapshots, values, state)`.
    """
    if thresholds is None:
        relative = (steps,)
    elif not isinstance(start, int):
        raise ValueError("thresholds need a Python int start (the snapshots' steps are static)")
    else:
        relative = tuple(t - start for t in thresholds)
        if any(not 0 < t <= steps for t in relative):
            raise ValueError(f"thresholds must lie in {start + 1} … {start + steps}, got "
                             f"{tuple(thresholds)}")
    if reuse_linesearch and stop is not None:
        raise ValueError("stop= needs each step's aux, which reuse_linesearch=True does not compute")
    key = jax.random.key(0) if key is None else key
    render = render or (lambda p: p)
    opt = optax.with_extra_args_support(optimizer)
    state = opt.init(params) if state is None else state

    def step(carry, i):
        params, state = carry
        k = jax.random.fold_in(key, i)
        total = lambda p: _sum(loss(p, k))
        if reuse_linesearch:
            value, grad = optax.value_and_grad_from_state(lambda p: total(p)[0])(params,
                                                                                 state=state)
            n = jax.tree_util.tree_leaves(params)[0].shape[0]
            values, aux = jnp.full((n,), value / n), None
        else:
            (value, (values, aux)), grad = jax.value_and_grad(total, has_aux=True)(params)
        updates, state = opt.update(grad, state, params, value=value, grad=grad,
                                    value_fn=lambda p: total(p)[0])
        new = optax.apply_updates(params, updates)
        if hook is not None:
            new = hook(i, new, grad)
        if stop is not None:
            keep = stop(aux)
            new = jax.tree_util.tree_map(lambda n, p: jnp.where(_rows(keep, n), p, n), new, params)
        return (new, state), values

    carry, snaps, values, at = (params, state), [], [], 0
    for t in sorted(set(relative) | {steps}):
        carry, v = jax.lax.scan(step, carry, start + jnp.arange(at, t))
        values.append(v)
        if t in relative:
            snaps.append(render(carry[0]))
        at = t
    snapshots = jax.tree_util.tree_map(lambda *s: jnp.stack(s), *snaps)
    return Optimized(carry[0], render(carry[0]), snapshots, jnp.concatenate(values), carry[1])


def _sum(out):
    values, aux = out
    return values.sum(), (values, aux)


def _rows(mask, leaf):
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))


def features(m, images: jax.Array, key: jax.Array | None = None, transforms: Sequence = ()) -> dict:
    """The feature dict objectives read: the model's layers, "logits", and "input" (`images`).

    Args:
      m: the model.
      images: images `[B, H, W, 3]` in [0, 1] (unchecked: inside a loop they are ours).
      key: PRNG key for the random `transforms`.
      transforms: `ji.optvis.transforms` applied before the model (the "input" entry is the
        untransformed image).
    Returns:
      `{layer: activation, ..., "logits": logits, "input": images}`.
    """
    x = tf_lib.apply(transforms, key, images) if transforms else images
    logits, feats = m(x, check=False)
    return {**feats, "logits": logits, "input": images}
