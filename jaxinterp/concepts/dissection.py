"""Network dissection (Bau et al. 2017) over a streamed data set, with NetDissect-Lite's IoU.

Pass 1 keeps, per unit, the running top values of its activations over every position of every
image — exactly as many as the quantile needs, selected on the host in linear time — so the
threshold is exact (`np.quantile`'s linear interpolation), in memory proportional to
`quantile` x the data set (for 10,000 64-px images, 205k values per unit of the first layer).
Pass 2 upsamples each activation map bilinearly to the label resolution, thresholds it, and
tallies, as NetDissect-Lite's `tally_job` does: intersections with every concept's pixel labels,
every concept's pixels, and each unit's mask pixels per category on the images where the mask
overlaps some label of that category. Both passes are one compiled call per batch."""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import check_count, check_real
from jaxinterp.concepts.data import (CATEGORIES, CONCEPTS, batches, concept_maps, images_of,
                                     layer_output, require_labels)


class Dissection(NamedTuple):
    """One layer's dissection; arrays have one entry per unit.

    Attributes:
      layer: the layer's torchvision name.
      concept: the index of each unit's best concept in `CONCEPTS`.
      concept_name: its name ("star", "red", "stripes", ...).
      category: its category ("shape", "color", "texture").
      iou: the best concept's IoU.
      detector: iou > iou_threshold.
      threshold: the unit's activation threshold (its top-`quantile` value).
      ious: the IoU with every concept `[units, len(CONCEPTS)]`.
    """

    layer: str
    concept: np.ndarray
    concept_name: np.ndarray
    category: np.ndarray
    iou: np.ndarray
    detector: np.ndarray
    threshold: np.ndarray
    ious: np.ndarray


def _top_update(top: np.ndarray, acts: np.ndarray, k: int) -> np.ndarray:
    """The k largest values per unit (column) of `top` and a batch's activations `[..., units]`
    (NumPy's introselect on the host: linear time, where XLA:CPU's top_k sorts)."""
    cand = np.concatenate([top, acts.reshape(-1, acts.shape[-1])])
    return cand if len(cand) <= k else np.partition(cand, len(cand) - k, axis=0)[-k:]


@tuned_jit(static_argnames=("names",))
def _outputs(m, x, names):
    feats = m(x, check=False)[1]
    return tuple(feats[n] for n in names)


@tuned_jit(static_argnames=("names",))
def _overlaps(m, x, labels, thresholds, names):
    feats = m(x, check=False)[1]
    return tuple(_overlap(feats[n], labels, t) for n, t in zip(names, thresholds))


def upsample(a: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Activation maps `[N, h, w, units]` resized bilinearly to the label size `(H, W)` (the
    peer's `imresize(..., mode='F')`)."""
    return jax.image.resize(a, (a.shape[0], *size, a.shape[-1]), "bilinear")


def label_categories() -> np.ndarray:
    """`[len(CONCEPTS), len(CATEGORIES)]` one-hot: each concept's category (NetDissect's
    `labelcat`)."""
    return np.array([[cat == c for c in CATEGORIES] for _, cat in CONCEPTS], np.float32)


def _overlap(a, labels, threshold):
    """One batch's tallies (NetDissect-Lite's `tally_job`): intersections `[units, concepts]`,
    each unit's mask pixels on the images where its mask overlaps some label of a category
    `[units, categories]`, and each concept's pixels `[concepts]`."""
    n, h, w = labels.shape[:3]
    # the peer thresholds a map only when its maximum passes (a no-op up to rounding)
    live = a.max((1, 2), keepdims=True) > threshold
    mask = ((upsample(a, (h, w)) > threshold) & live).astype(jnp.float32)  # [n, h, w, units]
    lab = labels.astype(jnp.float32)  # [n, h, w, concepts]
    contract = (((0,), (0,)), ((), ()))  # as a 2-D product: the 4-D einsum is 5x slower on CPU
    inter = jax.lax.dot_general(mask.reshape(-1, mask.shape[-1]), lab.reshape(-1, lab.shape[-1]),
                                contract)
    # per image: does the mask touch any label of each category (tally_cat > 0)
    cat = (lab @ jnp.asarray(label_categories()) > 0).astype(jnp.float32)  # [n, h, w, cats]
    touch = jax.lax.dot_general(mask.reshape(n, -1, mask.shape[-1]),
                                cat.reshape(n, -1, cat.shape[-1]),
                                (((1,), (1,)), ((0,), (0,)))) > 0  # [n, units, categories]
    unit_cat = (mask.sum((1, 2))[..., None] * touch).sum(0)
    return inter, unit_cat, lab.sum((0, 1, 2))


def quantile_rank(count: int, quantile: float) -> tuple[int, float]:
    """(k, frac): `np.quantile(v, 1 - quantile)` of `count` values is `d[k-1] + frac *
    (d[k-2] - d[k-1])` with `d` the values in descending order."""
    p = (count - 1) * (1.0 - quantile)
    lo = math.floor(p)
    return count - lo, p - lo


def dissect(m, layers: str | Sequence[str], data: Any, *, quantile: float = 0.005,
            iou_threshold: float = 0.04, batch_size: int = 64,
            progress: Callable | None = None) -> dict[str, Dissection]:
    """Which concept each unit of `layers` detects: NetDissect-Lite's IoU with pixel labels.

    A unit's mask on an image is its activation map, upsampled bilinearly to the label size,
    `> threshold` (Lite's strict inequality). For unit u and concept c of category g:
    `IoU = I / (U_g + L - I + 1e-10)` with I the mask pixels labelled c, L the pixels labelled
    c, and U_g the mask pixels on the images where the mask overlaps some label of category g,
    each summed over the data set (NetDissect-Lite `feature_operation.py`, `tally_job` and
    `tally`). On `shapes` every category labels the object, so U_g counts the mask on the images
    where it touches the object.

    Args:
      m: the model.
      layers: a layer name or alias, or several.
      data: `shapes` batches with pixel labels: a `Shapes` batch, a list of them, or a function
        returning a fresh iterator of them (streamed; read in two passes, plus one that counts
        the images when the data is a function).
      quantile: each unit's threshold is the top `quantile` of its activations over every
        position of every image (NetDissect's 0.005), exact.
      iou_threshold: a unit is a detector of its best concept when IoU > this (0.04).
      batch_size: images per compiled call when `data` is one batch.
      progress: wraps each pass's iterator (e.g. `tqdm`); called as `progress(iterator, desc)`.
    Returns:
      `{layer: Dissection}` in the order given (keys as given: names or aliases).
    """
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers:
        raise ValueError("layers must name at least one layer")
    names = {layer: m.resolve(layer) for layer in layers}
    check_real(quantile, "quantile", 0.0)
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    check_count(batch_size, "batch_size", 1)
    fresh = batches(data, batch_size)
    wrap = progress or (lambda it, desc: it)
    shapes = {}
    count = 0
    for b in fresh():  # count images (and check the labels) before the quantile pass
        require_labels(b)
        x = images_of(b)
        count += x.shape[0]
        shapes.setdefault("size", x.shape[1:3])
    if count == 0:
        raise ValueError("data holds no images")
    for layer, name in names.items():
        out = jax.eval_shape(lambda m, x: layer_output(m, x, name), m,
                             jax.ShapeDtypeStruct((1, *shapes["size"], 3), jnp.float32))
        if len(out.shape) != 4:
            raise ValueError(f"layer {layer!r} has no spatial maps (shape {out.shape}); dissect "
                             f"conv, ReLU or pool layers")
        shapes[layer] = out.shape
    # pass 1: the exact per-unit quantile from a running top-k
    tops, ranks = {}, {}
    for layer, name in names.items():
        _, h, w, u = shapes[layer]
        ranks[layer] = quantile_rank(count * h * w, quantile)
        tops[layer] = np.zeros((0, u), np.float32)
    layer_names = tuple(names.values())
    for b in wrap(fresh(), "dissect: thresholds"):
        outs = _outputs(m, jnp.asarray(images_of(b)), layer_names)
        for layer, a in zip(names, outs):
            tops[layer] = _top_update(tops[layer], np.asarray(a), ranks[layer][0])
    thresholds = {}
    for layer, top in tops.items():
        k, frac = ranks[layer]
        top = -np.sort(-np.asarray(top, np.float64).T, axis=1)  # [units, k], descending
        t = top[:, k - 1]
        if k >= 2:
            t = t + frac * (top[:, k - 2] - t)
        thresholds[layer] = t.astype(np.float32)
    # pass 2: intersections and unions, accumulated in float64 on the host
    acc = {layer: [0.0, 0.0, 0.0] for layer in names}
    limits = tuple(jnp.asarray(thresholds[layer]) for layer in names)
    for b in wrap(fresh(), "dissect: IoU"):
        stats = _overlaps(m, jnp.asarray(images_of(b)), concept_maps(b), limits, layer_names)
        for layer, st in zip(names, stats):
            acc[layer] = [a + np.asarray(s, np.float64) for a, s in zip(acc[layer], st)]
    out = {}
    for layer, name in names.items():
        inter, unit_cat, label_px = acc[layer]
        unit_px = unit_cat @ label_categories().T.astype(np.float64)  # [units, concepts]
        ious = inter / (unit_px + label_px[None] - inter + 1e-10)
        best = ious.argmax(1)
        iou = ious[np.arange(len(best)), best]
        out[layer] = Dissection(
            name, best, np.array([CONCEPTS[c][0] for c in best]),
            np.array([CONCEPTS[c][1] for c in best]), iou, iou > iou_threshold,
            thresholds[layer], ious)
    return out


def summary(results: dict[str, Dissection]) -> list[dict]:
    """Detectors per layer and category: `[{layer, units, shape, color, texture, detectors}]`."""
    rows = []
    for layer, r in results.items():
        row = {"layer": layer, "units": int(len(r.iou)), "detectors": int(r.detector.sum())}
        for cat in CATEGORIES:
            row[cat] = int((r.detector & (r.category == cat)).sum())
        rows.append(row)
    return rows
