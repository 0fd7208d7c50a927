"""Ground truth and sanity checks for every attribution method on the shipped vgg-mini.

    python scripts/attribution_eval.py [--n 500] [--rand-n 64] [--out docs/attribution_eval.json]
        [--only a,b] [--skip-randomization c,d]

1. On `n` held-out `shapes` images (the model's test seed, past the recorded 2,000): pointing
   game (the heat map's maximum inside the object mask), the fraction of attribution mass
   inside the mask, and the deletion / insertion AUCs (`evaluation.deletion_insertion`, 16
   steps, RISE's blur), with the true class as target.
2. The model-randomization check of Adebayo et al. (2018): re-initialize the top k weight layers
   (k = 1 … all) and report the mean Spearman rank correlation of each method's heat map with
   the trained model's. A method that keeps its maps under randomization is not explaining the
   model.
Prints Markdown tables (pasted into the README) and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jaxinterp as ji  # noqa: E402
from jaxinterp import evaluation as ev  # noqa: E402

TEST_SEED = 1_000_003


def methods(only=None, arch="vgg-mini"):
    """Every registered method with its own defaults (SmoothGrad 50 samples at 15 %, IG 50
    Gauss-Legendre steps, occlusion 16x16 windows at stride 8, baseline 0; LRP's default
    composite epsilon_plus_flat), and LRP with the epsilon_gamma_box composite; for vit-mini
    the methods that apply to a ViT, LRP as AttnLRP and CP-LRP, Chefer's ICCV 2021 variant."""
    table = dict(ji.attribution.METHODS)
    if arch == "vit-mini":
        for name in ("cam", "lrp", "deeplift", "full_grad", "deconvnet", "guided_backprop",
                     "guided_grad_cam"):  # need a GAP head / biases / ReLUs, or refuse products
            table.pop(name)
        table["lrp_attn_lrp"] = functools.partial(ji.lrp, composite="attn_lrp")
        table["lrp_cp_lrp"] = functools.partial(ji.lrp, composite="cp_lrp")
        table["transformer_attribution_iccv2021"] = functools.partial(
            ji.transformer_attribution, variant="iccv2021")
    else:
        for name in [n for n, f in table.items() if f.transformer_only]:
            table.pop(name)
        table["lrp_epsilon_gamma_box"] = functools.partial(ji.lrp, composite="epsilon_gamma_box")
    return {n: f for n, f in table.items() if only is None or n in only}


def batched(f, m, x, y, chunk=50):
    return np.concatenate([np.asarray(f(m, x[i:i + chunk], y[i:i + chunk]))
                           for i in range(0, len(y), chunk)])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--rand-n", type=int, default=64)
    ap.add_argument("--model", default="vgg-mini", choices=("vgg-mini", "vit-mini"),
                    help="the shipped model explained")
    ap.add_argument("--out", default=None,
                    help="default docs/attribution_eval.json (vit-mini: attribution_eval_vit.json)")
    ap.add_argument("--only", default=None,
                    help="comma list: recompute these methods only, keep the others' numbers "
                         "from --out (same --n / --rand-n; a new --out holds these only)")
    ap.add_argument("--skip-randomization", default="",
                    help="comma list: methods left out of the randomization check (their row "
                         "prints as '—'; for the methods that cost hundreds of passes per image)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = "docs/attribution_eval" + ("_vit" if args.model == "vit-mini" else "") + ".json"
    only = None if args.only is None else args.only.split(",")
    skip = set(filter(None, args.skip_randomization.split(",")))
    unknown = (set(only or ()) | skip) - set(methods(arch=args.model))
    if unknown:
        ap.error(f"unknown methods {', '.join(sorted(unknown))}; valid: {', '.join(methods(arch=args.model))}")
    old = json.loads(Path(args.out).read_text()) if only and Path(args.out).exists() else None
    if old is not None and (old["n"], old["rand_n"]) != (args.n, args.rand_n):
        raise SystemExit(f"--only: {args.out} has n={old['n']}, rand_n={old['rand_n']}")
    from tqdm import tqdm

    m = ji.load_model(args.model)
    b = ji.data.shapes(jax.random.key(TEST_SEED), args.n, start=10_000)
    x, y, mask = b.images, b.labels, np.asarray(b.mask)
    results = {"ground_truth": {}, "randomization": {}}
    if old is not None:
        results = {k: {n: v for n, v in old[k].items() if n not in only} for k in results}
    for name, f in tqdm(methods(only, args.model).items(), desc="ground truth"):
        a = batched(f, m, x, y)
        curves = [ev.deletion_insertion(m, x[i:i + 50], y[i:i + 50], a[i:i + 50])
                  for i in range(0, len(y), 50)]
        results["ground_truth"][name] = {
            "pointing": float(ev.pointing_game(a, mask).mean()),
            "mass_inside": float(ev.mass_inside(a, mask).mean()),
            **{f"{c}_auc": float(np.concatenate([d[f"{c}_auc"] for d in curves]).mean())
               for c in ("deletion", "insertion")}}
    area = float(mask.mean())

    top = ev.randomization_layers(m)
    depth_all = len(top)
    xr, yr = x[: args.rand_n], y[: args.rand_n]
    randomized = {n: f for n, f in methods(only, args.model).items() if n not in skip}
    base = {n: ev.heatmap(batched(f, m, xr, yr)) for n, f in randomized.items()}
    for depth in tqdm(range(1, depth_all + 1), desc="randomization"):
        mr = ev.cascading_randomization(m, jax.random.key(100 + depth), depth)
        for name, f in randomized.items():
            rho = ev.spearman(base[name], ev.heatmap(batched(f, mr, xr, yr)))
            results["randomization"].setdefault(name, []).append(float(rho.mean()))

    names = [n for n in methods(arch=args.model) if n in results["ground_truth"]]
    print(f"\nGround truth on {args.n} held-out shapes images (object covers {100 * area:.1f}% "
          "of pixels on average):\n")
    print("| method | pointing game | attribution mass inside the object | deletion AUC "
          "(lower is better) | insertion AUC (higher is better) |")
    print("|---|---|---|---|---|")
    for n in names:
        r = results["ground_truth"][n]
        curves = [f"{r[c]:.3f}" if c in r else "—" for c in ("deletion_auc", "insertion_auc")]
        print(f"| {n} | {100 * r['pointing']:.1f}% | {100 * r['mass_inside']:.1f}% | "
              f"{curves[0]} | {curves[1]} |")
    print(f"\nCascading randomization on {args.rand_n} images: mean Spearman correlation with the "
          "trained model's heat map after re-initializing the layers from the top down to:\n")
    print("| method | " + " | ".join(top) + " |")
    print("|---|" + "---|" * len(top))
    for n in names:
        rho = results["randomization"].get(n)
        print(f"| {n} | " + " | ".join(f"{v:.2f}" for v in rho) + " |" if rho else
              f"| {n} | " + " | ".join("—" for _ in top) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"n": args.n, "rand_n": args.rand_n,
                                          "object_area": area, **results}, indent=1))


if __name__ == "__main__":
    main()
