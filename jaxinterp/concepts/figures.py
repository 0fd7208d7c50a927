"""Figures of the concept methods (matplotlib, no display needed)."""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from jaxinterp.concepts.data import layer_output


def _figure(nrows, ncols, panel):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel * ncols, (panel + 0.25) * nrows + 0.4))
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _off(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def dissection_figure(m, dissection, top, path, title: str | None = None) -> None:
    """Units' top images with the unit's mask (upsampled activation >= threshold) outlined.

    Args:
      m: the model.
      dissection: the layer's `Dissection`.
      top: `top_activating(m, layer, units, data, k=...)` for the units to show.
      path: the PNG to write.
      title: a title over the figure.
    """
    units, k = top.indices.shape
    fig, axes = _figure(units, k, 1.6)
    name = dissection.layer
    shown = np.asarray(top.images).reshape(-1, *top.images.shape[2:])
    acts = np.asarray(layer_output(m, shown, name))
    up = np.asarray(jax.image.resize(acts, (*shown.shape[:3], acts.shape[-1]), "bilinear"))
    up = up.reshape(units, k, *up.shape[1:])
    for r, unit in enumerate(top.units):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(np.clip(top.images[r, c], 0, 1))
            mask = up[r, c, ..., unit] >= dissection.threshold[unit]
            ax.contour(mask.astype(float), levels=[0.5], colors="yellow", linewidths=1.0)
            _off(ax)
        axes[r, 0].set_ylabel(f"unit {unit}\n{dissection.concept_name[unit]} "
                              f"({dissection.iou[unit]:.2f})", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def top_activating_figure(top, path, labels: Sequence[str], title: str | None = None) -> None:
    """Rows of the top patches (or images) per unit."""
    tiles = top.patches if top.patches is not None else top.images
    units, k = tiles.shape[:2]
    fig, axes = _figure(units, k, 1.2)
    for r in range(units):
        for c in range(k):
            axes[r, c].imshow(np.clip(tiles[r, c], 0, 1))
            axes[r, c].set_title(f"{top.values[r, c]:.2f}", fontsize=6)
            _off(axes[r, c])
        axes[r, 0].set_ylabel(labels[r], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def embedding_figure(points, images, path, title: str | None = None, zoom: float = 0.35,
                     labels=None, classes: Sequence[str] | None = None) -> None:
    """The images placed at their 2-D points (the classic t-SNE map of a data set)."""
    from matplotlib.figure import Figure
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    points = np.asarray(points, np.float64)
    fig = Figure(figsize=(10, 10))
    ax = fig.subplots()
    if labels is not None:
        sc = ax.scatter(points[:, 0], points[:, 1], c=np.asarray(labels), cmap="tab10", s=4)
        if classes is not None:
            handles = [ax.scatter([], [], color=sc.cmap(sc.norm(i)), label=c, s=20)
                       for i, c in enumerate(classes)]
            ax.legend(handles=handles, fontsize=7, loc="upper right")
    for p, img in zip(points, np.asarray(images)):
        ax.add_artist(AnnotationBbox(OffsetImage(np.clip(img, 0, 1), zoom=zoom), p, frameon=False))
    ax.update_datalim(points)
    ax.autoscale()
    _off(ax)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
