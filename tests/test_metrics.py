"""`jaxinterp.metrics`: known answers, options, chunking, keys, one compiled program per call
shape, and clear errors. Most checks use a linear model (`ji.wrap` of `x · W + b`), whose
answers are known in closed form and which compiles in a blink; the layer randomisation of MPRT
uses vgg-mini. Parity with Quantus is in test_metrics_parity.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
import jaxinterp.metrics as metrics

SIZE = 16
F = SIZE * SIZE * 3  # features of a pixel attribution


def _linear(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


def linear_model(w, b=None):
    w = jnp.asarray(w, jnp.float32)
    b = jnp.zeros(w.shape[1], jnp.float32) if b is None else jnp.asarray(b, jnp.float32)
    return ji.wrap(_linear, {"w": w, "b": b}, input_size=(SIZE, SIZE))


@pytest.fixture(scope="module")
def lin():
    """A 3-class linear model, two images with minimum exactly 0 (so Quantus' "black"
    baseline, the image's minimum, is 0) and class targets."""
    rng = np.random.default_rng(0)
    m = linear_model(rng.normal(size=(F, 3)), rng.normal(size=3))
    x = rng.random((2, SIZE, SIZE, 3)).astype(np.float32)
    x[:, 0, 0, 0] = 0.0
    return m, x, np.array([0, 2])


def weights(m):
    """The linear model's W `[F, classes]`."""
    return np.asarray(m.variables["w"])


@pytest.fixture(scope="module")
def positive():
    """A linear model with positive weights and positive images: input × gradient ≥ 0."""
    rng = np.random.default_rng(1)
    m = linear_model(rng.random((F, 2)) + 0.1)
    x = (rng.random((2, SIZE, SIZE, 3)) * 0.9 + 0.1).astype(np.float32)
    x[:, 0, 0, 0] = 0.0
    return m, x, np.array([0, 1])


def logit(m, x, y):
    return np.asarray(m(jnp.asarray(x))[0])[np.arange(len(y)), y]


# --------------------------------------------------------------------------- complexity


def test_sparseness_known_answers():
    const = np.ones((1, SIZE, SIZE))
    one = np.zeros((1, SIZE, SIZE))
    one[0, 3, 4] = 5.0
    rand = np.random.default_rng(0).random((1, SIZE, SIZE))
    n = SIZE * SIZE
    assert metrics.sparseness(None, None, None, const) == pytest.approx([0.0], abs=1e-6)
    # one non-zero feature: the largest Gini index of n values, (n − 1) / n (up to 1e-7)
    assert metrics.sparseness(None, None, None, one) == pytest.approx([(n - 1) / n], abs=1e-4)
    assert metrics.sparseness(None, None, None, rand)[0] < (n - 1) / n - 0.1
    # a ramp 0, …, n − 1: the definition, after normalising and Quantus' + 1e-7
    ramp = np.arange(n, dtype=np.float64).reshape(1, SIZE, SIZE)
    k = np.arange(1, n + 1)
    v = np.sort(ramp.ravel() / ramp.max() + 1e-7)
    gini = ((2 * k - n - 1) * v).sum() / (n * v.sum())
    assert metrics.sparseness(None, None, None, ramp) == pytest.approx([gini], rel=1e-5)


def test_complexity_known_answers():
    n = SIZE * SIZE
    const = np.ones((2, SIZE, SIZE))
    one = np.zeros((2, SIZE, SIZE))
    one[:, 3, 4] = 2.0
    assert metrics.complexity(None, None, None, const) == pytest.approx([np.log(n)] * 2,
                                                                           rel=1e-5)
    assert metrics.complexity(None, None, None, one) == pytest.approx([0.0, 0.0], abs=1e-5)
    assert list(metrics.effective_complexity(None, None, None, one)) == [1, 1]
    assert list(metrics.effective_complexity(None, None, None, const)) == [n, n]
    # pixel attributions count 3 features per pixel
    assert list(metrics.effective_complexity(None, None, None, np.ones((1, 4, 4, 3)))) == [48]
    # the threshold is strict (Quantus: a > eps): a value of exactly eps does not count
    at = np.zeros((1, 4, 4), np.float32)
    at[0, 0, :2] = [1.0, 1e-5]
    assert list(metrics.effective_complexity(None, None, None, at)) == [1]
    assert list(metrics.effective_complexity(None, None, None, at, eps=1e-6)) == [2]


def test_normalise_image_vs_batch():
    """Quantus divides the whole batch by one maximum: a strong image hides a weak one's
    features from effective complexity; "image" (the default) does not."""
    a = np.zeros((2, 4, 4))
    a[0] = 1.0
    a[1, 0, :2] = 1e-6  # tiny, but the only evidence in image 1
    assert list(metrics.effective_complexity(None, None, None, a)) == [16, 2]
    assert list(metrics.effective_complexity(None, None, None, a, normalise="batch")) == [16, 0]
    assert list(metrics.effective_complexity(None, None, None, a, normalise=None)) == [16, 0]


def test_attribution_metric_runs_method(lin):
    m, x, y = lin
    a = ji.input_x_gradient(m, x, y)
    assert metrics.sparseness(m, x, y, ji.input_x_gradient) == pytest.approx(
        metrics.sparseness(m, x, y, a))
    assert metrics.complexity(m, x, y, "input_x_gradient") == pytest.approx(
        metrics.complexity(None, None, None, a))
    with pytest.raises(ValueError, match="needs the model"):
        metrics.sparseness(None, None, None, ji.input_x_gradient)


# --------------------------------------------------------------------------- localisation


@pytest.fixture(scope="module")
def masks():
    mask = np.zeros((2, SIZE, SIZE), bool)
    mask[0, 2:7, 3:9] = True
    mask[1, 8:, :5] = True
    return mask


@pytest.mark.parametrize("name", ["pointing_game", "relevance_mass_accuracy",
                                  "relevance_rank_accuracy", "attribution_localisation", "auc"])
def test_localisation_known_answers(masks, name):
    fn = getattr(metrics, name)
    inside = masks.astype(np.float32) + 0.1 * masks * np.random.default_rng(0).random(masks.shape)
    assert fn(None, None, None, inside, masks) == pytest.approx([1.0, 1.0], abs=1e-6)
    outside = (~masks).astype(np.float32)
    assert fn(None, None, None, outside, masks) == pytest.approx([0.0, 0.0], abs=1e-6)
    # pixel attributions: the mask spreads over the channels
    pixels = np.repeat(inside[..., None], 3, -1)
    assert fn(None, None, None, pixels, masks) == pytest.approx([1.0, 1.0], abs=1e-6)
    empty = masks.copy()
    empty[1] = False
    out = fn(None, None, None, inside, empty)
    assert np.isnan(out[1]) and not np.isnan(out[0])


def test_localisation_values(masks):
    """Mass, rank and AUC on a map with known shares."""
    a = np.zeros((1, SIZE, SIZE))
    a[0, 2, 3] = 3.0  # inside
    a[0, 0, 0] = 1.0  # outside
    m = masks[:1]
    assert metrics.relevance_mass_accuracy(None, None, None, a, m) == pytest.approx([0.75])
    assert metrics.relevance_rank_accuracy(None, None, None, a, m) == pytest.approx([1 / 30])
    # AUC: one inside pixel above all 226 outside, 29 inside tied with 225 outside at 0
    pos, neg = 30, SIZE * SIZE - 30
    expected = (1 * neg + 29 * (neg - 1) * 0.5 + 29 * 0) / (pos * neg)
    assert metrics.auc(None, None, None, a, m) == pytest.approx([expected])
    assert metrics.pointing_game(None, None, None, a, m) == pytest.approx([1.0])
    w = metrics.pointing_game(None, None, None, a, m, weighted=True)
    assert w == pytest.approx([1 - 30 / SIZE ** 2])


def test_localisation_ties_and_signs():
    """Quantus' ties and signed values: a tied maximum inside the mask is a hit even when an
    outside one comes first; the K-th rank is exact; a ratio above 1 (negative evidence
    outside) is NaN for attribution localisation, kept for relevance mass accuracy."""
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 2, 1:3] = True  # K = 2
    a = np.zeros((1, 4, 4))
    a[0, 0, 0] = a[0, 2, 2] = 5.0  # tied maxima: outside first (index order), then inside
    assert metrics.pointing_game(None, None, None, a, mask) == pytest.approx([1.0])
    a[0, 2, 2] = 4.0
    assert metrics.pointing_game(None, None, None, a, mask) == pytest.approx([0.0])
    a = np.zeros((1, 4, 4))
    a[0, 2, 1], a[0, 0, 0], a[0, 2, 2] = 3.0, 2.0, 1.0  # ranks: inside, outside, inside
    assert metrics.relevance_rank_accuracy(None, None, None, a, mask) == pytest.approx([0.5])
    a = np.zeros((1, 4, 4))
    a[0, 2, 1], a[0, 0, 0] = 2.0, -1.0
    assert np.isnan(metrics.attribution_localisation(None, None, None, a, mask, abs=False))
    assert metrics.attribution_localisation(None, None, None, a, mask) == pytest.approx(
        [2 / 3], abs=1e-6)
    assert metrics.relevance_mass_accuracy(None, None, None, a, mask) == pytest.approx([2.0])


# --------------------------------------------------------------------------- faithfulness


def test_faithfulness_correlation_linear_is_one(lin):
    """On a linear model with a black (= 0) baseline, removing a subset drops the logit by the
    subset's input × gradient sum exactly: correlation 1."""
    m, x, y = lin
    r = metrics.faithfulness_correlation(m, x, y, ji.input_x_gradient, runs=12, subset_size=40)
    assert r == pytest.approx([1.0, 1.0], abs=1e-5)
    # the gradient alone is not the drop: lower
    assert (metrics.faithfulness_correlation(m, x, y, ji.saliency, runs=12,
                                             subset_size=40) < 0.99).all()


def test_faithfulness_correlation_keys_and_chunks(lin):
    m, x, y = lin
    a = np.asarray(ji.saliency(m, x, y))
    kw = dict(runs=12, subset_size=40)
    r = metrics.faithfulness_correlation(m, x, y, a, key=jax.random.key(3), **kw)
    assert r == pytest.approx(metrics.faithfulness_correlation(m, x, y, a, key=3, **kw))
    assert r == pytest.approx(metrics.faithfulness_correlation(m, x, y, a, key=3, batch_size=5,
                                                               **kw), abs=1e-6)
    assert not np.allclose(r, metrics.faithfulness_correlation(m, x, y, a, key=4, **kw))
    # an example's draws do not depend on its batch: fold_in(key, i)
    swapped = metrics.faithfulness_correlation(m, x[::-1], y[::-1], a[::-1], key=3, **kw)
    assert not np.allclose(swapped, r[::-1])
    keys = jax.random.split(jax.random.key(3), 2)
    per = metrics.faithfulness_correlation(m, x, y, a, key=keys, **kw)
    assert per[::-1] == pytest.approx(metrics.faithfulness_correlation(
        m, x[::-1], y[::-1], a[::-1], key=keys[::-1], **kw))
    subsets = metrics.random_subsets(jax.random.key(3), 2, F, 12, 40)
    assert subsets.shape == (2, 12, 40)
    assert r == pytest.approx(metrics.faithfulness_correlation(m, x, y, a, subsets=subsets))
    assert all(len(set(np.asarray(s).tolist())) == 40 for s in subsets[0])
    # uniform: each of 10 features in 3 of 10 draws (4,000 draws: 4 standard deviations 0.029)
    many = np.asarray(metrics.random_subsets(jax.random.key(5), 2, 10, 4000, 3))
    assert all(len(set(s.tolist())) == 3 for s in many.reshape(-1, 3))
    freq = np.stack([np.bincount(d.ravel(), minlength=10) / 4000 for d in many])
    assert np.abs(freq - 0.3).max() < 0.029


def test_one_program_per_shape(lin):
    from jaxinterp.metrics import faithfulness

    m, x, y = lin
    a = np.asarray(ji.saliency(m, x, y))
    metrics.faithfulness_correlation(m, x, y, a, runs=12, subset_size=40)
    n = faithfulness._faithfulness_correlation._cache_size()
    metrics.faithfulness_correlation(m, x, np.array([1, 1]), a * 2, runs=12, subset_size=40,
                                     key=9)
    assert faithfulness._faithfulness_correlation._cache_size() == n


def test_pixel_flipping_linear(lin):
    """Logits of a linear model, black = 0: the curve is f(x) − (cumulative sum of the removed
    features' input × gradient); the true ranking falls fastest, so its area is smallest."""
    m, x, y = lin
    a = np.asarray(ji.input_x_gradient(m, x, y))
    out = metrics.pixel_flipping(m, x, y, a, features_in_step=48, softmax=False)
    assert out.curves.shape == (2, F // 48)
    flat = a.transpose(0, 3, 1, 2).reshape(2, -1)
    drops = np.cumsum(-np.sort(-flat, 1), 1)[:, 47::48]
    assert out.curves == pytest.approx(logit(m, x, y)[:, None] - drops, abs=1e-3)
    assert out.scores == pytest.approx(np.trapezoid(out.curves, axis=1), rel=1e-6)
    worse = metrics.pixel_flipping(m, x, y, -a, features_in_step=48, softmax=False)
    assert (out.scores < worse.scores).all()
    # chunks: the same numbers
    chunked = metrics.pixel_flipping(m, x, y, a, features_in_step=48, softmax=False,
                                     batch_size=5)
    assert chunked.curves == pytest.approx(out.curves, rel=1e-6)
    probs = metrics.pixel_flipping(m, x, y, a, features_in_step=48)
    assert ((probs.curves >= 0) & (probs.curves <= 1)).all()


def test_region_perturbation_linear(lin):
    """The first region's drop is its input × gradient sum (logits, black = 0); "morf" removes
    the largest first, "lerf" the smallest."""
    m, x, y = lin
    a = np.asarray(ji.input_x_gradient(m, x, y))
    patches = a.reshape(2, 4, 4, 4, 4, 3).sum((2, 4, 5))  # 4x4 patches of 4x4 pixels
    morf = metrics.region_perturbation(m, x, y, a, patch_size=4, regions=16, softmax=False)
    lerf = metrics.region_perturbation(m, x, y, a, patch_size=4, order="lerf", softmax=False)
    assert morf.curves.shape == (2, 16)
    assert morf.curves[:, 0] == pytest.approx(patches.reshape(2, -1).max(1), abs=1e-4)
    assert lerf.curves[:, 0] == pytest.approx(patches.reshape(2, -1).min(1), abs=1e-4)
    assert morf.curves[:, -1] == pytest.approx(lerf.curves[:, -1], abs=1e-4)  # all removed
    rnd = metrics.region_perturbation(m, x, y, a, patch_size=4, order="random", regions=16,
                                      softmax=False, key=1)
    assert rnd.curves[:, -1] == pytest.approx(morf.curves[:, -1], abs=1e-4)
    assert (morf.scores > rnd.scores).all() and (rnd.scores > lerf.scores).all()


def test_impute_linear_ramp_is_exact():
    """Symmetric neighbour weights reproduce any linear image away from the border, so a
    removed interior block is imputed exactly (no noise)."""
    hh, ww = np.meshgrid(np.arange(12), np.arange(12), indexing="ij")
    img = np.stack([0.02 * hh + 0.03 * ww, 0.5 - 0.01 * hh, 0.04 * ww], -1)[None]
    removed = np.zeros((1, 12, 12), bool)
    removed[0, 3:9, 2:10] = True
    out = np.asarray(metrics.impute(jnp.asarray(img, jnp.float32), jnp.asarray(removed)))
    assert out == pytest.approx(img, abs=1e-5)
    # at the border only the in-image neighbours count (their weights renormalised, as
    # Quantus' `sum_neighbors`): a constant image stays constant, border and corners included
    removed[0, 0, :] = True
    removed[0, :, -1] = True
    flat = np.full((1, 12, 12, 3), 0.7, np.float32)
    out = np.asarray(metrics.impute(jnp.asarray(flat), jnp.asarray(removed)))
    assert out == pytest.approx(flat, abs=1e-5)


def test_road(lin):
    m, x, y = lin
    pred = np.asarray(m(jnp.asarray(x))[0]).argmax(1)
    a = np.asarray(ji.input_x_gradient(m, x, pred))
    pcts = [0, 10, 50, 90]
    out = metrics.road(m, x, pred, a, percentages=pcts, noise=0.0)
    assert out.curves.shape == (2, 4) and set(np.unique(out.curves)) <= {0, 1}
    assert list(out.curves[:, 0]) == [1, 1]  # nothing removed: the prediction stands
    assert out.scores == pytest.approx(out.curves.mean(1))
    same = metrics.road(m, x, pred, a[..., 0] + a[..., 1] + a[..., 2], percentages=pcts,
                        noise=0.0)
    assert (same.curves == out.curves).all()  # pixel attributions rank by their channel sum
    with pytest.raises(ValueError, match="callable"):
        metrics.road(m, x, lambda logits, feats: logits[:, 0], a)
    with pytest.raises(ValueError, match="percentages"):
        metrics.road(m, x, pred, a, percentages=[120])


ROAD_CHUNKS = """
import jax, numpy as np
import jaxinterp as ji, jaxinterp.metrics as metrics
m = ji.load_model()
x = np.asarray(ji.data.shapes(jax.random.key(7), 2, start=50_000).images)
x = np.repeat(x.mean(-1, keepdims=True), 3, -1)  # grey, as Quantus' ROAD takes them
y = np.asarray(m(x)[0]).argmax(1)
a = np.asarray(ji.saliency(m, x, y)).sum(-1)
pcts = list(range(1, 100, 2))[:8]
chunked = metrics.road(m, x, y, a, percentages=pcts, batch_size=4)  # (crashed when first)
whole = metrics.road(m, x, y, a, percentages=pcts)
np.testing.assert_array_equal(chunked.curves, whole.curves)
print("ok")
"""


def test_road_in_chunks_on_a_cnn():
    """Percentages in chunks (`batch_size`) equal all at once, with XLA's default optimization
    (a fresh process: the default test run compiles at LLVM level 0, where it never crashed):
    XLA:CPU with jaxinterp's compiler options segfaulted here while the imputation was a
    convolution inside the solver's loop."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    r = subprocess.run([sys.executable, "-c", ROAD_CHUNKS], capture_output=True, text=True,
                       env={**env, "JAX_ENABLE_COMPILATION_CACHE": "false"})
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.returncode,
                                                                  r.stderr[-2000:])


def test_monotonicity_correlation_linear(positive):
    """Positive linear model, black = 0: removing a group changes the logit by its
    attribution sum, so variance and sum rank alike: correlation 1."""
    m, x, y = positive
    out = metrics.monotonicity_correlation(m, x, y, ji.input_x_gradient, samples=2,
                                           features_in_step=48, baseline="black",
                                           softmax=False)
    assert out == pytest.approx([1.0, 1.0], abs=1e-6)
    fills = np.random.default_rng(0).random((2, F // 96, 3))
    a = metrics.monotonicity_correlation(m, x, y, ji.input_x_gradient, samples=3,
                                         features_in_step=96, fills=fills, batch_size=4)
    assert (np.abs(a) <= 1).all()


def test_infidelity_linear(lin):
    """The gradient of a linear model predicts every perturbation's effect exactly."""
    m, x, y = lin
    assert metrics.infidelity(m, x, y, ji.saliency) == pytest.approx([0, 0], abs=1e-9)
    # input × gradient does not: I · (x ∘ w) ≠ I · w
    assert (metrics.infidelity(m, x, y, ji.input_x_gradient, noise=0.1) > 1e-6).all()
    # the documented formula on explicit perturbations
    a = np.asarray(ji.input_x_gradient(m, x, y))
    p = np.random.default_rng(0).normal(0, 0.05, (2, 4, SIZE, SIZE, 3)).astype(np.float32)
    w = weights(m)
    diff = np.einsum("nkhwc,hwcn->nk", p, w[:, y].reshape(SIZE, SIZE, 3, 2))
    expected = ((np.einsum("nkhwc,nhwc->nk", p, a) - diff) ** 2).mean(1)
    out = metrics.infidelity(m, x, y, a, perturbations=p)
    assert out == pytest.approx(expected, rel=1e-3)


def test_sufficiency():
    """Identical explanations and predictions: every neighbour agrees."""
    rng = np.random.default_rng(0)
    m = linear_model(rng.normal(size=(F, 2)))
    x = rng.random((4, SIZE, SIZE, 3)).astype(np.float32)
    pred = np.asarray(m(jnp.asarray(x))[0]).argmax(1)
    base = rng.random((SIZE, SIZE))
    a = np.stack([base + 0.01 * rng.random((SIZE, SIZE)) for _ in range(4)])
    a[:, 0, 0] = [0, 0.1, 5, 5.1]  # two pairs of near explanations
    out = metrics.sufficiency(m, x, None, a)
    same = pred[[1, 0, 3, 2]] == pred
    assert out == pytest.approx(same.astype(float))


# --------------------------------------------------------------------------- robustness


def test_sensitivity_known_answers(lin):
    m, x, y = lin
    # the gradient of a linear model does not move at all
    assert metrics.max_sensitivity(m, x, y, ji.saliency, samples=5) == pytest.approx(
        [0, 0], abs=1e-6)
    # input x gradient moves by ε ∘ w: ‖ε ∘ w‖ / ‖x ∘ w‖ per sample
    eps = np.random.default_rng(0).uniform(-0.2, 0.2, (2, 5, SIZE, SIZE, 3)).astype(np.float32)
    w = weights(m)[:, y].T.reshape(2, 1, SIZE, SIZE, 3)
    ratio = (np.linalg.norm((eps * w).reshape(2, 5, -1), axis=-1)
             / np.linalg.norm((x[:, None] * w).reshape(2, 1, -1), axis=-1))
    assert metrics.max_sensitivity(m, x, y, ji.input_x_gradient, noise=eps) == pytest.approx(
        ratio.max(1), rel=1e-4)
    assert metrics.avg_sensitivity(m, x, y, ji.input_x_gradient, noise=eps,
                                   batch_size=2) == pytest.approx(ratio.mean(1), rel=1e-4)
    lip = np.linalg.norm((eps * w).reshape(2, 5, -1), axis=-1) / np.linalg.norm(
        eps.reshape(2, 5, -1), axis=-1)
    assert metrics.local_lipschitz_estimate(m, x, y, ji.input_x_gradient, noise=eps,
                                            normalise=None) == pytest.approx(lip.max(1),
                                                                             rel=1e-4)


def test_sensitivity_options(lin):
    m, x, y = lin
    kw = dict(samples=5, key=2)
    plain = metrics.max_sensitivity(m, x, y, ji.input_x_gradient, **kw)
    clipped = metrics.max_sensitivity(m, x, y, ji.input_x_gradient, clip=True, **kw)
    assert (clipped < plain).all()  # clipping shrinks the noise at saturated pixels
    # Captum's sensitivity_max radius: smaller changes (same program: the noise is an input)
    captum = metrics.max_sensitivity(m, x, y, ji.input_x_gradient, radius=0.02, **kw)
    assert (captum < plain).all()
    # large noise flips predictions: those samples are NaN
    nan = metrics.max_sensitivity(m, x, y, ji.input_x_gradient, radius=5.0, nan_on_change=True,
                                  **kw)
    assert np.isnan(nan).any()
    with pytest.raises(TypeError, match="method"):
        metrics.max_sensitivity(m, x, y, np.zeros((2, SIZE, SIZE, 3)))


# --------------------------------------------------------------------------- randomisation


def test_mprt_linear_models(lin):
    """Randomised weights: the gradient becomes the random weights, similarity falls."""
    m, x, y = lin
    rng = np.random.default_rng(5)
    models = [("random", linear_model(rng.normal(size=(F, 3))))]
    out = metrics.mprt(m, x, y, ji.saliency, models=models)
    assert out.layers == ("original", "random")
    assert out.curves[:, 0] == pytest.approx([1.0, 1.0])
    assert (np.abs(out.scores) < 0.2).all()
    assert out.scores == pytest.approx(out.curves[:, -1])
    same = metrics.mprt(m, x, y, ji.saliency, models=[m], similarity="pearson")
    assert same.scores == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="models="):
        metrics.mprt(m, x, y, ji.saliency)  # a wrapped model has no layer list


def test_smooth_mprt_linear(lin):
    m, x, y = lin
    rng = np.random.default_rng(5)
    models = [linear_model(rng.normal(size=(F, 3)))]
    out = metrics.smooth_mprt(m, x, y, ji.input_x_gradient, samples=3, models=models, key=1)
    assert out.curves[:, 0] == pytest.approx([1.0, 1.0])
    assert (out.scores < 0.5).all()


def test_random_logit_linear(lin):
    """The gradient for class c of a linear model is column c of W: SSIM of two columns
    (skimage's, on the flat normalised vectors)."""
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    m, x, y = lin
    other = np.array([1, 0])
    out = metrics.random_logit(m, x, y, ji.saliency, other=other)
    w = weights(m).astype(np.float64)
    for i in range(2):
        u = w[:, y[i]].reshape(SIZE, SIZE, 3).transpose(2, 0, 1).ravel()
        v = w[:, other[i]].reshape(SIZE, SIZE, 3).transpose(2, 0, 1).ravel()
        u, v = u / np.abs(u).max(), v / np.abs(v).max()
        r = max(u.max(), v.max()) - min(u.min(), v.min())
        assert out[i] == pytest.approx(structural_similarity(u, v, data_range=r), abs=1e-5)
    same = metrics.random_logit(m, x, y, ji.saliency, key=1)
    assert same.shape == (2,)
    with pytest.raises(ValueError, match="differ"):
        metrics.random_logit(m, x, y, ji.saliency, other=y)


@pytest.mark.slow
def test_mprt_vgg_mini_cascading(mini):
    """vgg-mini: the stages are `evaluation.cascading_randomization`'s, and similarity falls
    from 1 as layers are randomised (top-down and bottom-up end at the same model)."""
    from jaxinterp.evaluation import cascading_randomization

    x = np.asarray(ji.data.shapes(jax.random.key(0), 2).images)[:, ::2, ::2]  # 32x32
    top = metrics.mprt(mini, x, 1, ji.saliency, key=0)
    assert top.layers[1] == "classifier.0" and len(top.layers) == 9
    assert top.curves[:, 0] == pytest.approx([1.0, 1.0])
    assert (top.scores < 0.5).all()
    bottom = metrics.mprt(mini, x, 1, ji.saliency, order="bottom_up", key=0)
    assert bottom.scores == pytest.approx(top.scores, abs=1e-5)
    stage = metrics.randomisation_stages(mini, 0)[2][1]
    ref = cascading_randomization(mini, jax.random.key(0), 3)
    same = jax.tree_util.tree_map(lambda u, v: bool(np.array_equal(u, v)), stage.variables,
                                  ref.variables)
    assert all(jax.tree_util.tree_leaves(same))


def test_cam_runs_inside_the_metrics(mini):
    """The metrics hand a method a class-index `Target`: CAM (which refuses score functions)
    takes it as the class indices."""
    from jaxinterp.targets import Target

    x = np.asarray(ji.data.shapes(jax.random.key(0), 2).images)[:, ::2, ::2]
    y = np.array([1, 3])
    np.testing.assert_array_equal(ji.cam(mini, x, Target(jnp.asarray(y))), ji.cam(mini, x, y))
    r = metrics.random_logit(mini, x, y, ji.cam, key=0, other=np.array([2, 5]))
    assert np.isfinite(r).all() and (np.abs(r) <= 1).all()
    assert np.isfinite(metrics.max_sensitivity(mini, x, y, ji.cam, samples=2, key=0)).all()


# --------------------------------------------------------------------------- errors


def test_errors(lin, masks):
    m, x, y = lin
    a = np.asarray(ji.saliency(m, x, y))
    with pytest.raises(ValueError, match="attributions"):
        metrics.faithfulness_correlation(m, x, y, a[:, :8])
    with pytest.raises(ValueError, match="attributions"):
        metrics.sparseness(None, None, None, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="subset_size"):
        metrics.faithfulness_correlation(m, x, y, a, subset_size=F)
    with pytest.raises(ValueError, match="baseline"):
        metrics.pixel_flipping(m, x, y, a, baseline="grey")
    with pytest.raises(ValueError, match="normalise"):
        metrics.sparseness(None, None, None, a, normalise="pixel")
    with pytest.raises(ValueError, match="mask"):
        metrics.pointing_game(None, None, None, a, masks[:, :4])
    with pytest.raises(ValueError, match="order"):
        metrics.region_perturbation(m, x, y, a, order="up")
    with pytest.raises(ValueError, match="range"):
        metrics.faithfulness_correlation(m, x + 1, y, a)
    with pytest.raises(ValueError, match="out of range"):
        metrics.faithfulness_correlation(m, x, 7, a)
    with pytest.raises(ValueError, match="subsets"):
        metrics.faithfulness_correlation(m, x, y, a, subsets=np.zeros((2, 1, 5), int))
    with pytest.raises(ValueError, match="noise"):
        metrics.max_sensitivity(m, x, y, ji.saliency, noise=np.zeros((2, 3, 4, 4, 3)))
    with pytest.raises(ValueError, match="similarity"):
        metrics.mprt(m, x, y, ji.saliency, models=[m], similarity="kendall")
