"""Pictures and tables of the README's "Concepts" section (the shipped vgg-mini, held-out data).

    python scripts/concepts_gallery.py        # about 10 minutes on the 2-core CPU

Writes docs/concepts/: the dissection table (detectors per layer and category on 4,000 unseen
`shapes` images), dissection figures, top-activating patches, a t-SNE map of the `gap`
features, neighbour agreement, the TCAV table (every concept x class, Bonferroni-corrected),
results.json and tables.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

import jaxinterp as ji
from jaxinterp.concepts import figures
from jaxinterp.data import shapes_dataset as sd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "concepts"
TEST_SEED = 1_000_003  # held out from training
LAYERS = ["relu1_1", "relu2_2", "relu3_2", "relu4_2"]


def stream(n, start, batch=128):
    def it():
        for s in range(0, n, batch):
            yield ji.data.shapes(jax.random.key(TEST_SEED), min(batch, n - s), start=start + s)
    return it


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    m = ji.load_model()
    results = {}
    data = stream(4000, 200_000)
    dis = ji.dissect(m, LAYERS, data)
    results["dissection"] = {"images": 4000, "rows": ji.concepts.summary(dis),
                             "concepts": {layer: dict(zip(*np.unique(r.concept_name[r.detector],
                                                                     return_counts=True)))
                                          for layer, r in dis.items()}}
    results["dissection"]["concepts"] = {k: {c: int(n) for c, n in v.items()}
                                         for k, v in results["dissection"]["concepts"].items()}
    print(results["dissection"]["rows"], flush=True)
    for layer in ("relu1_1", "relu4_2"):
        r = dis[layer]
        best = [int(u) for u in (-r.iou).argsort()[:6]]
        top = ji.top_activating(m, layer, best, data, k=4, patches=False)
        figures.dissection_figure(m, r, top, OUT / f"dissection_{layer}.png",
                                  title=f"{layer}: units of highest IoU, top images, mask outlined")
    top = ji.top_activating(m, "relu3_2", list(range(8)), data, k=8)
    figures.top_activating_figure(top, OUT / "top_relu3_2.png",
                                  [f"relu3_2:{u}" for u in range(8)],
                                  title="relu3_2: top-8 receptive-field patches of 4,000 images")
    # neighbours and the 2-D map
    queries = ji.data.shapes(jax.random.key(TEST_SEED), 200, start=300_000)
    idx, _ = ji.nearest_neighbors(m, "gap", queries.images, data, k=5)
    labels = np.concatenate([np.asarray(b.labels) for b in data()])
    share = float((labels[idx] == np.asarray(queries.labels)[:, None]).mean())
    results["neighbors"] = {"queries": 200, "data": 4000, "k": 5, "layer": "gap",
                            "same_class": share}
    small = ji.data.shapes(jax.random.key(TEST_SEED), 600, start=310_000)
    feats = ji.concepts.features(m, "gap", small.images)
    points = ji.embed_2d(feats, method="tsne", key=0)
    figures.embedding_figure(points, small.images, OUT / "tsne_gap.png", zoom=0.3,
                             labels=np.asarray(small.labels), classes=sd.CLASSES,
                             title="t-SNE of vgg-mini's gap features, 600 held-out images")
    # TCAV: every concept against every class at relu3_2
    d = ji.data.shapes(jax.random.key(TEST_SEED), 4000, start=400_000)
    x, lab = np.asarray(d.images), np.asarray(d.labels)
    fields = {"shape": (np.asarray(d.labels), sd.CLASSES), "color": (np.asarray(d.colors),
                                                                     sd.COLOR_NAMES),
              "texture": (np.asarray(d.textures), sd.TEXTURES)}
    half = 2000
    pool = x[:half][-400:]
    concepts = [(cat, i, name) for cat, (_, names) in fields.items()
                for i, name in enumerate(names)] + [("random", -1, "random")]
    tests = len(concepts) * len(sd.CLASSES)
    alpha = 0.05 / tests
    rows = []
    for cat, i, name in concepts:
        if cat == "random":
            examples = x[half - 800:half - 770]
        else:
            values = fields[cat][0][:half - 400]
            examples = x[:half - 400][values == i][:30]
        row = {"concept": f"{cat}:{name}", "scores": [], "significant": []}
        for c in range(len(sd.CLASSES)):
            inputs = x[half:][lab[half:] == c][:40]
            r = ji.tcav(m, "relu3_2", examples, pool, inputs, c, runs=10, alpha=alpha, key=0)
            row["scores"].append(round(r.score, 3))
            row["significant"].append(bool(r.significant))
        print(row, flush=True)
        rows.append(row)
    results["tcav"] = {"layer": "relu3_2", "runs": 10, "alpha": alpha, "tests": tests,
                       "rows": rows}
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    (OUT / "tables.md").write_text(tables(results))
    print(f"wrote {OUT}")


def tables(results) -> str:
    dis = results["dissection"]
    lines = ["| layer | units | detectors | shape | colour | texture | detected concepts |",
             "|---|---|---|---|---|---|---|"]
    for r in dis["rows"]:
        top = sorted(dis["concepts"][r["layer"]].items(), key=lambda kv: -kv[1])[:4]
        lines.append(f"| {r['layer']} | {r['units']} | {r['detectors']} | {r['shape']} | "
                     f"{r['color']} | {r['texture']} | "
                     + ", ".join(f"{c} {n}" for c, n in top) + " |")
    t = results["tcav"]
    lines += ["", f"TCAV scores at {t['layer']} ({t['runs']} random sets; **bold**: significant "
              f"at α = 0.05 / {t['tests']} tests = {t['alpha']:.2g}, Bonferroni):", "",
              "| concept | " + " | ".join(sd.CLASSES) + " |", "|---|" + "---|" * len(sd.CLASSES)]
    for r in t["rows"]:
        cells = [f"**{s:.2f}**" if sig else f"{s:.2f}" for s, sig in zip(r["scores"],
                                                                        r["significant"])]
        lines.append(f"| {r['concept']} | " + " | ".join(cells) + " |")
    n = results["neighbors"]
    lines += ["", f"Nearest neighbours ({n['layer']}, k = {n['k']}, {n['queries']} queries among "
              f"{n['data']} images): {100 * n['same_class']:.1f} % share the query's class."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
