"""Benchmark: `jaxinterp.metrics` against Quantus 0.6, same weights, images and attributions.

    python scripts/bench_metrics.py --quick   # smoke test, tiny settings (docs/bench/quick/)
    python scripts/bench_metrics.py           # docs/bench/metrics.json (about 10 min, 2 cores)

Models: (a) the shipped vgg-mini (trained on `shapes`, 64x64, 8 classes) on `shapes` images, and
its plain-torch twin with the same weights (`bench_concepts.torch_default_model`); (b) VGG16 at
224x224 with seeded random weights built in torch and imported through .safetensors
(`bench.setup`), on uniform random images. Both sides in float32. Targets: the class the model
predicts. Attributions: `ji.saliency` computed once (signed, `[N, H, W, 3]`), handed to both
sides (channel-first to Quantus).

Rows: `pixel_flipping`, `road`, `region_perturbation`, `faithfulness_correlation`,
`max_sensitivity` (the method re-run inside: `ji.saliency` for us, the same gradient in torch as
Quantus' `explain_func`), `sparseness`. The SAME settings on both sides (`SETTINGS`; Quantus'
defaults where affordable, the row says which are changed). Random draws (faithfulness
correlation's subsets, ROAD's noise, max-sensitivity's noise) are drawn once with NumPy and
handed to both sides: to us as `subsets=` / `noise_draws=` / `noise=`, to Quantus by replacing
`np.random.choice` / `randn` / `uniform` for the call (`quantus_shim.draws`): neither side's time
includes drawing (which favours Quantus: its `np.random.choice(F, s, replace=False)` permutes
all F features each time) and the results are comparable.

ROAD on grey images: Quantus' ROAD raises on RGB images (it imputes channel-first *features* as
pixels), so, as in tests/test_metrics_parity.py, Quantus gets one channel (the twin repeats it
to RGB) and jaxinterp three equal ones, the map being the saliency of the grey image summed
over channels. Quantus' `calculate_auc` calls `np.trapz`, removed in NumPy 2.4: every Quantus
call runs inside `quantus_shim.numpy_trapz`.

Timing, per row: our first call (compilation included, nothing warmed up for that program;
the model itself was already run to compute the attributions), then `reps` rounds interleaved
(ours, Quantus, ours, ...), medians, seconds per image; Quantus runs `quantus_reps` times (its
calls have no compilation; the torch model was warmed up by the attributions). speed-up =
Quantus / ours. `compile_s` = our first call minus our median call. Agreement: max |ours −
Quantus| / max |Quantus| over what both return (curves for the flipping metrics, the per-
percentage accuracies for ROAD, the scores otherwise); float32 on both sides, so ~1e-6–1e-4,
and rank-based metrics can move a step where two attributions are within rounding. Each row
also records one plain forward of the batch on each side (`torch_forward_s`, `jax_forward_s`,
per image), a yardstick: most rows cost a known number of forwards.

Run it on a quiet machine. torch's OpenMP threads spin at barriers: with another process on
the 2 cores, a vgg-mini forward took 100x longer with 2 torch threads than with 1, which
inflates Quantus' times (the script warns when the load average is above 0.5;
`--torch-threads 1` is the fallback, and the JSON records the threads and the load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

METRICS = ("pixel_flipping", "road", "region_perturbation", "faithfulness_correlation",
           "max_sensitivity", "sparseness")

# Per model: images, perturbations per chunk on our side (`batch_size=` = max(1, chunk // N),
# unless a metric's settings give `batch_size`), timed rounds (ours, Quantus) and each metric's
# settings (same on both sides). ROAD runs unchunked (`batch_size=None`, one vmap over the
# percentages): chunked, `road` on 8 vgg-mini images with 32 percentages in chunks of 16
# segfaults in XLA:CPU (an emitted conv kernel inside the while loop) with jaxinterp's compiler
# options, and runs with XLA's defaults (jax 0.10.2).
# Quantus 0.6 defaults: PixelFlipping features_in_step=1; ROAD percentages 1, 3, ..., 99,
# noise 0.01; RegionPerturbation patch 8, 100 regions, morf; FaithfulnessCorrelation 100 runs
# of 224 features; MaxSensitivity 200 samples, radius 0.2; Sparseness abs, normalised.
# PixelFlipping's `features_in_step` must divide H·W (Quantus asserts it).
SETTINGS = {
    "full": {
        "vgg-mini": {
            "images": 8, "chunk": 128, "reps": 3, "quantus_reps": 3,
            "pixel_flipping": {"features_in_step": 16},          # 768 steps (default: 12288)
            "road": {"percentages": list(range(1, 100, 2)), "noise": 0.01,  # default
                     "batch_size": None},
            "region_perturbation": {"patch_size": 8, "regions": 100},  # default (64 patches)
            "faithfulness_correlation": {"runs": 100, "subset_size": 224},  # default
            "max_sensitivity": {"samples": 200, "radius": 0.2},  # default
            "sparseness": {},                                    # default
        },
        "vgg16": {
            "images": 1, "chunk": 8, "reps": 3, "quantus_reps": 2,
            "pixel_flipping": {"features_in_step": 3136},        # 48 steps (default: 150528)
            "road": {"percentages": list(range(5, 100, 10)), "noise": 0.01,  # 10 (default 50)
                     "batch_size": None},
            "region_perturbation": {"patch_size": 8, "regions": 32},  # default patch, 32 of 784
            "faithfulness_correlation": {"runs": 32, "subset_size": 224},  # 32 runs (default 100)
            "max_sensitivity": {"samples": 8, "radius": 0.2},    # 8 samples (default 200)
            "sparseness": {},                                    # default
        },
    },
    "quick": {
        "vgg-mini": {
            "images": 2, "chunk": 32, "reps": 2, "quantus_reps": 1,
            "pixel_flipping": {"features_in_step": 256},         # 48 steps
            "road": {"percentages": [10, 50, 90], "noise": 0.01, "batch_size": None},
            "region_perturbation": {"patch_size": 8, "regions": 8},
            "faithfulness_correlation": {"runs": 8, "subset_size": 224},
            "max_sensitivity": {"samples": 4, "radius": 0.2},
            "sparseness": {},
        },
        "vgg16": {
            "images": 1, "chunk": 4, "reps": 1, "quantus_reps": 1,
            "pixel_flipping": {"features_in_step": 25088},       # 6 steps
            "road": {"percentages": [50, 90], "noise": 0.01, "batch_size": None},
            "region_perturbation": {"patch_size": 56, "regions": 4},
            "faithfulness_correlation": {"runs": 4, "subset_size": 224},
            "max_sensitivity": {"samples": 2, "radius": 0.2},
            "sparseness": {},
        },
    },
}


def _paths():
    """tests/ (the torch twins, Quantus' shim) and scripts/ (bench.py's setup) on sys.path."""
    for p in (ROOT / "tests", ROOT / "scripts"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))


def nchw(a):
    a = np.asarray(a)
    return np.ascontiguousarray(a if a.ndim == 3 else a.transpose(0, 3, 1, 2))


def rel(ours, theirs) -> float:
    """max |ours − theirs| / max |theirs| over the entries both have finite (NaN where the NaN
    patterns differ)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"shapes differ: ours {ours.shape}, Quantus {theirs.shape}")
    if not np.array_equal(np.isnan(ours), np.isnan(theirs)):
        return float("nan")
    ok = ~np.isnan(theirs)
    if not ok.any():
        return 0.0
    return float(np.abs(ours[ok] - theirs[ok]).max() / max(np.abs(theirs[ok]).max(), 1e-30))


def _timed(f):
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


# --------------------------------------------------------------------------- the two sides


class Case:
    """One model on both sides, its images, targets and saliency maps (computed once)."""

    def __init__(self, arch: str, n: int, chunk: int):
        import jax

        import jaxinterp as ji

        _paths()
        if arch == "vgg-mini":
            from bench_concepts import torch_default_model

            self.jm, self.tm = torch_default_model()
            size = self.jm.input_size[0]
            self.x = np.asarray(ji.data.shapes(jax.random.key(7), n, start=50_000,
                                               size=size).images, np.float32)
        else:
            from bench import setup

            self.jm, self.tm, _, self.x, _, _ = setup(arch, n)
            self.x = np.asarray(self.x, np.float32)
        self.arch, self.n = arch, n
        self.batch_size = max(1, chunk // n)
        self.y = self.predict(self.x)
        self.a = np.asarray(ji.saliency(self.jm, self.x, self.y), np.float32)
        self.xc, self.ac = nchw(self.x), nchw(self.a)
        # ROAD on grey images: 3 equal channels for us, 1 for Quantus (Grey repeats it)
        self.grey = np.repeat(self.x.mean(-1, keepdims=True), 3, -1).astype(np.float32)
        self.y_grey = self.predict(self.grey)
        self.map_grey = np.asarray(ji.saliency(self.jm, self.grey, self.y_grey), np.float32).sum(-1)
        self.grey_model = grey_twin(self.tm)
        self.torch_warm()
        self.forward_s = self.forwards()

    def predict(self, x):
        import jax.numpy as jnp

        return np.asarray(jnp.argmax(self.jm(jnp.asarray(x))[0], -1)).astype(np.int64)

    def torch_warm(self):
        """One forward and one gradient of the torch twin (its first calls are slower)."""
        import torch

        with torch.no_grad():
            self.tm(torch.from_numpy(self.xc))
        torch_saliency(self.tm, self.xc, self.y)

    def forwards(self, reps=5) -> dict:
        """Median seconds per image of one plain forward of the batch on each side (a yardstick:
        most metrics cost a known number of forwards)."""
        import jax
        import jax.numpy as jnp
        import torch

        fwd = jax.jit(lambda m, x: m(x)[0])
        xj = jnp.asarray(self.x)
        fwd(self.jm, xj).block_until_ready()
        xt = torch.from_numpy(self.xc)
        with torch.no_grad():
            t_torch = [_timed(lambda: self.tm(xt))[0] for _ in range(reps)]
        t_jax = [_timed(lambda: fwd(self.jm, xj).block_until_ready())[0] for _ in range(reps)]
        return {"torch_forward_s": statistics.median(t_torch) / self.n,
                "jax_forward_s": statistics.median(t_jax) / self.n}


def grey_twin(tm):
    import torch

    class Grey(torch.nn.Module):
        """The twin on one-channel images, repeated to RGB (Quantus' ROAD on grey images)."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            return self.net(x)

    return Grey(tm).eval()


def torch_saliency(model, inputs, targets, **kwargs):
    """Quantus' `explain_func`: the gradient of the target logit w.r.t. the input (float32,
    input gradients only: `torch.autograd.grad`, as Captum's Saliency)."""
    import torch

    xt = torch.tensor(np.asarray(inputs), dtype=torch.float32, requires_grad=True)
    out = model(xt)
    score = out[torch.arange(len(targets)), torch.as_tensor(np.asarray(targets))].sum()
    (g,) = torch.autograd.grad(score, xt)
    return g.numpy()


def pair(name: str, case: Case, s: dict, quantus):
    """(ours(), theirs(), agreement(ours_out, theirs_out), images per call) for one metric."""
    import jaxinterp as ji
    import jaxinterp.metrics as metrics
    from quantus_shim import draws, numpy_trapz

    jm, x, y, a, n = case.jm, case.x, case.y, case.a, case.n
    bs = s.get("batch_size", case.batch_size)
    rng = np.random.default_rng(0)
    h, w = x.shape[1:3]

    if name == "pixel_flipping":
        step = s["features_in_step"]

        def ours():
            return metrics.pixel_flipping(jm, x, y, a, features_in_step=step, batch_size=bs)

        def theirs():
            with numpy_trapz():
                return np.array(quantus.PixelFlipping(features_in_step=step, disable_warnings=True)(
                    case.tm, case.xc, y, case.ac.copy()))

        return ours, theirs, lambda o, q: rel(o.curves, q)

    if name == "road":
        pcts, noise = s["percentages"], s["noise"]
        z = rng.standard_normal((n, len(pcts), h, w)).astype(np.float32)
        order = np.argsort(-case.map_grey.reshape(n, -1), axis=1)
        # Quantus' draws, call by call: per percentage, per image, [1, k] for the top-k pixels
        seq = [z[i, p].reshape(-1)[order[i, :int(h * w * pct / 100)]][None]
               for p, pct in enumerate(pcts) for i in range(n)]
        z3 = np.repeat(z[..., None], 3, -1)
        xg1 = nchw(case.grey[..., :1])

        def ours():
            return metrics.road(jm, case.grey, case.y_grey, case.map_grey, percentages=pcts,
                                noise=noise, noise_draws=z3, batch_size=bs)

        def theirs():
            with numpy_trapz(), draws("randn", seq):
                return quantus.ROAD(percentages=pcts, noise=noise, disable_warnings=True)(
                    case.grey_model, xg1, case.y_grey, case.map_grey[:, None].copy())

        return ours, theirs, lambda o, q: rel(o.curves.mean(0), [q[p] for p in pcts])

    if name == "region_perturbation":
        patch, regions = s["patch_size"], s["regions"]

        def ours():
            return metrics.region_perturbation(jm, x, y, a, patch_size=patch, regions=regions,
                                               batch_size=bs)

        def theirs():
            with numpy_trapz():
                return np.array(quantus.RegionPerturbation(
                    patch_size=patch, regions_evaluation=regions, disable_warnings=True)(
                    case.tm, case.xc, y, case.ac.copy()))

        return ours, theirs, lambda o, q: rel(o.curves, q)

    if name == "faithfulness_correlation":
        runs, size = s["runs"], s["subset_size"]
        f = a[0].size
        subsets = np.stack([np.stack([rng.choice(f, size, replace=False) for _ in range(n)])
                            for _ in range(runs)])  # [runs, N, s]: Quantus' call order
        seq = [sub for run in subsets for sub in run]
        ours_subsets = np.ascontiguousarray(subsets.swapaxes(0, 1))

        def ours():
            return metrics.faithfulness_correlation(jm, x, y, a, subsets=ours_subsets,
                                                    batch_size=bs)

        def theirs():
            with numpy_trapz(), draws("choice", seq):
                return np.array(quantus.FaithfulnessCorrelation(
                    nr_runs=runs, subset_size=size, return_aggregate=False,
                    disable_warnings=True)(case.tm, case.xc, y, case.ac.copy()))

        return ours, theirs, rel

    if name == "max_sensitivity":
        k, radius = s["samples"], s["radius"]
        noise = rng.uniform(-radius, radius, (n, k, h, w, 3)).astype(np.float32)
        seq = [nchw(noise[:, j]).reshape(n, -1) for j in range(k)]

        def ours():
            return metrics.max_sensitivity(jm, x, y, ji.saliency, noise=noise, batch_size=bs)

        def theirs():
            with numpy_trapz(), draws("uniform", seq):
                return np.array(quantus.MaxSensitivity(
                    nr_samples=k, lower_bound=radius, disable_warnings=True)(
                    case.tm, case.xc, y, None, explain_func=torch_saliency))

        return ours, theirs, rel

    if name == "sparseness":
        def ours():  # Quantus' one maximum per batch: the same numbers
            return metrics.sparseness(None, None, None, a, normalise="batch")

        def theirs():
            with numpy_trapz():
                return np.array(quantus.Sparseness(disable_warnings=True)(
                    None, case.xc, y, case.ac.copy()))

        return ours, theirs, rel

    raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")


def describe(name: str, s: dict, hw: tuple) -> str:
    """The settings of a row, as text, saying which differ from Quantus 0.6's defaults."""
    def mark(changed):
        return f" (default {', '.join(changed)})" if changed else " (defaults)"

    if name == "pixel_flipping":
        step = s["features_in_step"]
        return f"features_in_step={step}: {-(-3 * hw[0] * hw[1] // step)} steps" + \
            mark(["1"] if step != 1 else [])
    if name == "road":
        p = s["percentages"]
        grid = "1, 3, …, 99" if p == list(range(1, 100, 2)) else ", ".join(map(str, p)) \
            if len(p) <= 4 else f"{p[0]}, {p[1]}, …, {p[-1]}"
        changed = (["50 percentages"] if p != list(range(1, 100, 2)) else []) + \
            (["noise 0.01"] if s["noise"] != 0.01 else [])
        return f"grey images; {len(p)} percentages ({grid}), noise {s['noise']}" + mark(changed)
    if name == "region_perturbation":
        patches = -(-hw[0] // s["patch_size"]) * -(-hw[1] // s["patch_size"])
        changed = (["patch 8"] if s["patch_size"] != 8 else []) + \
            (["100 regions"] if s["regions"] != 100 else [])
        return (f"patch {s['patch_size']}, {min(s['regions'], patches)} regions of {patches}, "
                f"morf" + mark(changed))
    if name == "faithfulness_correlation":
        changed = (["100 runs"] if s["runs"] != 100 else []) + \
            (["224 features"] if s["subset_size"] != 224 else [])
        return f"{s['runs']} runs × {s['subset_size']} features" + mark(changed)
    if name == "max_sensitivity":
        changed = (["200 samples"] if s["samples"] != 200 else []) + \
            (["radius 0.2"] if s["radius"] != 0.2 else [])
        return f"saliency, {s['samples']} samples, radius {s['radius']}" + mark(changed)
    return "abs, normalised per batch (defaults)"


# --------------------------------------------------------------------------- measuring


def bench_metrics(quick: bool = False, archs=("vgg-mini", "vgg16"), names=METRICS) -> list[dict]:
    """One row per (model, metric): see the module docstring."""
    import torch

    _paths()
    from quantus_shim import import_quantus

    quantus = import_quantus()
    torch.set_grad_enabled(True)
    rows = []
    for arch in archs:
        cfg = SETTINGS["quick" if quick else "full"][arch]
        t0 = time.perf_counter()
        case = Case(arch, cfg["images"], cfg["chunk"])
        print(f"{arch}: {case.n} images {case.x.shape[1]}x{case.x.shape[2]}, set up in "
              f"{time.perf_counter() - t0:.1f} s; one forward per image: torch "
              f"{case.forward_s['torch_forward_s'] * 1e3:.1f} ms, jax "
              f"{case.forward_s['jax_forward_s'] * 1e3:.1f} ms", flush=True)
        for name in names:
            s = cfg[name]
            row = {"arch": arch, "metric": name, "images": case.n, "settings": describe(name, s, case.x.shape[1:3]),
                   "config": s, "batch_size": s.get("batch_size", case.batch_size),
                   "reps": cfg["reps"],
                   "quantus_reps": cfg["quantus_reps"], **case.forward_s}
            try:
                row.update(measure(*pair(name, case, s, quantus), case.n, cfg["reps"],
                                   cfg["quantus_reps"]))
            except Exception as e:  # noqa: BLE001 (a row's failure is recorded, the run goes on)
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
            print(fmt_row(row), flush=True)
    return rows


def measure(ours, theirs, agreement, n, reps, quantus_reps) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, o = _timed(ours)
        t_ours, t_theirs, q = [], [], None
        for r in range(max(reps, quantus_reps)):
            if r < reps:
                dt, o = _timed(ours)
                t_ours.append(dt)
            if r < quantus_reps:
                dt, q = _timed(theirs)
                t_theirs.append(dt)
    med_o, med_q = statistics.median(t_ours), statistics.median(t_theirs)
    return {"ours_s": med_o / n, "quantus_s": med_q / n, "speedup": med_q / med_o,
            "ours_first_s": first, "compile_s": max(first - med_o, 0.0),
            "max_rel_diff": agreement(o, q)}


# --------------------------------------------------------------------------- output

TABLE_HEAD = ("| model | metric | images | settings (both sides) | ours s/img | Quantus s/img | "
              "speed-up | ours 1st call s (compile incl.) | max rel. difference |\n"
              "|---|---|---|---|---|---|---|---|---|")


def _seconds(v: float) -> str:
    return f"{v:.3f}" if v < 0.1 else f"{v:.2f}" if v < 10 else f"{v:.1f}"


def fmt_row(r: dict) -> str:
    model = {"vgg-mini": "vgg-mini 64²", "vgg16": "VGG16 224²"}.get(r["arch"], r["arch"])
    if "error" in r:
        return (f"| {model} | {r['metric']} | {r['images']} | {r['settings']} | error: "
                f"{r['error'][:120]} | | | | |")
    return (f"| {model} | {r['metric']} | {r['images']} | {r['settings']} | "
            f"{_seconds(r['ours_s'])} | {_seconds(r['quantus_s'])} | **{r['speedup']:.1f}x** | "
            f"{r['ours_first_s']:.1f} | {r['max_rel_diff']:.1e} |")


def table(result: dict) -> str:
    """The Markdown table of a metrics.json result."""
    return "\n".join([f"{result['machine']}; quantus {result.get('quantus', '?')}; torch "
                      f"threads {result.get('torch_threads', '?')}.", "",
                      TABLE_HEAD] + [fmt_row(r) for r in result["rows"]])


def machine() -> str:
    _paths()
    from bench import machine as bench_machine

    return bench_machine()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings, a smoke test")
    ap.add_argument("--only", default=None,
                    help="comma list of models (vgg-mini, vgg16) and/or metrics: "
                         + ", ".join(METRICS))
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench"))
    ap.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                    help="torch's intra-op threads (default: all cores, as scripts/bench.py)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.torch_threads)
    load = os.getloadavg()[0]
    if load > 0.5:  # torch's OpenMP threads spin at barriers: on shared cores, a forward of
        # vgg-mini measured 100x slower with 2 threads than with 1 (jax far less affected)
        print(f"WARNING: load average {load:.1f} before the run: with other processes on the "
              f"cores, torch's OpenMP threads (and so Quantus) slow down by up to 100x; these "
              f"timings are not valid (quiet machine, or --torch-threads 1)", flush=True)
    archs, names = ("vgg-mini", "vgg16"), METRICS
    if args.only:
        only = args.only.split(",")
        unknown = set(only) - set(archs) - set(METRICS)
        if unknown:
            ap.error(f"unknown: {', '.join(sorted(unknown))}")
        archs = tuple(a for a in archs if a in only) or archs
        names = tuple(m for m in METRICS if m in only) or names
    out = Path(args.out) / ("quick" if args.quick else "")
    t0 = time.time()
    head = {"machine": machine(), "quick": args.quick, "torch_threads": args.torch_threads,
            "load_before": load}
    print(f"{head['machine']}\n\n{TABLE_HEAD}", flush=True)
    rows = bench_metrics(args.quick, archs, names)
    import quantus

    result = {**head, "quantus": quantus.__version__, "rows": rows, "seconds": time.time() - t0,
              "load_after": os.getloadavg()[0]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    print(f"\n{table(result)}\n\n{time.time() - t0:.0f} s -> {out / 'metrics.json'}")


if __name__ == "__main__":
    main()
