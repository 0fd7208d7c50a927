"""Captum's perturbation and Shapley family (`jaxinterp.attribution.shapley`): parity with Captum
0.9 on the plain-torch vgg-mini twin (same weights, Captum's own random draws recorded and
replayed), exact values on analytic models (a linear model; brute-force Shapley values on 6
features of a non-linear one), KernelSHAP's efficiency, GradientSHAP's formula, the random
draws' distributions, the Lasso / least-squares solvers against sklearn, batching, chunking,
jit, and mask errors."""

import inspect
import itertools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from parity_errors import assert_close
from jaxinterp.attribution import feature_masks as fm
from jaxinterp.attribution.shapley import (feature_ablation, gradient_shap, kernel_shap, lime,
                                           shapley_sampling, shapley_values)

try:
    import captum.attr as captum_attr
    import torch
except ImportError:  # only the parity tests (they use `twin`) skip
    torch = captum_attr = None

SIZE = 32


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()


def torch_mask(mask):
    """Our `[1 | N, H, W]` ids as Captum's mask `[1 | N, 1, H, W]` (shared by the channels)."""
    return torch.from_numpy(np.asarray(mask, np.int64))[:, None]


def recorded(explainer):
    """Makes a Captum Lime / KernelShap record every interpretable sample it draws."""
    draws, inner = [], explainer.perturb_func
    if inspect.isgeneratorfunction(inner):
        def perturb(*args, **kwargs):
            for z in inner(*args, **kwargs):
                draws.append(z.numpy().copy())
                yield z
    else:
        def perturb(*args, **kwargs):
            z = inner(*args, **kwargs)
            draws.append(z.numpy().copy())
            return z
    explainer.perturb_func = perturb
    return draws


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """vgg-mini (with BatchNorm) in jaxinterp and in plain torch with the same weights, two
    32 x 32 images, their runner-up classes. Captum's many small forward passes run on one
    torch thread: 3x less CPU time than a pool that contends with XLA's (measured on the Lime
    case)."""
    if captum_attr is None:
        pytest.skip("needs torch and captum")
    pytest.importorskip("safetensors")
    from torch_vgg import make_pair

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    jm, tm, _ = make_pair("vgg-mini", tmp_path_factory, num_classes=8, batch_norm=True)
    x = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    with torch.no_grad():
        logits = tm(nchw(x)).numpy()
    target = np.argsort(-logits, 1)[:, 1].copy()  # the runner-up class
    yield jm, tm, x, target
    torch.set_num_threads(threads)


def superpixels():
    """Per-image masks `[2, H, W]`: 16 square patches on image 0, 12 rectangles (ids 0..11)
    on image 1: ids 12..15 are absent from image 1."""
    r, c = np.mgrid[:SIZE, :SIZE]
    return np.stack([(r // 8) * 4 + c // 8, (r // 8) * 3 + c // 11]).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# parity with Captum on the vgg-mini twin (float32 but GradientSHAP: every perturbation
# method's scores are smooth in the input, so both frameworks' float32 roundings agree to
# ~1e-6 of the score; GradientSHAP's gradients jump at ReLU kinks)


def test_feature_ablation_parity(twin):
    jm, tm, x, target = twin
    masks = superpixels()
    base = np.random.default_rng(1).random((SIZE, SIZE, 3), dtype=np.float32)
    theirs = captum_attr.FeatureAblation(tm).attribute(
        nchw(x), target=torch.from_numpy(target), feature_mask=torch_mask(masks),
        baselines=nchw(base[None]), perturbations_per_eval=8)[:, 0].numpy()
    assert_close(feature_ablation(jm, x, target, feature_mask=masks, baseline=base), theirs,
                 1e-4)


def test_shapley_sampling_parity(twin):
    jm, tm, x, target = twin
    sv = captum_attr.ShapleyValueSampling(tm)
    perms, draw = [], sv.permutation_generator

    def record(num_features, n):
        for p in draw(num_features, n):
            perms.append(list(p))
            yield p

    sv.permutation_generator = record
    torch.manual_seed(0)
    mask = fm.patch_mask((SIZE, SIZE), 8)[None]
    theirs = sv.attribute(nchw(x), target=torch.from_numpy(target), baselines=0.25,
                          feature_mask=torch_mask(mask), n_samples=3,
                          perturbations_per_eval=16)[:, 0].numpy()
    ours = shapley_sampling(jm, x, target, patch=8, baseline=0.25, permutations=np.array(perms))
    assert_close(ours, theirs, 1e-4)


def test_shapley_values_parity(twin):
    jm, tm, x, target = twin
    mask = fm.patch_mask((SIZE, SIZE), 16)[None]  # 4 features: Captum runs 4 * 4! passes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_attr.ShapleyValues(tm).attribute(
            nchw(x), target=torch.from_numpy(target), feature_mask=torch_mask(mask),
            perturbations_per_eval=4)[:, 0].numpy()
    assert_close(shapley_values(jm, x, target, patch=16), theirs, 1e-4)


def test_kernel_shap_parity(twin):
    jm, tm, x, target = twin
    ks = captum_attr.KernelShap(tm)
    draws = recorded(ks)
    torch.manual_seed(1)
    mask = fm.patch_mask((SIZE, SIZE), 8)[None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ks.attribute(nchw(x), target=torch.from_numpy(target),
                              feature_mask=torch_mask(mask))[:, 0].numpy()  # 25 samples
    coalitions = np.concatenate(draws).reshape(2, 25, 16)
    assert (coalitions[:, 0] == 1).all() and (coalitions[:, 1] == 0).all()
    assert_close(kernel_shap(jm, x, target, patch=8, coalitions=coalitions), theirs, 1e-4)


def test_lime_parity(twin):
    # Captum's `SkLearnLasso(alpha=0.01)` stops at sklearn's tol=1e-4 duality gap, short of the
    # Lasso's minimum (by 3.6e-5 of the largest coefficient here, 3.6e-4 on other draws); the
    # same Lasso solved to tol=1e-10 is the reference. Scores are 30 x the logit, so that
    # alpha = 0.01 leaves some coefficients non-zero on this random-weight net (at 1 x, it
    # zeroes them all).
    jm, tm, x, target = twin
    scaled = lambda z: 30.0 * tm(z)  # noqa: E731
    tj = jnp.asarray(target)
    score = lambda logits, _: 30.0 * jnp.take_along_axis(logits, tj[:, None], 1)[:, 0]  # noqa: E731
    from captum._utils.models.linear_model import SkLearnLasso

    explainer = captum_attr.Lime(scaled, interpretable_model=SkLearnLasso(
        alpha=0.01, tol=1e-10, max_iter=100_000))
    draws = recorded(explainer)
    torch.manual_seed(2)
    masks = superpixels()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = explainer.attribute(nchw(x), target=torch.from_numpy(target),
                                     feature_mask=torch_mask(masks), n_samples=40)[:, 0].numpy()
    perturbations = np.concatenate(draws).reshape(2, 40, 16)
    ours = lime(jm, x, score, feature_mask=masks, perturbations=perturbations)
    assert 0 < (theirs == 0).mean() < 1  # some coefficients are zero, some not
    assert_close(ours, theirs, 1e-4)


def test_gradient_shap_parity(twin):
    # float64 on both sides (gradient jumps at ReLU kinks, as integrated gradients' parity);
    # Captum draws the baselines (np.random.choice), the noise (torch.normal, from a float32
    # std) and the alphas (np.random.uniform) in this order: replayed from the same seeds
    import copy

    jm, tm, x, target = twin
    n, s, stdevs = 2, 5, 0.05
    dist = np.random.default_rng(3).random((4, SIZE, SIZE, 3))
    np.random.seed(7)
    torch.manual_seed(7)
    theirs = captum_attr.GradientShap(copy.deepcopy(tm).double()).attribute(
        nchw(x.astype(np.float64)).requires_grad_(True), baselines=nchw(dist), n_samples=s,
        stdevs=stdevs, target=torch.from_numpy(target))
    theirs = theirs.detach().numpy().transpose(0, 2, 3, 1)
    np.random.seed(7)
    torch.manual_seed(7)
    idx = np.random.choice(4, n * s).reshape(n, s)
    noise = torch.normal(0, torch.tensor(stdevs).repeat((n * s, 3, SIZE, SIZE))).numpy()
    noise = noise.transpose(0, 2, 3, 1).reshape(n, s, SIZE, SIZE, 3)
    alphas = np.random.uniform(0.0, 1.0, n * s).reshape(n, s)
    with jax.enable_x64(True):
        jm64 = jm.with_variables(jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64),
                                                        jm.variables))
        ours = np.asarray(gradient_shap(jm64, x.astype(np.float64), target, baselines=dist,
                                        baseline_indices=idx, alphas=alphas, noise=noise))
    assert ours.dtype == np.float64
    assert_close(ours, theirs, 1e-10)


# ---------------------------------------------------------------------------------------------
# analytic models: one wrapped function, linear (c = 0: every method's value per feature is
# w . (x - b) summed over the feature) or not (c = 1), so that both share compiled programs;
# 6 features (brute-force Shapley values)

A = 12
R, C = np.mgrid[:A, :A]
SIX = ((R // 4) * 2 + C // 6).astype(np.int32)  # 6 features of 4 x 6 pixels
W = np.random.default_rng(4).normal(size=(A, A, 3, 3)).astype(np.float32)
BASE = np.random.default_rng(6).random((A, A, 3), dtype=np.float32)
DIST = np.random.default_rng(8).random((3, A, A, 3), dtype=np.float32)  # GradientSHAP's
GS_SAMPLES = 2000


def analytic_fn(p, x):
    """(1 - c) * a linear map + c * a function that is not additive in the features (a
    square, a max over pixels, products)."""
    h = jnp.einsum("nhwc,hwck->nhwk", x, p["w"])
    tot = h.sum((1, 2))
    curved = jnp.stack([tot[:, 0] ** 2 / 50, h[..., 1].reshape(len(x), -1).max(1)
                        + jnp.tanh(tot[:, 2] / 10) * tot[:, 0] / 10,
                        tot[:, 1] * tot[:, 2] / 100], axis=1)
    return (1 - p["c"]) * tot + p["c"] * curved


def curved_np(x):
    """Class 1 of `analytic_fn` at c = 1, in float64 numpy."""
    h = np.einsum("nhwc,hwck->nhwk", x, W.astype(np.float64))
    tot = h.sum((1, 2))
    return h[..., 1].reshape(len(x), -1).max(1) + np.tanh(tot[:, 2] / 10) * tot[:, 0] / 10


@pytest.fixture(scope="module")
def analytic():
    x = np.random.default_rng(5).random((2, A, A, 3), dtype=np.float32)
    model = lambda c: ji.wrap(analytic_fn, {"w": jnp.asarray(W), "c": jnp.float32(c)},  # noqa: E731
                              input_size=(A, A))
    return model(0.0), model(1.0), x


def given_draws(seed=12):
    """Permutations `[3, 6]` and coalitions `[2, 25, 6]` (all-in / all-out rows first)."""
    rng = np.random.default_rng(seed)
    z = rng.random((2, 25, 6)) < 0.5
    z[:, 0], z[:, 1] = True, False
    return np.argsort(rng.random((3, 6)), 1), z


def test_linear_model_every_method_is_exact(analytic):
    lin, _, x = analytic
    y = np.array([2, 0])
    contrib = np.einsum("nhwc,hwcn->nhw", x.astype(np.float64) - BASE, W[..., y])
    phi = np.stack([[contrib[i][SIX == j].sum() for j in range(6)] for i in range(2)])
    expected = phi[:, SIX]
    kw = dict(feature_mask=SIX, baseline=BASE)
    perms, z = given_draws()
    assert_close(feature_ablation(lin, x, y, **kw), expected, 1e-5)
    assert_close(shapley_sampling(lin, x, y, permutations=perms, **kw), expected, 1e-5)
    assert_close(shapley_values(lin, x, y, **kw), expected, 1e-5)
    assert_close(kernel_shap(lin, x, y, coalitions=z, **kw), expected, 1e-5)
    assert_close(lime(lin, x, y, alpha=0.0, perturbations=z, **kw), expected, 1e-5)
    shrunk = np.asarray(lime(lin, x, y, alpha=0.05, perturbations=z, **kw))  # L1 shrinks
    assert np.abs(shrunk).sum() < 0.99 * np.abs(expected).sum()


def test_exact_shapley_equals_brute_force_on_six_features(analytic):
    _, curved, x = analytic
    f = 6

    def value(i, coalition):
        keep = np.isin(SIX, list(coalition))[..., None]
        return curved_np(np.where(keep, x[i:i + 1].astype(np.float64), BASE[None]))[0]

    brute = np.zeros((2, f))
    for i in range(2):
        cache = {}
        for perm in itertools.permutations(range(f)):
            before = frozenset()
            for j in perm:
                after = before | {j}
                for c in (before, after):
                    if c not in cache:
                        cache[c] = value(i, c)
                brute[i, j] += cache[after] - cache[before]
                before = after
    brute /= math.factorial(f)
    expected = brute[:, SIX]
    y = np.array([1, 1])
    assert_close(shapley_values(curved, x, y, feature_mask=SIX, baseline=BASE), expected, 1e-5)
    # efficiency: they sum to f(x) - f(baseline)
    gap = curved_np(x.astype(np.float64)) - curved_np(np.broadcast_to(BASE, x.shape))
    np.testing.assert_allclose(brute.sum(1), gap, rtol=1e-10)
    # KernelSHAP's 1e6 weights pin the all-in / all-out ends: its coefficients sum to the same
    # gap (to ~1e-6 of the scale), though each is only an estimate
    ks = np.asarray(kernel_shap(curved, x, y, feature_mask=SIX, baseline=BASE,
                                coalitions=given_draws(13)[1]))
    sums = np.array([[ks[i][SIX == j][0] for j in range(f)] for i in range(2)]).sum(1)
    np.testing.assert_allclose(sums, gap, atol=1e-4 * np.abs(brute).max())
    assert np.abs(ks - expected).max() > 1e-3 * np.abs(expected).max()  # an estimate


def test_gradient_shap_formula(analytic):
    # class 0 at c = 1 is (sum w x)^2 / 50: its gradient at alpha (x + e) + (1 - alpha) b
    # depends on alpha
    _, curved, x = analytic
    rng = np.random.default_rng(8)
    dist = DIST
    idx, alphas = rng.integers(0, 3, (2, 5)), rng.random((2, 5)).astype(np.float32)
    noise = (0.1 * rng.normal(size=(2, 5, A, A, 3))).astype(np.float32)
    w = W[..., 0].astype(np.float64)
    expected = np.zeros(x.shape)
    for i, k in itertools.product(range(2), range(5)):
        xn, b = x[i] + noise[i, k], dist[idx[i, k]]
        p = alphas[i, k] * xn + (1 - alphas[i, k]) * b
        expected[i] += (xn - b) * 2 * (w * p).sum() / 50 * w / 5
    ours = gradient_shap(curved, x, 0, baselines=dist, baseline_indices=idx, alphas=alphas,
                         noise=noise)
    assert_close(ours, expected, 1e-5)
    # drawn: alpha ~ U[0, 1] and b uniform over the distribution. Per draw the attribution is
    # a_b + alpha c_b (a_b = (x - b) 2 w (w . b) / 50, c_b = (x - b) 2 w (w . (x - b)) / 50):
    # the mean of many draws is within 5 sigma of its expectation, pixel by pixel (the call
    # of `test_batch_equals_single_chunked_calls`: one compiled program)
    many = np.asarray(gradient_shap(curved, x[:1], 0, baselines=DIST, samples=GS_SAMPLES,
                                    key=jax.random.key(9), batch_size=4), np.float64)[0]
    a = np.stack([(x[0] - b) * 2 * (w * b).sum() / 50 * w for b in DIST])
    c = np.stack([(x[0] - b) * 2 * (w * (x[0] - b)).sum() / 50 * w for b in DIST])
    mean = (a + c / 2).mean(0)
    var = (a * a + a * c + c * c / 3).mean(0) - mean ** 2
    assert (np.abs(many - mean) < 5 * np.sqrt(var / GS_SAMPLES)
            + 1e-6 * np.abs(mean).max()).all()
    assert np.abs(many - mean).max() > 0  # drawn, not the expectation itself


# ---------------------------------------------------------------------------------------------
# the draws and the solvers


def test_draws_follow_captum():
    f, s = 6, 20_000
    z = np.asarray(fm.draw(jax.random.split(jax.random.key(0), 2), "kernel_shap", s, f))
    assert z.shape == (2, s, f)
    assert (z[:, 0] == 1).all() and (z[:, 1] == 0).all()  # all-in, all-out first
    sizes = z[:, 2:].sum(-1).ravel()
    k = np.arange(1, f)
    p = (f - 1) / (k * (f - k))
    p /= p.sum()  # Captum's Categorical((F - 1) / (k (F - k))), k = 1..F-1
    freq = np.bincount(sizes, minlength=f + 1) / sizes.size
    assert freq[0] == 0 and freq[f] == 0
    assert np.abs(freq[1:f] - p).max() < 5 * np.sqrt(p.max() / sizes.size)
    rows = z[:, 2:].reshape(-1, f)
    for k in range(1, f):  # given its size k, each feature is in with probability k / F
        inclusion = rows[sizes == k].mean(0)
        assert np.abs(inclusion - k / f).max() < 5 * 0.5 / np.sqrt((sizes == k).sum())
    # LIME's and the sampler's draws, of the shapes the tests below use (same programs)
    keys = fm.example_keys(jax.random.key(3), 2)
    bern = np.asarray(fm.draw(keys, "bernoulli", 25, 6))
    assert abs(bern.mean() - 0.5) < 5 * 0.5 / np.sqrt(bern.size)
    perms = np.asarray(fm.draw(keys, "permutations", 3, 6))
    assert (np.sort(perms, -1) == np.arange(6)).all() and len(np.unique(perms.reshape(6, 6),
                                                                         axis=0)) > 1


def test_solvers_equal_sklearn():
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(10)
    with jax.enable_x64(True):
        for s, f, alpha in [(25, 16, 0.01), (20, 30, 0.02)]:  # over- and underdetermined
            X = (rng.random((s, f)) < 0.5).astype(np.float64)
            y = X @ rng.normal(size=f) + 0.1 * rng.normal(size=s)
            w = rng.random(s) + 0.1
            ref = linear_model.Lasso(alpha=alpha, tol=1e-14, max_iter=10 ** 6).fit(
                X, y, sample_weight=w)
            beta, b0, gap, _ = jax.jit(fm.lasso, static_argnames="max_iter")(
                X, y, w, alpha, 1e-12, max_iter=10_000)
            assert gap <= 1e-12
            assert_close(beta, ref.coef_, 1e-9)
            assert abs(float(b0) - ref.intercept_) < 1e-9 * np.abs(ref.coef_).max()
            assert 0 < (ref.coef_ == 0).sum() < f  # the L1 term is active
        # KernelSHAP's regression: 1e6 weights on the all-in / all-out rows; more samples than
        # features, fewer (the minimum-norm solution), and two columns 1e-8 apart (sklearn 1.9
        # cuts singular values below 1e-6 of the largest: without it, coefficients of ~1e6)
        for s, f, twin_columns in [(30, 8, False), (12, 20, False), (30, 8, True)]:
            X = (rng.random((s, f)) < 0.5).astype(np.float64)
            X[0], X[1] = 1, 0
            if twin_columns:
                X[:, 7] = X[:, 6] + 1e-8 * rng.normal(size=s)
            y, w = rng.normal(size=s), np.where(np.arange(s) < 2, 1e6, 1.0)
            ref = linear_model.LinearRegression().fit(X, y, sample_weight=w)
            beta, b0 = jax.jit(fm.weighted_lstsq)(X, y, w)
            assert_close(beta, ref.coef_, 1e-9)
            assert abs(float(b0) - ref.intercept_) < 1e-9 * np.abs(ref.coef_).max()


# ---------------------------------------------------------------------------------------------
# batching, chunking, jit, errors (on the non-linear analytic model, same shapes as above:
# the batch calls reuse those programs)

METHODS = {"feature_ablation": (feature_ablation, {}),
           "shapley_sampling": (shapley_sampling, {"samples": 3}),
           "shapley_values": (shapley_values, {}),
           "kernel_shap": (kernel_shap, {}),
           "lime": (lime, {"alpha": 0.001}),
           "gradient_shap": (gradient_shap, {"baselines": DIST, "samples": GS_SAMPLES})}
KEYED = ("shapley_sampling", "kernel_shap", "lime", "gradient_shap")


@pytest.mark.parametrize("name", list(METHODS))
def test_batch_equals_single_chunked_calls(analytic, name):
    """One call on the batch (all perturbations vmapped) == one call per image, chunked."""
    _, m, x = analytic
    y = np.array([1, 2])
    fn, kw = METHODS[name]
    if name != "gradient_shap":
        kw = {**kw, "feature_mask": SIX, "baseline": BASE}
    keys = fm.example_keys(jax.random.key(3), 2)
    key = (lambda i: {"key": keys if i is None else keys[i:i + 1]}) if name in KEYED else \
        (lambda i: {})
    batch = np.asarray(fn(m, x, y, **kw, **key(None)))
    assert np.isfinite(batch).all() and np.abs(batch).max() > 0
    singles = np.concatenate([fn(m, x[i:i + 1], y[i:i + 1], batch_size=4, **kw, **key(i))
                              for i in range(2)])
    np.testing.assert_allclose(singles, batch, rtol=1e-4, atol=1e-5 * np.abs(batch).max())


def test_under_jit_vmap_and_keys(analytic):
    _, m, x = analytic
    y = np.array([1, 2])
    kw = dict(feature_mask=SIX, baseline=BASE, samples=3)
    eager = np.asarray(shapley_sampling(m, x, y, key=jax.random.key(3), **kw))
    keys = fm.example_keys(jax.random.key(3), 2)  # one key: example i draws from fold_in(key, i)
    def one(xi, yi, k):
        return shapley_sampling(m, xi[None], yi[None], key=k[None], **kw)[0]


    np.testing.assert_allclose(jax.jit(jax.vmap(one))(x, y, keys), eager, rtol=1e-5,
                               atol=1e-6 * np.abs(eager).max())
    np.testing.assert_array_equal(shapley_sampling(m, x, y, key=keys, **kw), eager)
    other = np.asarray(shapley_sampling(m, x, y, key=jax.random.key(4), **kw))
    assert np.abs(other - eager).max() > 1e-3 * np.abs(eager).max()
    twice = np.asarray(shapley_sampling(m, x[[0, 0]], y[[0, 0]], key=jax.random.key(3), **kw))
    assert np.abs(twice[0] - twice[1]).max() > 1e-3 * np.abs(twice).max()  # own draws
    np.testing.assert_array_equal(shapley_sampling(m, x, y, **kw),  # key=None: key(0)
                                  shapley_sampling(m, x, y, key=jax.random.key(0), **kw))


def test_default_and_patch_masks():
    mask, f = fm.feature_ids(None, None, (1, 224, 224, 3))  # the default: an 8 x 8 grid
    assert f == 64 and (np.bincount(mask.ravel()) == 28 * 28).all()
    assert fm.feature_ids(None, None, (1, 224, 224, 3), cells=3)[1] == 9  # shapley_values'
    cells = np.bincount(fm.grid_mask((12, 10), 8).ravel())  # rows 2,1,2,1.. cols 2,1,1,1,2,..
    assert sorted(cells) == [1] * 24 + [2] * 32 + [4] * 8
    assert fm.grid_mask((4, 12), 8).max() + 1 == 4 * 8  # fewer rows than cells
    patches = fm.patch_mask((10, 7), (4, 3))  # cut at the bottom / right edges
    np.testing.assert_array_equal(patches[[0, 4, 8, 9]][:, [0, 3, 6]],
                                  [[0, 1, 2], [3, 4, 5], [6, 7, 8], [6, 7, 8]])
    mask, f = fm.feature_ids(SIX[None].repeat(2, 0), None, (2, A, A, 3))
    assert f == 6 and mask.shape == (2, A, A) and mask.dtype == np.int32


def test_mask_and_draw_errors(analytic):
    m, _, x = analytic
    y = np.array([0, 1])
    ids = fm.patch_mask((A, A), 3)
    with pytest.raises(ValueError, match=r"consecutive 0..F-1; ids \[3\] are missing"):
        feature_ablation(m, x, y, feature_mask=np.where(ids == 3, 0, ids))
    with pytest.raises(ValueError, match=r"feature_mask must be \[H, W\] or \[N, H, W\]"):
        feature_ablation(m, x, y, feature_mask=ids[:8])
    with pytest.raises(ValueError, match=r"feature_mask must be \[H, W\] or \[N, H, W\]"):
        feature_ablation(m, x, y, feature_mask=np.stack([ids] * 3))
    with pytest.raises(TypeError, match="integer feature ids"):
        feature_ablation(m, x, y, feature_mask=ids.astype(np.float32))
    with pytest.raises(ValueError, match=">= 0"):
        feature_ablation(m, x, y, feature_mask=ids - 1)
    with pytest.raises(ValueError, match="either feature_mask or patch"):
        feature_ablation(m, x, y, feature_mask=ids, patch=4)
    with pytest.raises(ValueError, match="F = 36 features is more than 16"):
        shapley_values(m, x, y, patch=2)
    with pytest.raises(ValueError, match="permutations of 0..8"):
        shapley_sampling(m, x, y, patch=4, permutations=np.zeros((2, 9), int))
    with pytest.raises(ValueError, match="holds 2 samples but samples=3"):
        shapley_sampling(m, x, y, patch=4, samples=3, permutations=np.tile(np.arange(9), (2, 1)))
    with pytest.raises(ValueError, match="0/1 values"):
        kernel_shap(m, x, y, patch=4, coalitions=np.full((5, 9), 2))
    with pytest.raises(ValueError, match=r"\[S, F\] or \[N, S, F\] with N = 2, F = 9"):
        lime(m, x, y, patch=4, perturbations=np.ones((5, 8)))
    with pytest.raises(ValueError, match="at least 2 features"):
        kernel_shap(m, x, y, patch=16)
    with pytest.raises(ValueError, match=r"baseline_indices must be in \[0, 1\)"):
        gradient_shap(m, x, y, baseline_indices=np.ones((2, 5), int))
    with pytest.raises(ValueError, match=r"alphas must have shape \(2, 5\)"):
        gradient_shap(m, x, y, alphas=np.ones((2, 4)), samples=5)
    with pytest.raises(ValueError, match="baselines must be"):
        gradient_shap(m, x, y, baselines=np.zeros((2, 8, 8, 3)))
    with pytest.raises(TypeError, match="must be a concrete array"):
        jax.jit(lambda mask: feature_ablation(m, x, y, feature_mask=mask))(SIX)
