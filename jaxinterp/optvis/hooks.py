"""Post-update hooks for `optimize`: `hook(step, params, grad) -> params`.

Hooks are small frozen (hashable) objects or pytrees, so they can be part of a jitted
function's static configuration or carry arrays (the clean images of an attack) as leaves.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Clip:
    """Clips the parameters to [lo, hi] (pixel images optimized directly)."""

    lo: float = 0.0
    hi: float = 1.0

    def __call__(self, step, params, grad):
        return jnp.clip(params, self.lo, self.hi)


def project(x: jax.Array, center: jax.Array, eps, norm: str = "linf") -> jax.Array:
    """`x` moved onto the `norm` ε-ball around `center`, then into [0, 1].

    The L∞ ball clamps the difference to ±ε; the L2 ball scales it by min(1, ε / ‖δ‖) per image
    (torchattacks' `PGD` / `PGDL2` order: the ball first, then the pixel range).

    Args:
      x: images `[B, ...]`.
      center: the ball's centres, same shape.
      eps: radius, a scalar or `[B]` (traced).
      norm: "linf" or "l2".
    Returns:
      The projected images.
    """
    eps = jnp.asarray(eps, x.dtype)
    eps = eps.reshape(eps.shape + (1,) * (x.ndim - eps.ndim))
    delta = x - center
    if norm == "linf":
        delta = jnp.clip(delta, -eps, eps)
    else:
        n = jnp.sqrt((delta ** 2).reshape(delta.shape[0], -1).sum(1))
        n = n.reshape((-1,) + (1,) * (x.ndim - 1))
        delta = delta * jnp.minimum(1.0, eps / jnp.maximum(n, 1e-12))
    return jnp.clip(center + delta, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Yosinski:
    """Yosinski et al. (2015) regularization, applied to a pixel parameter after each update.

    Parameter value 0 is mid-gray, so "clipping" a pixel sets its parameter to 0.

    Attributes:
      decay: L2 decay, params *= 1 - decay every step.
      blur_every: blur with a Gaussian of sd `blur_sigma` every this many steps (0: never).
      blur_sigma: Gaussian sd in pixels.
      norm_pct: zero the pixels whose colour norm is below this percentile (0: off).
      contrib_pct: zero the pixels whose |sum over channels of param * gradient| (first-order
        contribution to the objective) is below this percentile (0: off).
    """

    decay: float = 0.0
    blur_every: int = 0
    blur_sigma: float = 0.5
    norm_pct: float = 0.0
    contrib_pct: float = 0.0

    def __call__(self, step, params, grad):
        if self.decay:
            params = params * (1.0 - self.decay)
        if self.blur_every and self.blur_sigma > 0:
            blurred = gaussian_blur(params, self.blur_sigma)
            params = jnp.where((step + 1) % self.blur_every == 0, blurred, params)
        if self.norm_pct:
            params = _clip_below(params, jnp.linalg.norm(params, axis=-1), self.norm_pct)
        if self.contrib_pct:
            params = _clip_below(params, jnp.abs((params * grad).sum(-1)), self.contrib_pct)
        return params


def _clip_below(params, score, pct):
    """Zeroes pixels whose `score` `[B, H, W]` is below the per-image `pct` percentile."""
    cut = jnp.percentile(score.reshape(score.shape[0], -1), pct, axis=1)[:, None, None]
    return jnp.where((score < cut)[..., None], 0.0, params)


def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of `[B, H, W, C]` with sd `sigma` pixels (edges replicated)."""
    r = max(1, int(3 * sigma + 0.5))
    k = jnp.exp(-0.5 * (jnp.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    x = sum(k[i] * xp[:, i:i + h] for i in range(2 * r + 1))
    return sum(k[i] * x[:, :, i:i + w] for i in range(2 * r + 1))
