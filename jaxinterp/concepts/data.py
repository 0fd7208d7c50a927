"""Streaming a data set through a layer: batches of `Shapes` (or images) and their concept maps."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.model import layer_output  # noqa: F401 (re-exported for the concept modules)
from jaxinterp.data import shapes_dataset as shapes_lib

# The concepts of `shapes` (a tiny Broden): (name, category), in the order of the concept axis.
CONCEPTS = tuple([(c, "shape") for c in shapes_lib.CLASSES]
                 + [(c, "color") for c in shapes_lib.COLOR_NAMES]
                 + [(t, "texture") for t in shapes_lib.TEXTURES])
CATEGORIES = ("shape", "color", "texture")


def require_labels(batch) -> None:
    """Raises a clear error unless `batch` carries `shapes`' pixel concept labels."""
    for field in ("mask", "color_map", "texture_map", "labels"):
        if not hasattr(batch, field):
            raise ValueError(f"dissection needs pixel concept labels: a ji.data.shapes batch "
                             f"(with mask, color_map, texture_map), got {type(batch).__name__}")


def label_groups(batch) -> jax.Array:
    """Pixel labels as NetDissect's label groups, int32 `[N, len(CATEGORIES), H, W]`: each
    pixel's concept (its index in `CONCEPTS`) in each category, -1 where unlabelled."""
    require_labels(batch)
    n_shape, n_color = len(shapes_lib.CLASSES), len(shapes_lib.COLOR_NAMES)
    shape = jnp.where(batch.mask, batch.labels[:, None, None], -1)
    color = jnp.where(batch.color_map >= 0, n_shape + batch.color_map, -1)
    texture = jnp.where(batch.texture_map >= 0, n_shape + n_color + batch.texture_map, -1)
    return jnp.stack([shape, color, texture], 1).astype(jnp.int32)


def concept_maps(batch) -> jax.Array:
    """Pixel labels of every concept, bool `[N, H, W, len(CONCEPTS)]` (shape: the object's mask
    where the image is of that class; colour and texture: their maps)."""
    groups = label_groups(batch)  # [N, G, H, W]
    return (groups[..., None] == jnp.arange(len(CONCEPTS))).any(1)


def batches(data: Any, batch_size: int | None = None) -> Callable[[], Iterator]:
    """A factory of fresh iterators over `data`'s batches (several passes need several iterators).

    Args:
      data: a `Shapes` batch (split into `batch_size` chunks), an image array `[N, H, W, 3]`
        (likewise), a list / tuple of batches, or a callable returning a fresh iterator of
        batches (streamed: the data set need not fit in memory). A one-shot iterator (a
        generator object) is refused when more than one pass is needed — pass a function.
      batch_size: chunk size for a single batch or array (default 64).
    Returns:
      A function returning an iterator of batches.
    """
    size = batch_size or 64
    if isinstance(data, shapes_lib.Shapes) or (hasattr(data, "shape") and np.ndim(data) == 4):
        n = data.images.shape[0] if isinstance(data, shapes_lib.Shapes) else data.shape[0]

        def split():
            for s in range(0, n, size):
                yield jax.tree_util.tree_map(lambda a: a[s:s + size], data)
        return split
    if callable(data):
        return data
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValueError("data is empty")
        return lambda: iter(data)
    raise TypeError("data must be a Shapes batch, an image array [N, H, W, 3], a list of "
                    "batches, or a function returning a fresh iterator of batches (a generator "
                    f"object can be read only once); got {type(data).__name__}")


def images_of(batch) -> jax.Array:
    """The images of a batch (a `Shapes` batch or an image array)."""
    return batch.images if hasattr(batch, "images") else batch


def gather(fresh: Callable[[], Iterator], indices: np.ndarray) -> np.ndarray:
    """The images at `indices` (any shape; positions in the data's order) from one more pass."""
    indices = np.asarray(indices)
    wanted = np.unique(indices)
    found, start = {}, 0
    for b in fresh():
        x = np.asarray(images_of(b))
        for i in wanted[(wanted >= start) & (wanted < start + len(x))]:
            found[int(i)] = x[i - start]
        start += len(x)
    missing = [int(i) for i in wanted if int(i) not in found]
    if missing:
        raise ValueError(f"indices {missing[:5]} are past the end of the data ({start} images)")
    return np.stack([found[int(i)] for i in indices.reshape(-1)]).reshape(
        *indices.shape, *next(iter(found.values())).shape)
