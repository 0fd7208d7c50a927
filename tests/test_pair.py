"""PAIR's Guided IG, Blur IG and XRAI (`attribution.pair`) against PAIR's `saliency` 0.2.1 run on
our model's gradient, and their analytic properties on small models."""

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

import jaxinterp as ji
from parity_errors import rel_err
from jaxinterp.attribution import pair, segments

S = 16  # side of the small models' images


def small_cnn(p, x):
    """A small nonlinear network (conv, ReLU, max-pool, dense) for the fast tests."""
    h = jax.lax.conv_general_dilated(x, p["k"].astype(x.dtype), (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jnp.maximum(h + p["b"], 0.0)
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return h.reshape(h.shape[0], -1) @ p["w"], {"conv": h}


def linear(p, x):
    return x.reshape(x.shape[0], -1) @ p


@pytest.fixture(scope="module")
def cnn():
    rng = np.random.default_rng(7)  # numpy draws: no compilations
    params = {"k": rng.normal(size=(3, 3, 3, 6)) * 0.5, "b": rng.normal(size=6) * 0.1,
              "w": rng.normal(size=((S // 2) ** 2 * 6, 5)) * 0.1}
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    return ji.wrap(small_cnn, params, input_size=(S, S))


@pytest.fixture(scope="module")
def lin():
    w = np.random.default_rng(0).normal(size=(S * S * 3, 4)).astype(np.float32)
    return ji.wrap(linear, jnp.asarray(w), input_size=(S, S)), w


@pytest.fixture(scope="module")
def small_x():
    return np.random.default_rng(11).random((3, S, S, 3), np.float32), np.array([1, 4, 2])


# -- PAIR ------------------------------------------------------------------------------------


class _NumPy(types.ModuleType):
    """numpy, with `quantile(..., interpolation=)` (removed in NumPy 2.4; PAIR's Guided IG
    calls it) mapped to `method=`."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def quantile(a, q, interpolation=None, **kwargs):
        return np.quantile(a, q, method=interpolation or kwargs.pop("method", "linear"), **kwargs)


@pytest.fixture(scope="module")
def sal():
    pytest.importorskip("skimage")
    core = pytest.importorskip("saliency.core")
    from saliency.core import guided_ig as gig, xrai as xr

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gig, "np", _NumPy("numpy"))
        yield types.SimpleNamespace(core=core, xrai=xr)


@pytest.fixture(scope="module")
def pair_model(sal):
    """`pair_model(m)(c)`: PAIR's `call_model_function` for class `c`, our model's input
    gradient (float64; one compiled gradient per model)."""
    grads = {}

    def for_model(m):
        if id(m) not in grads:
            grads[id(m)] = jax.jit(
                lambda z, c: jax.grad(lambda z: m(z, check=False)[0][:, c].sum())(z))
        grad = grads[id(m)]

        def for_class(c):
            def call(batch, call_model_args=None, expected_keys=None):
                g = np.asarray(grad(jnp.asarray(np.asarray(batch, np.float64)), c))
                return {sal.core.INPUT_OUTPUT_GRADIENTS: g}
            return call

        return for_class

    return for_model


def blobs(n, size, seed):
    """Images of a few flat discs and boxes on a shaded background, values in [0.05, 0.95]
    (so PAIR's default XRAI baselines, the image's min and max, are not black and white)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for _ in range(n):
        im = rng.random(3) * 0.5 + 0.3 * (yy[..., None] * rng.random(3)
                                          + xx[..., None] * rng.random(3))
        for _ in range(4):
            cy, cx, r = rng.random(3) * [1, 1, 0.3] + [0, 0, 0.1]
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r if rng.random() < 0.5 else \
                (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r / 2)
            im[inside] = rng.random(3)
        out.append(0.05 + 0.9 * im.clip(0, 1))
    return np.stack(out)


@pytest.fixture(scope="module")
def images():
    """Two 32 x 32 images in float64, and their classes."""
    return blobs(2, 32, 21), np.array([3, 5])


def test_guided_ig_matches_pair(sal, pair_model, mini, images):
    x, y = images
    with jax.enable_x64(True):
        ours = np.asarray(pair.guided_ig(mini, x, y, steps=16))
        call = pair_model(mini)
        theirs = np.stack([sal.core.GuidedIG().GetMask(x[i], call(y[i]), x_steps=16)
                           for i in range(len(x))])
    assert ours.dtype == np.float64
    assert rel_err(ours, theirs) <= 1e-4  # measured 1e-15


def test_guided_ig_options_match_pair(sal, pair_model, cnn, small_x):
    x, y = small_x
    base = np.random.default_rng(3).random(x.shape[1:])  # no feature equal to the input
    base[0, 0] = x[0, 0, 0]  # ... except one of the first image's (PAIR: alpha undefined)
    call = pair_model(cnn)
    with jax.enable_x64(True):
        x = x.astype(np.float64)
        for fraction, max_dist in [(0.1, 0.1), (0.5, 1.0), (0.02, 0.0)]:
            ours = np.asarray(pair.guided_ig(cnn, x, y, baseline=base, steps=12,
                                             fraction=fraction, max_dist=max_dist))
            theirs = np.stack([sal.core.GuidedIG().GetMask(
                x[i], call(y[i]), x_baseline=base, x_steps=12, fraction=fraction,
                max_dist=max_dist) for i in range(len(x))])
            assert rel_err(ours, theirs) <= 1e-4, (fraction, max_dist)  # measured 1e-15


def test_blur_ig_matches_pair(sal, pair_model, mini, images):
    x, y = images
    call = pair_model(mini)
    with jax.enable_x64(True):
        for kw in ({}, {"sqrt": True, "max_sigma": 6}):
            ours = np.asarray(pair.blur_ig(mini, x, y, steps=12, **kw))
            # PAIR's batch_size=1 (its default): with larger batches PAIR weights every step of
            # a batch by the sigma increment of the batch's last step (wrong for sqrt=True)
            theirs = np.stack([sal.core.BlurIG().GetMask(x[i], call(y[i]), steps=12,
                                                         batch_size=1, **kw)
                               for i in range(len(x))])
            assert rel_err(ours, theirs) <= 1e-4, kw  # measured 1e-13


def test_blur_matches_scipy():
    """The blur itself: scipy.ndimage.gaussian_filter(x, [s, s, 0], mode="constant") for
    sigmas from below the first nonzero radius to far wider than the image."""
    x = np.random.default_rng(0).random((2, 20, 13, 3))
    half = 19
    blur = jax.jit(pair._blur, static_argnums=2)
    with jax.enable_x64(True):
        for s in (0.01, 0.2, 0.5, 1.3, 2.6, 7.0, 50.0):
            ours = np.asarray(blur(jnp.asarray(x), jnp.asarray(pair.gaussian_weights(s, half)),
                                   half))
            theirs = np.stack([ndimage.gaussian_filter(im, [s, s, 0], mode="constant")
                               for im in x])
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-14, err_msg=str(s))


@pytest.fixture(scope="module")
def pair_masks(sal, images):
    return [np.stack(sal.xrai._get_segments_felzenszwalb(im)) for im in images[0]]


def test_segments_match_pair(images, pair_masks):
    ours = segments.felzenszwalb_masks(images[0])
    for i, theirs in enumerate(pair_masks):
        np.testing.assert_array_equal(ours[i, : len(theirs)], theirs)
        assert not ours[i, len(theirs):].any()  # padding: empty masks


def test_xrai_matches_pair(sal, pair_model, mini, images, pair_masks):
    x, y = images
    call = pair_model(mini)
    with jax.enable_x64(True):
        for area in (1.0, 0.3):
            heat, ranks = pair.xrai(mini, x, y, steps=8, segments=pair_masks, area_threshold=area,
                                    return_ranks=True)
            for i in range(len(x)):
                params = sal.xrai.XRAIParameters(steps=8, area_threshold=area,
                                                 return_xrai_segments=True)
                theirs = sal.core.XRAI().GetMaskWithDetails(
                    x[i], call(y[i]), segments=list(pair_masks[i]), batch_size=8,
                    extra_parameters=params)
                # region order: identical; heatmap: PAIR sums its IG gradients in float32
                np.testing.assert_array_equal(np.asarray(ranks[i]), theirs.segments)
                assert rel_err(heat[i], theirs.attribution_mask) <= 1e-6  # measured 1e-8
                assert theirs.segments.max() >= 3  # a real ranking, not one region


def test_xrai_base_attribution_matches_pair(sal, cnn, small_x):
    """XRAI over a given attribution (PAIR's `base_attribution`; channels reduced by their max),
    random overlapping regions."""
    x, y = small_x
    rng = np.random.default_rng(4)
    attr = rng.normal(size=x.shape)
    masks = [np.stack([rng.random((S, S)) < p for p in rng.uniform(0.05, 0.5, 30)])
             for _ in x]
    with jax.enable_x64(True):
        heat, ranks = pair.xrai(cnn, x.astype(np.float64), y, segments=masks, min_pixel_diff=3,
                                base_attribution=attr, return_ranks=True)
    for i in range(len(x)):
        params = sal.xrai.XRAIParameters(return_xrai_segments=True)
        params.experimental_params["min_pixel_diff"] = 3
        theirs = sal.core.XRAI().GetMaskWithDetails(
            x[i], None, segments=list(masks[i]), base_attribution=attr[i],
            extra_parameters=params)
        np.testing.assert_array_equal(np.asarray(ranks[i]), theirs.segments)
        np.testing.assert_allclose(np.asarray(heat[i]), theirs.attribution_mask, rtol=1e-12)


# -- analytic properties ----------------------------------------------------------------------


def test_xrai_greedy_by_hand(cnn):
    """4 x 4 image; regions A (top-left block, attribution 1), B (top-right, 3), D = A | B
    (density 2 overall, 1 once B is in), C (bottom half, 2), listed A, B, D, C.
    Greedy by the density of the pixels a region adds: B, then C (not D: D adds only A's
    pixels), then A (ties D; the first listed wins), D adds nothing."""
    attr = np.zeros((4, 4))
    attr[:2, :2], attr[:2, 2:], attr[2:] = 1, 3, 2
    a = np.zeros((4, 4), bool)
    a[:2, :2] = True
    b = np.zeros((4, 4), bool)
    b[:2, 2:] = True
    c = np.zeros((4, 4), bool)
    c[2:] = True
    masks = np.stack([a, b, a | b, c])
    x = np.full((1, 4, 4, 3), 0.5)

    def run(**kw):
        heat, ranks = pair.xrai(cnn, x, 0, segments=masks, base_attribution=attr[None],
                                return_ranks=True, **{"min_pixel_diff": 1, **kw})
        return np.asarray(heat[0]), np.asarray(ranks[0])

    heat, ranks = run()
    np.testing.assert_array_equal(heat, attr)  # each region's own density
    np.testing.assert_array_equal(ranks, np.select([b, c, a], [1, 2, 3]))
    # area 0.25 <= 0.25 goes on to add C; below that XRAI stops after B and the rest (A and
    # C: mean (4 + 16) / 12) is one last region
    heat, ranks = run(area_threshold=0.25)
    np.testing.assert_array_equal(ranks, np.select([b, c, a], [1, 2, 3]))
    heat, ranks = run(area_threshold=0.2)
    np.testing.assert_allclose(heat, np.where(b, 3, 20 / 12))
    np.testing.assert_array_equal(ranks, np.where(b, 1, 2))
    # min_pixel_diff=8 drops the 4-pixel A and B at once; D and C (8 pixels each, density 2)
    # tie: D, listed first, goes first
    heat, ranks = run(min_pixel_diff=8)
    np.testing.assert_array_equal(heat, np.full((4, 4), 2.0))
    np.testing.assert_array_equal(ranks, np.where(a | b, 1, 2))


def test_guided_ig_completeness_on_a_linear_model(lin, small_x):
    m, w = lin
    x, _ = small_x
    f = lambda z: np.asarray(z, np.float64).reshape(len(z), -1) @ w  # noqa: E731
    for kw in ({}, {"baseline": 0.5, "fraction": 0.1, "max_dist": 0.5}):
        a = np.asarray(pair.guided_ig(m, x, 1, steps=30, **kw), np.float64)
        base = np.full_like(x, kw.get("baseline", 0.0))
        np.testing.assert_allclose(a.sum((1, 2, 3)), f(x)[:, 1] - f(base)[:, 1], rtol=2e-5)


def test_guided_ig_without_deviation_is_left_riemann_ig(cnn, small_x):
    """max_dist = 0 keeps the path on the straight line: PAIR's Guided IG is then IG with the
    left Riemann rule (in float32 PAIR itself would loop forever at the step where every
    feature sits at the limit but rounding leaves the L1 target a hair away)."""
    x, y = small_x
    gig = np.asarray(pair.guided_ig(cnn, x, y, steps=6, max_dist=0.0))
    ig = np.asarray(ji.integrated_gradients(cnn, x, y, steps=6, method="riemann_left"))
    np.testing.assert_allclose(gig, ig, rtol=1e-4, atol=1e-5 * np.abs(ig).max())
    assert rel_err(pair.guided_ig(cnn, x, y, steps=6), ig) > 1e-2  # the guided path differs


def test_blur_ig_completeness_on_a_linear_model(lin, small_x):
    """With grad_step = max_sigma / steps, PAIR's forward differences telescope: on a linear
    model the sum is f(x) - f(x blurred by max_sigma) (from scipy) up to rounding. (With
    coarser steps it is only approximate: 5e-3 off at 100 steps here.)"""
    m, w = lin
    x, _ = small_x
    f = lambda z: np.asarray(z, np.float64).reshape(len(z), -1) @ w  # noqa: E731
    blurred = np.stack([ndimage.gaussian_filter(im, [4, 4, 0], mode="constant") for im in x])
    a = np.asarray(pair.blur_ig(m, x, 1, max_sigma=4, steps=400, grad_step=0.01), np.float64)
    np.testing.assert_allclose(a.sum((1, 2, 3)), f(x)[:, 1] - f(blurred)[:, 1], rtol=1e-5)


# -- batching, wrapped models, jit ----------------------------------------------------------


@pytest.fixture(scope="module")
def small_masks(small_x):
    pytest.importorskip("skimage")
    return segments.felzenszwalb_masks(small_x[0])


def xrai_small(cnn, x, y, masks, **kw):
    return pair.xrai(cnn, x, y, steps=4, segments=masks, min_pixel_diff=2, **kw)


def test_examples_do_not_interact(cnn, small_x, small_masks):
    """Batch == per example: an image's result does not change when the other images of its
    batch are replaced (same shapes, so no new compilations; the PAIR parity tests compare
    batches with PAIR's one-image runs). Guided IG's inner loop runs until every image is done."""
    x, y = small_x
    other = np.random.default_rng(12).random(x.shape, np.float32)
    x2, y2 = np.concatenate([x[:1], other[1:]]), np.array([y[0], 0, 3])
    masks = small_masks
    masks2 = np.concatenate([masks[:1], masks[1:, ::-1]])
    runs = {"guided_ig": lambda x, y, _: pair.guided_ig(cnn, x, y, steps=6),
            "blur_ig": lambda x, y, _: pair.blur_ig(cnn, x, y, steps=6),
            "xrai": lambda x, y, masks: xrai_small(cnn, x, y, masks)}
    for name, run in runs.items():
        a, b = np.asarray(run(x, y, masks)), np.asarray(run(x2, y2, masks2))
        np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-7 * np.abs(a[0]).max(),
                                   err_msg=name)
        assert rel_err(a[1:], b[1:]) > 1e-2, name  # the others did change
    # chunked path points: the same sums
    # float32, the blurs and gradients compiled for batches of 4 and of 6 (other convolution
    # kernels): within 1e-4 of the map's largest magnitude, the parity tests' bound (an
    # absolute 1e-9 failed on an AMD EPYC: 4.8e-6 off on a map whose largest entry is 0.076)
    chunked, whole = (pair.blur_ig(cnn, x, y, steps=6, batch_size=4),
                      pair.blur_ig(cnn, x, y, steps=6))
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-4 * np.abs(whole).max())


def test_under_jit(cnn, small_x, small_masks):
    """XRAI (masks given, path points chunked) inside a user's jit; without masks, a clear
    error (segmentation runs on the host)."""
    x, y = small_x
    np.testing.assert_allclose(
        jax.jit(lambda x: xrai_small(cnn, x, y, small_masks, batch_size=3))(x),
        xrai_small(cnn, x, y, small_masks), rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="pass segments="):
        jax.jit(lambda x: pair.xrai(cnn, x, y, steps=4))(x)


def test_xrai_default_segments(cnn, small_x, small_masks):
    """segments=None: PAIR's Felzenszwalb masks, padded (PAIR's default baselines are checked
    by test_xrai_matches_pair, on images whose min and max are not 0 and 1)."""
    x, y = small_x
    assert small_masks.shape[:2] == (3, small_masks.shape[1]) and small_masks.shape[1] > 6
    np.testing.assert_array_equal(pair.xrai(cnn, x, y, steps=4, min_pixel_diff=2),
                                  xrai_small(cnn, x, y, small_masks))


def test_missing_scikit_image_names_the_extra(monkeypatch, small_x):
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(ImportError, match=r"jaxinterp\[xrai\].*segments="):
        segments.felzenszwalb_masks(small_x[0])


@pytest.mark.parametrize("fn, kw, err, match", [
    ("guided_ig", {"fraction": 0.0}, ValueError, r"fraction must be in \(0, 1\]"),
    ("guided_ig", {"fraction": 1.5}, ValueError, "fraction"),
    ("guided_ig", {"max_dist": -0.1}, ValueError, r"max_dist must be in \[0, 1\]"),
    ("guided_ig", {"steps": 0}, ValueError, "steps must be an int >= 1"),
    ("guided_ig", {"baseline": np.zeros((2, 2))}, ValueError, "does not broadcast"),
    ("blur_ig", {"max_sigma": 0}, ValueError, r"max_sigma must be in \(0"),
    ("blur_ig", {"grad_step": -1.0}, ValueError, "grad_step"),
    ("blur_ig", {"steps": 2.5}, TypeError, "steps must be an int"),
    ("blur_ig", {"batch_size": 0}, ValueError, "batch_size"),
    ("xrai", {"steps": 1}, ValueError, "steps must be an int >= 2"),
    ("xrai", {"area_threshold": 1.5}, ValueError, "area_threshold"),
    ("xrai", {"min_pixel_diff": 0}, ValueError, "min_pixel_diff"),
    ("xrai", {"segments": np.ones((4, 8, 8), bool)}, ValueError, "segments must be bool masks"),
    ("xrai", {"segments": np.ones((2, 4, S, S), bool)}, ValueError, "segments must be"),
    ("xrai", {"baselines": ()}, ValueError, "baselines is empty"),
    ("xrai", {"baselines": 0.0}, ValueError, "sequence of baselines"),
    ("xrai", {"base_attribution": np.zeros((3, S, S, 1))}, ValueError, "base_attribution must"),
])
def test_bad_options(cnn, small_x, fn, kw, err, match):
    x, y = small_x
    kw = {"segments": np.ones((4, S, S), bool), **kw} if fn == "xrai" else kw
    with pytest.raises(err, match=match):
        getattr(pair, fn)(cnn, x, y, **kw)
