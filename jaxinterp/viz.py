"""Attributions -> pictures: colored / positive / negative gradients, heat maps, overlays, grids.

Every function takes arrays (jax or numpy) and returns float32 numpy images in [0, 1]:
`[N, H, W, 3]` for batches, or one image `[H, W, 3]` where a single one is given.
"""

from __future__ import annotations

import numpy as np

SIGNS = ("all", "positive", "negative", "absolute_value")
METHODS = ("heat_map", "blended_heat_map", "masked_image", "alpha_scaling", "original_image")


def _batch(a, ndim):
    a = np.asarray(a, np.float32)
    single = a.ndim == ndim - 1
    return (a[None] if single else a), single


def _per_image_max(a):
    m = np.abs(a).reshape(len(a), -1).max(1)
    return np.where(m > 0, m, 1.0).reshape((-1,) + (1,) * (a.ndim - 1))


def colored(attr) -> np.ndarray:
    """Colored gradient: each image's signed attribution min-max scaled to [0, 1]."""
    a, single = _batch(attr, 4)
    flat = a.reshape(len(a), -1)
    lo = flat.min(1).reshape(-1, 1, 1, 1)
    span = (flat.max(1) - flat.min(1)).reshape(-1, 1, 1, 1)
    out = (a - lo) / np.where(span > 0, span, 1.0)
    return out[0] if single else out


def split_sign(attr) -> tuple[np.ndarray, np.ndarray]:
    """`(positive, negative)` parts, both >= 0, with `positive - negative == attr`."""
    a = np.asarray(attr, np.float32)
    return np.maximum(a, 0), np.maximum(-a, 0)


def positive(attr) -> np.ndarray:
    """Positive gradient picture: the positive part scaled by each image's maximum of it."""
    a, single = _batch(attr, 4)
    p = np.maximum(a, 0)
    out = p / _per_image_max(p)
    return out[0] if single else out


def negative(attr) -> np.ndarray:
    """Negative gradient picture: the negative part (as positive values) scaled per image."""
    return positive(-np.asarray(attr, np.float32))


def gray_heatmap(attr, percentile: float = 99.0) -> np.ndarray:
    """Gray heat map: max |attr| over channels, clipped at the per-image percentile, in [0, 1].

    Args:
      attr: `[N, H, W, 3]` or `[N, H, W]` attributions (or one of them).
      percentile: values above this percentile of the image's map become 1.
    Returns:
      `[N, H, W]` (or `[H, W]`).
    """
    a = np.asarray(attr, np.float32)
    single = a.ndim == 3 and a.shape[-1] == 3 or a.ndim == 2
    a = a[None] if single else a
    h = np.abs(a).max(-1) if a.ndim == 4 else np.abs(a)
    top = np.percentile(h.reshape(len(h), -1), percentile, axis=1).reshape(-1, 1, 1)
    out = np.clip(h / np.where(top > 0, top, 1.0), 0, 1)
    return out[0] if single else out


def colormap(values, cmap="jet") -> np.ndarray:
    """Maps values in [0, 1] (any shape) to RGB with a matplotlib colormap (name or object)."""
    import matplotlib

    cm = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    rgba = np.asarray(cm(np.clip(np.asarray(values, np.float64), 0, 1)), np.float32)
    return rgba[..., :3]


def overlay(image, heat, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Heat map (values in [0, 1], `[.., H, W]`) blended on the image: (1-alpha) image + alpha color."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    image = np.asarray(image, np.float32)
    return (1 - alpha) * image + alpha * colormap(heat, cmap)


def _cumulative_threshold(values: np.ndarray, percentile: float) -> float:
    """Captum's outlier threshold: the value where the sorted cumulative sum reaches percentile
    (1.0 where every value is 0, where Captum would divide by zero)."""
    v = np.sort(values.ravel())
    cum = np.cumsum(v)
    if cum[-1] == 0:
        return 1.0
    i = np.where(cum >= cum[-1] * 0.01 * percentile)[0][0]
    return float(v[i]) or 1.0


def normalize_attr(attr, sign: str = "absolute_value", outlier_perc: float = 2.0) -> np.ndarray:
    """Captum's `_normalize_attr`: the chosen sign of a `[H, W]` map over the threshold that
    leaves out the top `outlier_perc` % of the cumulative |attribution|, clipped to [-1, 1].

    "negative" keeps the negative part and returns it as positive values in [0, 1].
    """
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}, got {sign!r}")
    a = np.asarray(attr, np.float64)
    a = {"all": a, "positive": np.maximum(a, 0), "negative": np.minimum(a, 0),
         "absolute_value": np.abs(a)}[sign]
    threshold = _cumulative_threshold(np.abs(a), 100.0 - outlier_perc)
    return np.clip(a / (-threshold if sign == "negative" else threshold), -1, 1)


def captum_cmap(sign: str):
    """Captum's default colormap for a sign: red-white-green for "all", else Greens/Reds/Blues."""
    if sign == "all":
        from matplotlib.colors import LinearSegmentedColormap

        return LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"])
    return {"positive": "Greens", "negative": "Reds", "absolute_value": "Blues"}[sign]


def visualize(attr, image=None, method: str = "heat_map", sign: str = "absolute_value",
              outlier_perc: float = 2.0, cmap=None, alpha: float = 0.5) -> np.ndarray:
    """One image's attribution as the picture Captum's `visualize_image_attr` draws, as an array.

    The attribution is summed over channels and normalized by `normalize_attr`. Then, as
    Captum: "heat_map" colours it (vmin -1 for "all", else 0; vmax 1); "blended_heat_map" draws
    that heat map with opacity `alpha` over the image's channel mean in gray (min-max scaled, as
    `imshow` does); "masked_image" multiplies the image by the normalized map; "alpha_scaling"
    uses the map as the image's opacity, shown on white (matplotlib's background);
    "original_image" is the image. Captum refuses "masked_image" and "alpha_scaling" with
    sign "all", and so do we. Difference: Captum truncates "masked_image" to integers for
    0-255 images; images here are in [0, 1] and stay floats (tested against Captum's own
    function on the same arrays).

    Args:
      attr: `[H, W, 3]` or `[H, W]` attribution.
      image: `[H, W, 3]` in [0, 1]; needed by every method but "heat_map".
      method: "heat_map", "blended_heat_map", "masked_image", "alpha_scaling", "original_image".
      sign: "all", "positive", "negative", "absolute_value".
      outlier_perc: percent of the cumulative attribution treated as outliers.
      cmap: matplotlib colormap (default: Captum's, `captum_cmap(sign)`).
      alpha: heat map opacity in "blended_heat_map".
    Returns:
      `[H, W, 3]` RGB in [0, 1].
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}, got {sign!r}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    a = np.asarray(attr, np.float32)
    a = a.sum(-1) if a.ndim == 3 else a
    if method != "heat_map" and image is None:
        raise ValueError(f"method {method!r} needs the image")
    if method in ("masked_image", "alpha_scaling") and sign == "all":
        raise ValueError(f"method {method!r} needs one sign (positive, negative or "
                         "absolute_value), as in Captum")
    norm = normalize_attr(a, sign, outlier_perc)
    cmap = captum_cmap(sign) if cmap is None else cmap
    heat = colormap((norm + 1) / 2 if sign == "all" else norm, cmap)
    if method == "heat_map":
        return heat
    image = np.asarray(image, np.float32)
    if method == "original_image":
        return image
    if method == "blended_heat_map":
        gray = np.asarray(image, np.float64).mean(-1)
        span = gray.max() - gray.min()
        gray = (gray - gray.min()) / (span if span > 0 else 1.0)
        return ((1 - alpha) * colormap(gray, "gray") + alpha * heat).astype(np.float32)
    weight = norm[..., None].astype(np.float32)
    if method == "masked_image":
        return image * weight
    return image * weight + (1 - weight)  # alpha_scaling, composited on white


def grid(images, ncols: int | None = None, pad: int = 2, fill: float = 1.0) -> np.ndarray:
    """Tiles `[N, H, W, 3]` (or `[N, H, W]`) images into one picture, row by row."""
    a = np.asarray(images, np.float32)
    if a.ndim == 3:
        a = np.repeat(a[..., None], 3, -1)
    n, h, w, c = a.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = -(-n // ncols)
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), fill, np.float32)
    for i in range(n):
        r, k = divmod(i, ncols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = a[i]
    return out


def seed_row(image, attr, alpha: float = 0.5, cmap: str = "jet") -> list[np.ndarray]:
    """The seed documents' row: original, colored, negative, positive, gray heat map, overlay."""
    a = np.asarray(attr, np.float32)
    if a.ndim == 2:  # a CAM-like map: show it in the three gradient panels as gray
        a = np.repeat(a[..., None], 3, -1)
    heat = gray_heatmap(a)
    gray = lambda v: np.repeat(np.asarray(v)[..., None], 3, -1)  # noqa: E731
    return [np.asarray(image, np.float32), colored(a), gray(negative(a).max(-1)),
            gray(positive(a).max(-1)), gray(heat), overlay(image, heat, alpha, cmap)]


SEED_COLUMNS = ("original", "colored gradient", "negative gradient", "positive gradient",
                "heat map", "overlay")


def panel_figure(panels, col_titles, row_labels, path, title: str | None = None,
                 panel: float = 1.9) -> None:
    """Saves a grid of images as a figure: `panels[r][c]`, titles over the first row (or over
    every panel), a label left of each row (matplotlib, no display needed).

    Args:
      panels: rows of `[H, W, 3]` images in [0, 1].
      col_titles: one title per column, or one list of titles per row (a title on every panel).
      row_labels: one label per row.
      path: the file to write (PNG).
      title: a title over the figure.
      panel: inches per panel.
    """
    from matplotlib.figure import Figure

    nrows, ncols = len(panels), len(panels[0])
    per_panel = not isinstance(col_titles[0], str)
    fig = Figure(figsize=(panel * ncols, (panel + 0.3 * per_panel) * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for r, row in enumerate(panels):
        for c, img in enumerate(row):
            axes[r, c].imshow(np.clip(np.asarray(img, np.float32), 0, 1))
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if per_panel:
                axes[r, c].set_title(col_titles[r][c], fontsize=7)
            elif r == 0:
                axes[r, c].set_title(col_titles[c], fontsize=8)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def seed_table_figure(rows: dict, title: str, path) -> None:
    """The seed documents' table for one image: a row per method (`{method: seed_row(...)}`),
    columns original | colored | negative | positive | heat map | overlay."""
    panel_figure(list(rows.values()), SEED_COLUMNS, list(rows), path, title, panel=2.0)


def compare_figure(images, overlays, labels, methods, path) -> None:
    """All methods side by side: a row per image, the original then each method's overlay.

    Args:
      images: `[R, H, W, 3]` originals.
      overlays: per row, one overlay per method.
      labels: per row label.
      methods: column titles after "original".
      path: the file to write.
    """
    panels = [[img] + list(row) for img, row in zip(images, overlays)]
    panel_figure(panels, ["original"] + list(methods), labels, path)


def _token_rows(tokens, scores, rows):
    scores = np.asarray(scores, np.float64)
    if scores.ndim == 1:
        scores = scores[None]
    if scores.ndim != 2 or scores.shape[1] != len(tokens):
        raise ValueError(f"scores must be [T] or [rows, T] with T = {len(tokens)} tokens, got "
                         f"shape {np.shape(scores)}")
    if rows is not None and len(rows) != scores.shape[0]:
        raise ValueError(f"{len(rows)} row labels for {scores.shape[0]} rows of scores")
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or infinite values")
    top = np.abs(scores).max()
    return scores, scores / top if top > 0 else scores


def text_heatmap(tokens, scores, *, rows=None, title: str | None = None,
                 path=None, force: bool = False) -> str:
    """Token attributions as coloured text: red for positive, blue for negative, the opacity
    the score over the largest |score| (Captum's `visualize_text` colours).

    Args:
      tokens: the prompt's token strings (`Tokenizer.tokens(ids)`).
      scores: `[T]`, or `[rows, T]` (e.g. one row per target token).
      rows: a label per row (e.g. the target tokens), shown on the left.
      title: a heading.
      path: if given, also written there, as HTML (`.html`) or a PNG (`.png`), atomically.
      force: replace an existing file at `path`.
    Returns:
      The HTML fragment (every token and label escaped).
    """
    import html

    scores, norm = _token_rows(tokens, scores, rows)
    out = ['<div class="jaxinterp-text-heatmap" style="font-family:monospace;line-height:2">']
    if title:
        out.append(f"<h3>{html.escape(title)}</h3>")
    for r in range(scores.shape[0]):
        cells = []
        if rows is not None:
            cells.append(f'<b style="display:inline-block;min-width:6em">'
                         f"{html.escape(str(rows[r]))}</b>")
        for tok, v, s in zip(tokens, norm[r], scores[r]):
            rgb = "220,40,40" if v >= 0 else "40,80,220"
            cells.append(f'<span title="{s:.4g}" style="background:rgba({rgb},{abs(v):.3f});'
                         f'padding:2px 3px;margin:1px;border-radius:3px">'
                         f"{html.escape(str(tok))}</span>")
        out.append("<div>" + "".join(cells) + "</div>")
    out.append("</div>")
    fragment = "\n".join(out)
    if path is not None:
        from pathlib import Path

        from jaxinterp.outputs import write_file

        suffix = Path(path).suffix.lower()
        if suffix == ".html":
            page = (f"<!doctype html><html><head><meta charset='utf-8'><title>"
                    f"{html.escape(title or 'token attributions')}</title></head><body>"
                    f"{fragment}</body></html>")
            write_file(path, lambda tmp: tmp.write_text(page, encoding="utf-8"), force)
        elif suffix == ".png":
            write_file(path, lambda tmp: _text_heatmap_png(tokens, scores, norm, rows, title,
                                                           tmp), force)
        else:
            raise ValueError(f"path must end in .html or .png, got {path!s}")
    return fragment


def _text_heatmap_png(tokens, scores, norm, rows, title, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, t = scores.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * t + (1.5 if rows is not None else 0.5)),
                                    0.5 * n + (0.9 if title else 0.5)))
    ax.imshow(norm, cmap="bwr", vmin=-1.4, vmax=1.4, aspect="auto")  # red +, blue -; text readable
    for r in range(n):
        for c, tok in enumerate(tokens):
            ax.text(c, r, str(tok), ha="center", va="center", fontsize=9, family="monospace")
    ax.set_xticks([])
    ax.set_yticks(range(n) if rows is not None else [])
    if rows is not None:
        ax.set_yticklabels([str(r) for r in rows], family="monospace")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
