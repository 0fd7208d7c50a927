"""Captum's perturbation and Shapley family: feature ablation, Shapley value sampling, exact
Shapley values, KernelSHAP, LIME (on feature masks) and GradientSHAP (on pixels).

Every perturbed image of a method is one forward pass of the batch; they are vmapped, or run
`batch_size` at a time (`chunking.chunked_map`). Features span the 3 colour channels; each
method returns the value of a feature on all of its pixels (`[N, H, W]`), as Captum returns it
on every input element of the feature.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.attribution.core import input_gradient, keeps_sharding, loop_ready, prepare
from jaxinterp.attribution.feature_masks import (DEFAULT_GRID, check_draws, compose, draw,
                                                 example_keys, feature_ids, lasso,
                                                 shapley_weights, spread, weighted_lstsq)
from jaxinterp.attribution.perturbation import check_baseline
from jaxinterp.checks import check_batch_size, check_count, check_real, is_traced
from jaxinterp.chunking import chunked_map, chunked_sum

MAX_EXACT_FEATURES = 16  # 2^16 coalitions, each a forward pass of the batch
KERNEL_SHAP_INF_WEIGHT = 1e6  # Captum's weight of the all-in / all-out coalitions


def _setup(m, x, target, feature_mask, patch, baseline, batch_size, cells=DEFAULT_GRID):
    batch_size = check_batch_size(batch_size)
    x, t = prepare(m, x, target)
    mask, f = feature_ids(feature_mask, patch, x.shape, cells)
    return x, t, jnp.asarray(mask), f, check_baseline(baseline, x), batch_size


def _samples(samples, default, minimum=1):
    return default if samples is None else check_count(samples, "samples", minimum)


def _scorer(m, t, x, base, mask):
    """score `[N]` of the images keeping the features of coalitions `z` `[N, F]`."""
    return lambda z: t(*m(compose(x, base, z, mask), check=False))


@tuned_jit(static_argnames=("batch_size",))
def _ablation(m, x, t, base, mask, ids, batch_size):
    base = jnp.broadcast_to(base, x.shape).astype(x.dtype)
    clean = t(*m(x, check=False))
    score = _scorer(m, t, x, base, mask)
    dropped = chunked_map(lambda j: score(jnp.broadcast_to(ids != j, (x.shape[0], ids.size))),
                          ids, batch_size)  # [F, N]
    return spread((clean[None] - dropped).T, mask)


@keeps_sharding
def feature_ablation(m, x, target, *, feature_mask=None, patch=None, baseline=0.0,
                     batch_size: int | None = 64) -> jax.Array:
    """Feature ablation (Captum's `FeatureAblation`): score(x) - score(x, one feature ablated).

    A feature is a set of pixels with all 3 channels. It is given by `feature_mask`, int ids
    `[H, W]` (the same for every image) or `[N, H, W]` (per image, e.g. superpixels), ids
    consecutive from 0 (an id may be absent from some images of a per-image mask), or by
    `patch`, a grid of (ph, pw) patches, row-major, cut at the bottom / right edges. The
    default is an 8 x 8 grid of near-equal cells, 64 features at any image size (28 x 28
    patches at 224 x 224): the work of the Shapley methods grows with the features, and
    Captum's default, every scalar its own feature (150,528 at 224 x 224), is hopeless for
    them. Pixels: `patch=1`; other grids: `feature_mask=feature_masks.grid_mask((H, W), k)`.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable.
      feature_mask: int ids `[H, W]` or `[N, H, W]`, concrete (not traced); or None.
      patch: int or (ph, pw) when `feature_mask` is None; None: the 8 x 8 grid.
      baseline: value of ablated pixels: scalar or array broadcastable to `x`.
      batch_size: features ablated at a time (a memory bound; default 64); None: all at once.
    Returns:
      `[N, H, W]`: each pixel the score drop of its feature.
    """
    x, t, mask, f, base, batch_size = _setup(m, x, target, feature_mask, patch, baseline,
                                             batch_size)
    return _ablation(m, x, t, base, mask, jnp.arange(f), batch_size)


@tuned_jit(static_argnames=("batch_size",))
def _sampling(m, x, t, base, mask, permutations, batch_size):
    ranks = jnp.argsort(permutations, axis=-1).astype(jnp.int32)  # position of each feature
    n, s, f = ranks.shape
    base = jnp.broadcast_to(base, x.shape).astype(x.dtype)
    score = _scorer(m, t, x, base, mask)
    empty = t(*m(base, check=False))
    which, step = jnp.repeat(jnp.arange(s), f), jnp.tile(jnp.arange(f), s)
    v = chunked_map(lambda sk: score(ranks[:, sk[0]] <= sk[1]), (which, step), batch_size)
    v = v.reshape(s, f, n)  # v[s, k]: the first k + 1 features of permutation s
    prev = jnp.concatenate([jnp.broadcast_to(empty, (s, 1, n)), v[:, :-1]], axis=1)
    gain = (v - prev).transpose(2, 0, 1)  # [N, S, position]
    phi = jnp.take_along_axis(gain, ranks, axis=2).sum(1) / s
    return spread(phi, mask)


@keeps_sharding
def shapley_sampling(m, x, target, *, feature_mask=None, patch=None, baseline=0.0,
                     samples: int | None = None, permutations=None, key=None,
                     batch_size: int | None = 64) -> jax.Array:
    """Shapley value sampling (Captum's `ShapleyValueSampling`), Castro et al. 2009.

    For each random permutation of the features, they are added one at a time to the baseline
    image; each feature gets the score change its addition caused, averaged over permutations.
    `samples * F` forward passes of the batch (plus the baseline).

    Args:
      m, x, target, feature_mask, patch, baseline: as `feature_ablation`.
      samples: permutations (default 25, Captum's).
      permutations: the permutations to use instead of drawing them: int `[S, F]` (shared by
        the batch, as Captum's) or `[N, S, F]`, each row a permutation of 0..F-1.
      key: PRNG key for the permutations, `jax.random.key(0)` if omitted; example i draws from
        `fold_in(key, i)`, or pass one key per example `[N]`.
      batch_size: perturbations evaluated at a time, each on the N images (a memory bound;
        default 64); None: all `samples * F` at once.
    Returns:
      `[N, H, W]` maps.
    """
    x, t, mask, f, base, batch_size = _setup(m, x, target, feature_mask, patch, baseline,
                                             batch_size)
    n = x.shape[0]
    if permutations is None:
        s = _samples(samples, 25)
        permutations = draw(example_keys(key, n), "permutations", s, f)
    else:
        permutations = check_draws(permutations, "permutations", n, f, _samples(samples, None),
                                   binary=False)
    return _sampling(m, x, t, base, mask, permutations, batch_size)


@tuned_jit(static_argnames=("batch_size",))
def _exact(m, x, t, base, mask, coalitions, coef, batch_size):
    base = jnp.broadcast_to(base, x.shape).astype(x.dtype)
    score = _scorer(m, t, x, base, mask)
    n = x.shape[0]
    v = chunked_map(lambda z: score(jnp.broadcast_to(z, (n, z.size))), coalitions, batch_size)
    return spread(jnp.einsum("cn,cf->nf", v, coef), mask)


@keeps_sharding
def shapley_values(m, x, target, *, feature_mask=None, patch=None, baseline=0.0,
                   batch_size: int | None = 64) -> jax.Array:
    """Exact Shapley values of the features (Captum's `ShapleyValues`).

    Captum averages all F! permutations (F * F! forward passes); this evaluates each of the
    2^F coalitions once and weights the marginal gains, |S|! (F - |S| - 1)! / F!: the same
    values, for at most 16 features (65,536 forward passes of the batch).

    Args:
      m, x, target, feature_mask, patch, baseline: as `feature_ablation`, but the default
        mask is a 3 x 3 grid (9 features, 512 coalitions).
      batch_size: coalitions evaluated at a time (a memory bound; default 64); None: all 2^F
        at once.
    Returns:
      `[N, H, W]` maps; per image, the F feature values (one per feature, not per pixel)
      sum to score(x) - score(baseline).
    """
    x, t, mask, f, base, batch_size = _setup(m, x, target, feature_mask, patch, baseline,
                                             batch_size, cells=3)
    if f > MAX_EXACT_FEATURES:
        raise ValueError(f"exact Shapley values need 2^F forward passes; F = {f} features is "
                         f"more than {MAX_EXACT_FEATURES}: pass a coarser patch / feature_mask "
                         "or use shapley_sampling")
    z, coef = shapley_weights(f)
    return _exact(m, x, t, base, mask, jnp.asarray(z), jnp.asarray(coef, x.dtype), batch_size)


@tuned_jit(static_argnames=("batch_size", "lime", "max_iter"))
def _surrogate(m, x, t, base, mask, z, alpha, width, tol, batch_size, lime, max_iter):
    """Scores of coalitions `z` `[N, S, F]`, then the interpretable model fitted per example:
    LIME's Lasso on cosine-kernel weights, or KernelSHAP's weighted least squares."""
    base = jnp.broadcast_to(base, x.shape).astype(x.dtype)
    flat = x.reshape(x.shape[0], -1)

    def run(zs):
        xp = compose(x, base, zs, mask)
        y = t(*m(xp, check=False))
        if not lime:
            return y, jnp.zeros_like(y)
        p = xp.reshape(flat.shape)
        eps = jnp.asarray(1e-8, x.dtype)
        cos = (flat * p).sum(1) / (jnp.maximum(jnp.linalg.norm(flat, axis=1), eps)
                                   * jnp.maximum(jnp.linalg.norm(p, axis=1), eps))
        return y, jnp.exp(-((1 - cos) ** 2) / (2 * width ** 2))

    y, sim = chunked_map(run, z.swapaxes(0, 1), batch_size)  # [S, N] each
    design = z.astype(x.dtype)
    if lime:
        fit = jax.vmap(lambda d, yy, w: lasso(d, yy, w, alpha, tol, max_iter)[0])
        coef = fit(design, y.T, sim.T)
    else:
        size = z.sum(-1)
        w = jnp.where((size == 0) | (size == z.shape[-1]), KERNEL_SHAP_INF_WEIGHT, 1.0)
        coef = jax.vmap(lambda d, yy, ww: weighted_lstsq(d, yy, ww)[0])(design, y.T,
                                                                        w.astype(x.dtype))
    return spread(coef, mask)


@keeps_sharding
def kernel_shap(m, x, target, *, feature_mask=None, patch=None, baseline=0.0,
                samples: int | None = None, coalitions=None, key=None,
                batch_size: int | None = 64) -> jax.Array:
    """KernelSHAP (Captum's `KernelShap`), Lundberg & Lee 2017.

    Per image: `samples` coalitions, the all-in and the all-out first, then sizes k drawn with
    probability proportional to (F - 1) / (k (F - k)) and k features uniformly; the scores of
    the images keeping each coalition are fitted by weighted least squares with an intercept
    (weight 1e6 for the all-in / all-out coalitions, 1 for the others: the Shapley kernel is
    in the sampling), sklearn's `LinearRegression` as Captum calls it (minimum-norm solution,
    singular values below 1e-6 of the largest cut). With fewer samples than features the
    system is underdetermined, as 25 samples (Captum's default) are on the default 64
    features: pass `samples` well above F.

    Args:
      m, x, target, feature_mask, patch, baseline: as `feature_ablation`.
      samples: coalitions per image including the two fixed ones (default 25, Captum's).
      coalitions: the 0/1 coalitions to use instead of drawing them, `[S, F]` or `[N, S, F]`
        (Captum's start with the all-in and all-out rows; any row of F or 0 features gets
        the 1e6 weight).
      key: PRNG key for the draws, as `shapley_sampling`.
      batch_size: coalitions evaluated at a time (a memory bound; default 64); None: all at once.
    Returns:
      `[N, H, W]`: each pixel the coefficient of its feature.
    """
    x, t, mask, f, base, batch_size = _setup(m, x, target, feature_mask, patch, baseline,
                                             batch_size)
    if coalitions is None:
        if f < 2:
            raise ValueError("kernel_shap samples coalitions of 1..F-1 features: it needs at "
                             f"least 2 features, got {f}")
        s = _samples(samples, 25, minimum=2)
        coalitions = draw(example_keys(key, x.shape[0]), "kernel_shap", s, f)
    else:
        coalitions = check_draws(coalitions, "coalitions", x.shape[0], f,
                                 _samples(samples, None), binary=True)
    zero = jnp.zeros((), x.dtype)
    return _surrogate(m, x, t, base, mask, coalitions, zero, zero, zero, batch_size, False, 0)


@keeps_sharding
def lime(m, x, target, *, feature_mask=None, patch=None, baseline=0.0,
         samples: int | None = None, alpha: float = 0.01, kernel_width: float = 1.0,
         perturbations=None, key=None, batch_size: int | None = 64,
         tol: float = 1e-12, max_iter: int = 10_000) -> jax.Array:
    """LIME (Captum's `Lime` with its defaults), Ribeiro et al. 2016.

    Per image: `samples` coalitions, each feature kept with probability 1/2; each perturbed
    image is weighted by exp(-d^2 / (2 kernel_width^2)), d the cosine distance between the
    flattened image and the perturbed one; a Lasso (sklearn's objective with sample weights
    and an intercept, as Captum's `SkLearnLasso(alpha=0.01)` fits it) maps coalitions to
    scores, solved here by coordinate descent until the duality gap is <= `tol` times the
    centred targets' squared norm (sklearn stops at 1e-4, so Captum's coefficients are less
    converged than these).

    Args:
      m, x, target, feature_mask, patch, baseline: as `feature_ablation`.
      samples: perturbed images per image (default 25, Captum's `Lime.attribute` default).
      alpha: the Lasso's L1 weight.
      kernel_width: width of the exponential similarity kernel.
      perturbations: the 0/1 coalitions to use instead of drawing them, `[S, F]` or
        `[N, S, F]`.
      key: PRNG key for the draws, as `shapley_sampling`.
      batch_size: perturbations evaluated at a time, each on the N images (a memory bound;
        default 64); None: all at once.
      tol: relative duality-gap tolerance of the Lasso solver (see
        `feature_masks.lasso`; in float32 it stops earlier, at the precision's fixed point).
      max_iter: coordinate-descent sweeps at most.
    Returns:
      `[N, H, W]`: each pixel the Lasso coefficient of its feature.
    """
    x, t, mask, f, base, batch_size = _setup(m, x, target, feature_mask, patch, baseline,
                                             batch_size)
    if perturbations is None:
        s = _samples(samples, 25)
        perturbations = draw(example_keys(key, x.shape[0]), "bernoulli", s, f)
    else:
        perturbations = check_draws(perturbations, "perturbations", x.shape[0], f,
                                    _samples(samples, None), binary=True)
    alpha = check_real(alpha, "alpha", minimum=0.0).astype(x.dtype)
    width = check_real(kernel_width, "kernel_width").astype(x.dtype)
    if not is_traced(width) and float(width) <= 0:
        raise ValueError(f"kernel_width must be > 0, got {float(width)}")
    tol = check_real(tol, "tol", minimum=0.0).astype(x.dtype)
    return _surrogate(m, x, t, base, mask, perturbations, alpha, width, tol, batch_size, True,
                      check_count(max_iter, "max_iter"))


@tuned_jit(static_argnames=("samples", "draw_noise", "batch_size"))
def _gradient_shap(m, x, t, baselines, keys, idx, alphas, noise, stdevs, samples, draw_noise,
                   batch_size):
    # one uniform draw per example (and one normal for the noise), in a `lax.map`, classic
    # threefry: as `feature_masks.draw`, for XLA:CPU's compile time
    with jax.threefry_partitionable(False):
        if idx is None or alphas is None:
            u = jax.lax.map(lambda k: jax.random.uniform(k, (2, samples), x.dtype), keys)
        if draw_noise:
            noise = stdevs * jax.lax.map(lambda k: jax.random.normal(
                jax.random.fold_in(k, 1), (samples, *x.shape[1:]), x.dtype), keys)
    if idx is None:
        idx = jnp.minimum((u[:, 0] * baselines.shape[0]).astype(jnp.int32),
                          baselines.shape[0] - 1)
    if alphas is None:
        alphas = u[:, 1]
    m = loop_ready(m, batch_size)

    def one(d):
        i, a, e = d
        b, xn = baselines[i], x if e is None else x + e
        a = a[:, None, None, None]
        return (xn - b) * input_gradient(m, t, a * xn + (1.0 - a) * b)

    draws = (idx.T, alphas.T, None if noise is None else noise.swapaxes(0, 1))
    return chunked_sum(one, draws, batch_size) / samples


@keeps_sharding
def gradient_shap(m, x, target, *, baselines=0.0, samples: int | None = None,
                  stdevs: float = 0.0, key=None, baseline_indices=None, alphas=None,
                  noise=None, batch_size: int | None = 64) -> jax.Array:
    """GradientSHAP (Captum's `GradientShap`): expected input-minus-baseline times gradient.

    For each of `samples` draws per image: a baseline b from the `baselines` distribution, an
    alpha uniform in [0, 1] and (if `stdevs` > 0) Gaussian noise e; the attribution is the mean
    of (x + e - b) * grad score(alpha (x + e) + (1 - alpha) b).

    Args:
      m, x, target: as `saliency`.
      baselines: the baseline distribution: `[B, H, W, 3]` images, one image `[H, W, 3]`, or a
        scalar (one constant image; black by default).
      samples: draws per image (default 5, Captum's).
      stdevs: standard deviation of the noise added to the image (Captum's absolute scale).
      key: PRNG key for the draws, as `shapley_sampling`.
      baseline_indices: int `[N, S]` indices into `baselines` to use instead of drawing them.
      alphas: `[N, S]` in [0, 1] to use instead of drawing them.
      noise: `[N, S, H, W, 3]` noise (already scaled; `stdevs` is then unused) to use instead
        of drawing it.
      batch_size: draws evaluated at a time (a memory bound; default 64); None: all at once.
    Returns:
      `[N, H, W, 3]` attributions.
    """
    batch_size = check_batch_size(batch_size)
    x, t = prepare(m, x, target)
    n = x.shape[0]
    b = check_real(baselines, "baselines").astype(x.dtype)
    if b.ndim in (0, 1):
        b = jnp.broadcast_to(b, x.shape[1:])
    if b.ndim == 3:
        b = b[None]
    if b.ndim != 4 or b.shape[1:] != x.shape[1:]:
        raise ValueError(f"baselines must be a scalar, an image {x.shape[1:]} or images "
                         f"[B, {', '.join(map(str, x.shape[1:]))}], got shape {b.shape}")
    given = [a for a in (baseline_indices, alphas, noise) if a is not None]
    s = _samples(samples, np.shape(given[0])[1] if given else 5)
    stdevs = check_real(stdevs, "stdevs", minimum=0.0).astype(x.dtype)
    if stdevs.ndim:
        raise ValueError(f"stdevs must be a scalar, got shape {stdevs.shape}")
    draw_noise = noise is None and (is_traced(stdevs) or float(stdevs) > 0)
    checked = {}
    for name, a, shape in (("baseline_indices", baseline_indices, (n, s)),
                           ("alphas", alphas, (n, s)), ("noise", noise, (n, s, *x.shape[1:]))):
        if a is not None:
            a = jnp.asarray(a) if name == "baseline_indices" else jnp.asarray(a, x.dtype)
            if a.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
        checked[name] = a
    idx = checked["baseline_indices"]
    if idx is not None:
        if not jnp.issubdtype(idx.dtype, jnp.integer):
            raise TypeError(f"baseline_indices must be ints, got {idx.dtype}")
        if not is_traced(idx) and (int(idx.min()) < 0 or int(idx.max()) >= b.shape[0]):
            raise ValueError(f"baseline_indices must be in [0, {b.shape[0]})")
    return _gradient_shap(m, x, t, b, example_keys(key, n), idx, checked["alphas"],
                          checked["noise"], stdevs, s, draw_noise, batch_size)
