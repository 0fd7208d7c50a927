"""Checking attributions against ground truth: pointing game, mass in the mask, randomization."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit


def heatmap(attr) -> jax.Array:
    """One non-negative map per image: sum of |a| over channels for `[N, H, W, 3]` attributions,
    the positive part for `[N, H, W]` maps (CAMs, occlusion: evidence for the target)."""
    attr = jnp.asarray(attr)
    return jnp.abs(attr).sum(-1) if attr.ndim == 4 else jnp.maximum(attr, 0)


def pointing_game(attr, mask) -> np.ndarray:
    """Per image: is the maximum of the heat map inside the object mask? (Zhang et al. 2016)."""
    h = np.asarray(heatmap(attr)).reshape(len(mask), -1)
    return np.asarray(mask).reshape(len(mask), -1)[np.arange(len(mask)), h.argmax(1)]


def mass_inside(attr, mask) -> np.ndarray:
    """Per image: fraction of the heat map's total inside the object mask (0 for empty maps)."""
    h = np.asarray(heatmap(attr), np.float64)
    total = h.sum((1, 2))
    inside = (h * np.asarray(mask)).sum((1, 2))
    return np.where(total > 0, inside / np.maximum(total, 1e-30), 0.0)


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as in Spearman's definition."""
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0) - 1)[inverse]


def spearman(a, b) -> np.ndarray:
    """Per image Spearman rank correlation between two heat maps (of `heatmap` form)."""
    a = np.asarray(a).reshape(len(a), -1)
    b = np.asarray(b).reshape(len(b), -1)
    out = []
    for u, v in zip(a, b):
        ru, rv = _ranks(u), _ranks(v)
        su, sv = ru.std(), rv.std()
        out.append(0.0 if su == 0 or sv == 0 else float(((ru - ru.mean()) * (rv - rv.mean())).mean() / (su * sv)))
    return np.array(out)


def cascading_randomization(m, key: jax.Array, depth: int):
    """The model with its top `depth` weight layers re-initialized (Adebayo et al. 2018).

    Layers are counted from the output: the last dense layer, then convolutions downwards. A
    randomized convolution's BatchNorm is reset to the identity (scale 1, shift 0, statistics 0/1).

    Args:
      m: the model.
      key: PRNG key of the fresh weights.
      depth: how many weight layers, from the top, to randomize.
    Returns:
      A `Model` with the same architecture and metadata.
    """
    from jaxinterp import model as model_lib
    from jaxinterp.models.vgg import param_name

    if not hasattr(m, "specs"):
        raise ValueError(f"cascading randomization follows jaxinterp VGG's layer list; {m.arch} "
                         "has none: re-initialize its top layers with your own init and "
                         "m.with_variables(...)")
    fresh = model_lib.init_model(m.arch, key, num_classes=m.num_classes,
                                 **{k: v for k, v in m.meta.config if k != "num_classes"})
    weighted = [s for s in m.specs if s.kind in ("conv", "dense")][::-1][:depth]
    variables = {c: dict(d) for c, d in m.variables.items()}  # replace layers, share the rest
    names = [s.name for s in m.specs]
    for s in weighted:
        variables["params"][param_name(s.name)] = fresh.variables["params"][param_name(s.name)]
        nxt = names[names.index(s.name) + 1] if names.index(s.name) + 1 < len(names) else None
        spec = next((t for t in m.specs if t.name == nxt), None)
        if spec is not None and spec.kind == "bn":
            p = param_name(spec.name)
            variables["params"][p] = fresh.variables["params"][p]
            variables["batch_stats"][p] = fresh.variables["batch_stats"][p]
    return m.with_variables(variables)


# --------------------------------------------------------------------------- faithfulness
# Deletion and insertion (Petsiuk et al. 2018, RISE): pixels move, most important first, from a
# start image to a finish image; the target's probability is read after each step. A faithful
# map makes it fall fast when deleting (low AUC) and rise fast when inserting (high AUC).

CURVES = ("deletion", "insertion")


def pixel_ranks(heat: jax.Array) -> jax.Array:
    """Rank of each pixel of `[N, H, W]` heat maps, 0 = hottest (ties: row-major order)."""
    n = heat.shape[0]
    flat = heat.reshape(n, -1)
    order = jnp.argsort(-flat, axis=1, stable=True)
    ranks = jnp.zeros_like(order).at[jnp.arange(n)[:, None], order].set(
        jnp.arange(flat.shape[1])[None])
    return ranks.reshape(heat.shape)


def _probability(m, t, x):
    logits, feats = m(x, check=False)
    if t.fn is not None:
        return t(logits, feats)
    return jnp.take_along_axis(jax.nn.softmax(logits), t.index[:, None], axis=1)[:, 0]


def _curve(m, t, ranks, start, finish, steps, batch_size):
    from jaxinterp.chunking import chunked_map

    pixels = ranks.shape[1] * ranks.shape[2]

    def at(k):
        moved = (ranks < jnp.round(k * pixels / steps))[..., None]
        return _probability(m, t, jnp.where(moved, finish, start))

    return chunked_map(at, jnp.arange(steps + 1, dtype=jnp.float32), batch_size).T  # [N, S+1]


@tuned_jit(static_argnames=("steps", "batch_size", "blur"))
def _faithfulness(m, x, t, heat, steps, batch_size, blur):
    from jaxinterp.optvis.hooks import gaussian_blur

    ranks = pixel_ranks(heat)
    deletion = _curve(m, t, ranks, x, jnp.zeros_like(x), steps, batch_size)
    insertion = _curve(m, t, ranks, gaussian_blur(x, blur), x, steps, batch_size)
    return deletion, insertion


def _auc(curve):
    return (curve[:, 1:] + curve[:, :-1]).sum(1) / (2 * (curve.shape[1] - 1))


def deletion_insertion(m, x, target, attr, *, steps: int = 16, batch_size: int | None = None,
                       blur: float = 5.0) -> dict:
    """Deletion and insertion curves and their areas (Petsiuk et al. 2018), one compiled call.

    Pixels are ranked by `heatmap(attr)`. Deletion sets them to black, hottest first; insertion
    starts from the image blurred (Gaussian, sd `blur` px, as RISE) and puts them back. After
    each of `steps` equal steps the target class's softmax probability (a callable target's
    score) is read. AUC: the trapezoid rule over the fraction moved, [0, 1].

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]` or callable.
      attr: attributions `[N, H, W, 3]` or maps `[N, H, W]` for `x` (any method's output).
      steps: steps from 0 to all pixels (the curves have `steps + 1` points).
      batch_size: steps evaluated at a time (memory bound); None: all at once.
      blur: sd in pixels of insertion's starting image.
    Returns:
      `{"deletion": [N, steps + 1], "insertion": [N, steps + 1], "deletion_auc": [N],
      "insertion_auc": [N]}` (numpy).
    """
    from jaxinterp.attribution.core import prepare
    from jaxinterp.checks import check_batch_size, check_count

    steps = check_count(steps, "steps", 1)
    batch_size = check_batch_size(batch_size)
    x, t = prepare(m, x, target)
    heat = heatmap(attr)
    if heat.shape != x.shape[:3]:
        raise ValueError(f"attr of shape {jnp.shape(attr)} does not match images {x.shape}")
    deletion, insertion = _faithfulness(m, x, t, heat.astype(x.dtype), steps, batch_size,
                                            float(blur))
    out = {"deletion": deletion, "insertion": insertion,
           "deletion_auc": _auc(deletion), "insertion_auc": _auc(insertion)}
    return {k: np.asarray(v) for k, v in out.items()}
