"""Relevance methods against their peers on identical weights, in float64: DeepLIFT and
DeepLiftShap against Captum 0.9, LRP composites against zennit; summation to delta,
conservation, and the hook failures (functional / reused modules) that a jaxpr rewrite avoids.

XLA:CPU runs float64 convolutions far slower than float32, so every network is small: VGG11 /
VGG16 at 32x32 with a 64-unit classifier and 10 classes, ResNet-18 at 32x32, batch 2."""

import contextlib
import copy
import functools

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")
pytest.importorskip("safetensors.torch")

import captum.attr._core.deep_lift as captum_deep_lift  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import jaxinterp as ji  # noqa: E402
from test_attribution_parity import assert_close, nchw, to_nhwc  # noqa: E402
from torch_resnet import identity_before_maxpool as resnet_twin  # noqa: E402
from torch_resnet import seeded_resnet  # noqa: E402
from torch_vgg import Logits, Normalized, export_pair, seeded_vgg  # noqa: E402
from torch_vgg import identity_before_maxpool as vgg_twin  # noqa: E402
from zennit_shim import import_zennit  # noqa: E402

SIZE = 32


# ---------------------------------------------------------------------------------------------
# models, built once per module and only when a test asks for them (VGG16 only in the slow run)


def cast64(jm):
    """The model with float64 variables (call inside `jax.enable_x64(True)`)."""
    return jm.with_variables(jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64),
                                                    jm.variables))


class Case:
    """One network on both sides: `jm` (float32) / `jm64` (float64, use under x64), the bare
    torch net `net64` (float64, normalized input: zennit's), `tm64` (float64, pixel input, the
    DeepLift twin with a tensor-copying module before each MaxPool), `plain64` (same, no twin),
    images `x` (float64 NHWC in [0, 1]) and the runner-up class `target`."""

    def __init__(self, name, jm, net, arch_kind):
        self.name, self.jm, self.kind = name, jm, arch_kind
        with jax.enable_x64(True):
            self.jm64 = cast64(jm)
        mean, std = jm.preprocess.mean, jm.preprocess.std
        self.mean = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
        self.net64 = Logits(copy.deepcopy(net).double()).eval()
        twin = vgg_twin(net) if arch_kind == "vgg" else resnet_twin(net)
        self.tm64 = self.normalized64(twin)
        self.plain64 = self.normalized64(copy.deepcopy(net))
        self.x = np.random.default_rng(0).random((2, SIZE, SIZE, 3))
        with torch.no_grad():
            logits = self.plain64(nchw(self.x)).numpy()
        self.target = np.argsort(-logits, 1)[:, 1].copy()  # the runner-up class

    def normalized64(self, net):
        # float64 mean / std buffers: `Normalized` keeps float32 ones (.double() keeps their
        # float32 rounding), which alone moves DeepLIFT by ~1e-7 of its largest magnitude
        tm = Normalized(net, (0.0,) * 3, (1.0,) * 3).double().eval()
        tm.mean, tm.std = self.mean.clone(), self.std.clone()
        return tm

    def logits64(self, x):
        """float64 logits of images `x` [N, H, W, 3], from the torch net (the same function as
        ours to ~1e-15; eager float64 XLA would take seconds per call here)."""
        with torch.no_grad():
            return self.plain64(nchw(np.asarray(x, np.float64))).numpy()


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    @functools.lru_cache(maxsize=None)
    def make(name):
        if name == "resnet18":
            net = seeded_resnet("resnet18", 0)
            jm, _, _ = export_pair(net, "resnet18", tmp_path_factory)
            return Case(name, jm, net, "resnet")
        arch, bn = (name[:-3], True) if name.endswith("_bn") else (name.split("-")[0], False)
        net = seeded_vgg(arch, 0, dense_std=0.05, bias_std=0.1, num_classes=10, hidden=64,
                         batch_norm=bn)
        if name.endswith("-nobias"):  # every bias zero: LRP's epsilon rule conserves relevance
            with torch.no_grad():
                for mod in net.modules():
                    if isinstance(mod, (nn.Conv2d, nn.Linear)):
                        mod.bias.zero_()
        jm, _, _ = export_pair(net, name if bn else arch, tmp_path_factory)
        return Case(name, jm, net, "vgg")

    return make


def blur(x, k=5):
    """A k x k box blur of each image (edge padding), in numpy."""
    p = k // 2
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
    out = np.zeros_like(x)
    for i in range(k):
        for j in range(k):
            out += padded[:, i:i + x.shape[1], j:j + x.shape[2]]
    return out / (k * k)


# A constant baseline (black) is all exact ties in every max-pool window of its activations, and
# the MaxPool rule sends the baseline's share to the argmax: its route depends on the last bit
# of each convolution output, which XLA and PyTorch round differently (measured: the black
# image's ResNet-18 stem activations agree to 1e-15 but not bitwise, and 7 of 4096 stem pooling
# windows pick a different element; ours vs Captum then differs by 3.3e-3 of the largest
# magnitude for DeepLift, 1.9e-3 / 2.1e-2 (ResNet / VGG11) for DeepLiftShap, while a black
# baseline plus 1e-12 noise agrees to 1e-14). As in test_attribution_parity, parity is checked
# from a near-black baseline (1e-6 noise: no ties); the exact black one by summation to delta.


def baseline_of(case, kind):
    if kind == "black":
        return 0.0  # a float: the scalar path
    if kind == "near_black":
        return np.random.default_rng(11).random(case.x.shape) * 1e-6
    return blur(case.x)


def shap_baselines(case):
    """Three reference images shared by both examples: near-black, a blurred image, noise."""
    near_black = np.random.default_rng(11).random((1, SIZE, SIZE, 3)) * 1e-6
    noise = np.random.default_rng(7).random((1, SIZE, SIZE, 3))
    return np.concatenate([near_black, blur(case.x[:1]), noise])


# ---------------------------------------------------------------------------------------------
# Captum references


def _unpool_summed(grad, indices, kernel_size, stride, padding, shape):
    """`max_unpool2d` that adds where several windows pick the same input element (the
    adjoint of max pooling); torch's `max_unpool2d` keeps one of them."""
    out = torch.zeros(tuple(grad.shape[:2]) + (shape[2] * shape[3],), dtype=grad.dtype)
    out.scatter_add_(2, indices.flatten(2), grad.flatten(2))
    return out.view(tuple(grad.shape[:2]) + tuple(shape[2:]))


def _maxpool2d_summed(module, inputs, outputs, grad_input, grad_output, eps=1e-10):
    return captum_deep_lift.maxpool(module, F.max_pool2d, _unpool_summed, inputs, outputs,
                                    grad_input, grad_output, eps=eps)


@contextlib.contextmanager
def overlapping_maxpool_fixed():
    """Captum's MaxPool rule with its unpooling summed over overlapping windows. Captum unpools
    with `max_unpool2d`, which keeps one write where windows overlap (ResNet's 3x3 / stride 2
    stem pool): that drops contributions and breaks summation to delta (measured below). For
    non-overlapping windows (VGG's 2x2 / 2) both are the same."""
    table = captum_deep_lift.SUPPORTED_NON_LINEAR
    old = table[nn.MaxPool2d]
    table[nn.MaxPool2d] = _maxpool2d_summed
    try:
        yield
    finally:
        table[nn.MaxPool2d] = old


def captum_deeplift(model, x, target, baseline):
    b = baseline if isinstance(baseline, float) else nchw(baseline).detach()
    return to_nhwc(captum_attr.DeepLift(model).attribute(
        nchw(x), baselines=b, target=torch.from_numpy(target)))


def captum_reference(case, method, baseline):
    """Captum on the corrected twin (ResNet: overlapping windows summed)."""
    ctx = overlapping_maxpool_fixed() if case.kind == "resnet" else contextlib.nullcontext()
    with ctx:
        if method == "deeplift":
            return captum_deeplift(case.tm64, case.x, case.target, baseline)
        return to_nhwc(captum_attr.DeepLiftShap(case.tm64).attribute(
            nchw(case.x), baselines=nchw(baseline).detach(), target=torch.from_numpy(case.target)))


def delta_miss(attr, model, x, target, baseline):
    """|Σ attribution − (f(x) − f(baseline))[target]| / |f(x) − f(baseline)|, per example."""
    b = np.array(np.broadcast_to(np.asarray(baseline, np.float64), x.shape))
    with torch.no_grad():
        d = (model(nchw(x)) - model(nchw(b))).numpy()[np.arange(len(x)), target]
    return np.abs(attr.sum((1, 2, 3)) - d) / np.abs(d)


# ---------------------------------------------------------------------------------------------
# DeepLIFT / DeepLiftShap vs Captum


def test_captum_plain_twin_misses_delta(build):
    # Captum hooks each nonlinearity's input and output tensors. When a ReLU module's output
    # tensor is a MaxPool module's input (torchvision's VGG layout, ResNet's stem), the ReLU's
    # hook records the gradient before the MaxPool rule rewrites it: the rule is lost. Measured
    # here (float64, VGG11 at 32x32, runner-up class, the two images): the plain net misses
    # summation to delta by 570% / 5.3% (black baseline) and 297% / 51% (uniform-noise baseline)
    # of f(x) - f(b); the twin with a tensor-copying module before each MaxPool
    # (`torch_vgg.identity_before_maxpool`; a plain nn.Identity returns the same tensor and
    # changes nothing: measured, the same misses) holds it to 5e-14.
    case = build("vgg11")
    noise = np.random.default_rng(1).random(case.x.shape)
    for baseline in (0.0, noise):
        plain = captum_deeplift(case.plain64, case.x, case.target, baseline)
        twin = captum_deeplift(case.tm64, case.x, case.target, baseline)
        assert delta_miss(plain, case.plain64, case.x, case.target, baseline).max() > 1e-2
        assert delta_miss(twin, case.tm64, case.x, case.target, baseline).max() <= 1e-6


def test_captum_overlapping_maxpool_misses_delta(build):
    # ResNet-18's stem pool (3x3, stride 2) has overlapping windows; Captum unpools with
    # max_unpool2d, which keeps one of the overlapping writes. Measured (float64, 32x32, on the
    # twin): Captum misses summation to delta by 70% / 68% (black) and 23% / 65% (noise
    # baseline); with the unpooling summed (`overlapping_maxpool_fixed`, what ours does) 1.2e-14.
    # (The plain net, without the twin's copy, misses by 43% / 30% and 333% / 78%.)
    case = build("resnet18")
    noise = np.random.default_rng(1).random(case.x.shape)
    for baseline in (0.0, noise):
        raw = captum_deeplift(case.tm64, case.x, case.target, baseline)
        with overlapping_maxpool_fixed():
            fixed = captum_deeplift(case.tm64, case.x, case.target, baseline)
        assert delta_miss(raw, case.tm64, case.x, case.target, baseline).max() > 1e-2
        assert delta_miss(fixed, case.tm64, case.x, case.target, baseline).max() <= 1e-6


@pytest.mark.parametrize("name", ["vgg11", "resnet18"])
@pytest.mark.parametrize("baseline", ["near_black", "blur"])
def test_deeplift_parity_with_captum(build, name, baseline):
    case = build(name)
    base = baseline_of(case, baseline)
    with jax.enable_x64(True):
        b = base if isinstance(base, float) else jnp.asarray(base)
        ours = np.asarray(ji.deeplift(case.jm64, jnp.asarray(case.x), case.target, baseline=b))
    assert ours.dtype == np.float64 and ours.shape == case.x.shape
    assert_close(ours, captum_reference(case, "deeplift", base), 1e-6)
    # summation to delta (f from the float64 torch net: the same function)
    full = np.array(np.broadcast_to(np.asarray(base, np.float64), case.x.shape))
    d = (case.logits64(case.x) - case.logits64(full))[np.arange(2), case.target]
    np.testing.assert_allclose(ours.sum((1, 2, 3)), d, rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", ["vgg11", "resnet18"])
def test_deeplift_black_baseline_sums_to_delta(build, name):
    case = build(name)
    with jax.enable_x64(True):
        ours = np.asarray(ji.deeplift(case.jm64, jnp.asarray(case.x), case.target, baseline=0.0))
    d = (case.logits64(case.x) - case.logits64(np.zeros_like(case.x)))[np.arange(2), case.target]
    np.testing.assert_allclose(ours.sum((1, 2, 3)), d, rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", ["vgg11", "resnet18"])
def test_deeplift_shap_parity_with_captum(build, name):
    case = build(name)
    bases = shap_baselines(case)
    with jax.enable_x64(True):
        ours = np.asarray(ji.deeplift_shap(case.jm64, jnp.asarray(case.x), case.target,
                                           jnp.asarray(bases)))
    assert ours.dtype == np.float64 and ours.shape == case.x.shape
    assert_close(ours, captum_reference(case, "deeplift_shap", bases), 1e-6)
    d = case.logits64(case.x) - case.logits64(bases).mean(0)
    np.testing.assert_allclose(ours.sum((1, 2, 3)), d[np.arange(2), case.target], rtol=1e-5,
                               atol=0)


# ---------------------------------------------------------------------------------------------
# LRP vs zennit


@pytest.fixture(scope="session")
def zennit():
    try:
        return import_zennit()
    except ImportError as e:
        pytest.skip(f"zennit: {e}")


def zennit_lrp(zennit, case, composite, start="one", **options):
    """zennit's relevance at the bare net's normalized input (float64), NHWC. `epsilon`: the
    epsilon rule on every conv / dense layer (zennit has no such named composite; its base map
    for the rest), with `options` epsilon and stabilizer."""
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import (EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlusFlat,
                                   LayerMapComposite, layer_map_base)
    from zennit.rules import Epsilon
    from zennit.types import Linear

    class ExactSequentialMergeBatchNorm(SequentialMergeBatchNorm):
        """zennit's canonizer, but the emptied BatchNorm gets eps 0: zennit leaves its eps (1e-5)
        with variance 1, so the canonized net scales every BatchNorm output by (1 + 1e-5)^-1/2
        and is no longer the model (measured: 5.3e-6 of the largest relevance on VGG11_bn with
        EpsilonPlusFlat; 2.6e-15 with this)."""

        def register(self, linears, batch_norm):
            self.eps = batch_norm.eps
            super().register(linears, batch_norm)
            batch_norm.eps = 0.0

        def remove(self):
            super().remove()
            self.batch_norm.eps = self.eps

    canonizers = [ExactSequentialMergeBatchNorm()] if case.name.endswith("_bn") else None
    if composite == "epsilon_plus_flat":
        comp = EpsilonPlusFlat(canonizers=canonizers)
    elif composite == "epsilon_gamma_box":  # ZBox bounds: the pixel range [0, 1], normalized
        comp = EpsilonGammaBox(low=-case.mean / case.std, high=(1 - case.mean) / case.std,
                               canonizers=canonizers)
    elif composite == "epsilon_alpha2_beta1":
        comp = EpsilonAlpha2Beta1(canonizers=canonizers)
    elif composite == "epsilon":
        comp = LayerMapComposite(layer_map_base(options["stabilizer"])
                                 + [(Linear, Epsilon(epsilon=options["epsilon"]))],
                                 canonizers=canonizers)
    else:
        raise KeyError(composite)
    x = torch.from_numpy(case.x).permute(0, 3, 1, 2)
    xn = ((x - case.mean) / case.std).requires_grad_(True)
    one_hot = torch.eye(10, dtype=torch.float64)[torch.from_numpy(case.target)]
    attr_output = one_hot if start == "one" else (lambda out: one_hot * out)
    with torch.no_grad():
        before = case.net64(xn)
    with Gradient(model=case.net64, composite=comp) as attributor:
        _, rel = attributor(xn, attr_output)
    with torch.no_grad():  # the hooks and the canonizer are undone
        assert torch.equal(case.net64(xn), before)
    return to_nhwc(rel)


def ours_lrp(case, composite, start="one"):
    with jax.enable_x64(True):
        out = np.asarray(ji.lrp(case.jm64, jnp.asarray(case.x), case.target, composite=composite,
                                start=start))
    assert out.dtype == np.float64 and out.shape == case.x.shape
    return out


COMPOSITES = ["epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1"]
LRP_CASES = (
    [pytest.param("vgg11", c, id=f"vgg11-{c}") for c in COMPOSITES]
    + [pytest.param("vgg11_bn", "epsilon_plus_flat", id="vgg11_bn-epsilon_plus_flat")]
    + [pytest.param("vgg16", c, id=f"vgg16-{c}", marks=pytest.mark.slow) for c in COMPOSITES])


@pytest.mark.parametrize("name, composite", LRP_CASES)
def test_lrp_parity_with_zennit(zennit, build, name, composite):
    case = build(name)
    theirs = zennit_lrp(zennit, case, composite)
    # zennit's relevance is sane: finite, not all zero, and (relevance starts at 1; biases
    # absorb some) a total of the order of 1 (measured 0.28 to 0.98 on these nets)
    sums = theirs.sum((1, 2, 3))
    assert np.isfinite(theirs).all() and np.abs(theirs).max() > 0
    assert ((sums > 0.05) & (sums < 5)).all(), sums
    assert_close(ours_lrp(case, composite), theirs, 1e-5)


def test_lrp_epsilon_conserves_without_biases(zennit, build):
    # no biases anywhere: the epsilon rule (epsilon tiny), ReLUs, max-pools and the adaptive
    # average pool (Norm rule; its stabilizer tiny too) conserve relevance, so the input relevance
    # adds up to the target logit. Measured: 2.6e-11 relative (1.7e-6 with the default
    # stabilizer 1e-6 on the pooling)
    case = build("vgg11-nobias")
    with jax.enable_x64(True):
        rel = np.asarray(ji.lrp(case.jm64, jnp.asarray(case.x), case.target, composite="epsilon",
                                start="logit", epsilon=1e-12, stabilizer=1e-12))
    logit = case.logits64(case.x)[np.arange(2), case.target]
    assert (np.abs(logit) > 1e-3).all()
    np.testing.assert_allclose(rel.sum((1, 2, 3)), logit, rtol=1e-8, atol=0)
    # and zennit with the relevance starting at the logit (one compile fewer than a separate
    # start="logit" case): measured 1.5e-15
    theirs = zennit_lrp(zennit, case, "epsilon", start="logit", epsilon=1e-12, stabilizer=1e-12)
    assert_close(rel, theirs, 1e-5)


# ---------------------------------------------------------------------------------------------
# functional activations and reused modules: no hooks, so nothing to lose


class ReuseNet(fnn.Module):
    """Functional `nn.relu`; with `reuse`, one Conv and one Dense module applied twice each;
    without, separate modules (given the same weights)."""

    reuse: bool

    @fnn.compact
    def __call__(self, x):
        x = fnn.relu(fnn.Conv(8, (3, 3), name="conv0")(x))
        conv_a = fnn.Conv(8, (3, 3), name="conv_a")
        conv_b = conv_a if self.reuse else fnn.Conv(8, (3, 3), name="conv_b")
        x = fnn.relu(conv_b(fnn.relu(conv_a(x))))
        x = fnn.relu(fnn.Dense(16, name="dense0")(x.reshape(x.shape[0], -1)))
        dense_a = fnn.Dense(16, name="dense_a")
        dense_b = dense_a if self.reuse else fnn.Dense(16, name="dense_b")
        x = fnn.relu(dense_b(fnn.relu(dense_a(x))))
        return fnn.Dense(5, name="head")(x)


class TorchReuseNet(nn.Module):
    """ReuseNet in torch; `mode`: "separate" (a ReLU module per use, separate conv / dense
    modules), "reuse" (one nn.ReLU module for every activation, one conv and one linear module
    applied twice) or "functional" (F.relu)."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.conv0, self.conv_a, self.conv_b = (nn.Conv2d(c, 8, 3, padding=1) for c in (3, 8, 8))
        self.dense0, self.dense_a, self.dense_b = nn.Linear(8 * 36, 16), *(nn.Linear(16, 16)
                                                                           for _ in range(2))
        self.head = nn.Linear(16, 5)
        self.relu = nn.ReLU()
        self.relus = nn.ModuleList([nn.ReLU() for _ in range(6)])

    def act(self, i, x):
        return {"reuse": lambda: self.relu(x), "functional": lambda: F.relu(x),
                "separate": lambda: self.relus[i](x)}[self.mode]()

    def forward(self, x):
        sep = self.mode == "separate"
        x = self.act(0, self.conv0(x))
        x = self.act(1, self.conv_a(x))
        x = self.act(2, (self.conv_b if sep else self.conv_a)(x))
        x = self.act(3, self.dense0(x.flatten(1)))
        x = self.act(4, self.dense_a(x))
        x = self.act(5, (self.dense_b if sep else self.dense_a)(x))
        return self.head(x)


def torch_to_flax(tnet):
    """ReuseNet variables (separate modules) from a TorchReuseNet's weights."""
    def conv(m):
        return {"kernel": m.weight.detach().numpy().transpose(2, 3, 1, 0),
                "bias": m.bias.detach().numpy()}

    def dense(m):
        return {"kernel": m.weight.detach().numpy().T, "bias": m.bias.detach().numpy()}

    d0 = tnet.dense0.weight.detach().numpy().reshape(16, 8, 6, 6)  # torch flattens C, H, W
    params = {"conv0": conv(tnet.conv0), "conv_a": conv(tnet.conv_a), "conv_b": conv(tnet.conv_a),
              "dense0": {"kernel": d0.transpose(2, 3, 1, 0).reshape(36 * 8, 16),
                         "bias": tnet.dense0.bias.detach().numpy()},
              "dense_a": dense(tnet.dense_a), "dense_b": dense(tnet.dense_a),
              "head": dense(tnet.head)}
    return {"params": params}


@pytest.fixture(scope="session")
def reuse_pair():
    """(reused, separate) wrapped models with the same weights (torch's, so that Captum on the
    separate-module torch net is a reference too), images, targets, the torch net."""
    torch.manual_seed(0)
    tnet = TorchReuseNet("separate").double().eval()
    with torch.no_grad():  # the second uses carry the first uses' weights
        tnet.conv_b.load_state_dict(tnet.conv_a.state_dict())
        tnet.dense_b.load_state_dict(tnet.dense_a.state_dict())
    sep_vars = torch_to_flax(tnet)
    reuse_vars = {"params": {k: v for k, v in sep_vars["params"].items()
                             if k not in ("conv_b", "dense_b")}}
    with jax.enable_x64(True):
        cast = functools.partial(jax.tree_util.tree_map, lambda v: jnp.asarray(v, jnp.float64))
        reused = ji.wrap(ReuseNet(reuse=True), cast(reuse_vars), input_size=(6, 6))
        separate = ji.wrap(ReuseNet(reuse=False), cast(sep_vars), input_size=(6, 6))
    x = np.random.default_rng(3).random((2, 6, 6, 3))
    return reused, separate, x, np.array([1, 3]), tnet


@pytest.mark.slow  # ~15-19 s; CI's slow step runs it
def test_reuse_and_functional_relu_same_as_separate(reuse_pair):
    reused, separate, x, target, tnet = reuse_pair
    noise = np.random.default_rng(4).random(x.shape)
    with jax.enable_x64(True):
        xj = jnp.asarray(x)
        np.testing.assert_allclose(reused(xj)[0], separate(xj)[0], rtol=1e-12)
        for baseline in (0.0, jnp.asarray(noise)):
            a = np.asarray(ji.deeplift(reused, xj, target, baseline=baseline))
            b = np.asarray(ji.deeplift(separate, xj, target, baseline=baseline))
            assert np.abs(b).max() > 0
            assert_close(a, b, 1e-6)
        for composite in ("epsilon_gamma_box",):  # ZBox, Gamma, Epsilon (compiles dominate)
            a = np.asarray(ji.lrp(reused, xj, target, composite=composite))
            b = np.asarray(ji.lrp(separate, xj, target, composite=composite))
            assert np.abs(b).max() > 0
            assert_close(a, b, 1e-6)
        ours = np.asarray(ji.deeplift(reused, xj, target, baseline=jnp.asarray(noise)))
    # and equal to Captum on the separate-module torch net (its hooks see every use there)
    theirs = captum_deeplift(tnet, x, target, noise)
    assert_close(ours, theirs, 1e-6)
    assert delta_miss(theirs, tnet, x, target, noise).max() <= 1e-6


def test_captum_reuse_and_functional_relu_fail(reuse_pair):
    # Captum on the same torch weights: with F.relu the ReLUs get no hook (plain gradient) and
    # the attribution differs from the separate-module net's by 142% of its largest magnitude
    # (measured); with one nn.ReLU module reused, Captum raises (the second use's hook deletes
    # what the first use's needs).
    _, _, x, target, tnet = reuse_pair
    noise = np.random.default_rng(4).random(x.shape)
    ref = captum_deeplift(tnet, x, target, noise)
    functional = copy.deepcopy(tnet)
    functional.mode = "functional"
    diff = np.abs(captum_deeplift(functional, x, target, noise) - ref).max() / np.abs(ref).max()
    assert diff > 1e-2, diff
    reused = copy.deepcopy(tnet)
    reused.mode = "reuse"
    with pytest.raises(RuntimeError, match="used more than once"):
        captum_deeplift(reused, x, target, noise)
