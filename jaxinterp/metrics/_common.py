"""What the metric families share: attribution layout, Quantus' pre-processing, scores, ranks,
correlations, random draws per example.

Layout. Images are `[N, H, W, 3]`; attributions `[N, H, W, 3]` (pixels) or `[N, H, W]` (maps).
Quantus works channel-first and counts *features*: a pixel attribution has 3·H·W of them, a map
H·W (Quantus adds a channel axis of size 1), and where a metric changes the input, a map is
spread over the 3 channels (`np.broadcast_to`), so it has 3·H·W features too, each channel
value of a pixel carrying the pixel's attribution. Feature indices here are Quantus' too: the
channel-first flat index `c·H·W + h·W + w` (so indices drawn for one library can be handed to
the other).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

NORMALISE = ("image", "batch", None)


class Curves(NamedTuple):
    """A score per image and the curve it summarises.

    Attributes:
      scores: `[N]`, the metric's summary per image.
      curves: `[N, S]`, the values it summarises (one per perturbation step).
    """

    scores: np.ndarray
    curves: np.ndarray


# --------------------------------------------------------------------------- arguments


def check_attributions(attributions: Any, n: int | None = None, hw: tuple | None = None,
                       name: str = "attributions") -> jax.Array:
    """`attributions` as a float array `[N, H, W]` or `[N, H, W, C]` (C = 1 or 3), checked
    against the batch size `n` and image size `hw` when given."""
    if callable(attributions):
        raise TypeError(f"{name}: expected an array here, got the callable {attributions!r}")
    a = jnp.asarray(attributions)
    if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[-1] not in (1, 3)):
        raise ValueError(f"{name} must be pixel attributions [N, H, W, 3] or maps [N, H, W], "
                         f"got shape {a.shape}")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} examples, the images {n}")
    if hw is not None and tuple(a.shape[1:3]) != tuple(hw):
        raise ValueError(f"{name} of shape {a.shape} does not match images of size "
                         f"{hw[0]}x{hw[1]}")
    return a


def check_mask(mask: Any, n: int, hw: tuple, name: str = "mask") -> jax.Array:
    """A boolean `[N, H, W]` mask from 0/1 or boolean values (`[N, H, W, 1]` accepted)."""
    s = np.asarray(mask) if not isinstance(mask, jax.Array) else mask
    if s.ndim == 4 and s.shape[-1] == 1:
        s = s[..., 0]
    if s.shape != (n, *hw):
        raise ValueError(f"{name} must be [N, H, W] = {(n, *hw)} (one mask per image), got "
                         f"shape {tuple(s.shape)}")
    if not isinstance(s, jax.Array) and s.dtype != bool and not np.isin(s, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0/1 or booleans")
    return jnp.asarray(s).astype(bool)


def check_normalise(normalise: Any) -> str | None:
    """`normalise` as "image", "batch" or None (True means "batch", Quantus' `normalise=True`;
    False means None)."""
    if normalise is True:
        return "batch"
    if normalise is False:
        return None
    if normalise not in NORMALISE:
        raise ValueError(f"normalise must be one of {NORMALISE} (or True = 'batch', False = "
                         f"None), got {normalise!r}")
    return normalise


def check_choice(value: Any, name: str, choices: tuple) -> Any:
    """`value` if it is one of `choices`, else a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def resolve_method(method: Any, name: str = "method") -> Callable:
    """An attribution function `(m, x, target) -> array` from a callable or a registered name."""
    if isinstance(method, str):
        from jaxinterp.attribution import registry

        return registry.get(method)
    if not callable(method):
        raise TypeError(f"{name} must be an attribution function (m, x, target) -> array or a "
                        f"method name, got {type(method).__name__}")
    return method


def attributions_for(m, x, target, attributions) -> jax.Array:
    """The attributions given, or `attributions(m, x, target)` when it is a method."""
    if callable(attributions) or isinstance(attributions, str):
        if m is None or x is None or target is None:
            raise ValueError("a method needs the model, images and target to run; pass "
                             "attributions as an array otherwise")
        return jnp.asarray(resolve_method(attributions, "attributions")(m, x, target))
    return attributions


def key_per_example(key: Any, n: int) -> jax.Array:
    """`[N]` keys: `fold_in(key, i)` for one key (an example's draws do not depend on the batch
    it is in), or the `[N]` keys given."""
    from jaxinterp.checks import as_key

    key = as_key(key)
    if key.ndim == 0:
        return _fold_in(key, n)
    if key.shape != (n,):
        raise ValueError(f"key must be one PRNG key or one per example ({n}), got shape "
                         f"{key.shape}")
    return key


@functools.partial(jax.jit, static_argnames=("n",))
def _fold_in(key, n):
    return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n))


# --------------------------------------------------------------------------- Quantus' layout


def channel_first(a: jax.Array) -> jax.Array:
    """`[N, H, W, C]` -> `[N, C, H, W]`; a map `[N, H, W]` -> `[N, 1, H, W]`."""
    return a[:, None] if a.ndim == 3 else jnp.moveaxis(a, -1, 1)


def features(a: jax.Array, spread: bool = False) -> jax.Array:
    """Attributions as Quantus' flat features `[N, F]` (channel-first order); `spread`: a map
    (or one channel) repeated over the 3 channels first, as Quantus' `np.broadcast_to(a,
    x.shape)` in the metrics that perturb the input."""
    a = channel_first(a)
    if spread:
        a = jnp.broadcast_to(a, (a.shape[0], 3, *a.shape[2:]))
    return a.reshape(a.shape[0], -1)


def image_features(x: jax.Array) -> jax.Array:
    """Images `[N, H, W, 3]` as flat channel-first features `[N, 3·H·W]`."""
    return channel_first(x).reshape(x.shape[0], -1)


def from_features(f: jax.Array, shape: tuple) -> jax.Array:
    """Flat channel-first features back to images of `shape` `[N, H, W, 3]` (`f` may have
    leading axes of its own)."""
    n, h, w, c = shape
    return jnp.moveaxis(f.reshape(*f.shape[:-1], c, h, w), -3, -1)


def normalise_by_max(a: jax.Array, how: str | None) -> jax.Array:
    """Quantus' `normalise_by_max`: `a / max|a|`. "batch": one maximum over the whole batch
    (Quantus: over everything passed in one call; an all-zero batch is left as is); "image":
    one per image (an all-zero image left as is); None: unchanged."""
    if how is None:
        return a
    axes = tuple(range(a.ndim)) if how == "batch" else tuple(range(1, a.ndim))
    top = jnp.max(jnp.abs(a), axis=axes, keepdims=True)
    return a / jnp.where(top == 0, 1, top)


def preprocess(a: jax.Array, normalise: str | None, absolute: bool) -> jax.Array:
    """Quantus' pre-processing of attributions: normalise, then take |a| (in that order)."""
    a = normalise_by_max(a, normalise)
    return jnp.abs(a) if absolute else a


def baseline_value(xf: jax.Array, baseline: Any) -> jax.Array:
    """Quantus' `perturb_baseline` per image `[N, 1]` from flat images `[N, F]`: "black" is the
    image's minimum, "white" its maximum, "mean" its mean (not 0 / 1: Quantus'
    `get_baseline_dict`), a number is itself."""
    if isinstance(baseline, str):
        fn = {"black": jnp.min, "white": jnp.max, "mean": jnp.mean}.get(baseline)
        if fn is None:
            raise ValueError(f"baseline must be 'black', 'white', 'mean' or a number, got "
                             f"{baseline!r}")
        return fn(xf, axis=1, keepdims=True)
    return jnp.full((xf.shape[0], 1), baseline, xf.dtype)


def check_baseline(baseline: Any) -> Any:
    """A baseline name ("black", "white", "mean") or a finite number."""
    if isinstance(baseline, str):
        return check_choice(baseline, "baseline", ("black", "white", "mean"))
    if isinstance(baseline, (bool, np.bool_)) or not np.isscalar(baseline) or \
            not np.isfinite(baseline):
        raise ValueError(f"baseline must be 'black', 'white', 'mean' or a finite number, got "
                         f"{baseline!r}")
    return float(baseline)


# --------------------------------------------------------------------------- the model


def scores(m, t, x, softmax: bool) -> jax.Array:
    """The target's score per image `[N]` for images that may leave [0, 1]: its logit, or its
    softmax probability (`softmax=True`); a callable target's own score either way."""
    logits, feats = m(x, check=False)
    if t.fn is not None:
        return t(logits, feats)
    if softmax:
        logits = jax.nn.softmax(logits, axis=-1)
    return jnp.take_along_axis(logits, t.index[:, None], axis=1)[:, 0]


def predictions(m, x) -> jax.Array:
    """The predicted class per image `[N]` (inputs may leave [0, 1])."""
    return jnp.argmax(m(x, check=False)[0], axis=-1)


def check_model_target(m, x, target):
    """Checked images (`[N, H, W, 3]` in [0, 1]) and a `Target`."""
    from jaxinterp.attribution.core import prepare

    if m is None:
        raise ValueError("this metric runs the model: pass it as m")
    return prepare(m, x, target)


# --------------------------------------------------------------------------- statistics


def twice_rankdata(v: jax.Array) -> jax.Array:
    """Twice the average ranks (1-based) along the last axis, as exact integers: `2 ·
    scipy.stats.rankdata(v, method="average")`."""
    s = jnp.sort(v, axis=-1)
    search = jnp.vectorize(lambda row, q: (jnp.searchsorted(row, q, side="left"),
                                           jnp.searchsorted(row, q, side="right")),
                           signature="(n),(m)->(m),(m)")
    lo, hi = search(s, v)
    return lo + hi + 1


def rankdata(v: jax.Array) -> jax.Array:
    """Average ranks (1-based, ties share their mean rank) along the last axis, as
    `scipy.stats.rankdata(method="average")`."""
    return (twice_rankdata(v) / 2.0).astype(v.dtype if jnp.issubdtype(v.dtype, jnp.floating)
                                            else jnp.result_type(float))


def pearson(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pearson correlation along the last axis (NaN where one side is constant, as scipy)."""
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    num = (a * b).sum(-1)
    den = jnp.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), jnp.nan)


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
    """Spearman rank correlation along the last axis: Pearson of average ranks (scipy's)."""
    return pearson(rankdata(a), rankdata(b))


def descending_ranks(v: jax.Array) -> jax.Array:
    """Position of each entry of `[N, F]` in `argsort(-v)` order, 0 = largest (ties in index
    order: a stable sort; numpy's default sort, which Quantus uses, orders ties arbitrarily)."""
    n, f = v.shape
    order = jnp.argsort(-v, axis=1, stable=True)
    return jnp.zeros_like(order).at[jnp.arange(n)[:, None], order].set(jnp.arange(f)[None])


def trapezoid(curves: np.ndarray) -> np.ndarray:
    """Quantus' `calculate_auc`: the trapezoid rule with unit spacing along the last axis
    (`np.trapz(values, dx=1)`; NumPy 2.4 removed `np.trapz`, `np.trapezoid` is the same)."""
    c = np.asarray(curves, np.float64)
    if c.shape[-1] < 2:
        return np.zeros(c.shape[:-1])
    return c.sum(-1) - (c[..., 0] + c[..., -1]) / 2


def to_numpy(*arrays):
    """numpy copies (one transfer each)."""
    out = tuple(np.asarray(a) for a in arrays)
    return out if len(out) > 1 else out[0]
