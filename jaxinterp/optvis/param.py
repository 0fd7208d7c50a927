"""Image parameterizations (Lucid's `param`): parameters -> images in [0, 1].

A parameterization is a small frozen (hashable) object that knows its image size, with
`init(key, batch)` -> parameter array and `__call__(params)` -> images `[B, H, W, 3]` in [0, 1]. Parameter value 0 is mid-gray in
every parameterization, so a zero can stand for "no signal" (used by Yosinski-style clipping).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

# Square root of ImageNet's colour correlation (Lucid's `color_correlation_svd_sqrt`), scaled so
# its largest column has unit norm.
COLOR_CORRELATION_SVD_SQRT = np.array([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]], np.float32)
COLOR_DECORRELATION = COLOR_CORRELATION_SVD_SQRT / np.max(
    np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))
COLOR_MEAN = (0.48, 0.46, 0.41)


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequency magnitude of each entry of a real 2-D FFT of an `h x w` image, `[h, w // 2 + 1]`."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


def spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """Lucid's FFT scale: `1 / max(freq, 1 / max(h, w)) ** decay_power`."""
    return (1.0 / np.maximum(rfft2d_freqs(h, w), 1.0 / max(h, w)) ** decay_power).astype(np.float32)


def to_valid_rgb(t: jax.Array, decorrelate: bool = True, sigmoid: bool = True) -> jax.Array:
    """Unconstrained values `[..., 3]` -> RGB in [0, 1] (Lucid's `to_valid_rgb`).

    Args:
      t: unconstrained colour values, channels last.
      decorrelate: map through the decorrelated colour basis (ImageNet colour statistics).
      sigmoid: squash with a sigmoid; otherwise clip to [0, 1] with a straight-through gradient.
    Returns:
      Images in [0, 1].
    """
    if decorrelate:
        t = t @ jnp.asarray(COLOR_DECORRELATION.T, t.dtype)
    if sigmoid:
        return jax.nn.sigmoid(t)
    if decorrelate:
        t = t + jnp.asarray(COLOR_MEAN, t.dtype) - 0.5
    x = t + 0.5
    return x + jax.lax.stop_gradient(jnp.clip(x, 0.0, 1.0) - x)


@dataclasses.dataclass(frozen=True)
class Pixel:
    """One free value per pixel and channel (initial sd `sd`)."""

    size: tuple[int, int] = (128, 128)
    decorrelate: bool = True
    sigmoid: bool = True
    sd: float = 0.01

    def init(self, key: jax.Array, batch: int) -> jax.Array:
        """Initial parameters `[batch, H, W, 3]`, normal with sd `self.sd`."""
        return self.sd * jax.random.normal(key, (batch, *self.size, 3), jnp.float32)

    def linear(self, params: jax.Array) -> jax.Array:
        """The unconstrained image before colour mapping, `[B, H, W, 3]`."""
        return params

    def __call__(self, params: jax.Array) -> jax.Array:
        return to_valid_rgb(self.linear(params), self.decorrelate, self.sigmoid)


@dataclasses.dataclass(frozen=True)
class FFT:
    """A real 2-D spectrum per channel scaled by `1 / f ** decay_power` (Lucid's `fft_image`).

    The image is `irfft2(scale * spectrum, norm="ortho") / 4` (Lucid's magic 4), so natural-image
    like 1/f statistics cost nothing and white noise is expensive.
    """

    size: tuple[int, int] = (128, 128)
    decorrelate: bool = True
    sigmoid: bool = True
    sd: float = 0.01
    decay_power: float = 1.0

    def init(self, key: jax.Array, batch: int) -> jax.Array:
        """Initial spectrum `[batch, 3, H, W // 2 + 1, 2]` (real, imaginary), normal with sd `sd`."""
        h, w = self.size
        return self.sd * jax.random.normal(key, (batch, 3, h, w // 2 + 1, 2), jnp.float32)

    def linear(self, params: jax.Array) -> jax.Array:
        """The unconstrained image before colour mapping, `[B, H, W, 3]`."""
        h, w = self.size
        spectrum = jax.lax.complex(params[..., 0], params[..., 1])
        spectrum = spectrum * spectrum_scale(h, w, self.decay_power)
        image = jnp.fft.irfft2(spectrum, s=(h, w), norm="ortho")  # [B, 3, H, W]
        return image.transpose(0, 2, 3, 1) / 4.0

    def __call__(self, params: jax.Array) -> jax.Array:
        return to_valid_rgb(self.linear(params), self.decorrelate, self.sigmoid)


PARAMS = {"pixel": Pixel, "fft": FFT}


def image_param(kind: str = "fft", size: int | tuple[int, int] = 128, *, decorrelate: bool = True,
                sigmoid: bool = True, sd: float = 0.01, **kw):
    """A parameterization by name (Lucid's `param.image`).

    Args:
      kind: "fft" (1/f-scaled spectrum) or "pixel".
      size: image side, or (H, W).
      decorrelate: use the decorrelated colour basis.
      sigmoid: squash to [0, 1] with a sigmoid (else clip, straight-through).
      sd: standard deviation of the initial parameters.
      **kw: `decay_power` for "fft".
    Returns:
      A `Pixel` or `FFT` parameterization.
    """
    if kind not in PARAMS:
        raise ValueError(f"param must be one of {', '.join(PARAMS)}, got {kind!r}")
    size = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be a positive int or (H, W), got {size}")
    return PARAMS[kind](size=size, decorrelate=decorrelate, sigmoid=sigmoid, sd=sd, **kw)
