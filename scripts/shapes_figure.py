"""Draws sample `shapes` images with their object masks and colour / texture concept maps.

    python scripts/shapes_figure.py --out docs/shapes.png [--n 8] [--seed 1]

Rows: image (title: class, colour, texture, and the default model's prediction), object mask,
colour-concept map, texture-concept map.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jaxinterp as ji  # noqa: E402
from jaxinterp.data import shapes_dataset as sd  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default="docs/shapes.png")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    b = ji.data.shapes(jax.random.key(args.seed), args.n)
    m = ji.load_model()
    pred = np.asarray(jax.nn.softmax(m(b.images)[0]))
    none = (0.12, 0.12, 0.12)
    color_cmap = ListedColormap([none, *sd.COLOR_RGB])
    texture_cmap = ListedColormap([none, *plt.get_cmap("Set2").colors[: len(sd.TEXTURES)]])

    fig, axes = plt.subplots(4, args.n, figsize=(1.7 * args.n, 7.4))
    for i in range(args.n):
        y, c, t = int(b.labels[i]), int(b.colors[i]), int(b.textures[i])
        p = int(pred[i].argmax())
        axes[0, i].imshow(np.asarray(b.images[i]))
        axes[0, i].set_title(f"{sd.CLASSES[y]}\n{sd.COLOR_NAMES[c]}, {sd.TEXTURES[t]}\n"
                             f"pred {sd.CLASSES[p]} {100 * pred[i, p]:.0f}%", fontsize=8)
        axes[1, i].imshow(np.asarray(b.mask[i]), cmap="gray")
        axes[2, i].imshow(np.asarray(b.color_map[i]) + 1, cmap=color_cmap, vmin=0,
                          vmax=len(sd.COLOR_NAMES), interpolation="nearest")
        axes[3, i].imshow(np.asarray(b.texture_map[i]) + 1, cmap=texture_cmap, vmin=0,
                          vmax=len(sd.TEXTURES), interpolation="nearest")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for row, name in enumerate(["image", "object mask", "colour concept", "texture concept"]):
        axes[row, 0].set_ylabel(name, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=texture_cmap.colors[k + 1])
               for k in range(len(sd.TEXTURES))]
    fig.legend(handles, sd.TEXTURES, loc="lower center", ncol=len(sd.TEXTURES), fontsize=8,
               title="texture concepts", title_fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
