"""Image files <-> float arrays in [0, 1] (Pillow)."""

from __future__ import annotations

import os

import numpy as np


def load_image(path: str | os.PathLike, size: tuple[int, int] | None = None,
               fit: str = "resize") -> np.ndarray:
    """Reads any Pillow-readable image as float32 RGB `[H, W, 3]` in [0, 1].

    Args:
      path: the file; grayscale, RGBA (composited on white) and palette images become RGB.
      size: `(H, W)` to produce, or None to keep the file's size.
      fit: "resize" (stretch to `size`) or "crop" (scale the short side, then centre-crop).
    Returns:
      The image array.
    """
    from PIL import Image, UnidentifiedImageError

    if fit not in ("resize", "crop"):
        raise ValueError(f"fit must be 'resize' or 'crop', got {fit!r}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P") and ("transparency" in im.info or im.mode != "P"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            im = im.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
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


def save_image(x: np.ndarray, path: str | os.PathLike) -> None:
    """Writes a float image `[H, W]` or `[H, W, 3]` in [0, 1] as PNG (values are clipped)."""
    from PIL import Image

    a = (np.clip(np.asarray(x, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(a).save(path)
