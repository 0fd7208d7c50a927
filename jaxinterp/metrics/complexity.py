"""Complexity: how concentrated an explanation is (Quantus 0.6's Sparseness, Complexity,
EffectiveComplexity). Pure functions of the attributions; the model runs only to compute them
when a method is passed.

Every function has the signature of Quantus' metric call, `(m, x, y, attributions)`: `m`, `x`
and `y` are needed only when `attributions` is a method (else they may be None).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.metrics import _common as c


def _prepared(m, x, y, attributions, normalise, absolute):
    a = c.attributions_for(m, x, y, attributions)
    n = None if x is None else np.shape(x)[0]
    a = c.check_attributions(a, n)
    return c.features(c.preprocess(a, c.check_normalise(normalise), absolute))


@jax.jit
def _gini(a):
    n = a.shape[-1]
    a = jnp.sort(a + 1e-7, axis=-1)
    k = jnp.arange(1, n + 1, dtype=a.dtype)
    return ((2 * k - n - 1) * a).sum(-1) / (n * a.sum(-1))


def sparseness(m, x, y, attributions: Any, *, normalise: Any = "image",
               abs: bool = True) -> np.ndarray:  # noqa: A002
    """Sparseness: the Gini index of the attribution's features (Chalasani et al. 2020).

    `Σ_k (2k − F − 1)·a_(k) / (F·Σ a)` over the F features sorted ascending, after Quantus'
    `a + 1e-7`: 0 for a constant map, (F − 1)/F for a single non-zero feature. Higher is
    sparser.

    Quantus 0.6 `Sparseness` defaults kept: `abs=True`, normalised by the maximum. Changed:
    `normalise="image"` (each image by its own maximum); Quantus divides the whole batch by one
    maximum ("batch"), so an image's score depends, through the 1e-7, on the images beside
    it. Features are Quantus': 3·H·W for pixel attributions, H·W for maps.

    Args:
      m: the model (only used when `attributions` is a method).
      x: images `[N, H, W, 3]` (only used when `attributions` is a method; may be None).
      y: target (only used when `attributions` is a method).
      attributions: `[N, H, W, 3]` or `[N, H, W]`, or a method `(m, x, y) -> attributions`.
      normalise: "image", "batch" (Quantus) or None.
      abs: take |a| first (Quantus' default; the Gini index needs non-negative values).
    Returns:
      `[N]` numpy, in [0, 1).
    """
    return np.asarray(_gini(_prepared(m, x, y, attributions, normalise, abs)))


@jax.jit
def _entropy(a):
    p = a / jnp.abs(a).sum(-1, keepdims=True)
    return -(p * jnp.log(p + 1e-12)).sum(-1)


def complexity(m, x, y, attributions: Any, *, normalise: Any = "image",
               abs: bool = True) -> np.ndarray:  # noqa: A002
    """Complexity: the entropy of the attribution's share per feature (Bhatt et al. 2020).

    `−Σ p log(p + 1e-12)` with `p = a / Σ|a|` (Quantus' formula, natural log): 0 when one
    feature holds everything, log F for a constant map. Lower is simpler. An all-zero
    attribution gives NaN (as Quantus: 0 / 0).

    Quantus 0.6 `Complexity` defaults kept (`abs=True`, normalised by the maximum, which
    cancels here up to the 1e-12); `normalise="image"` instead of Quantus' one maximum per
    batch (see `sparseness`).

    Args:
      m, x, y: model, images and target (only used when `attributions` is a method).
      attributions: `[N, H, W, 3]` or `[N, H, W]`, or a method.
      normalise: "image", "batch" (Quantus) or None.
      abs: take |a| first (Quantus' default; the entropy needs non-negative values).
    Returns:
      `[N]` numpy, in [0, log F].
    """
    return np.asarray(_entropy(_prepared(m, x, y, attributions, normalise, abs)))


def effective_complexity(m, x, y, attributions: Any, *, eps: float = 1e-5,
                         normalise: Any = "image", abs: bool = True) -> np.ndarray:  # noqa: A002
    """Effective complexity: how many features exceed `eps` (Nguyen & Martínez 2020).

    Counts features with `a > eps` after normalising by the maximum and taking |a|. Lower is
    simpler.

    Quantus 0.6 `EffectiveComplexity` defaults kept (`eps=1e-5`, `abs=True`, normalised).
    Changed: `normalise="image"`. Here the choice matters beyond rounding: Quantus' one maximum
    per batch ("batch") makes the threshold relative to the batch's largest attribution, so a
    strong image beside a weak one changes the weak one's count.

    Args:
      m, x, y: model, images and target (only used when `attributions` is a method).
      attributions: `[N, H, W, 3]` or `[N, H, W]`, or a method.
      eps: the threshold, in units of the maximum when normalised.
      normalise: "image", "batch" (Quantus) or None.
      abs: take |a| first.
    Returns:
      `[N]` numpy ints.
    """
    if not np.isscalar(eps) or not np.isfinite(eps):
        raise ValueError(f"eps must be a finite number, got {eps!r}")
    a = _prepared(m, x, y, attributions, normalise, abs)
    return np.asarray((a > eps).sum(-1)).astype(int)
