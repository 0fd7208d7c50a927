"""The README's leaderboard: every registered method x every `ji.metrics` metric on `shapes`.

    python scripts/leaderboard.py [--samples 500] [--rerun-samples 50] [--chunk 100]
        [--work build/leaderboard] [--budget-minutes M] [--only a,b] [--table]

Runs `jaxinterp evaluate` per tier, method and chunk of `--chunk` images into
`--work/<tier>/<method>/<start>` (a part that is there is skipped: the run resumes where it
stopped, and `--budget-minutes` stops starting new parts after M minutes, chunk by chunk over
all methods so every method has the same images at any point), then merges the parts' per-image
scores into docs/leaderboard.json and prints the Markdown tables pasted into the README and
docs/site/metrics.md (`--table`: merge only).

Two tiers, because the families that re-run the method cost that method's time again per
perturbation or randomised layer (LIME, Shapley sampling, XRAI take seconds per image):

* `scored` (`--samples` images): the metrics that score given attributions — faithfulness,
  localisation, complexity — with Quantus' defaults except: faithfulness correlation 20 runs
  (not 100), pixel flipping 192 features per step (64 steps, not 12,288 model passes per
  image), monotonicity correlation 10 samples of 384-feature steps (not 100 of 1: 640 passes
  per image instead of 1.2 M). Measured on saliency, 100 images: faithfulness correlation
  with 100 runs took 45 s and monotonicity with 100 samples of 64 steps 299 s, the other 13
  metrics 30 s together;
* `rerun` (`--rerun-samples` images): robustness and randomisation, 10 perturbations per
  image (`--metric-samples 10`; Quantus draws 200 / 50), for the methods whose attribution
  took at most `--rerun-max-ms` (100 ms) per image in the scored tier, compilation included
  (each is re-run ~130 times per image here: ten noisy copies for each of the three
  robustness metrics, one per randomised layer, ten per layer for smooth MPRT).

Every cell keeps its own image count and compute time in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jaxinterp.metrics import FAMILIES, HIGHER_IS_BETTER  # noqa: E402

TIERS = {
    "scored": {"families": ("faithfulness", "localisation", "complexity"),
               "options": ("faithfulness_correlation.runs=20",
                           "pixel_flipping.features_in_step=192",
                           "monotonicity_correlation.samples=10",
                           "monotonicity_correlation.features_in_step=384")},
    "rerun": {"families": ("robustness", "randomisation"), "metric_samples": 10},
}


def methods() -> list[str]:
    """The registered methods the shipped vgg-mini supports, in the registry's order."""
    import jaxinterp as ji
    from jaxinterp.attribution import registry

    m = ji.load_model()
    return [n for n in registry.METHODS if registry.get(n).supports(m) is None]


def expected(tier: str, start: int, samples: int) -> dict:
    """The settings a finished part must have been run with (its run.json)."""
    spec = TIERS[tier]
    options = {}
    for o in spec.get("options", ()):
        target, value = o.split("=")
        metric, option = target.split(".")
        options.setdefault(metric, {})[option] = json.loads(value)
    return {"start": start, "samples": samples, "metric_samples": spec.get("metric_samples"),
            "metric_options": options, "metrics": [k for f in spec["families"]
                                                   for k in FAMILIES[f]]}


def current(out: Path, want: dict) -> bool:
    """Whether `out` holds a finished part run with the settings `want`."""
    f = out / "run.json"
    if not f.exists():
        return False
    record = json.loads(f.read_text())
    return all(record.get(k) == v for k, v in want.items()) and "draws" in record


def run_part(tier: str, method: str, start: int, samples: int, out: Path) -> float:
    """One `jaxinterp evaluate` call (replacing a stale part there); returns its wall time."""
    spec = TIERS[tier]
    metrics = [k for f in spec["families"] for k in FAMILIES[f]]
    cmd = [sys.executable, "-m", "jaxinterp.cli", "evaluate", "--methods", method,
           "--metrics", ",".join(metrics), "--samples", str(samples), "--start", str(start),
           "--batch", "16", "--out", str(out)]
    if "metric_samples" in spec:
        cmd += ["--metric-samples", str(spec["metric_samples"])]
    for o in spec.get("options", ()):
        cmd += ["--metric-option", o]
    if out.exists():
        cmd.append("--force")  # a part run with other settings; --force replaces only ours
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t


def parts(work: Path, tier: str, name: str, total: int, chunk: int) -> list[Path]:
    """The finished, current parts of a tier and method for images 0 … total-1, in order (the
    first missing or stale one ends the list: merged images are always a contiguous run)."""
    found = []
    for start in range(0, total, chunk):
        out = work / tier / name / str(start)
        if not current(out, expected(tier, start, min(chunk, total - start))):
            break
        found.append(out)
    return found


def attribution_ms(work: Path, name: str, total: int, chunk: int) -> float | None:
    """A method's attribution time per image in the scored tier (ms), None before it ran."""
    found = parts(work, "scored", name, total, chunk)
    if not found:
        return None
    seconds = images = 0
    for p in found:
        board = json.loads((p / "leaderboard.json").read_text())
        seconds += board["rows"][0]["attribution_seconds"]
        images += json.loads((p / "run.json").read_text())["samples"]
    return 1e3 * seconds / images


def merge(work: Path, names: list[str], totals: dict, chunk: int) -> dict:
    """docs/leaderboard.json: per method and metric the mean, 95 % half-width, image count and
    metric compute seconds over all parts; per method and tier the attribution seconds."""
    from jaxinterp.cli.evaluate import summarise

    rows, settings = [], {}
    for name in names:
        row = {"method": name, "scores": {}, "attribution_seconds": {}, "images": {}}
        for tier in TIERS:
            per_image, seconds, attr, images = {}, {}, 0.0, 0
            for p in parts(work, tier, name, totals[tier], chunk):
                board = json.loads((p / "leaderboard.json").read_text())
                record = json.loads((p / "run.json").read_text())
                settings[tier] = {"metric_samples": record["metric_samples"],
                                  "metric_options": record.get("metric_options", {})}
                (r,) = board["rows"]
                for k, v in board["per_image"][name].items():
                    per_image.setdefault(k, []).extend(v)
                    seconds[k] = seconds.get(k, 0.0) + r["scores"][k]["seconds"]
                attr += r["attribution_seconds"]
                images += record["samples"]
            for k, v in per_image.items():
                row["scores"][k] = {**summarise([np.nan if x is None else x for x in v]),
                                    "seconds": round(seconds[k], 3)}
            if images:
                row["attribution_seconds"][tier] = round(attr, 3)
                row["images"][tier] = images
        rows.append(row)
    metrics = [k for f in FAMILIES.values() for k in f]
    return {"metrics": metrics, "higher_is_better": {k: HIGHER_IS_BETTER[k] for k in metrics},
            "tiers": settings, "rows": rows}


SHORT = {"faithfulness_correlation": "faith. corr.", "pixel_flipping": "pixel flip.",
         "region_perturbation": "region pert.", "road": "ROAD", "monotonicity_correlation":
         "monot. corr.", "infidelity": "infidelity", "sufficiency": "suffic.",
         "max_sensitivity": "max sens.", "avg_sensitivity": "avg sens.",
         "local_lipschitz_estimate": "Lipschitz", "pointing_game": "pointing",
         "relevance_mass_accuracy": "mass acc.", "relevance_rank_accuracy": "rank acc.",
         "attribution_localisation": "attr. loc.", "auc": "AUC", "sparseness": "sparse.",
         "complexity": "complex.", "effective_complexity": "eff. compl.", "mprt": "MPRT",
         "smooth_mprt": "smooth MPRT", "random_logit": "random logit"}


def _fmt(v) -> str:
    if v is None:
        return "—"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def table(board: dict, families: tuple[str, ...]) -> str:
    """A Markdown table: methods x the metrics of `families` (with each method's image count
    per tier: scored / rerun),
    the best value of each column in bold, the last row the column's compute time in seconds
    (metric only, all methods)."""
    metrics = [k for f in families for k in FAMILIES[f]]
    tiers = [t for t, spec in TIERS.items() if any(f in spec["families"] for f in families)]
    head = "| method | images | " + " | ".join(
        f"{SHORT[k]} {'↑' if board['higher_is_better'][k] else '↓'}" for k in metrics) + " |"
    lines = [head, "|---" * (len(metrics) + 2) + "|"]
    best = {}
    for k in metrics:
        vals = [r["scores"][k]["mean"] for r in board["rows"]
                if k in r["scores"] and r["scores"][k]["mean"] is not None]
        if vals:
            best[k] = max(vals) if board["higher_is_better"][k] else min(vals)
    for r in board["rows"]:
        cells = []
        for k in metrics:
            v = r["scores"].get(k, {}).get("mean")
            cells.append(f"**{_fmt(v)}**" if v is not None and v == best.get(k) else _fmt(v))
        images = " / ".join(str(r["images"].get(t, 0)) for t in tiers)
        lines.append(f"| {r['method']} | {images} | " + " | ".join(cells) + " |")
    secs = [sum(r["scores"].get(k, {}).get("seconds", 0.0) for r in board["rows"])
            for k in metrics]
    lines.append("| *compute (s)* | | " + " | ".join(f"*{s:.0f}*" for s in secs) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=500, help="images of the scored tier")
    ap.add_argument("--rerun-samples", type=int, default=50, help="images of the rerun tier")
    ap.add_argument("--rerun-max-ms", type=float, default=100.0,
                    help="rerun tier only for methods at most this slow per image")
    ap.add_argument("--chunk", type=int, default=100, help="images per part")
    ap.add_argument("--work", default=str(ROOT / "build" / "leaderboard"))
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help="start no new part after this many minutes (resume later)")
    ap.add_argument("--only", default=None, help="comma-separated methods")
    ap.add_argument("--tiers", default="scored,rerun")
    ap.add_argument("--table", action="store_true", help="merge and print only")
    ap.add_argument("--write-docs", action="store_true",
                    help="write the tables between the leaderboard markers of README.md (one "
                    "wide table) and docs/site/metrics.md (three)")
    ap.add_argument("--wide", action="store_true",
                    help="print one table of every metric (the README's) instead of three")
    ap.add_argument("--out", default=str(ROOT / "docs" / "leaderboard.json"))
    args = ap.parse_args()
    work = Path(args.work)
    names = methods()
    chosen = names if args.only is None else [n for n in names if n in args.only.split(",")]
    t0 = time.perf_counter()
    todo = {}
    for tier in args.tiers.split(","):
        total = args.samples if tier == "scored" else args.rerun_samples
        for start in range(0, total, args.chunk):
            todo[tier, start] = [(tier, name, start, min(args.chunk, total - start))
                                 for name in chosen]
    # the first scored chunk, then the rerun tier (it needs the scored attribution times),
    # then the remaining scored chunks
    first = [k for k in todo if k == ("scored", 0)]
    todo = [p for k in first + [k for k in todo if k[0] == "rerun"]
            + [k for k in todo if k[0] == "scored" and k not in first] for p in todo[k]]
    for tier, name, start, n in ([] if args.table else todo):
        out = work / tier / name / str(start)
        if current(out, expected(tier, start, n)):
            continue
        if tier == "rerun":
            ms = attribution_ms(work, name, args.samples, args.chunk)
            if ms is None or ms > args.rerun_max_ms:
                continue
        if args.budget_minutes and time.perf_counter() - t0 > 60 * args.budget_minutes:
            print("budget spent; run again to resume", flush=True)
            break
        out.parent.mkdir(parents=True, exist_ok=True)
        print(f"{tier} {name} {start}+{n}: {run_part(tier, name, start, n, out):.0f} s",
              flush=True)
    board = merge(work, names, {"scored": args.samples, "rerun": args.rerun_samples}, args.chunk)
    write_atomic(Path(args.out), json.dumps(board, indent=1) + "\n")
    groups = [tuple(FAMILIES)] if args.wide else [
        ("faithfulness",), ("robustness", "randomisation"), ("localisation", "complexity")]
    for families in groups:
        print(table(board, families), "\n")
    if args.write_docs:
        three = "\n\n".join(table(board, f) for f in (
            ("faithfulness",), ("robustness", "randomisation"), ("localisation", "complexity")))
        write_between(ROOT / "README.md", table(board, tuple(FAMILIES)))
        write_between(ROOT / "docs" / "site" / "metrics.md", three)


def write_between(path: Path, text: str) -> None:
    """Replaces what lies between `<!-- leaderboard:start -->` and `<!-- leaderboard:end -->`."""
    start, end = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"
    page = path.read_text()
    if start not in page or end not in page:
        raise SystemExit(f"{path} has no leaderboard markers")
    head, rest = page.split(start, 1)
    write_atomic(path, head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def write_atomic(path: Path, text: str) -> None:
    """Writes beside `path`, then moves into place (an interrupted run leaves the old file)."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
