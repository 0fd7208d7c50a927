"""Image files <-> float arrays in [0, 1] (Pillow)."""

from __future__ import annotations

import os
import warnings

import numpy as np


def load_image(path: str | os.PathLike, size: tuple[int, int] | None = None,
               fit: str = "resize") -> np.ndarray:
    """Reads any Pillow-readable image as float32 RGB `[H, W, 3]` in [0, 1].

    Args:
      path: the file; grayscale (8 and 16 bit, scaled by bit depth), RGBA (composited on
        white) and palette images become RGB; the EXIF orientation is applied; an animated
        image gives its first frame, with a warning; an image over Pillow's decompression-bomb
        limit is refused.
      size: `(H, W)` to produce, or None to keep the file's size.
      fit: "resize" (stretch to `size`) or "crop" (scale the short side, then centre-crop).
    Returns:
      The image array.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if fit not in ("resize", "crop"):
        raise ValueError(f"fit must be 'resize' or 'crop', got {fit!r}")
    try:
        with Image.open(path) as im:
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                warnings.warn(f"{path} is animated ({frames} frames); using the first frame",
                              stacklevel=2)
            im.load()
            im = ImageOps.exif_transpose(im)  # the camera's orientation tag, applied
            im = _to_rgb(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"refusing {path}: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read {path} as an image: {e}") from None
    if size is not None:
        h, w = size
        if fit == "crop":
            s = max(h / im.height, w / im.width)
            im = im.resize((max(w, round(im.width * s)), max(h, round(im.height * s))),
                           Image.BILINEAR)
            left, top = (im.width - w) // 2, (im.height - h) // 2
            im = im.crop((left, top, left + w, top + h))
        else:
            im = im.resize((w, h), Image.BILINEAR)
    return np.asarray(im, np.float32) / 255.0


def _to_rgb(im):
    """RGB Pillow image of any mode; 16- and 32-bit gray scaled by their bit depth."""
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        a = np.asarray(im, np.float64)
        depth = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) <= 65535 else 2.0 ** 32 - 1
        a = a if im.mode == "F" else a / depth  # "F": float pixels, taken as [0, 1]
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)  # float32 output is 8-bit exact
        return Image.fromarray(a, "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "P", "PA") and ("transparency" in im.info or im.mode != "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def save_image(x: np.ndarray, path: str | os.PathLike) -> None:
    """Writes a float image `[H, W]` or `[H, W, 3]` in [0, 1] as PNG (values are clipped)."""
    from PIL import Image

    a = (np.clip(np.asarray(x, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(a).save(path)
