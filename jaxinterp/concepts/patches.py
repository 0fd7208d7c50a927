"""Maximally activating images and patches (a running top-k in one compiled call per batch)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import check_count
from jaxinterp.concepts.data import batches, gather, images_of, layer_output


class ReceptiveField(NamedTuple):
    """Where a unit at map position (i, j) looks: the input window centred at `(i * stride +
    offset, j * stride + offset)` of side `size` pixels (clipped at the image border)."""

    size: int
    stride: int
    offset: float


def receptive_field(m, layer: str) -> ReceptiveField:
    """The true receptive field of `layer`'s units, from the layer stack (3x3 convolutions with
    padding 1, 2x2 pooling with stride 2)."""
    name = m.resolve(layer)
    if not hasattr(m, "specs"):
        raise ValueError(f"the receptive field is computed from jaxinterp VGG's layer list; "
                         f"{m.arch} has none (top_activating(..., patches=False) still ranks "
                         "images and finds the positions)")
    size, stride, offset = 1, 1, 0.0
    for s in m.specs:
        if s.kind == "conv":
            size += 2 * stride
        elif s.kind == "pool":
            size += stride
            offset += 0.5 * stride
            stride *= 2
        elif s.kind in ("avgpool", "gap", "dense"):
            raise ValueError(f"layer {layer!r} comes after the global pooling: its units see the "
                             f"whole image")
        if s.name == name:
            return ReceptiveField(size, stride, offset)
    raise ValueError(f"unknown layer {layer!r}")


class TopActivating(NamedTuple):
    """The k data-set images that activate each unit most.

    Attributes:
      units: the units (channels), in the order of the first axis.
      indices: image indices in the data's order `[units, k]`, best first.
      values: the unit's largest activation over positions in each `[units, k]`.
      positions: the map position (row, column) of that maximum `[units, k, 2]`.
      boxes: the receptive-field window around it in input pixels, (top, left, bottom, right),
        clipped to the image `[units, k, 4]` (None for dense layers).
      images: the images `[units, k, H, W, 3]`.
      patches: the windows cut out and padded to the receptive-field size with gray
        `[units, k, S, S, 3]` (None without `patches`).
    """

    units: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    positions: np.ndarray | None
    boxes: np.ndarray | None
    images: np.ndarray
    patches: np.ndarray | None


@tuned_jit(static_argnames=("name", "k"))
def _merge(m, x, units, offset, best, name, k):
    a = layer_output(m, x, name)[..., units]  # [n, (h, w,) U]
    if a.ndim == 4:
        flat = a.reshape(a.shape[0], -1, a.shape[-1])
        pos, val = flat.argmax(1), flat.max(1)  # [n, U]
    else:
        pos, val = jnp.zeros(a.shape, jnp.int32), a
    idx = offset + jnp.arange(a.shape[0])
    values = jnp.concatenate([best[0], val.T], 1)  # [U, k + n]
    index = jnp.concatenate([best[1], jnp.broadcast_to(idx, val.T.shape)], 1)
    where = jnp.concatenate([best[2], pos.T], 1)
    top, order = jax.lax.top_k(values, k)
    take = lambda a: jnp.take_along_axis(a, order, 1)  # noqa: E731
    return top, take(index), take(where)


def top_activating(m, layer: str, units: int | Sequence[int] | None, data: Any, *, k: int = 9,
                   patches: bool = True, batch_size: int = 64,
                   progress: Callable | None = None) -> TopActivating:
    """The k images of `data` (and the patch around the maximum) that activate each unit most.

    One pass over the data, a running top-k per unit (ties: the earlier image first).

    Args:
      m: the model.
      layer: layer name or alias (a map layer for patches; a dense layer ranks images only).
      units: a channel index, several, or None for all.
      data: a `Shapes` batch, an image array `[N, H, W, 3]`, a list of either, or a function
        returning a fresh iterator of them.
      k: images per unit.
      patches: also cut out each image's receptive-field window around the maximum (needs
        jaxinterp's VGG; on a wrapped model pass False: no boxes or patches then).
      batch_size: images per compiled call when `data` is one batch or array.
      progress: wraps the pass's iterator, `progress(iterator, desc)`.
    Returns:
      A `TopActivating`.
    """
    name = m.resolve(layer)
    n_units = m.channels(name)
    units = list(range(n_units)) if units is None else \
        [int(units)] if np.ndim(units) == 0 else [int(u) for u in units]
    bad = [u for u in units if not 0 <= u < n_units]
    if bad or not units:
        raise ValueError(f"units {bad or units} out of range: layer {layer!r} has {n_units} "
                         f"channels (0 … {n_units - 1})")
    check_count(k, "k", 1)
    fresh = batches(data, batch_size)
    u = jnp.asarray(units)
    best = (jnp.full((len(units), k), -jnp.inf), jnp.full((len(units), k), -1, jnp.int32),
            jnp.zeros((len(units), k), jnp.int32))
    count, width, shape = 0, None, None
    wrap = progress or (lambda it, desc: it)
    for b in wrap(fresh(), "top activating"):
        x = jnp.asarray(images_of(b))
        if shape is None:
            shape = jax.eval_shape(lambda m, x: layer_output(m, x, name), m, x).shape
            width = shape[2] if len(shape) == 4 else None
        best = _merge(m, x, u, count, best, name, k)
        count += x.shape[0]
    if count < k:
        raise ValueError(f"k={k} is larger than the data ({count} images)")
    values, indices, where = (np.asarray(a) for a in best)
    chosen = gather(fresh, indices)
    positions = boxes = cut = None
    if width is not None:
        positions = np.stack([where // width, where % width], -1)
    if width is not None and (patches or hasattr(m, "specs")):
        rf = receptive_field(m, name)
        h, w = chosen.shape[2:4]
        centre = positions * rf.stride + rf.offset
        half = (rf.size - 1) / 2
        lo = np.ceil(centre - half).astype(int)
        boxes = np.concatenate([np.maximum(lo, 0), np.minimum(lo + rf.size, (h, w))], -1)
        if patches:
            cut = np.full((*indices.shape, rf.size, rf.size, 3), 0.5, np.float32)
            for i, j in np.ndindex(indices.shape):
                t, l_, bt, r = boxes[i, j]
                dy, dx = t - lo[i, j, 0], l_ - lo[i, j, 1]
                cut[i, j, dy:dy + bt - t, dx:dx + r - l_] = chosen[i, j, t:bt, l_:r]
    return TopActivating(np.asarray(units), indices, values, positions, boxes, chosen, cut)

