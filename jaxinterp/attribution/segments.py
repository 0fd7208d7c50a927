"""XRAI's image regions: PAIR's Felzenszwalb masks (scikit-image, on the host) and the packing
of precomputed masks into one padded boolean array `[N, M, H, W]`.

Segmentation is sequential graph work on the host; only the greedy region selection of
`pair.xrai` is compiled. With `segments=` precomputed, the compiled part needs no scikit-image.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from jaxinterp.checks import is_traced

# PAIR's constants (saliency/core/xrai.py, `_FELZENSZWALB_*`).
SCALES = (50, 100, 150, 250, 500, 1200)
SIGMAS = (0.8,)
RESIZE = (224, 224)
VALUE_RANGE = (-1.0, 1.0)
MIN_SEGMENT_SIZE = 150
DILATION_RADIUS = 5


def _skimage():
    try:
        from skimage import morphology, segmentation, transform
    except ImportError as e:
        raise ImportError("xrai's Felzenszwalb segments need scikit-image: pip install "
                          "'jaxinterp[xrai]' (or pass precomputed masks as segments=)") from e
    return morphology, segmentation, transform


def felzenszwalb_masks(x: Any, *, resize: bool = True,
                       dilation_radius: int = DILATION_RADIUS) -> np.ndarray:
    """PAIR's XRAI segments (`_get_segments_felzenszwalb`) of every image, as one array.

    Each image is rescaled to [-1, 1] by its own min and max, resized to 224 x 224 (cubic, with
    anti-aliasing), segmented by Felzenszwalb's algorithm at scales 50, 100, 150, 250, 500 and
    1200 (sigma 0.8, minimum segment 150 pixels); the label maps are resized back (nearest),
    every label becomes one mask, and every mask is dilated by a disk. Runs on the host.

    Args:
      x: images `[N, H, W, 3]` (concrete values, not traced).
      resize: segment at 224 x 224 as PAIR does (its scales are tuned for that size).
      dilation_radius: radius of the dilating disk (0: none).
    Returns:
      `[N, M, H, W]` bool masks in PAIR's order (scale, then label); images with fewer than M
      masks are padded with empty masks, which XRAI never selects.
    """
    if is_traced(x):
        raise ValueError("felzenszwalb_masks runs on the host and needs concrete images; under "
                         "jit, compute the masks outside and pass them as segments=")
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must have rank 4 [N, H, W, C], got shape {x.shape}")
    return pack_masks([_image_masks(im, resize, dilation_radius) for im in x], x.shape[1:3])


def _image_masks(im: np.ndarray, resize: bool, dilation_radius: int) -> np.ndarray:
    morphology, segmentation, transform = _skimage()
    shape = im.shape[:2]
    lo, hi = np.min(im), np.max(im)
    if not hi > lo:
        raise ValueError("a constant image has no Felzenszwalb segments (PAIR divides by its "
                         "max - min); pass segments=")
    im = (im - lo) / (hi - lo)
    im = im * (VALUE_RANGE[1] - VALUE_RANGE[0]) + VALUE_RANGE[0]
    if resize:
        im = transform.resize(im, RESIZE, order=3, mode="constant", preserve_range=True,
                              anti_aliasing=True)
    segs = []
    for scale in SCALES:
        for sigma in SIGMAS:
            seg = segmentation.felzenszwalb(im, scale=scale, sigma=sigma,
                                            min_size=MIN_SEGMENT_SIZE)
            if resize:
                seg = transform.resize(seg, shape, order=0, preserve_range=True,
                                       mode="constant", anti_aliasing=False).astype(int)
            segs.append(seg)
    masks = [seg == label for seg in segs for label in range(seg.min(), seg.max() + 1)]
    if dilation_radius:
        footprint = morphology.disk(dilation_radius)
        masks = [morphology.dilation(mask, footprint=footprint) for mask in masks]
    return np.stack(masks)


def pack_masks(per_image: Sequence[Any], size: tuple[int, int]) -> np.ndarray:
    """Per-image lists of `[H, W]` masks (or `[M_i, H, W]` arrays) as one padded array.

    Args:
      per_image: one sequence of masks per image (PAIR's `segments=` format, per image).
      size: `(H, W)` of the images.
    Returns:
      `[N, M, H, W]` bool, M the largest count, padded with empty masks.
    """
    arrays = []
    for i, masks in enumerate(per_image):
        a = np.asarray(masks) != 0 if len(masks) else np.zeros((0, *size), bool)
        if a.ndim != 3 or a.shape[1:] != tuple(size):
            raise ValueError(f"segments of image {i} must be masks [M, {size[0]}, {size[1]}], "
                             f"got shape {a.shape}")
        arrays.append(a)
    m = max(max(a.shape[0] for a in arrays), 1)
    out = np.zeros((len(arrays), m, *size), bool)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return out


def as_masks(segments: Any, shape: tuple[int, ...]):
    """`segments=` of `xrai` as bool masks `[N, M, H, W]` for images of `shape` `[N, H, W, 3]`.

    Accepts `[M, H, W]` (the same masks for every image), `[N, M, H, W]`, or a sequence of N
    per-image mask lists (padded). Traced arrays stay traced.
    """
    n, size = shape[0], tuple(shape[1:3])
    if isinstance(segments, (list, tuple)) and len(segments) == n and not is_traced(segments) \
            and all(np.ndim(s) == 3 or isinstance(s, (list, tuple)) for s in segments):
        return pack_masks(segments, size)
    if not hasattr(segments, "shape"):
        segments = np.asarray(segments)
    xp = jnp if is_traced(segments) else np
    if segments.ndim == 3:
        segments = xp.broadcast_to(segments[None], (n, *segments.shape))
    if segments.ndim != 4 or segments.shape[0] != n or tuple(segments.shape[2:]) != size:
        raise ValueError(f"segments must be bool masks [M, {size[0]}, {size[1]}] or "
                         f"[{n}, M, {size[0]}, {size[1]}] (or one mask list per image), got "
                         f"shape {tuple(segments.shape)}")
    if segments.shape[1] == 0:
        raise ValueError("segments holds no masks")
    return segments if segments.dtype == bool else segments != 0
