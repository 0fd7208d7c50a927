"""Faithfulness: does removing what the explanation calls important change the model's output?
(Quantus 0.6's FaithfulnessCorrelation, PixelFlipping, RegionPerturbation, ROAD,
MonotonicityCorrelation, Sufficiency; Captum's infidelity.)

Each metric is one compiled program: every perturbed copy of the batch is built on device and
the model runs on them `batch_size` perturbations at a time (`chunking.chunked_map`: one `vmap`,
or a loop over chunks with bounded memory; the same numbers either way). Random draws come from
`key` (one per example via `fold_in(key, i)`, so an example's draws do not depend on its batch),
or are passed in explicitly (`subsets=`, `noise=`), which is how the tests hand Quantus and
jaxinterp identical draws.

Features follow Quantus (see `_common`): flat channel-first indices `c·H·W + h·W + w`; a map
`[N, H, W]` is spread over the 3 channels. Baselines follow Quantus too: "black" is each image's
minimum, not 0.

Scores are the target's logit or softmax probability (Quantus' `softmax` per metric, kept); a
callable target gives its own score either way. Perturbed images stay in [0, 1] for the baseline
replacements (the baseline is a value of the image); ROAD's noise and infidelity's noise can
leave it, and the model sees those values as they are (Quantus and Captum do not clip).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import check_batch_size, check_count, check_real
from jaxinterp.chunking import chunked_map
from jaxinterp.metrics import _common as c
from jaxinterp.metrics._common import Curves


def _attr(m, x, y, attributions, normalise, absolute, spread=True):
    """Checked attributions as Quantus' pre-processed flat features `[N, F]`."""
    a = c.attributions_for(m, x, y, attributions)
    a = c.check_attributions(a, x.shape[0], x.shape[1:3]).astype(x.dtype)
    a = c.preprocess(a, c.check_normalise(normalise), absolute)
    return c.features(a, spread=spread)


def _base(baseline):
    """A baseline as (static kind, traced value)."""
    baseline = c.check_baseline(baseline)
    return (baseline, 0.0) if isinstance(baseline, str) else ("value", baseline)


def _baseline_value(xf, kind, value):
    return c.baseline_value(xf, kind) if kind != "value" else jnp.full(
        (xf.shape[0], 1), value, xf.dtype)


# --------------------------------------------------------------------------- correlation


@tuned_jit(static_argnames=("kind", "softmax", "batch_size"))
def _faithfulness_correlation(m, x, t, a, subsets, kind, value, softmax, batch_size):
    xf = c.image_features(x)
    base = _baseline_value(xf, kind, value)
    pred = c.scores(m, t, x, softmax)
    rows = jnp.arange(x.shape[0])[:, None]

    def run(sub):  # sub: [N, s]
        mask = jnp.zeros(xf.shape, bool).at[rows, sub].set(True)
        xp = c.from_features(jnp.where(mask, base, xf), x.shape)
        return pred - c.scores(m, t, xp, softmax), a[rows, sub].sum(-1)

    deltas, sums = chunked_map(run, subsets, batch_size)  # [runs, N]
    return c.pearson(sums.T, deltas.T)


def random_subsets(key: Any, n: int, features: int, runs: int, subset_size: int) -> jax.Array:
    """The subsets `faithfulness_correlation` draws: `[N, runs, subset_size]` feature indices,
    each run a uniform subset without replacement, example i from `fold_in(key, i)`."""
    return _random_subsets(c.key_per_example(key, n), features, runs, subset_size)


@functools.partial(jax.jit, static_argnames=("features", "runs", "subset_size"))
def _random_subsets(keys, features, runs, subset_size):

    # the `subset_size` largest of iid uniforms: a uniform subset without replacement, by a
    # partial selection (`jax.random.choice(replace=False)` sorts all features: 20x slower here)
    def draw(k):
        ks = jax.random.split(k, runs)
        return jax.vmap(lambda kk: jax.lax.top_k(jax.random.uniform(kk, (features,)),
                                                 subset_size)[1])(ks)

    return jax.vmap(draw)(keys)


def faithfulness_correlation(m, x, y, attributions: Any, *, runs: int = 100,
                             subset_size: int = 224, baseline: Any = "black",
                             softmax: bool = False, normalise: Any = "image",
                             abs: bool = False, key: Any = None,  # noqa: A002
                             subsets: Any = None, batch_size: int | None = None) -> np.ndarray:
    """Faithfulness correlation (Bhatt et al. 2020): Pearson correlation, over random subsets,
    between the attribution summed over a subset and the score drop when it is removed.

    For each of `runs` random subsets of `subset_size` features: the subset is set to the
    baseline, `Δ = score(x) − score(x_subset)` and `Σ_subset a` are recorded; the result is
    their Pearson correlation over the runs. Higher is better (1: the attribution predicts the
    drops linearly).

    Quantus 0.6 `FaithfulnessCorrelation` defaults kept: 100 runs, 224 features per subset,
    black baseline (the image's minimum), Pearson, logits (`softmax=False`), signed
    attributions, normalised by the maximum (no effect on the correlation; "image" here, one
    maximum per batch in Quantus). Subsets are drawn from `key`, not NumPy's global state.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      y: class index, int array `[N]` or callable target.
      attributions: `[N, H, W, 3]`, `[N, H, W]` (spread over the channels), or a method
        `(m, x, y) -> attributions`.
      runs: number of random subsets.
      subset_size: features per subset (fewer than the 3·H·W features).
      baseline: "black" (image minimum), "white" (maximum), "mean", or a number.
      softmax: score with the softmax probability instead of the logit.
      normalise: "image", "batch" (Quantus) or None.
      abs: use |a|.
      key: PRNG key of the subsets (`jax.random.key(0)` if omitted), or `[N]` keys.
      subsets: explicit subsets `[N, runs, subset_size]` of channel-first feature indices
        (overrides `key`, `runs`, `subset_size`).
      batch_size: runs evaluated at a time (memory bound); None: all at once.
    Returns:
      `[N]` numpy correlations in [−1, 1] (NaN if an image's drops or sums are constant).
    """
    batch_size = check_batch_size(batch_size)
    x, t = c.check_model_target(m, x, y)
    a = _attr(m, x, y, attributions, normalise, abs)
    n, f = a.shape
    if subsets is None:
        runs = check_count(runs, "runs", 2)
        subset_size = check_count(subset_size, "subset_size")
        if subset_size >= f:
            raise ValueError(f"subset_size must be smaller than the number of features ({f}), "
                             f"got {subset_size}")
        subsets = random_subsets(key, n, f, runs, subset_size)
    else:
        subsets = jnp.asarray(subsets)
        if subsets.ndim != 3 or subsets.shape[0] != n or subsets.shape[1] < 2 or \
                not jnp.issubdtype(subsets.dtype, jnp.integer):
            raise ValueError(f"subsets must be int feature indices [N, runs >= 2, subset_size] "
                             f"with N = {n}, got {subsets.dtype} {subsets.shape}")
        if int(subsets.min()) < 0 or int(subsets.max()) >= f:
            raise ValueError(f"subsets must index the {f} features (0 … {f - 1})")
    kind, value = _base(baseline)
    return np.asarray(_faithfulness_correlation(m, x, t, a, jnp.swapaxes(subsets, 0, 1), kind,
                                                value, bool(softmax), batch_size))


# --------------------------------------------------------------------------- flipping curves


@tuned_jit(static_argnames=("steps", "per_step", "kind", "softmax", "batch_size"))
def _pixel_flipping(m, x, t, a, steps, per_step, kind, value, softmax, batch_size):
    xf = c.image_features(x)
    base = _baseline_value(xf, kind, value)
    ranks = c.descending_ranks(a)

    def at(k):
        moved = ranks < (k + 1) * per_step
        return c.scores(m, t, c.from_features(jnp.where(moved, base, xf), x.shape), softmax)

    return chunked_map(at, jnp.arange(steps), batch_size).T  # [N, steps]


def pixel_flipping(m, x, y, attributions: Any, *, features_in_step: int = 1,
                   baseline: Any = "black", softmax: bool = True, normalise: Any = "image",
                   abs: bool = False, batch_size: int | None = None) -> Curves:  # noqa: A002
    """Pixel flipping (Bach et al. 2015): the score as features are removed, most relevant
    first, `features_in_step` at a time, cumulatively.

    The curve has `ceil(F / features_in_step)` points (F = 3·H·W features), the score after
    each step; `scores` is its area, Quantus' `calculate_auc`: the trapezoid rule with unit
    spacing (`np.trapz(curve, dx=1)`, not normalised: divide by `len − 1` for a mean height).
    Lower is better (a faithful ranking makes the score fall fast).

    Quantus 0.6 `PixelFlipping` defaults kept: one feature per step (3·H·W model calls per
    image: pass a larger `features_in_step` on real images), black baseline (the image's
    minimum), softmax probabilities, signed attributions. Ties in the ranking are removed in
    index order (Quantus' `np.argsort` orders them arbitrarily; a map spread over 3 channels
    ties each pixel's 3 features, so with a map choose `features_in_step` a multiple of 3 to
    move whole pixels). Quantus recomputes a "mean" baseline from the partly perturbed image at
    every step; here it is the original image's mean.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      y: class index, int array `[N]` or callable target.
      attributions: `[N, H, W, 3]`, `[N, H, W]`, or a method `(m, x, y) -> attributions`.
      features_in_step: features removed per step.
      baseline: "black" (image minimum), "white" (maximum), "mean", or a number.
      softmax: score with the softmax probability (Quantus' default here) or the logit.
      normalise: "image", "batch" (Quantus) or None (no effect on the ranking).
      abs: rank |a|.
      batch_size: steps evaluated at a time (memory bound); None: all at once.
    Returns:
      `Curves(scores [N], curves [N, steps])`, numpy.
    """
    batch_size = check_batch_size(batch_size)
    x, t = c.check_model_target(m, x, y)
    a = _attr(m, x, y, attributions, normalise, abs)
    per_step = check_count(features_in_step, "features_in_step")
    f = a.shape[1]
    if per_step > f:
        raise ValueError(f"features_in_step must be at most the {f} features, got {per_step}")
    steps = -(-f // per_step)
    kind, value = _base(baseline)
    curves = np.asarray(_pixel_flipping(m, x, t, a, steps, per_step, kind, value,
                                        bool(softmax), batch_size))
    return Curves(c.trapezoid(curves), curves)


def _padding(dim: int, patch: int) -> tuple[int, int]:
    """Quantus' `get_padding_size`: to a multiple of `patch`, split floor / ceil."""
    extra = (-dim) % patch
    return extra // 2, extra - extra // 2


@tuned_jit(static_argnames=("patch", "order", "regions", "kind", "softmax", "batch_size"))
def _region_perturbation(m, x, t, a, key, patch, order, regions, kind, value, softmax,
                         batch_size):
    n, h, w, _ = x.shape
    ph, pw = _padding(h, patch), _padding(w, patch)
    hp, wp = h + sum(ph), w + sum(pw)
    a_img = jnp.pad(a.reshape(n, 3, h, w), ((0, 0), (0, 0), ph, pw))  # zeros (Quantus)
    sums = a_img.reshape(n, 3, hp // patch, patch, wp // patch, patch).sum((1, 3, 5))
    sums = sums.reshape(n, -1)  # [N, P], row-major blocks
    if order == "morf":
        rank = c.descending_ranks(sums)
    elif order == "lerf":
        rank = c.descending_ranks(-sums)
    else:  # a random order per image
        rank = jax.vmap(lambda k: jax.random.permutation(k, sums.shape[1]))(key)
    # each pixel's patch rank, on the padded grid, cropped back to the image
    grid = rank.reshape(n, hp // patch, wp // patch)
    grid = jnp.repeat(jnp.repeat(grid, patch, 1), patch, 2)[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w]
    xf = c.image_features(x)
    base = _baseline_value(xf, kind, value)
    pred = c.scores(m, t, x, softmax)

    def at(r):
        moved = (grid < r + 1)[..., None]
        return pred - c.scores(m, t, jnp.where(moved, base[:, :, None, None], x), softmax)

    return chunked_map(at, jnp.arange(regions), batch_size).T  # [N, regions]


def region_perturbation(m, x, y, attributions: Any, *, patch_size: int = 8,
                        order: str = "morf", regions: int = 100, baseline: Any = "black",
                        softmax: bool = True, normalise: Any = "image",
                        abs: bool = False, key: Any = None,  # noqa: A002
                        batch_size: int | None = None) -> Curves:
    """Region perturbation (Samek et al. 2015): the score drop as square regions are removed
    in the order of their summed attribution, cumulatively.

    The image is cut into `patch_size` squares (padded to a multiple of it as Quantus: the
    attribution with zeros, split floor / ceil); regions are ordered by their attribution sum
    over all channels ("morf": most relevant first; "lerf": least; "random": a random order
    from `key`); after each of the first `regions` regions, `score(x) − score(x_perturbed)` is
    recorded. `scores`: the curve's area, Quantus' trapezoid with unit spacing. With "morf",
    higher is better (a faithful map makes the drop large early).

    Quantus 0.6 `RegionPerturbation` defaults kept: 8-pixel patches, "morf", 100 regions,
    black baseline (the image's minimum), softmax probabilities. Quantus recomputes a "mean"
    baseline from the partly perturbed image at every step; here it is the original image's
    mean. Ties in the ordering: index order.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      y: class index, int array `[N]` or callable target.
      attributions: `[N, H, W, 3]`, `[N, H, W]`, or a method `(m, x, y) -> attributions`.
      patch_size: side of the square regions, in pixels.
      order: "morf", "lerf" or "random".
      regions: how many regions to remove (at most the number of patches).
      baseline: "black" (image minimum), "white" (maximum), "mean", or a number.
      softmax: score with the softmax probability (Quantus' default here) or the logit.
      normalise: "image", "batch" (Quantus) or None (no effect on the order).
      abs: order by |a|.
      key: PRNG key for `order="random"`, or `[N]` keys.
      batch_size: steps evaluated at a time (memory bound); None: all at once.
    Returns:
      `Curves(scores [N], curves [N, regions])`, numpy.
    """
    batch_size = check_batch_size(batch_size)
    c.check_choice(order, "order", ("morf", "lerf", "random"))
    x, t = c.check_model_target(m, x, y)
    a = _attr(m, x, y, attributions, normalise, abs)
    patch = check_count(patch_size, "patch_size")
    n, h, w, _ = x.shape
    if patch > min(h, w):
        raise ValueError(f"patch_size must be at most the image side ({min(h, w)}), got {patch}")
    total = (-(-h // patch)) * (-(-w // patch))
    regions = min(check_count(regions, "regions"), total)
    kind, value = _base(baseline)
    keys = c.key_per_example(key, n)
    curves = np.asarray(_region_perturbation(m, x, t, a, keys, patch, order, regions, kind,
                                             value, bool(softmax), batch_size))
    return Curves(c.trapezoid(curves), curves)


# --------------------------------------------------------------------------- ROAD

# Quantus' `noisy_linear_imputation` (after Rong et al. 2022): a removed pixel becomes the
# weighted mean of its 8 neighbours (1/6 for the 4 direct ones, 1/12 for the diagonals), the
# neighbours being removed pixels (unknowns) or kept ones (known values); plus Gaussian noise.
_ROAD_WEIGHTS = np.array([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def _neighbour_sum(v, kernel):
    """Σ_j w_ij v_j over the 8 neighbours of every pixel of `[..., H, W]` (zero outside).

    Eight shifted, weighted adds rather than a 3 x 3 convolution: exact in any precision, and
    XLA:CPU with jaxinterp's compiler options crashed (segfault) on this convolution inside
    the solver's while loop when `road` ran its percentages in chunks."""
    h, w = v.shape[-2:]
    pad = jnp.pad(v, [(0, 0)] * (v.ndim - 2) + [(1, 1), (1, 1)])
    out = jnp.zeros_like(v)
    for i in range(3):
        for j in range(3):
            if i == 1 and j == 1:
                continue
            out = out + kernel[i, j] * pad[..., i:i + h, j:j + w]
    return out


def impute(x: jax.Array, removed: jax.Array, noise: jax.Array | None = None, *,
           tol: float | None = None, maxiter: int | None = None) -> jax.Array:
    """Quantus' noisy linear imputation of one or more images, on device.

    Each removed pixel is set, per channel, so that it equals the weighted mean of its
    in-image neighbours (1/6 direct, 1/12 diagonal; Quantus' `noisy_linear_imputation`), a
    sparse symmetric positive-definite system solved by conjugate gradients; then `noise` is
    added to the removed pixels.

    Args:
      x: images `[N, H, W, C]`.
      removed: boolean `[N, H, W]`, the pixels to impute.
      noise: `[N, H, W, C]`, added where removed (None: no noise).
      tol: relative residual of the solve (default 1e-6 in float32, 1e-12 in float64).
      maxiter: iteration cap (default 10·(H + W)).
    Returns:
      `[N, H, W, C]` images.
    """
    n, h, w, ch = x.shape
    kernel = jnp.asarray(_ROAD_WEIGHTS, x.dtype)
    tol = (1e-12 if x.dtype == jnp.float64 else 1e-6) if tol is None else tol
    maxiter = 10 * (h + w) if maxiter is None else maxiter
    u = removed.astype(x.dtype)[:, None]                    # [N, 1, H, W]
    xc = jnp.moveaxis(x, -1, 1)                             # [N, C, H, W]
    diag = _neighbour_sum(jnp.ones((1, 1, h, w), x.dtype), kernel)  # in-image weight per pixel
    rhs = u * _neighbour_sum(xc * (1 - u), kernel)

    def op(v):  # removed rows: diag·v − Σ w v_removed; kept rows: identity
        return u * (diag * v - _neighbour_sum(v * u, kernel)) + (1 - u) * v

    v, _ = jax.scipy.sparse.linalg.cg(op, rhs, x0=u * xc, tol=tol, maxiter=maxiter)
    if noise is not None:
        v = v + jnp.moveaxis(noise, -1, 1)
    return jnp.moveaxis(jnp.where(u > 0, v, xc), 1, -1)


@tuned_jit(static_argnames=("batch_size",))
def _road(m, x, idx, rank, counts, noise, noise_scale, batch_size):
    def at(k):  # one percentage for the whole batch
        removed = rank < counts[k]
        xp = impute(x, removed, noise_scale * noise[:, k])
        return c.predictions(m, xp) == idx

    return chunked_map(at, jnp.arange(counts.shape[0]), batch_size).T  # [N, P]


def road(m, x, y, attributions: Any, *, percentages: Sequence[float] | None = None,
         noise: float = 0.01, normalise: Any = "image", abs: bool = False,  # noqa: A002
         key: Any = None, noise_draws: Any = None, batch_size: int | None = 10) -> Curves:
    """ROAD (Rong et al. 2022): is the target still predicted when the most relevant pixels are
    removed by noisy linear imputation?

    For each percentage p, the `int(H·W·p / 100)` pixels with the largest attribution are
    imputed from their neighbours (`impute`) plus Gaussian noise of sd `noise` (each channel),
    and the curve records whether the model's predicted class is still `y` (1 / 0). `scores`:
    the curve's mean over the percentages (for the default grid, the area under the accuracy
    curve over [0, 1] by the midpoint rule). Lower is better (MoRF: a faithful map destroys
    the prediction early).

    Quantus 0.6 `ROAD` defaults kept: percentages 1, 3, …, 99, noise 0.01, most relevant first
    (MoRF), signed attributions. Quantus reduces the curves to one mean over the batch per
    percentage; here they stay per image. Quantus ranks the attribution spread over the three
    channels and imputes the top `int(H·W·p/100)` *features* of a channel-first image as if
    they were pixels, which raises an IndexError on RGB images (an index beyond H·W); the
    reading taken is the ROAD paper's: pixels ranked by the map (a pixel attribution `[N, H,
    W, 3]` by its sum over channels), all channels of a removed pixel imputed. Imputed values
    plus noise may leave [0, 1]: the model sees them (neither Quantus nor ROAD's code clips).

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      y: class index or int array `[N]` (the class whose prediction is checked).
      attributions: `[N, H, W, 3]`, `[N, H, W]`, or a method `(m, x, y) -> attributions`.
      percentages: percentages of pixels removed (default `range(1, 100, 2)`).
      noise: sd of the Gaussian noise added to imputed pixels.
      normalise: "image", "batch" (Quantus) or None (no effect on the ranking).
      abs: rank |a|.
      key: PRNG key of the noise (`jax.random.key(0)` if omitted), or `[N]` keys.
      noise_draws: explicit standard-normal draws `[N, P, H, W, 3]` (scaled by `noise`; only
        the removed pixels' values are used), overriding `key`.
      batch_size: percentages evaluated at a time (memory bound; the same numbers); None: all
        at once (on 16 64-px images all 50 at once asked XLA for 40 GB, 10 at a time 0.7 GB).
    Returns:
      `Curves(scores [N], curves [N, P])`, numpy; the curves are 0 / 1.
    """
    batch_size = check_batch_size(batch_size)
    x, t = c.check_model_target(m, x, y)
    if t.fn is not None:
        raise ValueError("road checks the predicted class: y must be a class index or an int "
                         "array [N], not a callable target")
    a = c.attributions_for(m, x, y, attributions)
    a = c.check_attributions(a, x.shape[0], x.shape[1:3]).astype(x.dtype)
    a = c.preprocess(a, c.check_normalise(normalise), abs)
    pixel = a.sum(-1) if a.ndim == 4 else a
    n, h, w, _ = x.shape
    pcts = np.arange(1, 100, 2) if percentages is None else np.asarray(percentages, float)
    if pcts.ndim != 1 or pcts.size == 0 or (pcts < 0).any() or (pcts > 100).any():
        raise ValueError(f"percentages must be a non-empty list of numbers in [0, 100], got "
                         f"{percentages!r}")
    counts = jnp.asarray([int(h * w * p / 100) for p in pcts], jnp.int32)
    noise = check_real(noise, "noise", minimum=0.0).astype(x.dtype)
    if noise_draws is None:
        keys = c.key_per_example(key, n)
        draws = jax.vmap(lambda k: jax.random.normal(k, (len(pcts), h, w, 3), x.dtype))(keys)
    else:
        draws = jnp.asarray(noise_draws, x.dtype)
        if draws.shape != (n, len(pcts), h, w, 3):
            raise ValueError(f"noise_draws must be [N, P, H, W, 3] = {(n, len(pcts), h, w, 3)}, "
                             f"got {draws.shape}")
    rank = c.descending_ranks(pixel.reshape(n, -1)).reshape(n, h, w)
    curves = _road(m, x, t.index, rank, counts, draws, noise, batch_size)
    curves = np.asarray(curves).astype(int)
    return Curves(curves.mean(-1), curves)


# --------------------------------------------------------------------------- monotonicity


@tuned_jit(static_argnames=("steps", "per_step", "samples", "kind", "softmax", "eps",
                            "batch_size"))
def _monotonicity(m, x, t, a, fills, steps, per_step, samples, kind, value, softmax, eps,
                  batch_size):
    xf = c.image_features(x)
    pred = c.scores(m, t, x, softmax)
    inv = jnp.where(jnp.abs(pred) >= eps, 1 / jnp.abs(pred), 1.0) ** 2
    step = c.descending_ranks(-a) // per_step  # ascending order (Quantus: np.argsort(a))
    base = _baseline_value(xf, "black" if kind == "uniform" else kind, value)

    def at(ks):  # (step, sample)
        k, s = ks
        fill = fills[:, k, s][:, None] if kind == "uniform" else base
        xp = jnp.where(step == k, fill, xf)
        return c.scores(m, t, c.from_features(xp, x.shape), softmax)

    ks = (jnp.repeat(jnp.arange(steps), samples), jnp.tile(jnp.arange(samples), steps))
    out = chunked_map(at, ks, batch_size).reshape(steps, samples, -1)  # [steps, samples, N]
    var = ((out - pred) ** 2).mean(1).T * inv[:, None]  # [N, steps]
    atts = jax.vmap(lambda s: jnp.where(step == s, a, 0).sum(-1))(jnp.arange(steps)).T
    return c.spearman(atts, var)


def monotonicity_correlation(m, x, y, attributions: Any, *, samples: int = 100,
                             features_in_step: int = 1, baseline: Any = "uniform",
                             eps: float = 1e-5, softmax: bool = True, normalise: Any = "image",
                             abs: bool = True, key: Any = None,  # noqa: A002
                             fills: Any = None, batch_size: int | None = None) -> np.ndarray:
    """Monotonicity correlation (Nguyen & Martínez 2020): Spearman correlation between each
    feature group's attribution and the variance its removal causes.

    Features are taken in ascending order of attribution, `features_in_step` at a time; each
    group alone is set to the baseline `samples` times, and `mean((score − score(x))²) /
    score(x)²` (1 / score² only when |score| ≥ `eps`) is its effect. Result: Spearman between
    the groups' attribution sums and their effects. Higher is better.

    Quantus 0.6 `MonotonicityCorrelation` defaults kept: 100 samples, one feature per step
    (3·H·W × 100 model calls per image: pass a larger `features_in_step` on real images),
    "uniform" baseline (Quantus draws one U(0, 1) value per image and call, shared by the
    group's features), eps 1e-5, softmax probabilities, |a|, Spearman. Draws from `key`.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      y: class index, int array `[N]` or callable target.
      attributions: `[N, H, W, 3]`, `[N, H, W]`, or a method `(m, x, y) -> attributions`.
      samples: perturbations per feature group.
      features_in_step: features per group.
      baseline: "uniform", "black", "white", "mean" or a number.
      eps: below this |score|, the effect is not divided by score².
      softmax: score with the softmax probability (Quantus' default here) or the logit.
      normalise: "image", "batch" (Quantus) or None.
      abs: use |a| (Quantus' default here).
      key: PRNG key of the uniform fills, or `[N]` keys.
      fills: explicit uniform fill values `[N, steps, samples]` (overrides `key`).
      batch_size: perturbations evaluated at a time (memory bound); None: all at once.
    Returns:
      `[N]` numpy correlations.
    """
    batch_size = check_batch_size(batch_size)
    x, t = c.check_model_target(m, x, y)
    a = _attr(m, x, y, attributions, normalise, abs)
    samples = check_count(samples, "samples")
    per_step = check_count(features_in_step, "features_in_step")
    n, f = a.shape
    steps = -(-f // per_step)
    if baseline == "uniform":
        kind, value = "uniform", 0.0
        if fills is None:
            keys = c.key_per_example(key, n)
            fills = jax.vmap(lambda k: jax.random.uniform(k, (steps, samples), x.dtype))(keys)
        else:
            fills = jnp.asarray(fills, x.dtype)
            if fills.shape != (n, steps, samples):
                raise ValueError(f"fills must be [N, steps, samples] = {(n, steps, samples)}, "
                                 f"got {fills.shape}")
    else:
        kind, value = _base(baseline)
        fills = jnp.zeros((n, 1, 1), x.dtype)
    return np.asarray(_monotonicity(m, x, t, a, fills, steps, per_step, samples, kind, value,
                                    bool(softmax), float(eps), batch_size))


# --------------------------------------------------------------------------- infidelity


@tuned_jit(static_argnames=("normalize", "batch_size"))
def _infidelity(m, x, t, a, perturbations, normalize, batch_size):
    pred = c.scores(m, t, x, False)

    def at(p):  # p: [N, H, W, 3], the perturbation I; the input is x − I (Captum)
        return (p * a).reshape(x.shape[0], -1).sum(-1), pred - c.scores(m, t, x - p, False)

    sums, diffs = chunked_map(at, perturbations, batch_size)  # [samples, N]
    if normalize:  # Captum: the optimal scale of the attribution, per example
        beta = (sums * diffs).mean(0) / (sums * sums).mean(0)
        beta = jnp.where(jnp.isfinite(beta), beta, 0.0)
        sums = sums * beta
    return ((sums - diffs) ** 2).mean(0)


def infidelity(m, x, y, attributions: Any, *, samples: int = 10, noise: float = 0.003,
               normalize: bool = False, key: Any = None, perturbations: Any = None,
               batch_size: int | None = None) -> np.ndarray:
    """Infidelity (Yeh et al. 2019), Captum's `infidelity`: `E_I[(I · a − (f(x) − f(x − I)))²]`.

    `f` is the target's logit; `I` a random perturbation (default Gaussian, sd `noise`, per
    feature: the perturbation in Captum's documented example); `I · a` sums over all pixels
    and channels (a map is spread over the channels). With `normalize`, the attribution is
    first scaled by the least-squares `β = E[I·a · Δf] / E[(I·a)²]` (Captum's option). Lower
    is better.

    Captum 0.9 kept: 10 samples, no normalisation, raw (not pre-processed) attributions,
    scores before softmax. Captum needs a perturbation function; the default here is its
    documented example's N(0, 0.003²) noise. Quantus' `Infidelity` (patch-wise baseline
    replacement) is a different estimator and is not reproduced. `x − I` may leave [0, 1]:
    the model sees it (Captum does not clip).

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      y: class index, int array `[N]` or callable target.
      attributions: `[N, H, W, 3]`, `[N, H, W]`, or a method `(m, x, y) -> attributions`.
      samples: perturbations per image (Captum's `n_perturb_samples`).
      noise: sd of the Gaussian perturbation.
      normalize: scale the attribution by the optimal β first.
      key: PRNG key (`jax.random.key(0)` if omitted), or `[N]` keys.
      perturbations: explicit perturbations `I` `[N, samples, H, W, 3]` (overrides `key`).
      batch_size: samples evaluated at a time (memory bound); None: all at once.
    Returns:
      `[N]` numpy, ≥ 0.
    """
    batch_size = check_batch_size(batch_size)
    x, t = c.check_model_target(m, x, y)
    a = c.attributions_for(m, x, y, attributions)
    a = c.check_attributions(a, x.shape[0], x.shape[1:3]).astype(x.dtype)
    a = a[..., None] if a.ndim == 3 else a
    n = x.shape[0]
    if perturbations is None:
        samples = check_count(samples, "samples")
        sd = check_real(noise, "noise", minimum=0.0).astype(x.dtype)
        keys = c.key_per_example(key, n)
        perturbations = sd * jax.vmap(
            lambda k: jax.random.normal(k, (samples, *x.shape[1:]), x.dtype))(keys)
    else:
        perturbations = jnp.asarray(perturbations, x.dtype)
        if perturbations.ndim != 5 or perturbations.shape[0] != n or \
                perturbations.shape[2:] != x.shape[1:]:
            raise ValueError(f"perturbations must be [N, samples, H, W, 3] with N, H, W as the "
                             f"images {x.shape}, got {perturbations.shape}")
    return np.asarray(_infidelity(m, x, t, a, jnp.swapaxes(perturbations, 0, 1),
                                  bool(normalize), batch_size))


# --------------------------------------------------------------------------- sufficiency


def sufficiency(m, x, y, attributions: Any, *, threshold: float = 0.6,
                normalise: Any = "image", abs: bool = True) -> np.ndarray:  # noqa: A002
    """Sufficiency (Dasgupta et al. 2022): of the other images whose explanations are close,
    the share with the same predicted class.

    Distances between the images' flattened attributions are standardised Euclidean
    (`scipy.spatial.distance.cdist(a, a, "seuclidean")`: each feature divided by its variance
    over the batch stacked twice, ddof 1), divided by the largest distance; images within
    `threshold` of image i (excluding i) are its neighbours; the score is the share of them the
    model predicts the same class for (0 with no neighbours). A batch-level metric: each score
    depends on the other images. Higher is better.

    Quantus 0.6 `Sufficiency` defaults kept: threshold 0.6, "seuclidean", |a|, attributions
    normalised by the maximum ("image" here; one maximum per batch in Quantus), the distance
    matrix by its maximum. A feature constant over the batch makes the variance 0 and every
    distance NaN (as scipy's), so no image has neighbours.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      y: target (used only to run a method).
      attributions: `[N, H, W, 3]`, `[N, H, W]`, or a method `(m, x, y) -> attributions`.
      threshold: neighbour distance, as a fraction of the largest distance.
      normalise: "image", "batch" (Quantus) or None.
      abs: use |a|.
    Returns:
      `[N]` numpy, in [0, 1].
    """
    from jaxinterp.checks import check_images

    if m is None:
        raise ValueError("sufficiency compares predicted classes: pass the model as m")
    x = check_images(x, min_size=m.min_size)
    a = c.attributions_for(m, x, y, attributions)
    a = c.check_attributions(a, x.shape[0], x.shape[1:3])
    a = np.asarray(c.features(c.preprocess(a, c.check_normalise(normalise), abs)), np.float64)
    n = a.shape[0]
    stacked = np.concatenate([a, a])
    var = stacked.var(0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.sqrt((((a[:, None] - a[None]) ** 2) / var).sum(-1))
        if not np.all(d == 0):
            d = d / np.max(np.abs(d))
    near = (d <= threshold) & ~np.eye(n, dtype=bool)
    pred = np.asarray(c.predictions(m, x))
    same = pred[None] == pred[:, None]
    count = near.sum(-1)
    return np.where(count > 0, (same & near).sum(-1) / np.maximum(count, 1), 0.0)
