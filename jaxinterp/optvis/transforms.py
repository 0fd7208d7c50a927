"""Random image transforms for robust visualizations (Lucid's `transform`).

A transform is a frozen (hashable) object called as `t(key, image)` on one image `[H, W, C]`.
`apply(transforms, key, x)` runs a sequence on a batch, drawing a different random transform for
each batch element from `key` (same key, same result).

Unlike Lucid, which resizes the tensor, `random_scale` and `random_rotate` resample onto the same
grid (zooming about the centre; out-of-image samples take the nearest edge value), so the output
size is static and every batch element can draw its own scale inside one compiled `vmap`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.scipy import ndimage


@dataclasses.dataclass(frozen=True)
class pad:  # noqa: N801 — Lucid's lower-case transform names
    """Pads `width` pixels on every side: mode "constant" (with `value`), "reflect" or "edge"."""

    width: int
    mode: str = "constant"
    value: float = 0.5

    def __call__(self, key, image):
        w = ((self.width, self.width), (self.width, self.width), (0, 0))
        if self.mode == "constant":
            return jnp.pad(image, w, constant_values=self.value)
        return jnp.pad(image, w, mode=self.mode)


@dataclasses.dataclass(frozen=True)
class jitter:  # noqa: N801
    """Random crop that is `d` pixels smaller on each axis (offsets 0 … d, as Lucid's)."""

    d: int

    def __call__(self, key, image):
        h, w, c = image.shape
        if self.d >= min(h, w):
            raise ValueError(f"jitter({self.d}) needs an image larger than {self.d}, got {h}x{w}")
        oy, ox = jax.random.randint(key, (2,), 0, self.d + 1)
        return jax.lax.dynamic_slice(image, (oy, ox, 0), (h - self.d, w - self.d, c))


@dataclasses.dataclass(frozen=True)
class resize:  # noqa: N801
    """Resamples to `size` `(H, W)` (bilinear, antialiased when shrinking): the one input size
    of a model that takes no other (a ViT; `ji.visualize` appends it for such models)."""

    size: tuple

    def __call__(self, key, image):
        return jax.image.resize(image, (*self.size, image.shape[-1]), "linear")


def _resample(image, matrix):
    """Bilinear resampling of `image` `[H, W, C]`: output pixel p reads input `c + matrix @ (p - c)`."""
    h, w, _ = image.shape
    centre = jnp.array([(h - 1) / 2, (w - 1) / 2], image.dtype)
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=image.dtype), jnp.arange(w, dtype=image.dtype),
                          indexing="ij")
    p = jnp.stack([yy, xx]).reshape(2, -1) - centre[:, None]
    src = (matrix.astype(image.dtype) @ p + centre[:, None]).reshape(2, h, w)
    sample = lambda ch: ndimage.map_coordinates(ch, [src[0], src[1]], order=1, mode="nearest")
    return jax.vmap(sample, in_axes=2, out_axes=2)(image)


@dataclasses.dataclass(frozen=True)
class random_scale:  # noqa: N801
    """Zooms about the centre by a factor drawn uniformly from `scales` (repeat one to weight it)."""

    scales: tuple[float, ...]

    def matrix(self, key, dtype=jnp.float32):
        """The sampling matrix (output offset -> input offset) drawn from `key`."""
        return jnp.eye(2, dtype=dtype) / jax.random.choice(key, jnp.asarray(self.scales, dtype))

    def __call__(self, key, image):
        return _resample(image, self.matrix(key, image.dtype))


@dataclasses.dataclass(frozen=True)
class random_rotate:  # noqa: N801
    """Rotates counterclockwise about the centre by an angle (degrees) drawn from `angles`."""

    angles: tuple[float, ...]

    def matrix(self, key, dtype=jnp.float32):
        """The sampling matrix (output offset -> input offset) drawn from `key`."""
        a = jnp.deg2rad(jax.random.choice(key, jnp.asarray(self.angles, dtype)))
        c, s = jnp.cos(a), jnp.sin(a)
        return jnp.array([[c, s], [-s, c]], dtype)  # (y, x) offsets: counterclockwise on screen

    def __call__(self, key, image):
        return _resample(image, self.matrix(key, image.dtype))


# Lucid's `transform.standard_transforms`.
STANDARD = (
    pad(12, mode="constant", value=0.5),
    jitter(8),
    random_scale(tuple(1 + (i - 5) / 50.0 for i in range(11))),
    random_rotate(tuple(range(-10, 11)) + 5 * (0,)),
    jitter(4),
)

PRESETS = {"standard": STANDARD, "none": (), "jitter": (jitter(8),)}


def resolve(transforms) -> tuple:
    """A preset name ("standard", "jitter", "none"), None, or a sequence of transforms -> tuple."""
    if transforms is None:
        return ()
    if isinstance(transforms, str):
        if transforms not in PRESETS:
            raise ValueError(f"transforms must be one of {', '.join(PRESETS)} or a sequence of "
                             f"transforms, got {transforms!r}")
        return PRESETS[transforms]
    out = tuple(transforms)
    for t in out:
        if not callable(t):
            raise TypeError(f"transforms must be callables t(key, image), got {t!r}")
    return out


def apply(transforms: Sequence, key: jax.Array, x: jax.Array) -> jax.Array:
    """Applies `transforms` in order to every image of `x` `[B, H, W, C]`, each with its own key.

    Args:
      transforms: a sequence of transforms (see `resolve` for presets).
      key: PRNG key; image i uses `fold_in(key, i)`, so results do not depend on the batch size.
      x: images `[B, H, W, C]`.
    Returns:
      Transformed images `[B, H', W', C]`.
    """
    transforms = resolve(transforms)
    if not transforms:
        return x

    def one(k, image):
        matrix = None  # consecutive scales / rotations are composed and resampled once
        for i, t in enumerate(transforms):
            ki = jax.random.fold_in(k, i)
            if hasattr(t, "matrix"):
                mi = t.matrix(ki, image.dtype)
                matrix = mi if matrix is None else matrix @ mi
                continue
            if matrix is not None:
                image, matrix = _resample(image, matrix), None
            image = t(ki, image)
        return image if matrix is None else _resample(image, matrix)

    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x.shape[0]))
    return jax.vmap(one)(keys, x)


def output_size(transforms, size: tuple[int, int]) -> tuple[int, int]:
    """Image size after `transforms` for input `size` (H, W)."""
    x = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
    out = jax.eval_shape(lambda x: apply(transforms, jax.random.key(0), x), x)
    return tuple(out.shape[1:3])

