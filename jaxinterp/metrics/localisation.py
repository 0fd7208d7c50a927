"""Localisation: does the explanation fall on the object? (Quantus 0.6's PointingGame,
RelevanceMassAccuracy, RelevanceRankAccuracy, AttributionLocalisation, AUC.)

Pure functions of the attributions and a ground-truth mask `[N, H, W]` (Quantus' `s_batch`);
the model runs only to compute attributions when a method is passed. Images with an empty mask
score NaN, as in Quantus.

Features are Quantus': a map `[N, H, W]` has H·W, one per pixel. Quantus refuses pixel
attributions `[N, H, W, 3]` here (its masks have one channel and it flattens both sides); this
module reads them as 3·H·W features with the mask spread over the 3 channels (each channel
value of a pixel inside the object counts as inside). Pass `ji.evaluation.heatmap(a)` to score
one value per pixel instead.

`jaxinterp.evaluation.pointing_game` / `mass_inside` are the quick checks on `heatmap(a)` (|a|
summed over channels, a map's positive part, first maximum); these are Quantus' definitions on
the signed values, with Quantus' ties.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.metrics import _common as c


def _prepared(m, x, y, attributions, mask, normalise, absolute):
    a = c.attributions_for(m, x, y, attributions)
    n = None if x is None else np.shape(x)[0]
    a = c.check_attributions(a, n)
    s = c.check_mask(mask, a.shape[0], a.shape[1:3])
    s = c.features(s.astype(a.dtype), spread=a.ndim == 4 and a.shape[-1] == 3) > 0
    a = c.features(c.preprocess(a, c.check_normalise(normalise), absolute))
    return a, s


def _empty_nan(score, s):
    return np.where(np.asarray(s.sum(-1)) == 0, np.nan, np.asarray(score, np.float64))


@jax.jit
def _pointing(a, s):
    top = a == a.max(-1, keepdims=True)
    return jnp.any(top & s, axis=-1)


def pointing_game(m, x, y, attributions: Any, mask: Any, *, weighted: bool = False,
                  normalise: Any = "image", abs: bool = False) -> np.ndarray:  # noqa: A002
    """Pointing game (Zhang et al. 2018): is the attribution's maximum inside the mask?

    Ties count as a hit when any maximal feature is inside (Quantus). With `weighted`, a hit
    scores `1 − |mask| / F` (small objects count more; Quantus' option). Higher is better.

    Quantus 0.6 `PointingGame` defaults kept: signed values (`abs=False`), `weighted=False`;
    normalising cannot change the maximum.

    Args:
      m, x, y: model, images and target (only used when `attributions` is a method).
      attributions: `[N, H, W]` or `[N, H, W, 3]`, or a method `(m, x, y) -> attributions`.
      mask: `[N, H, W]` 0/1 or boolean object masks.
      weighted: score hits by `1 − |mask| / F`.
      normalise: "image", "batch" (Quantus) or None (no effect on the result).
      abs: use |a|.
    Returns:
      `[N]` numpy floats: 1.0 hit, 0.0 miss (or the weighted score), NaN for an empty mask.
    """
    a, s = _prepared(m, x, y, attributions, mask, normalise, abs)
    hit = np.asarray(_pointing(a, s), np.float64)
    if weighted:
        hit = np.where(hit > 0, 1 - np.asarray(s.sum(-1)) / s.shape[-1], hit)
    return _empty_nan(hit, s)


@jax.jit
def _mass(a, s):
    return (a * s).sum(-1) / a.sum(-1)


def relevance_mass_accuracy(m, x, y, attributions: Any, mask: Any, *, normalise: Any = "image",
                            abs: bool = False) -> np.ndarray:  # noqa: A002
    """Relevance mass accuracy (Arras et al. 2022): the share of the attribution inside the mask.

    `Σ_inside a / Σ a`, on signed values by default (Quantus: `abs=False`), so negative evidence
    outside the mask can push it above 1 and a sum of 0 gives ±inf or NaN. Higher is better.

    Quantus 0.6 `RelevanceMassAccuracy` defaults kept; normalising cancels in the ratio.

    Args:
      m, x, y: model, images and target (only used when `attributions` is a method).
      attributions: `[N, H, W]` or `[N, H, W, 3]`, or a method.
      mask: `[N, H, W]` 0/1 or boolean object masks.
      normalise: "image", "batch" (Quantus) or None.
      abs: use |a| (then the result is in [0, 1]).
    Returns:
      `[N]` numpy floats, NaN for an empty mask.
    """
    a, s = _prepared(m, x, y, attributions, mask, normalise, abs)
    return _empty_nan(_mass(a, s), s)


@jax.jit
def _rank_accuracy(a, s):
    k = s.sum(-1, keepdims=True)
    top = c.descending_ranks(a) < k
    return (top & s).sum(-1) / jnp.maximum(k[:, 0], 1)


def relevance_rank_accuracy(m, x, y, attributions: Any, mask: Any, *,
                            normalise: Any = "image",
                            abs: bool = False) -> np.ndarray:  # noqa: A002
    """Relevance rank accuracy (Arras et al. 2022): of the K largest features, K = |mask|, the
    share inside the mask.

    Ties at the K-th value are broken in index order (a stable sort; Quantus' `np.argsort`
    breaks them arbitrarily, so results can differ on tied values only). Higher is better.

    Quantus 0.6 `RelevanceRankAccuracy` defaults kept (signed values); normalising does not
    change ranks.

    Args:
      m, x, y: model, images and target (only used when `attributions` is a method).
      attributions: `[N, H, W]` or `[N, H, W, 3]`, or a method.
      mask: `[N, H, W]` 0/1 or boolean object masks.
      normalise: "image", "batch" (Quantus) or None.
      abs: rank |a|.
    Returns:
      `[N]` numpy floats in [0, 1], NaN for an empty mask.
    """
    a, s = _prepared(m, x, y, attributions, mask, normalise, abs)
    return _empty_nan(_rank_accuracy(a, s), s)


def attribution_localisation(m, x, y, attributions: Any, mask: Any, *, weighted: bool = False,
                             positive_attributions: bool = False, normalise: Any = "image",
                             abs: bool = True) -> np.ndarray:  # noqa: A002
    """Attribution localisation (Kohlbrenner et al. 2020): `Σ_inside a / (Σ a + 1e-9)`.

    Ratios above 1 (possible only with negative values, `abs=False`) are NaN, as in Quantus.
    With `weighted`, the ratio is multiplied by the mask's share of the features `|mask| / F`.
    Higher is better.

    Quantus 0.6 `AttributionLocalisation` defaults kept (`abs=True`, normalised,
    `positive_attributions=False`, `weighted=False`). Quantus computes the mask's share with
    `x_batch[2:].size` (the size of all images but the first two, a slip for the image size);
    the reading taken is the mask's share of one image's features.

    Args:
      m, x, y: model, images and target (only used when `attributions` is a method).
      attributions: `[N, H, W]` or `[N, H, W, 3]`, or a method.
      mask: `[N, H, W]` 0/1 or boolean object masks.
      weighted: multiply by the mask's share of the features.
      positive_attributions: clip negative values to 0 first (after `abs`/normalising).
      normalise: "image", "batch" (Quantus) or None.
      abs: use |a|.
    Returns:
      `[N]` numpy floats, NaN for an empty mask or a ratio above 1.
    """
    a, s = _prepared(m, x, y, attributions, mask, normalise, abs)
    if positive_attributions:
        a = jnp.maximum(a, 0)
    inside = np.asarray((a * s).sum(-1), np.float64)
    ratio = inside / (np.asarray(a.sum(-1), np.float64) + 1e-9)
    ratio = np.where(ratio > 1, np.nan, ratio)
    if weighted:
        ratio = ratio * np.asarray(s.sum(-1)) / s.shape[-1]
    return _empty_nan(ratio, s)


@jax.jit
def _twice_ranks(a):
    return c.twice_rankdata(a)


def _roc_auc(a, s):
    # rank sums reach F² / 2 (1e10 at 224²·3): summed on the host in float64
    ranks = np.asarray(_twice_ranks(a), np.float64) / 2
    s = np.asarray(s)
    pos = s.sum(-1).astype(np.float64)
    neg = s.shape[-1] - pos
    u = (ranks * s).sum(-1) - pos * (pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((pos > 0) & (neg > 0), u / (pos * neg), np.nan)


def auc(m, x, y, attributions: Any, mask: Any, *, normalise: Any = "image",
        abs: bool = False) -> np.ndarray:  # noqa: A002
    """AUC (Fawcett 2006): the area under the ROC curve of the mask against the attribution.

    The probability that a random feature inside the mask outranks one outside (ties count ½):
    the Mann-Whitney U over |inside|·|outside| from average ranks, equal to sklearn's
    `auc(*roc_curve(mask, a)[:2])` that Quantus calls. 0.5 is chance. Higher is better.

    Quantus 0.6 `AUC` defaults kept (signed values); normalising does not change ranks. Not
    `jaxinterp.evaluation.auc` (the area under a deletion / insertion curve).

    Args:
      m, x, y: model, images and target (only used when `attributions` is a method).
      attributions: `[N, H, W]` or `[N, H, W, 3]`, or a method.
      mask: `[N, H, W]` 0/1 or boolean object masks.
      normalise: "image", "batch" (Quantus) or None.
      abs: rank |a|.
    Returns:
      `[N]` numpy floats in [0, 1], NaN for an empty or a full mask.
    """
    a, s = _prepared(m, x, y, attributions, mask, normalise, abs)
    return _empty_nan(_roc_auc(a, s), s)
