"""`ji.wrap`: users' own models (linen, NNX, a plain function) through the method table, and the
jaxpr ReLU rewrite behind guided backprop / DeconvNet on them."""

import json
import logging
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxinterp as ji
from devices import run_on_devices
from jaxinterp import rules

SIZE = 16
SMALL = {"smooth_grad": {"samples": 3, "key": jax.random.key(3)},
         "integrated_gradients": {"steps": 4},
         "occlusion": {"window": 8, "stride": 8},
         **{name: {"patch": 8, "samples": 2} for name in ("shapley_sampling", "kernel_shap",
                                                          "lime")},
         "feature_ablation": {"patch": 8}, "shapley_values": {"patch": 8},
         "gradient_shap": {"samples": 2}, "guided_ig": {"steps": 4}, "blur_ig": {"steps": 4},
         "xrai": {"steps": 4, "segments": np.arange(16).reshape(4, 4).repeat(4, 0).repeat(
             4, 1)[None] == np.arange(16)[:, None, None]}}
# not CAM (GAP heads only), FullGrad (which needs biases= on a wrapped model; tests/test_cams.py)
# nor the attention methods (these CNNs have no attention; wrapped ViTs in tests/test_vit.py)
METHODS = [n for n, meth in ji.attribution.METHODS.items()
           if n not in ("cam", "full_grad") and not meth.transformer_only]


def maximum_relu(x):
    return jnp.maximum(x, 0)


class LinenCNN(nn.Module):
    """Functional ReLUs given by `act`: nn.relu, jnp.maximum(x, 0), or a jaxinterp rule."""

    act: object = nn.relu

    @nn.compact
    def __call__(self, x):
        x = self.act(nn.Conv(6, (3, 3), name="conv1")(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = self.act(nn.Conv(8, (3, 3), name="conv2")(x))
        x = self.act(nn.Dense(8, name="hidden")(x.mean((1, 2))))
        return nn.Dense(5, name="fc")(x)


class NNXCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv1 = nnx.Conv(3, 6, (3, 3), rngs=rngs)
        self.blocks = nnx.List([nnx.Conv(6, 6, (3, 3), rngs=rngs) for _ in range(2)])
        self.fc = nnx.Linear(6, 5, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv1(x))
        for block in self.blocks:
            x = nnx.relu(block(x)) + x
        return self.fc(x.mean((1, 2)))


def function_cnn(params, x):
    """A plain apply function naming its layers in the big_vision way."""
    h = jax.lax.conv_general_dilated(x, params["k"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jnp.maximum(h + params["b"], 0.0)
    return h.mean((1, 2)) @ params["w"], {"conv": h}


def _function_params():
    k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
    return {"k": jax.random.normal(k1, (3, 3, 3, 6)) * 0.3,
            "b": jax.random.normal(k2, (6,)) * 0.1, "w": jax.random.normal(k3, (6, 5))}


def models():
    linen = LinenCNN()
    variables = linen.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    return {"linen": ji.wrap(linen, variables, input_size=(SIZE, SIZE)),
            "nnx": ji.wrap(NNXCNN(nnx.Rngs(0)), input_size=(SIZE, SIZE)),
            "function": ji.wrap(function_cnn, _function_params(), input_size=(SIZE, SIZE))}


@pytest.fixture(scope="session")
def wrapped():
    return models()


@pytest.fixture(scope="session")
def data():
    x = jax.random.uniform(jax.random.key(11), (3, SIZE, SIZE, 3))
    return x, jnp.array([1, 4, 2])


def run(m, name, x, y, **kw):
    method = ji.attribution.METHODS[name]
    return np.asarray(method(m, x, y, **{**SMALL.get(name, {}), **kw}))


def test_layer_names_from_the_module_tree(wrapped):
    assert wrapped["linen"].layers == ["conv1", "conv2", "hidden", "fc"]
    assert wrapped["nnx"].layers == ["conv1", "blocks/0", "blocks/1", "fc"]
    assert wrapped["function"].layers == ["conv"]
    assert wrapped["nnx"].resolve("blocks.1") == "blocks/1"
    assert wrapped["linen"].channels("conv2") == 8 and wrapped["linen"].num_classes == 5
    assert wrapped["linen"].default_layer() == "conv2"
    with pytest.raises(ValueError, match="unknown layer 'conv3'.*valid layers: conv1, conv2"):
        ji.grad_cam(wrapped["linen"], jnp.zeros((1, SIZE, SIZE, 3)), 0, layer="conv3")
    with pytest.raises(ValueError, match="spatial layer"):
        ji.grad_cam(wrapped["linen"], jnp.zeros((1, SIZE, SIZE, 3)), 0, layer="hidden")
    assert "global-average-pool" in ji.attribution.METHODS["cam"].supports(wrapped["nnx"])
    with pytest.raises(ValueError, match="CAM"):
        ji.cam(wrapped["nnx"], jnp.zeros((1, SIZE, SIZE, 3)), 0)
    with pytest.raises(ValueError, match="classes has 3 names"):
        ji.wrap(function_cnn, _function_params(), classes=["a", "b", "c"], input_size=(8, 8))
    with pytest.raises(TypeError, match="cannot wrap"):
        ji.wrap(42)


@pytest.mark.parametrize("act", [nn.relu, maximum_relu], ids=["nn.relu", "jnp.maximum"])
@pytest.mark.parametrize("rule, method", [("guided", "guided_backprop"),
                                          ("deconv", "deconvnet")])
def test_rewrite_equals_the_rule_written_by_hand(data, act, rule, method):
    x, y = data
    variables = LinenCNN(act).init(jax.random.key(0), x[:1])
    ours = run(ji.wrap(LinenCNN(act), variables), method, x, y)
    by_hand = run(ji.wrap(LinenCNN(rules.RULES[rule]), variables), "saliency", x, y)
    plain = run(ji.wrap(LinenCNN(act), variables), "saliency", x, y)
    np.testing.assert_allclose(ours, by_hand, rtol=1e-6, atol=1e-7 * np.abs(by_hand).max())
    assert np.abs(ours - plain).max() > 0.1 * np.abs(plain).max()  # the rule did change it


def test_unrecognised_relus_raise(data):
    x, y = data

    def no_relu(p, x):
        return jnp.tanh(x.mean((1, 2)) @ p)

    def relu_in_loop(p, x):
        h = jax.lax.fori_loop(0, 2, lambda i, h: jax.nn.relu(h @ p["s"]), x.mean((1, 2)) @ p["w"])
        return h

    with pytest.raises(rules.UnsupportedReLU, match="no ReLU found"):
        ji.guided_backprop(ji.wrap(no_relu, jnp.ones((3, 5))), x, y)
    m = ji.wrap(relu_in_loop, {"w": jnp.ones((3, 5)), "s": jnp.eye(5)})
    with pytest.raises(rules.UnsupportedReLU, match="inside `scan`"):
        ji.deconvnet(m, x, y)
    np.testing.assert_allclose(ji.saliency(m, x, y), jax.grad(  # plain gradients still work
        lambda x: relu_in_loop(m.variables, x)[jnp.arange(3), y].sum())(x), rtol=1e-6)


# the default run: one method of each kind on both wrappers; CI's slow step every method
TABLE_DEFAULT_RUN = ("saliency", "guided_backprop", "grad_cam", "integrated_gradients", "lrp")


@pytest.mark.parametrize("kind", ["nnx", "function"])
@pytest.mark.parametrize("name", [n if n in TABLE_DEFAULT_RUN else pytest.param(
    n, marks=pytest.mark.slow) for n in METHODS])
def test_method_table_on_wrapped_models(wrapped, data, kind, name):
    """jit == eager, batch == single calls, no retrace on new data of the same shape."""
    m, (x, y) = wrapped[kind], data
    batch = run(m, name, x, y)
    assert np.isfinite(batch).all() and np.abs(batch).max() > 0
    scale = np.abs(batch).max()
    with jax.disable_jit():
        eager = run(m, name, x, y)
    np.testing.assert_allclose(eager, batch, rtol=1e-4, atol=1e-5 * scale)
    kw = {"key": jax.random.split(jax.random.key(3), 3)} if ji.attribution.METHODS[
        name].keyed else {}  # one key per example: draws independent of the batch
    batch = run(m, name, x, y, **kw)
    singles = np.concatenate([run(m, name, x[i:i + 1], y[i:i + 1],
                                  **({"key": kw["key"][i:i + 1]} if kw else {}))
                              for i in range(3)])
    np.testing.assert_allclose(singles, batch, rtol=1e-4, atol=1e-5 * scale)
    x2, y2 = jax.random.uniform(jax.random.key(12), x.shape), np.asarray((y + 1) % 5)
    logger = logging.getLogger("jax")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            run(m, name, x2, y2, **kw)
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "Compiling" in r.getMessage()]


def test_layers_computed_inside_a_jit(wrapped, data):
    """A function whose layers (and logits) are computed inside a `jit` (or a jaxinterp model
    called from a wrapped function): a layer's tap goes into the jit, so Grad-CAM and
    Score-CAM on it equal the function without the jit (they were silently 0 / uniform)."""
    x, y = data
    jitted = ji.wrap(jax.jit(function_cnn), _function_params(), input_size=(SIZE, SIZE))
    for name in ("grad_cam", "layer_cam", "score_cam"):
        ours, plain = run(jitted, name, x, y), run(wrapped["function"], name, x, y)
        assert np.abs(plain).max() > 0
        np.testing.assert_allclose(ours, plain, rtol=0, atol=1e-6 * np.abs(plain).max())
    inner = ji.wrap(lambda params, x: jax.jit(function_cnn)(params, x)[0] * 2.0,
                    _function_params(), input_size=(SIZE, SIZE))  # no layers named: the input
    np.testing.assert_allclose(run(inner, "saliency", x, y),
                               2 * run(wrapped["function"], "saliency", x, y), rtol=1e-5)


@pytest.mark.slow  # 18-25 s end to end; CI's slow step runs it
def test_other_methods_on_a_wrapped_model(wrapped, data):
    m, (x, y) = wrapped["linen"], data
    fooled = ji.pgd(m, x, y, eps=0.1, steps=5)
    assert np.abs(np.asarray(fooled - x)).max() <= 0.1 + 1e-6
    assert (np.asarray(m(fooled)[0]).argmax(1) != np.asarray(y)).sum() >= 2
    o = ji.objectives
    noise = jax.random.uniform(jax.random.key(0), (64, SIZE, SIZE, 3))
    shown = ji.visualize(m, o.logit(2), steps=30, size=SIZE, transforms=())
    assert m(shown.images)[0][0, 2] > 2 * m(noise)[0][:, 2].max()  # beats 64 random images
    inv = ji.invert(m, x[:1], layer="conv1", steps=30)
    assert inv.losses[-1] < 0.5 * inv.losses[0]
    t = ji.tcav(m, "conv2", x, jnp.concatenate([x[::-1], x]), x, 1, runs=2)
    assert np.all((t.scores >= 0) & (t.scores <= 1))


SHARDED = """
import json, sys
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
sys.path.insert(0, "tests")
from test_wrap import METHODS, models, run
assert len(jax.devices()) == 4
x = jax.random.uniform(jax.random.key(11), (4, 16, 16, 3))
y = jax.numpy.array([1, 4, 2, 0])
mesh = Mesh(np.array(jax.devices()), ("batch",))
xs, ys = (jax.device_put(a, NamedSharding(mesh, P("batch"))) for a in (x, y))
out = {}
for kind, m in models().items():
    if kind == "linen":
        continue  # recorded like NNX; ResNet (linen) runs sharded in the benchmark
    for name in METHODS:
        ref = run(m, name, x, y)
        out[f"{kind}/{name}"] = float(np.abs(run(m, name, xs, ys) - ref).max() / np.abs(ref).max())
print(json.dumps(out))
"""


@pytest.mark.slow
def test_sharded_equals_unsharded():
    r = run_on_devices(SHARDED)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(out) == 2 * len(METHODS)
    assert all(err < 1e-5 for err in out.values()), out


@pytest.mark.slow
def test_readme_examples_run():
    """The README's "Your own model" code (linen), then the docs page's NNX block, as written."""
    root = os.path.dirname(os.path.dirname(__file__))
    text = open(os.path.join(root, "README.md")).read()
    section = text.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]
    assert len(blocks) == 1
    page = open(os.path.join(root, "docs", "site", "own-model.md")).read()
    nnx = [b.split("```", 1)[0] for b in page.split("```python\n")[1:] if "nnx.Module" in b]
    assert len(nnx) == 1
    ns = {}
    for code in blocks + nnx:
        exec(compile(code, "README.md", "exec"), ns)  # noqa: S102
    assert ns["m"].layers == ["conv", "head"] and ns["sal"].shape == (4, 32, 32, 3)
    assert ns["maps"].shape == (4, 32, 32) and np.abs(np.asarray(ns["gb"])).max() > 0
