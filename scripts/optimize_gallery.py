"""Pictures and tables of the README's "DeepDream, inversion, adversarial examples" section.

    python scripts/optimize_gallery.py                  # about 15 minutes on the 2-core CPU
    python scripts/optimize_gallery.py --only style     # dream, inversion, attacks, style

Writes docs/optimize/: dream_shapes.png (the shipped vgg-mini dreaming at three layers),
dream_vgg16_random.png (a VGG16 with random weights), inversion.png and inversion table (PSNR
and feature error per layer on held-out shapes images), attack.png and the robustness table
(FGSM / PGD / targeted PGD success per ε on held-out images), textures.png and style.png (the
shipped model and a random VGG16 with average pooling) with the L-BFGS / Adam table, results.json with every number
and tables.md (the README's tables, made from results.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

import jaxinterp as ji
from jaxinterp import viz

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "optimize"
TEST_SEED = 1_000_003  # held out from training (scripts/train_default.py)


def psnr(a, b):
    return 10 * np.log10(1 / np.mean((np.asarray(a) - np.asarray(b)) ** 2, axis=(1, 2, 3)))


def dreams(m, results):
    x = np.asarray(ji.data.shapes(jax.random.key(TEST_SEED), 3, start=10, size=128).images)
    layers = ["relu2_2", "relu3_2", "relu4_2"]
    outs = [np.asarray(ji.deepdream(m, x, layer, octaves=4, steps=20, key=0)) for layer in layers]
    panels = [[x[i]] + [o[i] for o in outs] for i in range(len(x))]
    viz.panel_figure(panels, ["original"] + [f"dream {layer}" for layer in layers],
                     [f"image {i}" for i in range(len(x))], OUT / "dream_shapes.png",
                     title="DeepDream, shipped vgg-mini, 128 px, 4 octaves x 20 steps", panel=2.4)
    rnd = ji.load_model("vgg16", key=jax.random.key(0))
    xv = np.asarray(ji.data.shapes(jax.random.key(TEST_SEED), 2, start=20, size=224).images)
    layers = ["relu3_3", "relu4_3"]
    outs = [np.asarray(ji.deepdream(rnd, xv, layer, key=0)) for layer in layers]
    panels = [[xv[i]] + [o[i] for o in outs] for i in range(len(xv))]
    viz.panel_figure(panels, ["original"] + [f"dream {layer}" for layer in layers],
                     [f"image {i}" for i in range(len(xv))], OUT / "dream_vgg16_random.png",
                     title="DeepDream, VGG16 with random weights, 224 px, 4 octaves x 10 steps",
                     panel=2.8)
    results["dream"] = {"vgg-mini": {"size": 128, "octaves": 4, "steps": 20},
                        "vgg16-random": {"size": 224, "octaves": 4, "steps": 10}}


def inversion(m, results):
    x = np.asarray(ji.data.shapes(jax.random.key(TEST_SEED), 8, start=30).images)
    layers = ["relu1_1", "pool1", "relu2_2", "pool2", "relu3_2", "pool3", "relu4_2", "logits"]
    rows, recon = [], []
    for layer in layers:
        r = ji.invert(m, x, layer, steps=300)
        q = psnr(r.images, x)
        rows.append({"layer": layer, "name": m.resolve(layer), "psnr_db": float(q.mean()),
                     "psnr_min_db": float(q.min()), "feature_error": float(np.mean(r.error))})
        recon.append(np.asarray(r.images))
        print(rows[-1], flush=True)
    panels = [[x[i]] + [rec[i] for rec in recon] for i in range(3)]
    viz.panel_figure(panels, ["original"] + layers, [f"image {i}" for i in range(3)],
                     OUT / "inversion.png", title="feature inversion, shipped vgg-mini, 300 steps")
    results["inversion"] = {"images": len(x), "steps": 300, "rows": rows}


def attacks(m, results):
    d = ji.data.shapes(jax.random.key(TEST_SEED), 256, start=4000)
    x, y = d.images, np.asarray(d.labels)
    eps = [1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255]
    target = (y + 1 + np.random.default_rng(0).integers(0, 7, len(y))) % 8
    table = {"eps": eps, "clean_accuracy": float((np.asarray(m(x)[0].argmax(-1)) == y).mean())}
    for name, kw in [("FGSM", dict(attack="fgsm")), ("PGD 10 steps", dict(steps=10)),
                     ("PGD 40 steps", dict(steps=40)),
                     ("PGD 10 steps x 4 restarts", dict(steps=10, restarts=4))]:
        table[name] = np.asarray(ji.robustness(m, x, y, eps, **kw).success_rate).tolist()
        print(name, table[name], flush=True)
    for steps in (20, 100):
        r = ji.robustness(m, x, target, eps, steps=steps, targeted=True)
        table[f"targeted PGD {steps} steps"] = np.asarray(r.success_rate).tolist()
        print(steps, table[f"targeted PGD {steps} steps"], flush=True)
    table["PGD L2 10 steps (eps 0.25, 0.5, 1, 2)"] = np.asarray(
        ji.robustness(m, x, y, [0.25, 0.5, 1.0, 2.0], norm="l2").success_rate).tolist()
    results["attacks"] = {"images": len(y), **table}
    xs, ys = x[:4], y[:4]
    adv = np.asarray(ji.pgd(m, xs, ys, eps=8 / 255))
    pc, pa = (np.asarray(jax.nn.softmax(m(v)[0])) for v in (xs, adv))
    panels, titles = [], []
    for i in range(len(xs)):
        delta = adv[i] - np.asarray(xs[i])
        panels.append([xs[i], adv[i], 0.5 + 0.5 * delta / np.abs(delta).max()])
        c, a = pc[i].argmax(), pa[i].argmax()
        titles.append([f"{m.classes[c]} {100 * pc[i, c]:.1f}%",
                       f"{m.classes[a]} {100 * pa[i, a]:.1f}%", "perturbation x 16"])
    viz.panel_figure(panels, titles, [f"image {i}" for i in range(len(xs))], OUT / "attack.png",
                     title="PGD L∞, ε = 8/255, 10 steps: clean, adversarial, perturbation")


def photo_like(key, size=128):
    """A photo-like test image: 1/f noise with correlated colours (natural-image statistics)."""
    h = w = size
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None]
    scale = 1 / np.maximum(np.sqrt(fx ** 2 + fy ** 2), 1 / size) ** 1.2
    spec = np.asarray(jax.random.normal(key, (3, h, w // 2 + 1, 2)))
    img = np.fft.irfft2((spec[..., 0] + 1j * spec[..., 1]) * scale, s=(h, w)).transpose(1, 2, 0)
    img = img @ np.array([[1.0, 0.8, 0.6], [0.3, 1.0, 0.5], [0.2, 0.4, 1.0]])
    return np.clip((img - img.mean()) / (4 * img.std()) + 0.5, 0, 1).astype(np.float32)


def styles(m, results):
    d = np.asarray(ji.data.shapes(jax.random.key(TEST_SEED), 4, start=50, size=128).images)
    photo = photo_like(jax.random.key(1))
    sources = [d[0], d[1], photo]
    tex = np.asarray(ji.texture(m, sources, steps=300, key=0).images)
    print("textures (vgg-mini) done", flush=True)
    rnd = ji.load_model("vgg16", key=jax.random.key(0)).with_pool("avg")
    small = [jax.image.resize(s, (96, 96, 3), "linear") for s in sources]
    tex_rnd = np.asarray(ji.texture(rnd, small, steps=100, key=0).images)
    tex_rnd = np.asarray(jax.image.resize(tex_rnd, (len(small), 128, 128, 3), "linear"))
    print("textures (random VGG16) done", flush=True)
    viz.panel_figure([list(sources), list(tex), list(tex_rnd)],
                     ["shapes image", "shapes image", "photo-like (1/f noise)"],
                     ["source", "vgg-mini", "VGG16 random,\navg pooling"], OUT / "textures.png",
                     title="Gram-matrix textures, L-BFGS (vgg-mini: 300 iterations at 128 px; "
                     "random VGG16: 100 at 96 px)", panel=2.4)
    content, style = d[2:4], np.stack([d[0], photo])
    out = np.asarray(ji.style_transfer(m, content, style, steps=300).images)
    print("style (vgg-mini) done", flush=True)
    shrink = lambda a: np.asarray(jax.image.resize(a, (len(a), 96, 96, 3), "linear"))  # noqa: E731
    out_rnd = np.asarray(ji.style_transfer(rnd, shrink(content), shrink(style), steps=100).images)
    out_rnd = np.asarray(jax.image.resize(out_rnd, (len(out_rnd), 128, 128, 3), "linear"))
    print("style (random VGG16) done", flush=True)
    viz.panel_figure([[content[i], style[i], out[i], out_rnd[i]] for i in range(2)],
                     ["content", "style", "vgg-mini", "VGG16 random, avg pool"],
                     ["pair 0", "pair 1"], OUT / "style.png",
                     title="style transfer, tutorial normalization and weights, L-BFGS "
                     "(vgg-mini: 300 iterations at 128 px; random VGG16: 100 at 96 px)", panel=2.4)
    results["style"] = {"texture_steps": 300, "size": 128}


def optimizers(m, results):
    """L-BFGS against Adam on texture synthesis (64 px, vgg-mini)."""
    x = np.asarray(ji.data.shapes(jax.random.key(TEST_SEED), 4, start=60).images)
    curves = {}
    for name, kw in [("L-BFGS", dict()), ("Adam lr 0.02", dict(optimizer="adam")),
                     ("Adam lr 0.05", dict(optimizer="adam", lr=0.05))]:
        curves[name] = np.asarray(ji.texture(m, x, steps=500, key=0, **kw).losses)  # [500, 4]
    start = curves["L-BFGS"][0]
    rows = []
    for frac in (1e-1, 1e-2, 1e-3):
        row = {"loss_fraction": frac}
        for name, c in curves.items():
            hit = c <= frac * start  # [steps, images]
            its = [int(np.argmax(h)) + 1 if h.any() else None for h in hit.T]
            row[name] = None if None in its else float(np.median(its))
        rows.append(row)
        print(row, flush=True)
    results["optimizers"] = {"rows": rows, "images": len(x)}


def tables(results) -> str:
    """The README's Markdown tables from results.json."""
    inv = results["inversion"]
    lines = [f"| layer | PSNR dB (mean, min over {inv['images']} images) | relative feature error |",
             "|---|---|---|"]
    lines += [f"| {r['layer']} (`{r['name']}`) | {r['psnr_db']:.1f} ({r['psnr_min_db']:.1f}) | "
              f"{r['feature_error']:.3f} |" for r in inv["rows"]]
    a = results["attacks"]
    eps = [f"{round(e * 255)}/255" for e in a["eps"]]
    lines += ["", f"Success rate on {a['images']} held-out `shapes` images (clean accuracy "
              f"{100 * a['clean_accuracy']:.1f} %; untargeted: prediction ≠ label; targeted: "
              "a random wrong class reached):", "",
              "| attack (L∞) | " + " | ".join(f"ε = {e}" for e in eps) + " |",
              "|---|" + "---|" * len(eps)]
    for name, rates in a.items():
        if name in ("images", "eps", "clean_accuracy") or name.startswith("PGD L2"):
            continue
        lines.append(f"| {name} | " + " | ".join(f"{100 * r:.1f} %" for r in rates) + " |")
    l2 = next(k for k in a if k.startswith("PGD L2"))
    lines += ["", f"{l2}: " + ", ".join(f"{100 * r:.1f} %" for r in a[l2]) + "."]
    if "optimizers" in results:
        st = results["optimizers"]
        names = [k for k in st["rows"][0] if k != "loss_fraction"]
        lines += ["", f"Texture synthesis, median iterations over {st['images']} "
                  "`shapes` images (64 px, vgg-mini) to bring the style loss to a fraction of "
                  "its start (— : not within 500):", "",
                  "| loss / start | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for r in st["rows"]:
            lines.append(f"| {r['loss_fraction']:g} | " + " | ".join(
                "—" if r[n] is None else f"{r[n]:.0f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


SECTIONS = {"dream": dreams, "inversion": inversion, "attacks": attacks, "style": styles,
            "optimizers": optimizers}


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=None, help="comma list of: " + ",".join(SECTIONS))
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    m = ji.load_model()
    f = OUT / "results.json"
    results = json.loads(f.read_text()) if f.exists() else {}  # a partial run updates its part
    for name in (args.only.split(",") if args.only else SECTIONS):
        SECTIONS[name](m, results)
    f.write_text(json.dumps(results, indent=1))
    (OUT / "tables.md").write_text(tables(results))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
