"""Network dissection (Bau et al. 2017) over a streamed data set, with NetDissect-Lite's IoU.

Pass 1 keeps, per unit, the running top values of its activations over every position of every
image — exactly as many as the quantile needs, selected on the host in amortized linear time —
so the threshold is exact (`np.quantile`'s linear interpolation), in memory proportional to
`quantile` x the data set (for 10,000 64-px images, 205k values per unit of the first layer).
Pass 2 upsamples each activation map bilinearly to the label resolution, thresholds it, and
tallies, as NetDissect-Lite's `tally_job` does: intersections with every concept's pixel labels,
every concept's pixels, and each unit's mask pixels per category on the images where the mask
overlaps some label of that category — upsampling only the cells that can pass the threshold.
Both passes are one compiled call per batch."""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import check_count, check_real
from jaxinterp.concepts.data import (CATEGORIES, CONCEPTS, batches, images_of, label_groups,
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


class _RunningTop:
    """The k largest values of every unit (column) seen so far, exact, in amortized linear time.

    Values at most the current k-th largest (`floor`) can never enter the top k, so a batch only
    hands over the few above it; they wait in a buffer, merged by NumPy's introselect (linear;
    XLA:CPU's top_k sorts) once the buffer is as large as the top itself."""

    def __init__(self, k: int, units: int):
        self.k, self.units = k, units
        self.top = np.zeros((0, units), np.float32)
        self.floor = None  # [units] the k-th largest so far, once k values were seen
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.pending = 0

    def add(self, acts: np.ndarray) -> None:
        """Takes a batch's activations `[..., units]` (finite: a NaN has no rank, so it raises)."""
        a = acts.reshape(-1, self.units)
        if np.isnan(a).any():
            raise ValueError(f"NaN activations in units {np.flatnonzero(np.isnan(a).any(0))[:8]}"
                             f"…: a quantile threshold needs finite values (check the model "
                             f"and the images)")
        if self.floor is None:
            cand = np.concatenate([self.top, a])
            if len(cand) > self.k:
                cand = np.partition(cand, len(cand) - self.k, axis=0)[-self.k:]
                self.floor = cand.min(0)
            self.top = cand
            return
        rows, cols = np.nonzero(a > self.floor)
        if len(rows):
            self.cols.append(cols.astype(np.int32))
            self.vals.append(a[rows, cols])
            self.pending += len(rows)
            if self.pending >= self.top.size:
                self._merge()

    def _merge(self) -> None:
        if not self.pending:
            return
        cols, vals = np.concatenate(self.cols), np.concatenate(self.vals)
        order = np.argsort(cols, kind="stable")
        cols, vals = cols[order], vals[order]
        bounds = np.searchsorted(cols, np.arange(self.units + 1))
        for u in np.flatnonzero(np.diff(bounds)):
            cand = np.concatenate([self.top[:, u], vals[bounds[u]:bounds[u + 1]]])
            self.top[:, u] = np.partition(cand, len(cand) - self.k)[-self.k:]
        self.floor = self.top.min(0)
        self.cols, self.vals, self.pending = [], [], 0

    def values(self) -> np.ndarray:
        """The k largest values per unit `[k, units]` (fewer rows if fewer were seen), unordered."""
        self._merge()
        return self.top


@tuned_jit(static_argnames=("names",))
def _outputs(m, x, names):
    feats = m(x, check=False)[1]
    return tuple(feats[n] for n in names)


@tuned_jit(static_argnames=("names", "slot_groups"))
def _overlaps(m, x, labels, slots, thresholds, names, slot_groups):
    feats = m(x, check=False)[1]
    return tuple(_overlap(feats[n], labels, slots, slot_groups, t)
                 for n, t in zip(names, thresholds))


def _cells(n_in: int, n_out: int):
    """Bilinear upsampling `n_in -> n_out` (half-pixel centres, edges clamped) on the map padded
    by one edge value at each end.

    Returns:
      idx: per output pixel, the padded index of its lower sample (it interpolates samples idx
        and idx + 1), `[n_out]`.
      w: their weights `[2, n_out]` (float32).
      offset: with an integer scale s, cell k covers padded samples k and k + 1 and s output
        positions, output pixel i sitting at position i + offset of that grid of n_in + 1
        cells (the two edge cells hold fewer real pixels); None for other scales.
      cell: the weights of one cell's s positions `[2, s]`, the same in every cell (or None).
    """
    y = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    lower = np.floor(y)
    w = np.stack([1.0 - (y - lower), y - lower]).astype(np.float32)
    idx = (lower + 1).astype(np.int32)
    s = n_out // n_in
    if s * n_in != n_out:
        return idx, w, None, None
    # pixels per cell: idx == k for s consecutive pixels, fewer in the two edge cells
    first = int(np.sum(idx == 0))
    offset = s - first
    virtual = np.arange(n_out) + offset
    cell = np.zeros((2, s), np.float32)
    cell[:, virtual % s] = w
    if not (np.array_equal(virtual // s, idx) and np.array_equal(cell[:, virtual % s], w)):
        return idx, w, None, None
    return idx, w, offset, cell


def _separable(a: jax.Array, size: tuple[int, int], combine) -> jax.Array:
    """Each output pixel from its two row samples, then its two column samples, of the map
    padded by its edge values: `combine(lower, upper, weights)` on each axis (`_cells`)."""
    (iy, wy, _, _), (ix, wx, _, _) = _cells(a.shape[1], size[0]), _cells(a.shape[2], size[1])
    p = jnp.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    rows = combine(p[:, iy], p[:, iy + 1], wy[:, :, None, None])
    return combine(rows[:, :, ix], rows[:, :, ix + 1], wx[:, :, None])


def upsample(a: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Activation maps `[N, h, w, units]` resized bilinearly to the label size `(H, W)`, H ≥ h
    and W ≥ w (half-pixel centres and clamped edges: the peer's `imresize(..., mode='F')`,
    PIL's bilinear, up to rounding; shrinking would not antialias as PIL does). Rows are
    interpolated first, then columns."""
    return _separable(a, size, lambda lo, hi, w: w[0] * lo + w[1] * hi)


def _sample_max(a: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Per pixel of `upsample(a, size)`, the largest of the four samples it interpolates."""
    return _separable(a, size, lambda lo, hi, w: jnp.maximum(lo, hi))


def label_categories() -> np.ndarray:
    """`[len(CONCEPTS), len(CATEGORIES)]` one-hot: each concept's category (NetDissect's
    `labelcat`)."""
    return np.array([[cat == c for c in CATEGORIES] for _, cat in CONCEPTS], np.float32)


def _overlap(a, labels, slots, slot_groups, threshold, mode="auto"):
    """One batch's per-image tallies (NetDissect-Lite's `tally_job` before its sums): each
    unit's mask pixels `[n, units]` and their overlap with each label slot `[n, units, slots]`
    (a slot: one concept present in the image, in one label group).

    A unit's mask lies where its upsampled map passes the threshold (and, which exact arithmetic
    implies, so does one of the pixel's four samples: NetDissect-Lite's `max > threshold` gate
    per cell). A bilinear pixel is a convex combination of its cell's four samples, so only
    cells whose largest sample passes can hold mask pixels: with an integer scale those few
    cells are gathered and upsampled alone (the bulk of an upsampled map is never formed), with
    a dense fallback for a batch with more live cells than the gather's static capacity, or a
    non-integer scale (`mode` "sparse" / "dense" forces one, for tests; a forced "sparse"
    drops live cells beyond the capacity, and a non-integer scale still runs dense)."""
    n, h, w, units = a.shape
    H, W = labels.shape[2:]
    slot_groups = np.asarray(slot_groups, np.int32)
    slot_maps = ((labels[:, slot_groups] == slots[:, :, None, None])
                 & (slots >= 0)[:, :, None, None])  # [n, S, H, W]

    def dense():
        if (h, w) == (H, W):
            mask = a > threshold  # [n, H, W, units]
        else:  # a pixel passes only if one of its samples does, as in the gather below (in
            # exact arithmetic always; rounding could lift a tie with the threshold above it)
            mask = (upsample(a, (H, W)) > threshold) & (_sample_max(a, (H, W)) > threshold)
        size = mask.sum((1, 2), dtype=jnp.float32)
        over = (mask[:, None] & slot_maps[..., None]).sum((2, 3), dtype=jnp.float32)
        return size, jnp.swapaxes(over, 1, 2)

    (_, _, oy, wy_cell), (_, _, ox, wx_cell) = _cells(h, H), _cells(w, W)
    # at the label size the dense tally is cheaper than the gather (measured)
    if oy is None or ox is None or mode == "dense" or ((h, w) == (H, W) and mode == "auto"):
        return dense()
    sy, sx = H // h, W // w
    p = jnp.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")  # [n, h+2, w+2, units]
    if (sy, sx) == (1, 1):  # no upsampling: a cell's pixel is its top-left sample
        live = p[:, :-1, :-1] > threshold
    else:
        live = jnp.maximum(jnp.maximum(p[:, :-1, :-1], p[:, 1:, :-1]),
                           jnp.maximum(p[:, :-1, 1:], p[:, 1:, 1:])) > threshold
    cap = max(4096, live.size // 16)
    # pixels of the virtual grid of (h+1) x (w+1) cells that are in the image, and the slots
    pad = ((oy, (h + 1) * sy - H - oy), (ox, (w + 1) * sx - W - ox))
    inside = np.pad(np.ones((H, W), bool), pad).reshape(h + 1, sy, w + 1, sx)
    cell_maps = jnp.pad(slot_maps, ((0, 0), (0, 0), *pad)).reshape(
        n, -1, h + 1, sy, w + 1, sx)

    def sparse():
        ni, cy, cx, u = jnp.nonzero(live, size=cap, fill_value=0)
        used = jnp.arange(cap) < live.sum()
        c = [p[ni, cy + dy, cx + dx, u] for dx in (0, 1) for dy in (0, 1)]  # TL, BL, TR, BR
        left = wy_cell[0][None, :] * c[0][:, None] + wy_cell[1][None, :] * c[1][:, None]
        right = wy_cell[0][None, :] * c[2][:, None] + wy_cell[1][None, :] * c[3][:, None]
        vals = wx_cell[0] * left[..., None] + wx_cell[1] * right[..., None]  # [cap, sy, sx]
        mask = (vals > threshold[u][:, None, None]) & jnp.asarray(inside)[cy, :, cx, :]
        mask = mask & used[:, None, None]
        patch = cell_maps[ni, :, cy, :, cx, :]  # [cap, S, sy, sx]
        over = (mask[:, None] & patch).sum((2, 3), dtype=jnp.float32)
        size = mask.sum((1, 2), dtype=jnp.float32)
        size = jnp.zeros((n, units), jnp.float32).at[ni, u].add(size)
        over = jnp.zeros((n, units, slots.shape[1]), jnp.float32).at[ni, u].add(over)
        return size, over

    if mode != "auto":
        return sparse() if mode == "sparse" else dense()
    return jax.lax.cond(live.sum() <= cap, sparse, dense)


def _slots(groups: np.ndarray):
    """The concepts present in each image, per label group (NetDissect's label slots).

    Args:
      groups: int `[n, len(CATEGORIES), H, W]` (`label_groups`).
    Returns:
      slots `[n, S]` (concept indices, -1 for none), the group of each slot (a tuple of S), and
      the pixels of each concept in each image `[n, len(CONCEPTS)]`.
    """
    n, concepts = groups.shape[0], len(CONCEPTS)
    ids = groups.reshape(n, -1).astype(np.int64) + 1 + (concepts + 1) * np.arange(n)[:, None]
    counts = np.bincount(ids.ravel(), minlength=n * (concepts + 1)).reshape(n, -1)[:, 1:]
    category = np.array([CATEGORIES.index(cat) for _, cat in CONCEPTS])
    slots, slot_groups = [], []
    for g in range(groups.shape[1]):
        cols = np.flatnonzero(category == g)
        present = counts[:, cols] > 0
        k = int(present.sum(1).max()) if n else 0
        order = np.argsort(~present, axis=1, kind="stable")[:, :k]
        slots.append(np.where(np.take_along_axis(present, order, 1), cols[order], -1))
        slot_groups += [g] * k
    return (np.concatenate(slots, 1).astype(np.int32) if slots else np.zeros((n, 0), np.int32),
            tuple(slot_groups), counts)


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
        tops[layer] = _RunningTop(ranks[layer][0], u)
    layer_names = tuple(names.values())
    for b in wrap(fresh(), "dissect: thresholds"):
        outs = _outputs(m, jnp.asarray(images_of(b)), layer_names)
        for layer, a in zip(names, outs):
            tops[layer].add(np.asarray(a))
    thresholds = {}
    for layer, top in tops.items():
        k, frac = ranks[layer]
        values = top.values()
        if len(values) < k:
            raise ValueError(f"data changed between passes: {layer!r} saw fewer activations in "
                             f"the threshold pass than the first pass counted ({count} images)")
        top = -np.sort(-np.asarray(values, np.float64).T, axis=1)  # [units, k], descending
        t = top[:, k - 1]
        if k >= 2:
            t = t + frac * (top[:, k - 2] - t)
        thresholds[layer] = t.astype(np.float32)
    # pass 2: per-image tallies on device, summed in float64 on the host
    concepts = len(CONCEPTS)
    acc = {layer: [np.zeros((shapes[layer][-1], concepts)),
                   np.zeros((shapes[layer][-1], len(CATEGORIES))), np.zeros(concepts)]
           for layer in names}
    limits = tuple(jnp.asarray(thresholds[layer]) for layer in names)
    for b in wrap(fresh(), "dissect: IoU"):
        groups = label_groups(b)
        slots, slot_groups, counts = _slots(np.asarray(groups))
        stats = _overlaps(m, jnp.asarray(images_of(b)), groups, jnp.asarray(slots), limits,
                          layer_names, slot_groups)
        onehot = (slots[..., None] == np.arange(concepts)).astype(np.float64)  # [n, S, C]
        in_group = np.asarray(slot_groups)[:, None] == np.arange(len(CATEGORIES))  # [S, G]
        for layer, (size, over) in zip(names, stats):
            size, over = np.asarray(size, np.float64), np.asarray(over, np.float64)
            acc[layer][0] += np.einsum("nus,nsc->uc", over, onehot)
            touch = (over @ in_group) > 0  # [n, units, categories]: tally_cat > 0
            acc[layer][1] += np.einsum("nu,nug->ug", size, touch)
            acc[layer][2] += counts.sum(0)
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
