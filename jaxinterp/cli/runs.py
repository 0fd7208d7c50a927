"""Data-set runs: the `attribute --data` handler and `report` (a run's static HTML page)."""

from __future__ import annotations

import sys

from .common import MAX_REPORT_PIXELS, MAX_THUMB, _number, _targets, positive_int, progress

thumb = _number(int, 0, strict=True, maximum=MAX_THUMB, why=" px")
thumb.__name__ = "thumb"


def cmd_attribute_dataset(args) -> int:
    """`attribute --data DIR|shapes:N`: a resumable data-set run (see `ji.attribute_dataset`)."""
    if args.images:
        raise ValueError("give either image files or --data, not both")
    if args.coordinator or args.num_processes or args.process_id is not None:
        from jaxinterp.runs import initialize_distributed

        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    import jax
    import numpy as np

    import jaxinterp as ji

    m = ji.load_model(args.model)
    target = {"auto": "predicted", "predicted": "predicted", "label": "label"}.get(args.target)
    if target is None:
        target = int(_targets(args.target, m, np.zeros((1, m.num_classes)))[0])
    options = {"smooth_grad": {"samples": args.samples_sg, "batch_size": args.batch_size},
               "integrated_gradients": {"steps": args.steps, "batch_size": args.batch_size},
               "occlusion": {"batch_size": args.batch_size},
               "deeplift": {"baseline": args.baseline},
               "lrp": {"composite": args.composite}}
    methods = [name for name in args.method]
    who = f"[process {jax.process_index()}/{jax.process_count()}] " \
        if jax.process_count() > 1 else ""

    def bar(it, total):
        return progress(it, total=total, desc=f"{who}attribute", unit="img",
                        smoothing=0.1, disable=total == 0)

    summary = ji.attribute_dataset(
        m, args.data, methods, args.out, target=target, batch_size=args.batch,
        dtype=args.dtype, metrics=args.metrics, options={k: v for k, v in options.items()
                                                         if k in methods},
        key=args.seed, seed=args.seed, workers=args.workers, force=args.force, progress=bar)
    rate = summary["images_per_s"]
    print(f"{who}{summary['computed']} batches computed, {summary['skipped']} already done "
          f"({summary['images']} images, {summary['seconds']:.1f} s, {rate:.1f} images/s, "
          f"{summary['input_wait_s']:.1f} s waiting for input); "
          f"run {'complete' if summary['complete'] else 'incomplete (other processes)'}: "
          f"{args.out}")
    for name, error in sorted(summary["failed"].items()):
        print(f"failed: {name}: {error}", file=sys.stderr)
    if summary["failed"]:
        print(f"{len(summary['failed'])} files could not be read (rows left NaN, prediction -1)",
              file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    from jaxinterp.runs.report import write_report

    if args.limit * args.thumb ** 2 > MAX_REPORT_PIXELS:
        raise ValueError(f"--limit {args.limit} x --thumb {args.thumb} px would write "
                         f"{args.limit * args.thumb ** 2 * 3 / 2 ** 20:.0f} MB of thumbnails per "
                         f"method (at most {MAX_REPORT_PIXELS * 3 / 2 ** 20:.0f} MB); lower one")
    path = write_report(args.run, args.out, limit=args.limit, thumb=args.thumb, force=args.force,
                        leaderboard=args.leaderboard)
    from jaxinterp.runs import open_run

    run = open_run(args.run)
    if run.num_missing:
        print(f"incomplete run: {run.num_missing} of {len(run)} images not computed "
              "(shown greyed, left out of every mean); run the same attribute command again "
              "to finish it", file=sys.stderr)
    print(f"wrote {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="static HTML page of a data-set run (attribute --data)")
    p.add_argument("run", help="the run directory")
    p.add_argument("--out", default=None, help="report directory (default RUN/report)")
    p.add_argument("--limit", type=positive_int, default=200,
                   help="images shown in the grid (tables use all)")
    p.add_argument("--thumb", type=thumb, default=96,
                   help=f"picture size in pixels (at most {MAX_THUMB}; --limit x --thumb² at most "
                   f"{MAX_REPORT_PIXELS // 2 ** 20} Mpx)")
    p.add_argument("--leaderboard", default=None,
                   help="a `jaxinterp evaluate` output directory: its methods x metrics table "
                   "becomes the report's sortable Leaderboard section")
    p.add_argument("--force", action="store_true", help="replace an existing report")
    p.set_defaults(func=cmd_report)
