"""Parity with Captum on identical weights (vgg-mini with BatchNorm, and a small-input VGG16)."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")
safetensors_torch = pytest.importorskip("safetensors.torch")

import jaxinterp as ji  # noqa: E402
from torch_vgg import make_pair  # noqa: E402


@pytest.fixture(scope="session", params=["vgg-mini", "vgg16"])
def pair(request, tmp_path_factory):
    if request.param == "vgg-mini":
        jm, tm, net = make_pair("vgg-mini", tmp_path_factory, num_classes=8, batch_norm=True)
        x = ji.data.shapes(__import__("jax").random.key(21), 2).images
        layer = "features.23"
    else:  # small input, narrow fc layers: the VGG16 conv stack and adaptive pooling at 48x48
        jm, tm, net = make_pair("vgg16", tmp_path_factory, num_classes=10, hidden=64)
        x = np.random.default_rng(0).random((2, 48, 48, 3), dtype=np.float32)
        layer = "features.29"
    x = np.asarray(x)
    logits = tm(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy()
    target = np.argsort(-logits, 1)[:, 1].copy()  # the runner-up class: not a trivial target
    return jm, tm, net, x, target, layer


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).requires_grad_(True)


def to_nhwc(a):
    a = a.detach().numpy()
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 and a.shape[1] == 3 else a


def assert_close(ours, theirs, rel=1e-4):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    scale = np.abs(theirs).max()
    assert scale > 0
    err = np.abs(ours - theirs).max() / scale
    assert err < rel, f"max error {err:.2e} of the largest magnitude"


def captum(pair, name):
    jm, tm, net, x, target, layer = pair
    t = torch.from_numpy(target)
    inp = nchw(x)
    if name == "saliency":
        return to_nhwc(captum_attr.Saliency(tm).attribute(inp, target=t, abs=False))
    if name == "input_x_gradient":
        return to_nhwc(captum_attr.InputXGradient(tm).attribute(inp, target=t))
    if name == "deconvnet":
        return to_nhwc(captum_attr.Deconvolution(tm).attribute(inp, target=t))
    if name == "guided_backprop":
        return to_nhwc(captum_attr.GuidedBackprop(tm).attribute(inp, target=t))
    lyr = net.features[int(layer.split(".")[1])]
    if name == "grad_cam_raw":
        return captum_attr.LayerGradCam(tm, lyr).attribute(inp, target=t)[:, 0].detach().numpy()
    if name == "grad_cam":
        a = captum_attr.LayerGradCam(tm, lyr).attribute(inp, target=t, relu_attributions=True)
        a = captum_attr.LayerAttribution.interpolate(a, tuple(x.shape[1:3]), "bilinear")
        return a[:, 0].detach().numpy()
    if name == "guided_grad_cam":
        return to_nhwc(captum_attr.GuidedGradCam(tm, lyr).attribute(
            inp, target=t, interpolate_mode="bilinear"))
    if name == "occlusion":
        a = captum_attr.Occlusion(tm).attribute(
            inp, target=t, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), baselines=0.0,
            perturbations_per_eval=16)
        return a[:, 0].detach().numpy()
    raise KeyError(name)


def ours(pair, name):
    jm, tm, net, x, target, layer = pair
    if name == "grad_cam_raw":
        return ji.grad_cam(jm, x, target, layer=layer, relu=False, upsample=False)
    if name == "grad_cam":
        return ji.grad_cam(jm, x, target, layer=layer)
    if name == "guided_grad_cam":
        return ji.guided_grad_cam(jm, x, target, layer=layer)
    if name == "occlusion":
        return ji.occlusion(jm, x, target, window=(16, 16), stride=(8, 8))
    return getattr(ji, name)(jm, x, target)


@pytest.mark.parametrize("name", ["saliency", "input_x_gradient", "deconvnet", "guided_backprop",
                                  "grad_cam_raw", "grad_cam", "guided_grad_cam", "occlusion"])
def test_parity_with_captum(pair, name):
    assert_close(ours(pair, name), captum(pair, name))


# the default run: Captum's default rule and one Riemann rule with a noise baseline; CI's slow
# step the other Riemann rules (~30 s each here: float64 Captum on vgg-mini)
@pytest.mark.parametrize("method, baseline", [
    ("gausslegendre", "zero"), pytest.param("riemann_middle", "zero", marks=pytest.mark.slow),
    ("riemann_left", "noise"), pytest.param("riemann_right", "noise", marks=pytest.mark.slow),
    pytest.param("riemann_trapezoid", "noise", marks=pytest.mark.slow)])
def test_integrated_gradients_parity(pair, method, baseline):
    # In float64 on both sides. In float32, each framework's rounding puts a few of the
    # [steps x N] path points' pre-activations on the other side of a ReLU kink or flips a
    # max-pool argmax; the gradient there jumps, by up to 1e-2 of the largest attribution. Every
    # single-pass method above is compared in float32.
    # The rules with a point at alpha = 0 evaluate the baseline itself; a constant baseline is
    # all exact ties in every max-pool window, where the gradient's route depends on the last
    # bit of each convolution output (which XLA's and PyTorch's kernels may round differently,
    # and XLA differently from one compilation to the next). So those rules are compared from a
    # noise baseline (no ties, as for any natural image), the others from the black image.
    jm, tm, net, x, target, layer = pair
    steps = 12
    if jm.arch == "vgg16":  # XLA:CPU runs float64 convolutions ~500x slower than float32 (a
        # minute per call here): VGG16 checks one rule, on one image, 6 steps; vgg-mini checks
        # every rule (the quadrature code is shared)
        if method != "gausslegendre":
            pytest.skip("VGG16: one rule (vgg-mini checks every rule; the code is shared)")
        x, target, steps = x[:1], target[:1], 6
    base = (np.zeros_like(x) if baseline == "zero"
            else np.random.default_rng(5).random(x.shape, dtype=np.float32))
    with jax.enable_x64(True):
        jm64 = jm.with_variables(jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64),
                                                        jm.variables))
        ours = np.asarray(ji.integrated_gradients(jm64, x.astype(np.float64), target, steps=steps,
                                                  method=method, baseline=base.astype(np.float64)))
    assert ours.dtype == np.float64
    tm64 = copy.deepcopy(tm).double()
    theirs = to_nhwc(captum_attr.IntegratedGradients(tm64).attribute(
        nchw(x.astype(np.float64)), baselines=nchw(base.astype(np.float64)).detach(),
        target=torch.from_numpy(target), n_steps=steps, method=method))
    assert_close(ours, theirs)
