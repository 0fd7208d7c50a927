"""The pytorch-grad-cam family (`jaxinterp.attribution.cams`): parity with pytorch-grad-cam's own
classes on identical weights (VGG11, VGG11_bn and ResNet-18; FullGrad, several layers,
aug_smooth), analytic cases on a GAP + linear head and a rank-one layer, FullGrad's
completeness, batching, jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from gradcam_shim import import_gradcam  # noqa: E402
import parity_errors  # noqa: E402

try:
    pgc = import_gradcam()
except ImportError as e:  # pragma: no cover - the test extras install it
    pytest.skip(str(e), allow_module_level=True)

import jaxinterp as ji  # noqa: E402
from jaxinterp.attribution import cams  # noqa: E402
from jaxinterp.attribution.core import default_layer  # noqa: E402
from jaxinterp.attribution.cams import (ablation_cam, eigen_cam, eigen_grad_cam,  # noqa: E402
                                        full_grad, full_grad_terms,
                                        grad_cam_elementwise, grad_cam_plus_plus, hires_cam,
                                        layer_cam, score_cam, xgrad_cam)
from test_attribution_parity import nchw  # noqa: E402
from torch_resnet import seeded_resnet  # noqa: E402
from torch_vgg import export_pair, make_pair, seeded_vgg  # noqa: E402

from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

OURS = {"grad_cam_plus_plus": grad_cam_plus_plus, "xgrad_cam": xgrad_cam,
        "layer_cam": layer_cam, "hires_cam": hires_cam,
        "grad_cam_elementwise": grad_cam_elementwise, "eigen_cam": eigen_cam,
        "eigen_grad_cam": eigen_grad_cam, "score_cam": score_cam, "ablation_cam": ablation_cam}
THEIRS = {"grad_cam_plus_plus": "GradCAMPlusPlus", "xgrad_cam": "XGradCAM",
          "layer_cam": "LayerCAM", "hires_cam": "HiResCAM",
          "grad_cam_elementwise": "GradCAMElementWise", "eigen_cam": "EigenCAM",
          "eigen_grad_cam": "EigenGradCAM", "score_cam": "ScoreCAM",
          "ablation_cam": "AblationCAM"}
EIGEN_SMOOTH = ("grad_cam_plus_plus", "xgrad_cam", "layer_cam", "hires_cam",
                "grad_cam_elementwise", "score_cam", "ablation_cam")
FORWARD_HEAVY = ("score_cam", "ablation_cam")  # a forward pass per channel and image
ERRORS = {}  # measured errors, printed at the end of the module (pytest -s)


def assert_close(ours, theirs, rel=1e-5, key=None):
    err = parity_errors.assert_close(ours, theirs, rel)
    if key is not None:
        ERRORS[key] = err


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    for k, v in sorted(ERRORS.items()):
        print(f"cams parity {k}: {v:.2e}")


def build_pair(name, tmp_path_factory):
    """(name, jm, tm, torch layer, our layer name, x, runner-up targets)."""
    if name == "vgg-mini":  # 128 channels: the per-channel methods stay fast
        jm, tm, net = make_pair("vgg-mini", tmp_path_factory, num_classes=8, batch_norm=True)
        x = np.asarray(ji.data.shapes(jax.random.key(21), 2).images)  # 64x64
        lyr, layer = net.features[23], "features.23"  # last relu, 8x8x128
    elif name == "vgg11":
        jm, tm, net = make_pair("vgg11", tmp_path_factory, num_classes=10, hidden=64)
        x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
        lyr, layer = net.features[14], "features.14"  # relu, 4x4x512
    elif name == "vgg11_bn":  # make_pair's seeding, with BatchNorm (random statistics)
        net = seeded_vgg("vgg11", 0, dense_std=0.05, bias_std=0.1, num_classes=10, hidden=64,
                         batch_norm=True)
        jm, tm, net = export_pair(net, "vgg11_bn", tmp_path_factory)
        x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
        lyr, layer = net.features[20], "features.20"  # relu, 4x4x512
    else:
        jm, tm, net = export_pair(seeded_resnet("resnet18", 0), "resnet18", tmp_path_factory)
        x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
        lyr, layer = net.layer4[-1], "layer4/1"  # 2x2x512
    logits = tm(nchw(x)).detach().numpy()
    target = np.argsort(-logits, 1)[:, 1].copy()  # the runner-up class: not a trivial target
    return name, jm, tm, lyr, layer, x, target


@pytest.fixture(scope="session")
def pairs(tmp_path_factory):
    built = {}

    def get(name):
        if name not in built:
            built[name] = build_pair(name, tmp_path_factory)
        return built[name]

    return get


# The default run checks each method on one model (raw and eigen_smooth maps); the slow run
# checks every method on every model, with pytorch-grad-cam's full post-processing too.
# XLA:CPU runs VGG11's 2x2-pixel convolutions ~50x slower than the same product as a matrix
# product (measured 3.6 s vs 0.07 s for 128 images): the per-channel methods (512 forward passes
# per image) on VGG11 and ResNet-18 are slow cases; vgg-mini checks them in the default run.
DEFAULT = {"vgg-mini": ("ablation_cam", "grad_cam_plus_plus"),  # score_cam: analytic below
           "vgg11": ("xgrad_cam", "layer_cam", "eigen_cam"),
           "resnet18": ("hires_cam", "grad_cam_elementwise", "eigen_grad_cam")}
CASES = [pytest.param(model, method, id=f"{model}-{method}",
                      marks=() if method in DEFAULT[model] else [pytest.mark.slow])
         for model in DEFAULT for method in OURS]


def theirs(pair, method, n):
    """pytorch-grad-cam's raw layer-resolution maps (`get_cam_image`, with and without
    eigen_smooth) and its full output (`compute_cam_per_layer` + `aggregate_multi_layers`: ReLU,
    min-max scaling, cv2 resize, scaling), from one forward (and backward) pass."""
    _, _, tm, lyr, _, x, target = pair
    inp = nchw(x[:n])
    targets = [ClassifierOutputTarget(int(c)) for c in target[:n]]
    cam = getattr(pgc, THEIRS[method])(model=tm, target_layers=[lyr])
    try:
        outputs = cam.activations_and_grads(inp)  # BaseCAM.forward, step by step
        if cam.uses_gradients:
            tm.zero_grad()
            sum(t(o) for t, o in zip(targets, outputs)).backward(retain_graph=True)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = (cam.activations_and_grads.gradients[0].numpy() if cam.uses_gradients else None)
        if method in FORWARD_HEAVY:  # compute the channel weights once, for all three results
            weights = cam.get_cam_weights(inp, lyr, targets, acts, grads)
            cam.get_cam_weights = lambda *args: weights
        raw = {e: cam.get_cam_image(inp, lyr, targets, acts, grads, e) for e in (False, True)}
        full = cam.aggregate_multi_layers(cam.compute_cam_per_layer(inp, targets, False))
    finally:
        cam.activations_and_grads.release()
    return raw, full, acts


@pytest.mark.parametrize("model, method", CASES)
def test_parity_with_pytorch_grad_cam(pairs, request, model, method):
    pair = pairs(model)
    name, jm, tm, lyr, layer, x, target = pair
    slow = request.node.get_closest_marker("slow") is not None
    n = 1 if method in FORWARD_HEAVY and model != "vgg-mini" else 2  # 512 passes per image
    raw, full, acts = theirs(pair, method, n)
    fn, x, target = OURS[method], x[:n], target[:n]
    np.testing.assert_allclose(np.asarray(jm(x)[1][layer]).transpose(0, 3, 1, 2), acts,
                               rtol=0, atol=1e-5 * np.abs(acts).max())
    ours = fn(jm, x, target, layer, relu=False, upsample=False)
    assert ours.shape == (n, *acts.shape[2:]) and ours.dtype == jnp.float32
    # Ablation-CAM's weights (s - s_k) / s are differences of nearly equal scores, which
    # pytorch-grad-cam rounds to float32: on 512 channels that float32 noise reaches ~4e-4 of
    # the map on VGG11 and 1.5e-5 on ResNet-18 (measured); on vgg-mini's 128 channels it stays
    # under 1e-5
    rel = 1e-3 if method == "ablation_cam" and model != "vgg-mini" else 1e-5
    assert_close(ours, raw[False], rel, key=f"{name} {method} raw")
    if method in EIGEN_SMOOTH:
        assert_close(fn(jm, x, target, layer, relu=False, upsample=False, eigen_smooth=True),
                     raw[True], rel, key=f"{name} {method} eigen_smooth")
    else:  # Eigen-CAM and Eigen-Grad-CAM are projections already: eigen_smooth is ignored
        np.testing.assert_array_equal(raw[True], raw[False])
    if slow or model == "vgg-mini":  # the whole chain (its parts: test_postprocess_is_...)
        ours_full = fn(jm, x, target, layer, postprocess="pytorch_grad_cam")
        assert ours_full.shape == x.shape[:3]
        assert_close(ours_full, full, rel, key=f"{name} {method} postprocess=pytorch_grad_cam")


@pytest.mark.parametrize("model", [pytest.param("vgg-mini", marks=pytest.mark.slow),
                                   pytest.param("vgg11", marks=pytest.mark.slow),
                                   pytest.param("resnet18", marks=pytest.mark.slow)])
def test_ablation_of_a_layer_that_can_be_negative(pairs, model):
    # a layer whose minimum is not 0: a channel is set to min - 1e7 (pytorch-grad-cam's
    # AblationLayer). Its batch_size=1: with more copies per batch it lowers the value by
    # another 1e7 per copy (it re-reads the minimum after each edit), which we do not copy.
    name, jm, tm, _, _, x, target = pairs(model)
    net = tm.net
    lyr, layer = {"vgg-mini": lambda: (net.features[22], "features.22"),  # BN, before its ReLU
                  "vgg11": lambda: (net.features[13], "features.13"),  # conv, before its ReLU
                  "resnet18": lambda: (net.layer4[-1].bn2, "layer4/1/bn2")}[name]()
    x, target = x[:1], target[:1]
    acts = np.asarray(jm(x)[1][layer])
    assert acts.min() < 0
    cam = pgc.AblationCAM(model=tm, target_layers=[lyr], batch_size=1)
    inp = nchw(x)
    targets = [ClassifierOutputTarget(int(c)) for c in target]
    try:
        cam.activations_and_grads(inp)
        a = cam.activations_and_grads.activations[0].numpy()
        raw = cam.get_cam_image(inp, lyr, targets, a, None, False)
    finally:
        cam.activations_and_grads.release()
    ours = ablation_cam(jm, x, target, layer, relu=False, upsample=False)
    assert_close(ours, raw, 1e-5 if name == "vgg-mini" else 1e-3,
                 key=f"{name} ablation_cam negative layer")


@pytest.fixture(scope="session")
def mini(pairs):
    """vgg-mini with BatchNorm, imported from a seeded torch twin (faster to build than
    conftest's randomly initialized one)."""
    return pairs("vgg-mini")[1]


# --- analytic cases --------------------------------------------------------------------------
# vgg-mini's head is a global average pool and one dense layer: at the last ReLU every gradient
# is constant over space, g_c = w_c / (h w), and the score is s = sum_c w_c mean(A_c) + b.

@pytest.fixture(scope="session")
def gap_case(mini):
    # the dense layer scaled by 20: gradients ~1e-2, so that Grad-CAM++'s 1e-6 does not
    # dominate its denominator (every term of it is then tested)
    scaled = jax.tree_util.tree_map_with_path(
        lambda p, v: v * 20 if "classifier_0" in jax.tree_util.keystr(p) else v, mini.variables)
    m = mini.with_variables(scaled)
    x = np.asarray(ji.data.shapes(jax.random.key(3), 2).images)
    logits, feats = m(x)
    layer = default_layer(m)
    a = np.asarray(feats[layer], np.float64)  # [N, h, w, C]
    target = np.array([3, 5])
    w = np.asarray(m.params["classifier_0"]["kernel"], np.float64)[:, target].T  # [N, C]
    b = np.asarray(m.params["classifier_0"]["bias"], np.float64)[target]
    return m, x, target, layer, a, w, b, np.asarray(logits)[np.arange(2), target]


def test_analytic_gap_head(gap_case):
    m, x, target, layer, a, w, b, s = gap_case
    hw = a.shape[1] * a.shape[2]
    g = w / hw  # [N, C], the same at every position
    total = a.sum((1, 2))  # [N, C]
    np.testing.assert_allclose((w * a.mean((1, 2))).sum(1) + b, s, rtol=1e-5)
    def run(fn, **kw):
        return np.asarray(fn(m, x, target, layer, relu=False, upsample=False, **kw))
    mapped = lambda weights: np.einsum("nhwc,nc->nhw", a, weights)  # noqa: E731
    check = lambda ours, expected: np.testing.assert_allclose(  # noqa: E731
        ours, expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    assert (np.abs(total * g) / 2 > 0.05).mean() > 0.2  # the sum(A) g^3 term matters in alpha
    # HiResCAM = Grad-CAM = CAM / (h w) when the gradient is constant over space
    check(run(hires_cam), mapped(g))
    check(np.asarray(ji.grad_cam(m, x, target, layer, relu=False, upsample=False)), mapped(g))
    check(np.asarray(ji.cam(m, x, target, upsample=False)) / hw, mapped(g))
    # XGrad-CAM: sum(g A) / sum(A) = g
    check(run(xgrad_cam), mapped(g * total / (total + 1e-7)))
    # Layer-CAM: sum_c relu(g_c) A_c; with A >= 0 the element-wise variant is the same
    check(run(layer_cam), mapped(np.maximum(g, 0)))
    check(run(grad_cam_elementwise), mapped(np.maximum(g, 0)))
    # Grad-CAM++: weight h w relu(g) g^2 / (2 g^2 + sum(A) g^3 + 1e-6), 0 where g = 0
    alpha = g ** 2 / (2 * g ** 2 + total * g ** 3 + 1e-6)
    assert np.median(1e-6 / (2 * g ** 2)) < 1e-2  # and the epsilon does not dominate it
    check(run(grad_cam_plus_plus), mapped(hw * np.maximum(g, 0) * np.where(g != 0, alpha, 0)))
    # Ablation-CAM: zeroing channel c removes w_c mean(A_c) from s
    assert (a.min((1, 2, 3)) == 0).all()
    ablated = mapped(w * a.mean((1, 2)) / s[:, None])
    check(run(ablation_cam), ablated)
    check(run(ablation_cam, batch_size=7), ablated)  # chunks that do not divide 128


def linear_model(p, c, w):
    """A wrapped function model whose layer "maps" is `x @ p + c` (`p` `[3, C]`: each channel a
    mix of the colours) under a global-average-pool + dense head `w` `[C, K]`."""
    def fn(params, x):
        a = x @ params["p"] + params["c"]
        return a.mean((1, 2)) @ params["w"], {"maps": a}

    return ji.wrap(fn, {"p": p, "c": c, "w": w}, input_size=(8, 8))


def test_analytic_rank_one_projection():
    # p = e_red v^T: the layer is x_red v + c, rank one after centring, its projection
    # +-(x_red - mean) |v|
    rng = np.random.default_rng(1)
    v, c = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
    w = rng.normal(size=(6, 4)).astype(np.float32)
    m = linear_model(np.outer([1, 0, 0], v).astype(np.float32), c, w)
    x = rng.random((3, 8, 8, 3), dtype=np.float32)
    red = x[..., 0] - x[..., 0].mean((1, 2), keepdims=True)  # [N, 8, 8]
    target = np.array([0, 1, 3])
    ours = np.asarray(eigen_cam(m, x, None, "maps", relu=False, upsample=False))
    expected = red * np.linalg.norm(v)  # up to the sign of the singular vector
    sign = np.sign((ours * expected).sum((1, 2)))[:, None, None]
    np.testing.assert_allclose(ours, sign * expected, atol=1e-5)
    corrected = np.asarray(eigen_cam(m, x, None, "maps", relu=False, upsample=False,
                                     sign_correction=True))
    flip = np.abs(expected.min((1, 2))) > np.abs(expected.max((1, 2)))
    np.testing.assert_allclose(corrected, np.where(flip[:, None, None], -expected, expected),
                               atol=1e-5)
    # Eigen-Grad-CAM: g A = (x_red v + c) w_t / 64, rank one along v * w_t
    wt = w[:, target].T  # [N, C]
    ours = np.asarray(eigen_grad_cam(m, x, target, "maps", relu=False, upsample=False,
                                     sign_correction=True))
    expected = red * np.linalg.norm(v * wt, axis=1)[:, None, None] / 64
    flip = np.abs(expected.min((1, 2))) > np.abs(expected.max((1, 2)))
    np.testing.assert_allclose(ours, np.where(flip[:, None, None], -expected, expected),
                               atol=1e-6)
    # eigen_smooth of Layer-CAM: relu(g) A, rank one along relu(w_t) * v
    ours = np.asarray(layer_cam(m, x, target, "maps", relu=False, upsample=False,
                                eigen_smooth=True, sign_correction=True))
    expected = red * np.linalg.norm(np.maximum(wt, 0) * v, axis=1)[:, None, None] / 64
    flip = np.abs(expected.min((1, 2))) > np.abs(expected.max((1, 2)))
    np.testing.assert_allclose(ours, np.where(flip[:, None, None], -expected, expected),
                               atol=1e-6)


def test_score_cam_analytic():
    # the score is linear in the image, so every masked score has a closed form
    rng = np.random.default_rng(2)
    p = rng.random((3, 5)).astype(np.float32)
    c = rng.normal(size=5).astype(np.float32)
    w = (20 * rng.normal(size=(5, 3))).astype(np.float32)
    m = linear_model(p, c, w)
    x = rng.random((2, 8, 8, 3)).astype(np.float32)
    target = np.array([2, 0])
    a = x.astype(np.float64) @ p + c  # [N, 8, 8, C]; the layer has the input's size, so the
    lo, hi = a.min((1, 2), keepdims=True), a.max((1, 2), keepdims=True)  # upsampling is exact
    mask = (a - lo) / (hi - lo + 1e-8)  # [N, 8, 8, C]
    masked = x[:, None] * np.moveaxis(mask, -1, 1)[..., None]  # [N, C, 8, 8, 3]
    scores = np.einsum("nkc,cn->nk", (masked @ p).mean((2, 3)) + c, w[:, target])  # [N, C]
    weights = np.exp(scores - scores.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    assert weights.max() > 2 * weights.min()  # not uniform: the scores matter
    expected = np.einsum("nhwc,nc->nhw", a, weights)
    for bs in (None, 2):  # 2 does not divide 5 channels
        ours = np.asarray(score_cam(m, x, target, "maps", relu=False, upsample=False,
                                    batch_size=bs))
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_align_corners_matrix_is_torch_upsampling():
    t = torch.nn.UpsamplingBilinear2d(size=(11, 7))
    a = np.random.default_rng(0).random((1, 1, 3, 4), dtype=np.float32)
    theirs = t(torch.from_numpy(a))[0, 0].numpy()
    ry, rx = cams._align_corners_matrix(11, 3, jnp.float32), cams._align_corners_matrix(7, 4,
                                                                                      jnp.float32)
    np.testing.assert_allclose(ry @ a[0, 0] @ rx.T, theirs, atol=1e-6)


def test_postprocess_is_pytorch_grad_cams():
    # BaseCAM.compute_cam_per_layer + aggregate_multi_layers on one layer: ReLU,
    # scale_cam_image with cv2.resize (INTER_LINEAR), ReLU, scale_cam_image
    from pytorch_grad_cam.utils.image import scale_cam_image

    cam = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    for size in ((20, 12), (7, 4), (5, 3), (3, 2)):  # up by integers, up, same, down
        theirs = scale_cam_image(np.maximum(scale_cam_image(np.maximum(cam, 0), size[::-1]), 0))
        ours = cams._finish(jnp.asarray(cam), size, True, True, "bilinear", "pytorch_grad_cam")
        np.testing.assert_allclose(ours, theirs, atol=1e-6, err_msg=str(size))


# --- batching, jit, vmap, options --------------------------------------------------------------

@pytest.fixture(scope="session")
def mini_x():
    return np.asarray(ji.data.shapes(jax.random.key(4), 3).images)


@pytest.mark.parametrize("method", [
    pytest.param("grad_cam_plus_plus", marks=pytest.mark.slow),
    pytest.param("eigen_cam", marks=pytest.mark.slow), "score_cam",
    pytest.param("ablation_cam", marks=pytest.mark.slow)])
def test_examples_are_independent(mini, mini_x, method):
    fn, x, target = OURS[method], mini_x, np.array([1, 4, 6])
    kw = {"batch_size": 40} if method in FORWARD_HEAVY else {}
    batch = np.asarray(fn(mini, x, target, **kw))
    assert batch.shape == x.shape[:3] and np.isfinite(batch).all() and batch.max() > 0
    one = np.asarray(fn(mini, x[1:2], target[1:2], **kw))
    # one image vs a batch of 3: other compiled kernels, float32; 1e-4 of the largest value,
    # the parity bound (ablation_cam was 1.8e-5 off on an AMD EPYC, above the former 1e-6)
    np.testing.assert_allclose(one[0], batch[1], rtol=1e-5, atol=1e-4 * np.abs(batch).max())


@pytest.mark.parametrize("method", ["eigen_cam", "grad_cam_plus_plus"])
def test_jit_and_vmap(mini, mini_x, method):
    fn, x, target = OURS[method], jnp.asarray(mini_x[:2]), jnp.asarray([1, 4])
    kw = {"batch_size": 40} if method in FORWARD_HEAVY else {}
    batch = np.asarray(fn(mini, x, target, **kw))
    jitted = jax.jit(lambda x, t: fn(mini, x, t, **kw))(x, target)
    np.testing.assert_allclose(jitted, batch, rtol=1e-5, atol=1e-6 * np.abs(batch).max())
    mapped = jax.vmap(lambda xi, ti: fn(mini, xi[None], ti[None], **kw)[0])(x, target)
    np.testing.assert_allclose(mapped, batch, rtol=1e-4, atol=1e-5 * np.abs(batch).max())


def test_one_compilation_per_configuration(mini, mini_x):
    x = mini_x[:2]
    layer_cam(mini, x, np.array([0, 1]))
    size = cams._cams._cache_size()
    layer_cam(mini, x, np.array([2, 7]))  # new classes: the same program
    assert cams._cams._cache_size() == size

    def third(logits, feats):
        return logits[:, 3]

    by_class = np.asarray(layer_cam(mini, x, np.array([3, 3])))
    np.testing.assert_allclose(layer_cam(mini, x, third), by_class, rtol=1e-6)
    layer_cam(mini, x, third)  # the same callable again: no new program
    assert cams._cams._cache_size() == size + 1


def test_postprocess_and_options(mini, mini_x):
    x, t = mini_x[:2], np.array([0, 1])
    raw = np.asarray(layer_cam(mini, x, t, relu=False, upsample=False))
    ours = np.asarray(layer_cam(mini, x, t))
    np.testing.assert_allclose(ours, np.asarray(cams._resize(jnp.maximum(jnp.asarray(raw), 0),
                                                             x.shape[1:3], "bilinear")),
                               rtol=1e-6, atol=1e-7)
    pp = np.asarray(layer_cam(mini, x, t, postprocess="pytorch_grad_cam"))
    assert pp.min() >= 0 and np.allclose(pp.max((1, 2)), 1, atol=1e-5)
    nearest = np.asarray(layer_cam(mini, x, t, interpolation="nearest"))
    np.testing.assert_allclose(nearest[:, ::8, ::8], np.maximum(raw, 0), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="postprocess must be one of"):
        layer_cam(mini, x, t, postprocess="opencv")
    with pytest.raises(ValueError, match="relu=False needs postprocess='jaxinterp'"):
        layer_cam(mini, x, t, relu=False, postprocess="pytorch_grad_cam")
    with pytest.raises(ValueError, match="interpolation"):
        layer_cam(mini, x, t, interpolation="cubic")
    with pytest.raises(ValueError, match="batch_size"):
        score_cam(mini, x, t, batch_size=0)
    with pytest.raises(ValueError, match="spatial layer"):
        layer_cam(mini, x, t, layer="classifier.0")
    with pytest.raises(ValueError, match="target is required"):
        layer_cam(mini, x, None)
    assert eigen_cam(mini, x).shape == x.shape[:3]  # no target needed



# --- several layers, aug_smooth, FullGrad --------------------------------------------------

@pytest.fixture
def sign_corrected(monkeypatch):
    """pytorch-grad-cam's `get_2d_projection` with each map flipped so that its largest magnitude
    is positive (our `sign_correction=True`). The SVD's own sign depends on the LAPACK build:
    NumPy's OpenBLAS and SciPy's (which JAX on CPU calls) give opposite signs for some maps
    (measured: Layer-CAM at VGG11's features.9, one image of two), so eigen_smooth parity is
    tested with the sign fixed on both sides."""
    import sys

    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    def corrected(a):
        p = get_2d_projection(a)
        flip = np.abs(p.min((1, 2))) > np.abs(p.max((1, 2)))
        return np.where(flip[:, None, None], -p, p).astype(np.float32)

    modules = [mod for name, mod in list(sys.modules.items())  # each CAM imports it by name
               if name.startswith("pytorch_grad_cam.") and not name.endswith(".utils")
               and getattr(mod, "get_2d_projection", None) is get_2d_projection]
    assert len(modules) >= 8
    for mod in modules:
        monkeypatch.setattr(mod, "get_2d_projection", corrected)


def theirs_full_grad(tm, x, target, eigen_smooth=(False,)):
    """pytorch-grad-cam's FullGrad from one forward and backward pass: its terms before the
    absolute value (`x dS/dx` and `b dS/dz` per biased layer, in its order) and its output
    (`compute_cam_per_layer` + `aggregate_multi_layers`) with and without eigen_smooth."""
    cam = pgc.FullGrad(model=tm, target_layers=[])
    inp = nchw(x).detach().requires_grad_(True)
    targets = [ClassifierOutputTarget(int(c)) for c in target]
    try:
        outputs = cam.activations_and_grads(inp)
        tm.zero_grad()
        sum(t(o) for t, o in zip(targets, outputs)).backward(retain_graph=True)
        terms = [b[None, :, None, None] * g.numpy()
                 for b, g in zip(cam.bias_data, cam.activations_and_grads.gradients)]
        full = {e: cam.aggregate_multi_layers(cam.compute_cam_per_layer(inp, targets, e))
                for e in eigen_smooth}
    finally:
        cam.activations_and_grads.release()
    return (inp.grad * inp).detach().numpy(), terms, full


# conv biases only (VGG11), conv biases and BatchNorm (VGG11_bn), BatchNorm only (ResNet-18)
BIASED_LAYERS = {"vgg11": 8, "vgg11_bn": 16, "resnet18": 20}


# the default run: ResNet-18 (BatchNorm biases; the completeness test below checks conv and
# BatchNorm biases on vgg-mini); VGG11_bn (conv + BatchNorm, eigen_smooth, ~50 s) is slow
@pytest.mark.parametrize("model", [pytest.param("vgg11", marks=pytest.mark.slow),
                                   pytest.param("vgg11_bn", marks=pytest.mark.slow),
                                   "resnet18"])  # VGG11_bn has VGG11's conv biases too
def test_full_grad_parity(pairs, sign_corrected, model):
    name, jm, tm, _, _, x, target = pairs(model)
    eigen = (False, True) if model == "vgg11_bn" else (False,)
    inp, terms, full = theirs_full_grad(tm, x, target, eigen)
    # the terms, layer by layer: which layers, each bias (BatchNorm's effective one), its gradient
    ours_inp, ours_terms = full_grad_terms(jm, x, target)
    assert len(ours_terms) == len(terms) == BIASED_LAYERS[model]
    assert_close(np.asarray(ours_inp).transpose(0, 3, 1, 2), inp, key=f"{name} full_grad input")
    for (layer, ours), theirs_ in zip(ours_terms.items(), terms):
        assert_close(np.asarray(ours).transpose(0, 3, 1, 2), theirs_, key=f"{name} full_grad "
                     f"{layer}")
    assert_close(full_grad(jm, x, target, postprocess="pytorch_grad_cam"), full[False],
                 key=f"{name} full_grad postprocess=pytorch_grad_cam")
    if True in eigen:
        assert_close(full_grad(jm, x, target, postprocess="pytorch_grad_cam", eigen_smooth=True,
                               sign_correction=True), full[True],
                     key=f"{name} full_grad eigen_smooth")
        # postprocess="jaxinterp": the unscaled maps' sum, each layer's upsampled (cv2's
        # INTER_LINEAR is the same bilinear upsampling)
        import cv2

        size = x.shape[2:0:-1]
        expected = np.abs(inp).sum(1) + sum(
            np.stack([cv2.resize(m, size) for m in np.abs(t).sum(1)]) for t in terms)
        assert_close(full_grad(jm, x, target), expected, key=f"{name} full_grad jaxinterp")


@pytest.mark.parametrize("model", ["vgg-mini", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_full_grad_completeness(pairs, model):
    # ReLUs, max pooling, BatchNorm in inference and dense layers: the score is the input term
    # plus every bias term, the biases FullGrad takes (convolutions, BatchNorm's effective bias)
    # and the two it leaves out: the preprocessing's offset -mean/std and the dense layer's bias
    _, jm, _, _, _, x, target = pairs(model)
    inp, terms = full_grad_terms(jm, x, target)
    rows = np.arange(len(target))
    score = np.asarray(jm(x)[0])[rows, target]
    g = np.asarray(jax.grad(lambda x: jm(x, check=False)[0][rows, target].sum())(jnp.asarray(x)))
    pre = jm.preprocess
    assert pre.channel_order == "RGB"
    offset = -(g * np.asarray(pre.mean) / pre.scale).sum((1, 2, 3))  # (-mean/std) * dS/d(input)
    head = jm.params["classifier_0"] if model == "vgg-mini" else jm.variables["params"]["fc"]
    parts = [np.asarray(inp).sum((1, 2, 3)), offset, np.asarray(head["bias"])[target]]
    parts += [np.asarray(t, np.float64).sum((1, 2, 3)) for t in terms.values()]
    assert np.abs(np.asarray(parts[3:])).max() > 0.1 * np.abs(score).max()  # biases matter
    # measured: 2e-8 (vgg-mini), 1.4e-7 (ResNet-18) of the terms' magnitudes
    np.testing.assert_allclose(np.sum(parts, 0), score, rtol=0,
                               atol=1e-5 * np.abs(np.asarray(parts)).sum(0).max())


def test_full_grad_wrapped_model_and_options():
    # a = x p + c under a GAP + dense head without bias: S = sum(x dS/dx) + sum(c dS/da)
    rng = np.random.default_rng(5)
    p, c = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    m = linear_model(p, c, rng.normal(size=(4, 3)).astype(np.float32))
    x, target = rng.random((2, 8, 8, 3), dtype=np.float32), np.array([1, 2])
    with pytest.raises(ValueError, match="pass biases="):
        full_grad(m, x, target)
    inp, terms = full_grad_terms(m, x, target, biases={"maps": c})
    score = np.asarray(m(x)[0])[np.arange(2), target]
    np.testing.assert_allclose(np.asarray(inp).sum((1, 2, 3)) + terms["maps"].sum((1, 2, 3)),
                               score, rtol=1e-5, atol=1e-5)
    ours = np.asarray(full_grad(m, x, target, biases={"maps": c}))
    expected = np.abs(inp).sum(-1) + np.abs(terms["maps"]).sum(-1)  # the layer is input-sized
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6 * expected.max())
    with pytest.raises(ValueError, match="bias of shape"):
        full_grad(m, x, target, biases={"maps": c[:3]})
    with pytest.raises(ValueError, match="too small"):  # eigen_smooth projects at 1/8
        full_grad(m, x[:, :4, :4], target, biases={"maps": c}, eigen_smooth=True)
    with pytest.raises(ValueError, match="relu=False needs"):
        full_grad(m, x, target, biases={"maps": c}, relu=False, postprocess="pytorch_grad_cam")


def two_layer_model(seed):
    """A wrapped function model, not flip-equivariant (a position-dependent offset) nor
    homogeneous: layers "maps" (`x @ p + c + offset`, 8x8) and "pooled" (its 2x2 averages,
    4x4) under ReLU, GAP and a dense layer."""
    rng = np.random.default_rng(seed)
    params = {"p": rng.normal(size=(3, 6)), "offset": rng.normal(size=(8, 8, 6)),
              "c": rng.normal(size=6) + 0.5, "w": rng.normal(size=(6, 4))}

    def fn(params, x):
        a = x @ params["p"] + params["c"] + params["offset"]
        n, h, w, k = a.shape
        b = a.reshape(n, h // 2, 2, w // 2, 2, k).mean((2, 4))
        return jax.nn.relu(b).mean((1, 2)) @ params["w"], {"maps": a, "pooled": b}

    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    return ji.wrap(fn, params, input_size=(8, 8)), rng


@pytest.mark.parametrize("method", ["hires_cam", "score_cam"])
def test_several_layers_aggregate_as_pytorch_grad_cam(method):
    # each layer's raw map as one layer gives it, aggregated: jaxinterp's mean of the upsampled
    # maps, and pytorch-grad-cam's own compute_cam_per_layer + aggregate_multi_layers steps
    from pytorch_grad_cam.utils.image import scale_cam_image

    m, rng = two_layer_model(8)
    x, target, fn, layers = rng.random((2, 8, 8, 3), dtype=np.float32), np.array([0, 3]), \
        OURS[method], ["maps", "pooled"]
    raw = [np.asarray(fn(m, x, target, k, relu=False, upsample=False)) for k in layers]
    assert raw[0].shape == (2, 8, 8) and raw[1].shape == (2, 4, 4)
    assert all((r < 0).any() and (r > 0).any() for r in raw)  # the ReLUs matter
    def up(r):  # as one layer: ReLU (relu=True), then the upsampling
        return np.asarray(cams._resize(jnp.asarray(r), (8, 8), "bilinear"))

    ours = np.asarray(fn(m, x, target, layers, relu=False))
    expected = (up(raw[0]) + up(raw[1])) / 2
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    ours = np.asarray(fn(m, x, target, tuple(layers)))
    expected = (up(np.maximum(raw[0], 0)) + up(np.maximum(raw[1], 0))) / 2
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6 * expected.max())
    per_layer = [scale_cam_image(np.maximum(r, 0), (8, 8))[:, None] for r in raw]
    theirs_ = pgc.GradCAM.aggregate_multi_layers(None, per_layer)
    assert_close(fn(m, x, target, layers, postprocess="pytorch_grad_cam"), theirs_)
    with pytest.raises(ValueError, match="one resolution"):
        fn(m, x, target, layers, upsample=False)
    with pytest.raises(ValueError, match="empty list"):
        fn(m, x, target, [])


def test_aug_smooth_is_the_mean_of_flipped_back_maps():
    # ttach's 6 augmentations by hand, on images in [0, 0.9] (so that x 1.1 stays in [0, 1]),
    # at the layer's resolution and signed (upsample=False, relu=False)
    m, rng = two_layer_model(7)
    x, target = 0.9 * rng.random((2, 8, 8, 3), dtype=np.float32), np.array([1, 2])
    for layer in ("pooled", ["maps", "pooled"]):
        kw = {"relu": False, "upsample": isinstance(layer, list)}
        maps = []
        for flip in (False, True):
            for factor in (0.9, 1.0, 1.1):
                xa = (x[:, :, ::-1] if flip else x) * np.float32(factor)
                cam = np.asarray(hires_cam(m, xa, target, layer, **kw))
                maps.append(cam[:, :, ::-1] if flip else cam)
        expected = np.mean(maps, 0)
        ours = np.asarray(hires_cam(m, x, target, layer, aug_smooth=True, **kw))
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
        assert np.abs(ours - np.asarray(hires_cam(m, x, target, layer, **kw))).max() > 0.01 * \
            np.abs(expected).max()  # the augmentations change the map


# pytorch-grad-cam's whole pipeline (its __call__) on VGG11 at 32x32: several layers
# (features.9, 8x8, and features.14, 4x4), aug_smooth, and both, with and without eigen_smooth.
# Not FullGrad with both aug_smooth and eigen_smooth: measured 1.2e-5. FullGrad scales every
# channel's |b dS/dz| to [0, 1] on its own, so a channel of ~4e-8 (features.18 of one flipped
# copy: the gradient a near-cancelling sum, 3.5e-3 apart in float32 between torch and XLA) comes
# out 7e-4 apart; the projection of the 1/8-size maps carries that to the output. Each option
# alone is tested (eigen_smooth: test_full_grad_parity, 3.8e-6; aug_smooth: here, 1.4e-6).
AUG_CASES = [pytest.param(method, layers, aug, eigen, marks=[pytest.mark.slow] if slow else [],
                          id=f"{method}-{'+'.join(map(str, layers)) or 'biases'}-aug={aug}-"
                          f"eigen={eigen}")
             for method, layers, aug, eigen, slow in [
                 ("layer_cam", (9, 14), False, False, True),  # the next case covers it
                 ("hires_cam", (9, 14), True, True, False),
                 ("full_grad", (), True, False, True),  # FullGrad's parity: default run
                 ("layer_cam", (9, 14), False, True, True),
                 ("grad_cam_plus_plus", (14,), True, False, True),
                 ("eigen_cam", (9, 14), True, False, True)]]


@pytest.mark.parametrize("method, layers, aug_smooth, eigen_smooth", AUG_CASES)
def test_several_layers_and_aug_smooth_parity(pairs, sign_corrected, method, layers, aug_smooth,
                                              eigen_smooth):
    name, jm, tm, _, _, x, target = pairs("vgg11")
    net = tm.net
    cls = "FullGrad" if method == "full_grad" else THEIRS[method]
    cam = getattr(pgc, cls)(model=tm, target_layers=[net.features[i] for i in layers])
    try:
        theirs_ = cam(input_tensor=nchw(x).detach(), aug_smooth=aug_smooth,
                      targets=[ClassifierOutputTarget(int(c)) for c in target],
                      eigen_smooth=eigen_smooth)
    finally:
        cam.activations_and_grads.release()
    kw = {"eigen_smooth": True, "sign_correction": True} if eigen_smooth else {}
    if method == "full_grad":
        ours = full_grad(jm, x, target, postprocess="pytorch_grad_cam", aug_smooth=aug_smooth,
                         **kw)
    else:
        if method == "eigen_cam":
            kw = {"sign_correction": True}
        ours = OURS[method](jm, x, target, [f"features.{i}" for i in layers],
                            postprocess="pytorch_grad_cam", aug_smooth=aug_smooth, **kw)
    assert_close(ours, theirs_, key=f"{name} {method} layers {layers} aug_smooth={aug_smooth} "
                 f"eigen_smooth={eigen_smooth}")
