"""One table of attribution methods; every generic check runs over all of them."""

import functools
import json
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxinterp as ji

# name -> (function (m, x, target, **chunking) with small settings, supports batch_size)
METHODS = {
    "saliency": (ji.saliency, False),
    "input_x_gradient": (ji.input_x_gradient, False),
    "deconvnet": (ji.deconvnet, False),
    "guided_backprop": (ji.guided_backprop, False),
    "grad_cam": (ji.grad_cam, False),
    "guided_grad_cam": (ji.guided_grad_cam, False),
    "cam": (ji.cam, False),
    "smooth_grad": (functools.partial(ji.smooth_grad, samples=4, key=jax.random.key(3)), True),
    "vargrad": (functools.partial(ji.smooth_grad, samples=4, kind="vargrad",
                                  method=ji.guided_backprop, key=jax.random.key(3)), True),
    "integrated_gradients": (functools.partial(ji.integrated_gradients, steps=6), True),
    "occlusion": (functools.partial(ji.occlusion, window=(16, 16), stride=(16, 16)), True),
}
SHAPES = {"grad_cam": 3, "cam": 3, "occlusion": 3}


@pytest.fixture(scope="module")
def data():
    b = ji.data.shapes(jax.random.key(42), 3)
    return b.images, b.labels


@pytest.fixture(scope="module")
def results(mini, data):
    x, y = data
    return {name: np.asarray(f(mini, x, y)) for name, (f, _) in METHODS.items()}


@pytest.mark.parametrize("name", METHODS)
def test_shape_dtype_finite_nonzero(results, data, name):
    a = results[name]
    x = data[0]
    assert a.shape == (x.shape if SHAPES.get(name, 4) == 4 else x.shape[:3])
    assert a.dtype == np.float32
    assert np.isfinite(a).all()
    assert np.abs(a).max() > 0


@pytest.mark.parametrize("name", METHODS)
def test_jit_equals_no_jit_and_tuned_equals_default(mini, data, name, monkeypatch):
    """jit == eager == inside a user's jit, and jaxinterp's XLA options change speed only.

    Eager mode compiles each op with XLA's default options, so the jitted method is compared
    under the same options. Noise images: on the flat-coloured shapes, the dim points of IG's
    path give pooling windows with near-ties, whose gradient any two compilations may route
    differently (even one image alone vs. in a batch, with the same options).
    """
    assert ji._xla.compiler_options() == (ji._xla.OPTIONS if jax.default_backend() == "cpu"
                                          else {})
    f, _ = METHODS[name]
    x, y = jax.random.uniform(jax.random.key(21), data[0].shape), data[1]
    tuned = np.asarray(f(mini, x, y))
    monkeypatch.setattr(ji._xla, "compiler_options", lambda *a: {})
    want = np.asarray(f(mini, x, y))
    np.testing.assert_allclose(tuned, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    with jax.disable_jit():
        eager = np.asarray(f(mini, x, y))
    np.testing.assert_allclose(eager, want, rtol=1e-4, atol=1e-5 * np.abs(eager).max())
    wrapped = jax.jit(lambda m, x, y: f(m, x, y))(mini, x, y)  # inside a user's jit
    np.testing.assert_allclose(wrapped, want, rtol=1e-5, atol=1e-6 * np.abs(eager).max())


@pytest.mark.parametrize("name", METHODS)
def test_batch_equals_single_calls(mini, data, results, name):
    f, _ = METHODS[name]
    x, y = data
    batch, kw = results[name], [{}] * len(y)
    if name in ("smooth_grad", "vargrad"):  # one key per example: noise independent of batching
        keys = jax.random.split(jax.random.key(5), len(y))
        batch, kw = np.asarray(f(mini, x, y, key=keys)), [{"key": keys[i:i + 1]} for i in range(len(y))]
    singles = np.concatenate([np.asarray(f(mini, x[i:i + 1], y[i:i + 1], **kw[i]))
                              for i in range(len(y))])
    scale = np.abs(singles).max()
    np.testing.assert_allclose(singles, batch, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("name", [n for n, (_, chunks) in METHODS.items() if chunks])
def test_chunked_equals_unchunked(mini, data, results, name):
    f, _ = METHODS[name]
    x, y = data
    chunked = np.asarray(f(mini, x, y, batch_size=3))  # 4 samples / 6 steps / 16 windows in 3s
    np.testing.assert_allclose(chunked, results[name], rtol=1e-5, atol=1e-6 * np.abs(chunked).max())


@pytest.mark.parametrize("name", METHODS)
def test_no_retrace_on_new_data(mini, name, caplog):
    f, _ = METHODS[name]
    b = ji.data.shapes(jax.random.key(77), 3)
    f(mini, b.images, b.labels)  # compiled already for this shape, or compiles now
    b2 = ji.data.shapes(jax.random.key(78), 3)
    other_targets = np.asarray((b2.labels + 1) % 8)
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        caplog.clear()
        f(mini, b2.images, other_targets)
    compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not compiles, compiles


SHARDED = """
import functools, json, sys
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
sys.path.insert(0, "tests")
import jaxinterp as ji
from test_attribution import METHODS
assert len(jax.devices()) == 4
m = ji.load_model("vgg-mini", key=jax.random.key(1))
b = ji.data.shapes(jax.random.key(42), 4)
mesh = Mesh(np.array(jax.devices()), ("batch",))
xs = jax.device_put(b.images, NamedSharding(mesh, P("batch")))
ys = jax.device_put(b.labels, NamedSharding(mesh, P("batch")))
out = {}
for name, (f, _) in METHODS.items():
    ref = np.asarray(f(m, b.images, b.labels))
    sh = f(m, xs, ys)
    err = float(np.abs(np.asarray(sh) - ref).max() / np.abs(ref).max())
    spec = tuple(sh.sharding.spec) if hasattr(sh.sharding, "spec") else None
    out[name] = {"err": err, "batch_sharded": spec is not None and spec[:1] == ("batch",),
                 "devices": len(sh.sharding.device_set)}
print(json.dumps(out))
"""


def test_sharded_equals_unsharded():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out) == set(METHODS)
    for name, res in out.items():
        assert res["err"] < 1e-5, (name, res)
        assert res["devices"] == 4 and res["batch_sharded"], (name, res)
