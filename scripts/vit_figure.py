"""The shipped vit-mini's explanations of held-out `shapes` images, side by side.

    python scripts/vit_figure.py [--out docs/vit_methods.png] [--n 4] [--model vit-mini]
        [--units-out docs/vit_units.png]

A row per image (label: true class, prediction and its probability); columns: the image, its
object mask, then attention rollout, Chefer et al.'s CVPR 2021 relevance, AttnLRP, CP-LRP,
token Grad-CAM (last block's `ln_1`) and integrated gradients, each as a heat map over the
image (absolute value, 99th percentile). `--units-out`: feature visualization (`ji.visualize`,
Lucid's defaults, 512 steps) of every class logit and of the first 8 MLP units of block 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jaxinterp as ji  # noqa: E402

TEST_SEED = 1_000_003
METHODS = {
    "rollout": lambda m, x, y: ji.attention_rollout(m, x),
    "Chefer CVPR 2021": lambda m, x, y: ji.transformer_attribution(m, x, y),
    "AttnLRP": lambda m, x, y: ji.lrp(m, x, y, composite="attn_lrp"),
    "CP-LRP": lambda m, x, y: ji.lrp(m, x, y, composite="cp_lrp"),
    "Grad-CAM": lambda m, x, y: ji.grad_cam(m, x, y),
    "IG": lambda m, x, y: ji.integrated_gradients(m, x, y),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default="docs/vit_methods.png")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--model", default="vit-mini")
    ap.add_argument("--units-out", default="docs/vit_units.png")
    args = ap.parse_args(argv)

    m = ji.load_model(args.model)
    b = ji.data.shapes(jax.random.key(TEST_SEED), args.n, start=20_000)
    x, y = b.images, b.labels
    prob = np.asarray(jax.nn.softmax(m(x)[0]))
    rows = []
    for name, f in METHODS.items():
        a = np.abs(np.asarray(f(m, x, y), np.float32))
        rows.append(a.sum(-1) if a.ndim == 4 else a)
    panels, labels = [], []
    for i in range(args.n):
        mask = np.repeat(np.asarray(b.mask[i], np.float32)[..., None], 3, -1)
        heats = [ji.viz.overlay(x[i], ji.viz.gray_heatmap(r[i])) for r in rows]
        panels.append([np.asarray(x[i]), mask, *heats])
        p = int(prob[i].argmax())
        labels.append(f"{m.classes[int(y[i])]} -> {m.classes[p]} {prob[i, p]:.2f}")
    ji.viz.panel_figure(panels, ["image", "object mask", *METHODS], labels, args.out,
                        title=f"{args.model}: explanations of held-out shapes images")
    print(f"wrote {args.out}")

    layer = "encoder/layers/encoder_layer_2/mlp/0"
    rows = {"class logits": [ji.objectives.channel("logits", c) for c in range(m.num_classes)],
            "block 2 MLP, units 0-7": [ji.objectives.channel(layer, u) for u in range(8)]}
    panels, titles = [], []
    for objs in rows.values():
        r = ji.visualize_units(m, objs, size=96)
        panels.append([np.asarray(img[0]) for img in r.images])
        titles.append(list(m.classes) if objs is rows["class logits"] else
                      [f"unit {u}" for u in range(8)])
    ji.viz.panel_figure(panels, titles, list(rows), args.units_out,
                        title=f"{args.model}: feature visualization (Lucid's defaults)")
    print(f"wrote {args.units_out}")


if __name__ == "__main__":
    main()
