"""Feature masks, random draws and interpretable-model solvers of the Shapley / LIME family.

A feature is a set of pixels, shared by the 3 colour channels. A mask is an int array of
feature ids `[1, H, W]` (one for every image) or `[N, H, W]` (one per image, e.g. superpixels),
with ids 0..F-1. A coalition is a boolean vector `[F]`: the features kept from the image, the
others set to the baseline.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.checks import as_key, check_count, is_traced

DEFAULT_GRID = 8  # cells per side of the default mask (64 features; 28 px patches at 224 px)


def grid_mask(size, cells: int) -> np.ndarray:
    """`[H, W]` int32 ids of a row-major grid of `cells` x `cells` near-equal cells (fewer
    where the image has fewer pixels than cells)."""
    cells = check_count(cells, "cells")
    h, w = size
    ch, cw = min(cells, h), min(cells, w)
    rows, cols = np.arange(h) * ch // h, np.arange(w) * cw // w
    return (rows[:, None] * cw + cols[None, :]).astype(np.int32)


def patch_mask(size, patch) -> np.ndarray:
    """`[H, W]` int32 ids of a row-major grid of `patch` (int or (ph, pw)) cells; cells on the
    bottom / right edges are cut where the image ends."""
    values = np.ravel(np.asarray(patch, dtype=object))
    if values.size not in (1, 2):
        raise ValueError(f"patch must be an int or a pair (h, w), got {patch!r}")
    ph, pw = (check_count(v, "patch") for v in np.broadcast_to(values, 2))
    h, w = size
    cols = -(-w // pw)
    return ((np.arange(h)[:, None] // ph) * cols + np.arange(w)[None, :] // pw).astype(np.int32)


def feature_ids(feature_mask, patch, x_shape, cells: int = DEFAULT_GRID
                ) -> tuple[np.ndarray, int]:
    """The checked mask `[1 or N, H, W]` (int32, concrete) and the number of features F.

    Args:
      feature_mask: None, or int ids `[H, W]` / `[1, H, W]` / `[N, H, W]`, consecutive from 0
        (ids absent from one image of a per-image mask are fine; each id must occur somewhere).
      patch: None, or an int or (ph, pw) for a grid of patches of that size.
      x_shape: the images' shape `[N, H, W, 3]`.
      cells: the default when both are None: a grid of `cells` x `cells` (`grid_mask`).
    """
    n, h, w = x_shape[:3]
    if feature_mask is None:
        grid = grid_mask((h, w), cells) if patch is None else patch_mask((h, w), patch)
        return grid[None], int(grid.max()) + 1
    if patch is not None:
        raise ValueError("pass either feature_mask or patch, not both")
    if is_traced(feature_mask):
        raise TypeError("feature_mask must be a concrete array (numpy or jax), not traced: "
                        "the number of features sets the shapes of the computation")
    mask = np.asarray(feature_mask)
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise TypeError(f"feature_mask must hold integer feature ids, got dtype {mask.dtype}")
    mask = mask.astype(np.int64)
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.shape[1:] != (h, w) or mask.shape[0] not in (1, n):
        raise ValueError(f"feature_mask must be [H, W] or [N, H, W] = [{n}, {h}, {w}] ids (shared "
                         f"by the colour channels), got shape {np.shape(feature_mask)}")
    ids = np.unique(mask)
    if ids[0] < 0:
        raise ValueError(f"feature_mask ids must be >= 0, got {ids[0]}")
    f = int(ids[-1]) + 1
    if ids.size != f:
        missing = np.setdiff1d(np.arange(f), ids)
        raise ValueError(f"feature_mask ids must be consecutive 0..F-1; ids {missing[:10].tolist()}"
                         f"{' ...' if missing.size > 10 else ''} are missing (F = {f})")
    return mask.astype(np.int32), f


def spread(values: jax.Array, mask: jax.Array) -> jax.Array:
    """`values` `[N, F]` on the pixels: `[N, H, W]`, each pixel its feature's value."""
    if mask.shape[0] == 1:
        return values[:, mask[0]]
    flat = jnp.take_along_axis(values, mask.reshape(mask.shape[0], -1), axis=1)
    return flat.reshape(mask.shape)


def compose(x, base, z, mask) -> jax.Array:
    """Images with the features of coalition `z` `[N, F]` (bool) from `x`, the rest `base`."""
    return jnp.where(spread(z, mask)[..., None], x, base)


def example_keys(key, n: int) -> jax.Array:
    """`[N]` keys: one key -> example i draws from `fold_in(key, i)`; `[N]` keys as they are."""
    key = as_key(key)
    if key.ndim not in (0, 1) or (key.ndim == 1 and key.shape[0] != n):
        raise ValueError(f"key must be one PRNG key or one per example ({n}), got shape "
                         f"{key.shape}")
    return _fold(key, n) if key.ndim == 0 else key


# The draws here are small and never sharded; XLA:CPU compiles JAX's default, partitionable
# threefry about 4x slower (measured 1.9 s vs 0.5 s of CPU per program drawing [2, 25, 7]
# uniforms), so they use the classic threefry lowering. A key gives the same draws either way
# across runs and backends; they differ from what jax.random would draw with the default.


@functools.partial(jax.jit, static_argnames="n")
def _fold(key, n):
    with jax.threefry_partitionable(False):
        return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n))


@functools.partial(jax.jit, static_argnames=("kind", "samples", "f"))
def draw(keys, kind: str, samples: int, f: int) -> jax.Array:
    """Per-example draws `[N, samples, F]` from keys `[N]`, all from one draw of random 32-bit
    words per example (XLA:CPU compiles each threefry call, and a vmapped one, slowly:
    `lax.map`).

    kind: "permutations" (int: argsort of random words), "kernel_shap"
    (`kernel_shap_coalitions`, bool) or "bernoulli" (each feature kept with probability 1/2).
    """
    def one(k):
        with jax.threefry_partitionable(False):
            bits = jax.random.bits(k, (samples, f + 1), jnp.uint32)
        if kind == "permutations":
            return jnp.argsort(bits[:, :f], axis=-1).astype(jnp.int32)
        if kind == "bernoulli":
            return bits[:, :f] < jnp.uint32(2 ** 31)
        return kernel_shap_coalitions(bits, f)

    return jax.lax.map(one, keys)


def check_draws(draws, name: str, n: int, f: int, samples, binary: bool) -> jax.Array:
    """Caller-given draws `[S, F]` (shared) or `[N, S, F]` as `[N, S, F]`; `binary`: 0/1
    values as bool; else int permutations of 0..F-1."""
    arr = draws if is_traced(draws) else np.asarray(draws)
    if arr.ndim == 2:
        arr = (jnp if is_traced(draws) else np).broadcast_to(arr[None], (n, *arr.shape))
    if arr.ndim != 3 or arr.shape[0] != n or arr.shape[2] != f:
        raise ValueError(f"{name} must be [S, F] or [N, S, F] with N = {n}, F = {f} features, "
                         f"got shape {np.shape(draws)}")
    if samples is not None and arr.shape[1] != samples:
        raise ValueError(f"{name} holds {arr.shape[1]} samples but samples={samples}")
    if not is_traced(arr):
        if binary and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must hold 0/1 values (feature kept or not)")
        if not binary and not (np.sort(arr, -1) == np.arange(f)).all():
            raise ValueError(f"{name} must hold permutations of 0..{f - 1}")
    arr = jnp.asarray(arr)
    return arr.astype(bool) if binary else arr.astype(jnp.int32)


def kernel_shap_coalitions(bits: jax.Array, f: int) -> jax.Array:
    """Captum's KernelShap draws for one example, from random words `bits` `[S, F + 1]`
    (uint32): `[S, F]` bool.

    The all-in and the all-out coalitions come first; every other one has a size k drawn with
    probability proportional to (F - 1) / (k (F - k)) for k in 1..F-1 (inverse CDF of the last
    word as a uniform), then its k features uniformly (the k largest of F random words;
    Captum thresholds F normals the same way).
    """
    k = np.arange(1, f)
    cdf = np.cumsum((f - 1) / (k * (f - k)))
    cdf = jnp.asarray(cdf / cdf[-1], jnp.float32)
    rest = bits[2:]
    u = (rest[:, f] >> 8).astype(jnp.float32) * 2.0 ** -24  # uniform on [0, 1)
    sizes = 1 + (u[:, None] >= cdf[None, :-1]).sum(1)
    ranks = jnp.argsort(jnp.argsort(rest[:, :f], -1), -1)
    drawn = ranks >= f - sizes[:, None]
    return jnp.concatenate([jnp.ones((1, f), bool), jnp.zeros((1, f), bool), drawn])


def lasso(X, y, w, alpha, tol, max_iter: int):
    """sklearn's `Lasso(alpha).fit(X, y, sample_weight=w)` (with intercept), solved to `tol`.

    Minimizes `1 / (2 sum(w)) sum_i w_i (y_i - b - X_i . beta)^2 + alpha |beta|_1` over
    (beta, b) by cyclic coordinate descent on sklearn's preprocessed problem (weights rescaled
    to sum to S, weighted centring, rows scaled by sqrt(w)), from beta = 0. It stops after the
    first sweep whose duality gap is <= `tol * |y_c|^2` (sklearn's certificate and scale;
    sklearn's default tol is 1e-4), or that moved no coefficient by more than 16 float eps of
    the largest (a fixed point of the iteration in this precision: float32 stops there), or
    after `max_iter` sweeps.

    Args:
      X: `[S, F]` design. y: `[S]` targets. w: `[S]` positive sample weights.
      alpha: L1 weight. tol: relative duality-gap tolerance. max_iter: sweep limit.
    Returns:
      `(beta [F], intercept, gap / |y_c|^2, sweeps)`.
    """
    s = X.shape[0]
    sw = w * (s / w.sum())
    x_off, y_off = (sw @ X) / sw.sum(), (sw @ y) / sw.sum()
    root = jnp.sqrt(sw)
    xc, yc = (X - x_off) * root[:, None], (y - y_off) * root
    lam = alpha * s
    norm2 = (xc * xc).sum(0)
    yy = yc @ yc
    stall = 16 * jnp.finfo(X.dtype).eps

    def gap(beta, r):
        xtr = xc.T @ r
        dual = jnp.abs(xtr).max()
        scale = jnp.where(dual > lam, lam / jnp.where(dual > 0, dual, 1), 1.0)
        return (0.5 * (1 - scale) ** 2 * (r @ r) + lam * jnp.abs(beta).sum()
                - scale * (beta @ xtr))

    def coordinate(j, carry):
        beta, r = carry
        col, old, nj = xc[:, j], beta[j], norm2[j]
        tmp = col @ r + old * nj
        new = jnp.where(nj > 0, jnp.sign(tmp) * jnp.maximum(jnp.abs(tmp) - lam, 0)
                        / jnp.where(nj > 0, nj, 1), 0.0)
        return beta.at[j].set(new), r + (old - new) * col

    def sweep(state):
        beta, r, _, _, it = state
        new, r = jax.lax.fori_loop(0, X.shape[1], coordinate, (beta, r))
        moved = jnp.abs(new - beta).max() > stall * jnp.abs(new).max()
        return new, r, gap(new, r), moved, it + 1

    def going(state):
        return (state[2] > tol * yy) & state[3] & (state[4] < max_iter)

    beta0 = jnp.zeros(X.shape[1], X.dtype)
    beta, _, g, _, it = jax.lax.while_loop(going, sweep,
                                           (beta0, yc, gap(beta0, yc), True, 0))
    return beta, y_off - x_off @ beta, g / jnp.where(yy > 0, yy, 1), it


def weighted_lstsq(X, y, w, rcond: float = 1e-6):
    """sklearn 1.9's `LinearRegression().fit(X, y, sample_weight=w)` (with intercept).

    Weighted centring, rows scaled by sqrt(w), then the minimum-norm least-squares solution
    with singular values below `rcond` times the largest cut (sklearn passes its `tol`, 1e-6,
    as `cond` to `scipy.linalg.lstsq`).

    Returns:
      `(beta [F], intercept)`.
    """
    x_off, y_off = (w @ X) / w.sum(), (w @ y) / w.sum()
    root = jnp.sqrt(w)
    beta = jnp.linalg.lstsq((X - x_off) * root[:, None], (y - y_off) * root, rcond=rcond)[0]
    return beta, y_off - x_off @ beta


def shapley_weights(f: int) -> tuple[np.ndarray, np.ndarray]:
    """All 2^F coalitions `[2^F, F]` (bool) and the coefficients `[2^F, F]` (float64) with
    `phi = coef.T @ v(coalitions)`: `phi_j = sum_{S not j} |S|! (F-|S|-1)! / F! (v(S+j) - v(S))`."""
    from math import factorial

    c = np.arange(2 ** f)
    z = (c[:, None] >> np.arange(f)[None]) & 1 == 1
    size = z.sum(1)
    w = np.array([factorial(k) * factorial(f - k - 1) / factorial(f) for k in range(f)] + [0.0])
    coef = np.where(z, w[np.maximum(size - 1, 0)][:, None], -w[size][:, None])
    return z, coef
