"""`shapes`: a procedural image data set with pixel labels (a tiny Broden), generated in JAX.

Each 64x64 image holds one object of one of 8 shape classes at a random position, scale and
rotation, over a random low-saturation gradient background with small distractor blobs and pixel
noise. The object's colour (8 named colours) and fill texture (4 kinds) are drawn independently of
its class, so only the shape tells the class. Image `i` of `shapes(key, n, start)` depends only on
`(key, start + i)`: the same key gives bit-identical images for any batch split.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

VERSION = 1
SIZE = 64
CLASSES = ("circle", "square", "triangle", "star", "cross", "ring", "crescent", "heart")
COLOR_NAMES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
COLOR_RGB = np.array([(0.92, 0.12, 0.10), (1.00, 0.55, 0.05), (0.95, 0.90, 0.15),
                      (0.15, 0.78, 0.22), (0.15, 0.85, 0.92), (0.15, 0.35, 1.00),
                      (0.62, 0.22, 0.92), (1.00, 0.50, 0.78)], np.float32)
TEXTURES = ("solid", "stripes", "checker", "dots")


class Shapes(NamedTuple):
    """A batch of `shapes`.

    Attributes:
      images: float32 [N, H, W, 3] in [0, 1].
      labels: int32 [N], index into `CLASSES`.
      mask: bool [N, H, W], the object's pixels.
      color_map: int32 [N, H, W], index into `COLOR_NAMES` on the object, -1 elsewhere.
      texture_map: int32 [N, H, W], index into `TEXTURES` on the object, -1 elsewhere.
      colors: int32 [N], the object's colour.
      textures: int32 [N], the object's texture.
    """

    images: jax.Array
    labels: jax.Array
    mask: jax.Array
    color_map: jax.Array
    texture_map: jax.Array
    colors: jax.Array
    textures: jax.Array


def _box(q, b):
    d = jnp.abs(q) - jnp.asarray(b)
    return jnp.linalg.norm(jnp.maximum(d, 0.0), axis=-1) + jnp.minimum(d.max(-1), 0.0)


def _heart(p):
    # exact heart SDF (tip at the origin, lobes up to y ~ 1.1)
    p = jnp.stack([jnp.abs(p[..., 0]), p[..., 1]], -1)
    upper = jnp.linalg.norm(p - jnp.array([0.25, 0.75]), axis=-1) - np.sqrt(2.0) / 4
    a = jnp.sum((p - jnp.array([0.0, 1.0])) ** 2, -1)
    b = jnp.sum((p - 0.5 * jnp.maximum(p.sum(-1, keepdims=True), 0.0)) ** 2, -1)
    lower = jnp.sqrt(jnp.minimum(a, b)) * jnp.sign(p[..., 0] - p[..., 1])
    return jnp.where(p.sum(-1) > 1.0, upper, lower)


def _star(q, points=5, r_in=0.45, r_out=1.1):
    phi = jnp.arctan2(q[..., 1], q[..., 0])
    f = jnp.mod(phi / (2 * np.pi / points), 1.0)
    radius = r_in + (r_out - r_in) * jnp.abs(f - 0.5) * 2
    return (jnp.linalg.norm(q, axis=-1) - radius) * 0.6


def _triangle(q, r=0.55):
    angles = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
    normals = jnp.asarray(np.stack([np.cos(angles), np.sin(angles)], -1), jnp.float32)
    return (q @ normals.T).max(-1) - r


def sdf(shape: jax.Array, q: jax.Array) -> jax.Array:
    """Signed distance (negative inside) of class `shape` at local points `q` [..., 2], radius ~1."""
    r = jnp.linalg.norm(q, axis=-1)
    ds = [
        r - 1.0,                                                        # circle
        _box(q, (0.85, 0.85)),                                          # square
        _triangle(q),                                                   # triangle
        _star(q),                                                       # star
        jnp.minimum(_box(q, (1.0, 0.32)), _box(q, (0.32, 1.0))),        # cross
        jnp.abs(r - 0.72) - 0.28,                                       # ring
        jnp.maximum(r - 1.0, -(jnp.linalg.norm(q - jnp.array([0.5, 0.0]), axis=-1) - 0.85)),
        _heart(q * 0.6 + jnp.array([0.0, 0.55])) / 0.6,                 # heart
    ]
    return jnp.select([shape == i for i in range(len(ds))], ds)


def _texture(kind, q, key):
    """0/1 fill pattern of texture `kind` at object-local pixel coordinates `q`."""
    k1, k2 = jax.random.split(key)
    period = jax.random.uniform(k1, (), minval=5.0, maxval=8.0)
    phase = jax.random.uniform(k2, (2,), maxval=period)
    u = (q + phase) / period
    stripes = jnp.mod(u[..., 0], 1.0) < 0.5
    checker = jnp.mod(jnp.floor(u[..., 0]) + jnp.floor(u[..., 1]), 2) == 1
    dots = jnp.linalg.norm(u - jnp.floor(u) - 0.5, axis=-1) < 0.3
    pats = [jnp.zeros_like(stripes), stripes, checker, dots]
    return jnp.select([kind == i for i in range(len(pats))], pats).astype(jnp.float32)


def _hsv_dark(key):
    """A random low-saturation, mid-dark background colour."""
    kh, ks, kv = jax.random.split(key, 3)
    h = jax.random.uniform(kh) * 6
    s = jax.random.uniform(ks, minval=0.0, maxval=0.35)
    v = jax.random.uniform(kv, minval=0.12, maxval=0.5)
    rgb = jnp.clip(jnp.abs(jnp.mod(h + jnp.array([0.0, 4.0, 2.0]), 6) - 3) - 1, 0, 1)
    return v * (1 - s + s * rgb)


def _coverage(d_px):
    return jnp.clip(0.5 - d_px, 0.0, 1.0)


def render(key: jax.Array, size: int = SIZE) -> dict:
    """Renders one image and its labels from `key` (see `shapes`)."""
    keys = jax.random.split(key, 12)
    label = jax.random.randint(keys[0], (), 0, len(CLASSES))
    color = jax.random.randint(keys[1], (), 0, len(COLOR_NAMES))
    texture = jax.random.randint(keys[2], (), 0, len(TEXTURES))
    s = jax.random.uniform(keys[3], (), minval=0.16, maxval=0.27) * size
    c = jax.random.uniform(keys[4], (2,), minval=s + 2, maxval=size - s - 2)
    theta = jax.random.uniform(keys[5], (), maxval=2 * np.pi)

    ij = jnp.arange(size, dtype=jnp.float32) + 0.5
    p = jnp.stack(jnp.meshgrid(ij, ij, indexing="xy"), -1)  # [H, W, (x, y)]
    rot = jnp.array([[jnp.cos(theta), jnp.sin(theta)], [-jnp.sin(theta), jnp.cos(theta)]])
    q_px = (p - c) @ rot.T  # object-local, in pixels
    alpha = _coverage(sdf(label, q_px / s) * s)

    # background: gradient between two dark, desaturated colours along a random direction
    b1, b2 = _hsv_dark(keys[6]), _hsv_dark(keys[7])
    ang = jax.random.uniform(keys[8], (), maxval=2 * np.pi)
    t = ((p - size / 2) @ jnp.array([jnp.cos(ang), jnp.sin(ang)])) / size + 0.5
    img = b1 + (b2 - b1) * jnp.clip(t, 0, 1)[..., None]

    # distractors: two small blobs of random palette colours, under the object
    kd = jax.random.split(keys[9], 2)
    for k in kd:
        ka, kb, kc = jax.random.split(k, 3)
        centre = jax.random.uniform(ka, (2,), minval=2.0, maxval=size - 2.0)
        radius = jax.random.uniform(kb, (), minval=1.2, maxval=2.5)
        rgb = jnp.asarray(COLOR_RGB)[jax.random.randint(kc, (), 0, len(COLOR_NAMES))]
        a = _coverage(jnp.linalg.norm(p - centre, axis=-1) - radius)[..., None]
        img = img * (1 - a) + rgb * a

    pattern = _texture(texture, q_px, keys[10])
    fill = jnp.asarray(COLOR_RGB)[color] * (1.0 - 0.55 * pattern[..., None])
    img = img * (1 - alpha[..., None]) + fill * alpha[..., None]
    img = jnp.clip(img + 0.02 * jax.random.normal(keys[11], img.shape), 0.0, 1.0)

    mask = alpha >= 0.5
    return dict(images=img.astype(jnp.float32), labels=label.astype(jnp.int32), mask=mask,
                color_map=jnp.where(mask, color, -1).astype(jnp.int32),
                texture_map=jnp.where(mask, texture, -1).astype(jnp.int32),
                colors=color.astype(jnp.int32), textures=texture.astype(jnp.int32))


@functools.partial(jax.jit, static_argnames=("n", "size"))
def _shapes(key, n, start, size):
    idx = start + jnp.arange(n, dtype=jnp.uint32)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    return jax.vmap(lambda k: render(k, size))(keys)


def shapes(key: jax.Array, n: int, *, start: int = 0, size: int = SIZE) -> Shapes:
    """Generates `n` images of the `shapes` data set with their labels and pixel concept maps.

    Args:
      key: a PRNG key (`jax.random.key(seed)`); the data set is a pure function of it.
      n: number of images.
      start: index of the first image (image `i` is the same whatever the batch split).
      size: image height and width in pixels.
    Returns:
      A `Shapes` batch.
    """
    if n <= 0:
        raise ValueError(f"n must be a positive number of images, got {n}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        key = jax.random.wrap_key_data(key) if getattr(key, "dtype", None) == jnp.uint32 \
            else jax.random.key(int(key))
    return Shapes(**_shapes(key, int(n), jnp.uint32(start), int(size)))
