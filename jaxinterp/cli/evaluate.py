"""`evaluate`: the leaderboard — registered attribution methods scored by `ji.metrics` on
`shapes` images, whose object masks are the ground truth of the localisation metrics.

The target of every method and metric is the image's true class. Metrics keep Quantus'
defaults, except that the localisation metrics see the attributions' magnitude (`abs=True`:
a signed map's negative part would otherwise cancel its mass inside the object).
"""

from __future__ import annotations

import argparse

from .common import (_run_dir_command, _stop_if_interrupted, batch_size, method_list,
                     nonnegative_int, positive_int, progress)

__all__ = ["cmd_evaluate", "metric_kind", "metric_list", "metric_option", "register",
           "summarise"]


def metric_list(text: str) -> list[str]:
    """argparse type of `--metrics`: comma-separated metric names, family names or "all"."""
    from jaxinterp.metrics import FAMILIES

    known = [n for names in FAMILIES.values() for n in names]
    names = []
    for part in (s.strip() for s in text.split(",")):
        if not part:
            continue
        if part == "all":
            names += known
        elif part in FAMILIES:
            names += list(FAMILIES[part])
        elif part in known:
            names.append(part)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown metric {part!r}; valid: all, a family ({', '.join(FAMILIES)}) or "
                f"{', '.join(known)}")
    if not names:
        raise argparse.ArgumentTypeError("no metric given")
    return list(dict.fromkeys(names))


def _name_id(name: str) -> int:
    """A stable 31-bit number for a method or metric name (its random draws' key)."""
    import zlib

    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def metric_option(text: str) -> tuple[str, str, object]:
    """argparse type of `--metric-option`: `METRIC.OPTION=VALUE`, the value read as a Python
    literal (a number, True / False / None, a tuple) or else as a string."""
    import ast
    import inspect

    from jaxinterp import metrics
    from jaxinterp.metrics import FAMILIES

    target, sep, value = text.partition("=")
    metric, dot, option = target.strip().partition(".")
    if not sep or not dot or not option:
        raise argparse.ArgumentTypeError(f"expected METRIC.OPTION=VALUE, got {text!r}")
    known = [n for names in FAMILIES.values() for n in names]
    if metric not in known:
        raise argparse.ArgumentTypeError(f"unknown metric {metric!r}; valid: {', '.join(known)}")
    params = inspect.signature(getattr(metrics, metric)).parameters
    settable = [k for k, v in params.items() if v.default is not inspect.Parameter.empty
                and k != "key"]
    if option not in settable:
        raise argparse.ArgumentTypeError(f"{metric} has no option {option!r}; valid: "
                                         f"{', '.join(settable)}")
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()
    return metric, option, parsed


def _jsonable(value):
    """A metric option as JSON holds it (numbers, bools, None, strings, lists), else its repr."""
    import json

    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def metric_kind(name: str) -> str:
    """"method" (re-runs the method on perturbed inputs or models), "mask" (localisation,
    against the objects' pixels) or "attributions"."""
    import inspect

    from jaxinterp import metrics

    params = inspect.signature(getattr(metrics, name)).parameters
    return "method" if "method" in params else "mask" if "mask" in params else "attributions"


# the option that sets how many perturbations (or runs) a metric draws
WORK_OPTIONS = ("samples", "runs", "regions")


def summarise(values):
    """`{"mean", "ci95", "n"}` of per-image scores: the mean over finite values and half the
    width of a normal 95 % interval, `1.96 s / sqrt(n)` (0 for one image)."""
    import numpy as np

    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": None, "ci95": None, "n": 0}
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "ci95": float(half), "n": int(len(v))}


def _html(board: dict, title: str) -> str:
    """A self-contained page: the leaderboard table (`runs.report.leaderboard_table`)."""
    from html import escape

    from jaxinterp.runs.report import leaderboard_table

    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}td,th{{padding:3px 8px;
border:1px solid #ccc;text-align:right}}th{{cursor:pointer;background:#eee}}
td.name,th.name{{text-align:left}}.note{{color:#666}}</style></head>
<body><h1>{escape(title)}</h1>
{leaderboard_table(board)}
</body></html>
"""


def cmd_evaluate(args) -> int:
    import csv
    import inspect
    import json
    import time

    import jax
    import numpy as np

    import jaxinterp as ji
    from jaxinterp import metrics as metrics_lib
    from jaxinterp.attribution import registry

    def body(run, m):
        names = args.methods or list(registry.METHODS)
        methods = [registry.get(n) for n in names]
        skipped = {meth.name: why for meth in methods if (why := meth.supports(m)) is not None}
        if args.methods and skipped:
            raise ValueError("; ".join(skipped.values()))
        methods = [meth for meth in methods if meth.name not in skipped]
        chosen = args.metrics
        options = {}
        for metric, option, value in args.metric_option:
            if metric not in chosen:
                raise ValueError(f"--metric-option {metric}.{option}: {metric} is not among "
                                 f"--metrics")
            options.setdefault(metric, {})[option] = value
        kinds = {k: metric_kind(k) for k in chosen}
        scores = {meth.name: {k: [] for k in chosen} for meth in methods}
        seconds = {meth.name: {k: 0.0 for k in chosen} for meth in methods}
        attr_seconds = {meth.name: 0.0 for meth in methods}
        key = jax.random.key(args.key)
        chunks = list(range(0, args.samples, args.batch))
        steps = iter(progress(range(len(methods) * len(chosen) * len(chunks)), desc="evaluate",
                              unit="score"))
        for start in chunks:
            n = min(args.batch, args.samples - start)
            b = ji.data.shapes(jax.random.key(args.seed), n, start=args.start + start,
                               size=m.input_size[0])
            x, y, mask = b.images, b.labels, b.mask
            for meth in methods:
                # draws depend on the chunk's first image, the method and the metric (by name),
                # not on what else runs with them
                mkey = jax.random.fold_in(jax.random.fold_in(key, args.start + start),
                                          _name_id(meth.name))

                def method(m, x, t, meth=meth, mkey=mkey):
                    return meth(m, x, t, key=mkey)

                t0 = time.perf_counter()
                attributions = np.asarray(method(m, x, y))
                attr_seconds[meth.name] += time.perf_counter() - t0
                for k in chosen:
                    _stop_if_interrupted()
                    fn = getattr(metrics_lib, k)
                    params = inspect.signature(fn).parameters
                    kw = {}
                    if "key" in params:
                        kw["key"] = jax.random.fold_in(mkey, _name_id(k))
                    if kinds[k] == "mask" and "abs" in params:
                        kw["abs"] = True  # a signed map's negative part would cancel its mass
                    if args.metric_samples is not None:
                        kw.update({o: args.metric_samples for o in WORK_OPTIONS if o in params})
                    if "batch_size" in params:
                        kw["batch_size"] = args.metric_batch
                    kw.update(options.get(k, {}))
                    arg = method if kinds[k] == "method" else attributions
                    extra = (mask,) if kinds[k] == "mask" else ()
                    t0 = time.perf_counter()
                    out = fn(m, x, y, arg, *extra, **kw)
                    seconds[meth.name][k] += time.perf_counter() - t0
                    scores[meth.name][k].extend(np.asarray(getattr(out, "scores", out)).tolist())
                    next(steps, None)
        next(steps, None)  # closes the bar
        higher = metrics_lib.HIGHER_IS_BETTER
        rows = [{"method": meth.name,
                 "scores": {k: {**summarise(scores[meth.name][k]),
                                "seconds": round(seconds[meth.name][k], 3)} for k in chosen},
                 "attribution_seconds": round(attr_seconds[meth.name], 3)} for meth in methods]
        board = {"metrics": chosen, "higher_is_better": {k: higher[k] for k in chosen},
                 "rows": rows, "per_image": scores}
        with open(run.path("leaderboard.json"), "w") as f:
            json.dump(board, f, indent=1)
        with open(run.path("leaderboard.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["method"] + [f"{k} {s}" for k in chosen for s in ("mean", "ci95")])
            for r in rows:
                w.writerow([r["method"]] + [r["scores"][k][s] for k in chosen
                                            for s in ("mean", "ci95")])
        title = f"{m.arch}: {len(methods)} methods x {len(chosen)} metrics, {args.samples} images"
        with open(run.path("leaderboard.html"), "w") as f:
            f.write(_html(board, title))
        width = max(len(k) for k in chosen) + 1
        print(f"{'':<{width}}  " + "  ".join(f"{r['method'][:14]:>14}" for r in rows))
        for k in chosen:
            cells = [r["scores"][k]["mean"] for r in rows]
            print(f"{k:<{width}}{'↑' if higher[k] else '↓'} " + "  ".join(
                f"{v:>14.4g}" if v is not None else f"{'—':>14}" for v in cells))
        for name, why in skipped.items():
            print(f"skipped {name}: {why}")
        record = {"samples": args.samples, "start": args.start, "seed": args.seed,
                  "key": args.key,
                  "methods": [meth.name for meth in methods], "metrics": chosen,
                  "metric_samples": args.metric_samples, "metric_batch": args.metric_batch,
                  "metric_options": {k: {o: _jsonable(v) for o, v in opts.items()}
                                     for k, opts in options.items()},
                  "draws": "fold_in(fold_in(key, first image of the chunk), crc32(method)), "
                           "then crc32(metric)", "skipped": skipped}
        return record, f"scored {len(methods)} methods x {len(chosen)} metrics on " \
                       f"{args.samples} images; wrote"

    return _run_dir_command(args, "evaluate", body)


# pixel_flipping's default flips one feature per step: 3·H·W model passes per image
DEFAULT_METRICS = "localisation,complexity,faithfulness_correlation,region_perturbation"


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="leaderboard: methods x ji.metrics on shapes images")
    p.add_argument("--model", default=None, help="vgg-mini (default) or a checkpoint directory")
    p.add_argument("--methods", type=method_list, default=None,
                   help="comma-separated registered methods (default: every method the model "
                   "supports)")
    p.add_argument("--metrics", type=metric_list, default=metric_list(DEFAULT_METRICS),
                   help=f"comma-separated metrics or families, or all (default: "
                   f"{DEFAULT_METRICS}); the robustness and randomisation families re-run the "
                   "method many times per image, pixel_flipping runs the model 3·H·W times")
    p.add_argument("--samples", type=positive_int, default=16, help="shapes images scored")
    p.add_argument("--seed", type=nonnegative_int, default=1000003,
                   help="seed of the shapes images (default: the held-out seed)")
    p.add_argument("--start", type=nonnegative_int, default=0,
                   help="index of the first shapes image (score images start … start+samples-1; "
                   "parts of one data set can run separately and be merged; random draws are "
                   "keyed by each chunk's first image, so parts cut at other places draw "
                   "differently, with the same distribution)")
    p.add_argument("--batch", type=batch_size, default=16, help="images per call")
    p.add_argument("--key", type=nonnegative_int, default=0,
                   help="seed of the methods' and metrics' random draws")
    p.add_argument("--metric-samples", type=positive_int, default=None,
                   help="perturbations / runs per image for the metrics that draw them "
                   "(default: Quantus' own, e.g. 100 runs of faithfulness correlation)")
    p.add_argument("--metric-batch", type=batch_size, default=16,
                   help="perturbations (or steps, runs) a metric evaluates per compiled chunk: "
                   "bounds memory, same numbers")
    p.add_argument("--metric-option", type=metric_option, action="append", default=[],
                   metavar="METRIC.OPTION=VALUE",
                   help="a metric's keyword argument, repeatable, e.g. "
                   "pixel_flipping.features_in_step=192 (applied after --metric-samples)")
    p.add_argument("--out", required=True, help="output directory (see --force)")
    p.add_argument("--force", action="store_true",
                   help="replace a previous jaxinterp output at --out (never other files)")
    p.set_defaults(func=cmd_evaluate, failed=[])
