"""Checking attributions against ground truth: pointing game, mass in the mask, randomization."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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
