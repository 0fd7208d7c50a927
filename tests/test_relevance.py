"""The relevance rule engine: known answers (DeepLIFT on separable functions, summation to delta,
LRP-0 = centred input x gradient, rule identities), BatchNorm folding, clear errors.
Parity with Captum and zennit on identical weights: test_relevance_parity.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.relevance import lrp as rules

ACTS = {"relu": nn.relu, "elu": nn.elu, "leaky_relu": nn.leaky_relu, "sigmoid": nn.sigmoid,
        "tanh": nn.tanh, "softplus": nn.softplus, "gelu_tanh": nn.gelu,
        "gelu_exact": lambda z: nn.gelu(z, approximate=False), "silu": nn.silu}


def images(seed, n=2, size=8):
    return jax.random.uniform(jax.random.key(seed), (n, size, size, 3))


@pytest.mark.parametrize("act", ACTS)
def test_deeplift_of_a_separable_function_is_each_feature_s_own_change(act):
    """f(x) = Σ_i v_i φ(w_i x_i + b_i): DeepLIFT gives feature i exactly
    v_i (φ(z_i) − φ(z0_i)), which holds only if the whole φ (GELU: a dozen primitives) is one
    Rescale unit."""
    phi = ACTS[act]
    k = jax.random.split(jax.random.key(0), 3)
    d = 8 * 8 * 3
    params = {"w": jax.random.normal(k[0], (d,)) * 2, "b": jax.random.normal(k[1], (d,)),
              "v": jax.random.normal(k[2], (d, 4))}

    def fn(p, x):
        return phi(x.reshape(x.shape[0], -1) * p["w"] + p["b"]) @ p["v"]

    m = ji.wrap(fn, params, input_size=(8, 8))
    x, x0 = images(1), images(2) * 0.5
    target = jnp.array([1, 3])
    ours = np.asarray(ji.deeplift(m, x, target, baseline=x0)).reshape(2, -1)
    z, z0 = (np.asarray(a).reshape(2, -1) * np.asarray(params["w"]) + np.asarray(params["b"])
             for a in (x, x0))
    want = np.asarray(params["v"])[:, [1, 3]].T * (np.asarray(phi(z)) - np.asarray(phi(z0)))
    np.testing.assert_allclose(ours, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


class Zoo(nn.Module):
    """Every supported piece: convs with BatchNorm, the activations, max / average pooling, a
    residual sum, a mean, dense layers."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(6, (3, 3), name="conv1")(x)
        x = nn.BatchNorm(use_running_average=True, name="bn1")(x)
        x = nn.gelu(x)
        x = nn.max_pool(x, (2, 2), (2, 2))
        h = nn.elu(nn.Conv(6, (3, 3), name="conv2")(x))
        h = nn.tanh(nn.Conv(6, (3, 3), name="conv3")(h))
        x = nn.leaky_relu(x + h)
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.softplus(nn.Dense(8, name="fc1")(x.mean((1, 2))))
        return nn.Dense(5, name="fc2")(nn.sigmoid(x) * 2.0)


@pytest.fixture(scope="session")
def zoo():
    module = Zoo()
    v = module.init(jax.random.key(3), jnp.ones((1, 8, 8, 3)))
    stats = jax.tree_util.tree_map(lambda a: a + 0.3, v["batch_stats"])
    return ji.wrap(module, {"params": v["params"], "batch_stats": stats},
                   preprocess=ji.Preprocess(), input_size=(8, 8))


def test_deeplift_sums_to_delta_and_shap_averages(zoo):
    x = images(4)
    base = images(5) * 0.3
    with jax.enable_x64(True):
        m = zoo.with_variables(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                                      zoo.variables))
        x64, b64 = np.asarray(x, np.float64), np.asarray(base, np.float64)
        a = np.asarray(ji.deeplift(m, x64, 2, baseline=b64))
        f = np.asarray(m(x64)[0][:, 2]) - np.asarray(m(b64)[0][:, 2])
        np.testing.assert_allclose(a.sum((1, 2, 3)), f, rtol=1e-9)
        shap = np.asarray(ji.deeplift_shap(m, x64, 2, np.stack([b64[0], b64[1] * 0])))
        each = [np.asarray(ji.deeplift(m, x64, 2, baseline=b)) for b in (b64[0], b64[1] * 0)]
    np.testing.assert_allclose(shap, (each[0] + each[1]) / 2, rtol=1e-9, atol=1e-14)
    assert np.abs(a - each[0]).max() > 1e-3 * np.abs(a).max()  # the baseline matters


def _zero_biases(variables):
    return jax.tree_util.tree_map_with_path(
        lambda p, v: jnp.zeros_like(v) if "bias" in jax.tree_util.keystr(p) else v, variables)


def test_lrp0_is_centred_input_times_gradient(mini):
    """With zero biases, LRP-0 on a ReLU / max-pool / mean network is a · ∂f/∂a at every layer;
    at the normalized input a = (x − mean)/std that is (x − mean) · ∂f/∂x on the pixels."""
    with jax.enable_x64(True):
        m = mini.with_variables(jax.tree_util.tree_map(
            lambda a: jnp.asarray(a, jnp.float64), _zero_biases(mini.variables)))
        x = np.asarray(jax.random.uniform(jax.random.key(6), (2, 32, 32, 3)), np.float64)
        r = np.asarray(ji.lrp(m, x, 1, composite="epsilon", epsilon=0.0, stabilizer=1e-300,
                              start="logit"))
        want = (x - np.asarray(m.preprocess.mean)) * np.asarray(ji.saliency(m, x, 1))
        score = np.asarray(m(x)[0][:, 1])
    np.testing.assert_allclose(r, want, rtol=1e-8, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(r.sum((1, 2, 3)), score, rtol=1e-8)  # conservation


def _conv_bn_model(seed, negative_scales):
    m = ji.init_model("vgg-mini", num_classes=5, batch_norm=True, key=jax.random.key(seed))
    v = jax.tree_util.tree_map(lambda a: a, m.variables)
    k = jax.random.key(seed + 1)
    for name in [n for n in v["batch_stats"]]:
        k, k1, k2, k3 = jax.random.split(k, 4)
        c = v["batch_stats"][name]["mean"].shape[0]
        v["batch_stats"][name] = {"mean": jax.random.normal(k1, (c,)) * 0.1,
                                  "var": jax.random.uniform(k2, (c,)) + 0.5}
        scale = jax.random.uniform(k3, (c,)) + 0.5
        if negative_scales:
            scale = scale * jnp.where(jnp.arange(c) % 3 == 0, -1.0, 1.0)
        v["params"][name]["scale"] = scale
    return m.with_variables(v)


def _fold(m):
    """The same network without BatchNorm: each BN folded into the convolution before it."""
    plain = ji.init_model("vgg-mini", num_classes=5, batch_norm=False, key=jax.random.key(0))
    p, bs = m.variables["params"], m.variables["batch_stats"]
    specs = m.module.specs()
    out = {}
    for i, s in enumerate(specs):
        if s.kind != "conv":
            continue
        bn = specs[i + 1].name.replace(".", "_")
        conv = s.name.replace(".", "_")
        scale = p[bn]["scale"] / jnp.sqrt(bs[bn]["var"] + 1e-5)
        out[conv] = {"kernel": p[conv]["kernel"] * scale,
                     "bias": (p[conv]["bias"] - bs[bn]["mean"]) * scale + p[bn]["bias"]}
    convs = [s.name.replace(".", "_") for s in plain.module.specs() if s.kind == "conv"]
    bn_convs = [s.name.replace(".", "_") for s in specs if s.kind == "conv"]
    new = {c: out[b] for c, b in zip(convs, bn_convs)}
    dense = [s.name.replace(".", "_") for s in specs if s.kind == "dense"]
    plain_dense = [s.name.replace(".", "_") for s in plain.module.specs() if s.kind == "dense"]
    new.update({pd: p[d] for pd, d in zip(plain_dense, dense)})
    return plain.with_variables({"params": new})


@pytest.mark.slow  # 70 s; zennit's canonizer on VGG11_bn is compared in the default run
def test_batchnorm_is_folded_into_the_convolution():
    """LRP on conv → BN equals LRP on the network with BN folded into the weights (zennit's
    canonizer), also where BN scales are negative (the folded weight changes sign). Gamma and
    AlphaBeta between them use every parameter modifier (w ± γ w±, w+, w−, with and without
    bias); ZBox the folded first layer's bounds."""
    m = _conv_bn_model(7, negative_scales=True)
    folded = _fold(m)
    x = ji.data.shapes(jax.random.key(8), 1).images
    np.testing.assert_allclose(np.asarray(folded(x)[0]), np.asarray(m(x)[0]), rtol=1e-4,
                               atol=1e-5)
    for composite in ("epsilon_gamma_box", "epsilon_alpha2_beta1"):
        ours, want = (np.asarray(ji.lrp(net, x, 2, composite=composite)) for net in (m, folded))
        np.testing.assert_allclose(ours, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


@pytest.mark.slow  # 30 s; the rules themselves are compared with zennit in the default run
def test_rule_identities_and_user_composites(mini):
    """Gamma(γ=0) is Epsilon with the stabilizer, AlphaBeta(1, 0) is ZPlus, a user composite
    `(path, primitive) -> rule` is used as given, relevance is linear in its start."""
    x = ji.data.shapes(jax.random.key(9), 2).images
    run = lambda c: np.asarray(ji.lrp(mini, x, 4, composite=c))  # noqa: E731
    eps = run(lambda path, prim: rules.Epsilon(1e-6))
    np.testing.assert_allclose(eps, run("epsilon"), rtol=1e-6, atol=1e-9 * np.abs(eps).max())
    gamma0 = run(lambda path, prim: rules.Gamma(0.0) if prim == "conv_general_dilated"
                 else rules.Epsilon())
    # float32: Gamma sums its two halves (x+ w, x- w) where Epsilon takes z whole; near z = 0
    # that cancellation costs up to ~1e-5 of the largest relevance (seen: 5e-8 of 3e-3)
    np.testing.assert_allclose(gamma0, eps, rtol=1e-4, atol=1e-5 * np.abs(eps).max())
    ab = run(lambda path, prim: rules.AlphaBeta(1.0, 0.0) if prim == "conv_general_dilated"
             else rules.Epsilon())
    np.testing.assert_allclose(ab, run("epsilon_plus"), rtol=1e-4,
                               atol=1e-6 * np.abs(ab).max())
    assert np.abs(ab - eps).max() > 1e-2 * np.abs(eps).max()  # the rules differ
    score = np.asarray(mini(x)[0][:, 4])
    logit = np.asarray(ji.lrp(mini, x, 4, composite="epsilon", start="logit"))
    np.testing.assert_allclose(logit, run("epsilon") * score[:, None, None, None], rtol=1e-5,
                               atol=1e-6 * np.abs(logit).max())
    with pytest.raises(ValueError, match="unknown composite 'plus'"):
        ji.lrp(mini, x, 4, composite="plus")
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        rules.AlphaBeta(2.0, 2.0)
    with pytest.raises(ValueError, match="start must be"):
        ji.lrp(mini, x, 4, start="zero")


def test_a_primitive_without_a_rule_is_named(zoo):
    """A product of two activations (a gate) has no DeepLIFT / LRP rule yet: refused by name."""

    def gated(p, x):
        h = x.reshape(x.shape[0], -1)
        return (h @ p["a"]) * jax.nn.sigmoid(h @ p["b"])

    k1, k2 = jax.random.split(jax.random.key(10))
    m = ji.wrap(gated, {"a": jax.random.normal(k1, (192, 3)), "b": jax.random.normal(k2, (192, 3))},
                input_size=(8, 8))
    x = images(11)
    with pytest.raises(ji.relevance.UnsupportedPrimitive, match="no rule for `mul`"):
        ji.lrp(m, x, 0)
    with pytest.raises(ji.relevance.UnsupportedPrimitive, match="no rule for `mul`"):
        ji.deeplift(m, x, 0)
    with pytest.raises(ValueError, match="baseline of shape"):
        ji.deeplift(zoo, x, 0, baseline=np.zeros((3, 3)))


def test_an_nnx_model_is_traced_like_any_other():
    """An NNX module (state split and merged inside the trace; functional relu, BatchNorm,
    max pool, mean): DeepLIFT sums to delta, LRP-ε with zero biases conserves."""
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(4, use_running_average=True, rngs=rngs)
            self.fc = nnx.Linear(4, 3, rngs=rngs)

        def __call__(self, x):
            x = nnx.max_pool(nnx.relu(self.bn(self.conv(x))), (2, 2), (2, 2))
            return self.fc(x.mean((1, 2)))

    m = ji.wrap(Net(nnx.Rngs(0)), input_size=(8, 8))
    x = images(12)
    a = np.asarray(ji.deeplift(m, x, 1))
    f = np.asarray(m(x)[0][:, 1]) - np.asarray(m(jnp.zeros_like(x))[0][:, 1])
    np.testing.assert_allclose(a.sum((1, 2, 3)), f, rtol=1e-4)
    mz = m.with_variables(_zero_biases(m.variables))
    r = np.asarray(ji.lrp(mz, x, 1, composite="epsilon", start="logit", stabilizer=1e-12))
    np.testing.assert_allclose(r.sum((1, 2, 3)), np.asarray(mz(x)[0][:, 1]), rtol=1e-4)
