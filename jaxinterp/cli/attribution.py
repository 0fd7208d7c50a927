"""Attribution pictures and figures: `attribute` (data-set runs: `--data`, in runs.py)."""

from __future__ import annotations

import argparse

from .common import (COMPARE_ROWS, _batches, _entry, _number, _padded, _run_dir_command, _targets,
                     _total, add_inputs, batch_size, check_images_memory, method_list,
                     nonnegative_int, positive_int, progress)

MAX_WORKERS = 256  # image-decoding threads (each holds a decoded image)
workers = _number(int, 0, strict=True, maximum=MAX_WORKERS, why=" threads")
workers.__name__ = "workers"
from .runs import cmd_attribute_dataset


PICTURES = ("colored", "negative", "positive", "heatmap", "overlay")


def cmd_attribute(args) -> int:
    import numpy as np

    if args.data is not None:
        return cmd_attribute_dataset(args)

    import jaxinterp as ji
    from jaxinterp import viz
    from jaxinterp.images import save_image

    methods = [ji.attribution.registry.get(name) for name in args.method]

    def body(run, m):
        for method in methods:
            if method.supports(m):
                raise ValueError(f"--method {method.supports(m)}")
        options = {"smooth_grad": {"samples": args.samples_sg},
                   "integrated_gradients": {"steps": args.steps},
                   "deeplift": {"baseline": args.baseline},
                   "lrp": {"composite": args.composite}}
        compare, written, chunks = [], [], -(-_total(args) // args.batch)
        check_images_memory(m, f"attribute with --batch {min(args.batch, _total(args))}",
                            min(args.batch, _total(args)), m.input_size)
        for names, x in progress(_batches(args, m, args.batch), desc="attribute",
                                 unit="batch", total=chunks, disable=chunks <= 1):
            xp = _padded(x, args.batch) if chunks > 1 else x
            target = _targets(args.target, m, m(xp)[0])
            attrs = {mt.name: np.asarray(mt(m, xp, target, batch_size=args.batch_size,
                                            **options.get(mt.name, {})))[: len(x)]
                     for mt in methods}
            for i, name in enumerate(names):
                entry = _entry(args, run, name)
                save_image(x[i], run.path(entry, "original.png"))
                rows = {}
                for mt in methods:
                    rows[mt.name] = viz.seed_row(x[i], attrs[mt.name][i])
                    for pic, img in zip(PICTURES, rows[mt.name][1:]):
                        save_image(img, run.path(entry, f"{mt.name}_{pic}.png"))
                label = m.classes[int(target[i])]
                if args.figures:
                    viz.seed_table_figure(rows, f"{entry}: target {label}",
                                          run.path(entry, "table.png"))
                if len(compare) < COMPARE_ROWS:
                    compare.append((x[i], [r[5] for r in rows.values()], f"{entry}\n{label}"))
                written.append({"input": name, "output": entry, "target": label})
        if not written:
            return None, ""
        if compare and args.figures:
            viz.compare_figure([c[0] for c in compare], [c[1] for c in compare],
                               [c[2] for c in compare], [mt.name for mt in methods],
                               run.path("compare.png"))
        record = {"methods": [mt.name for mt in methods], "images": written}
        return record, f"wrote {len(written)} x {len(methods)} attributions to"

    return _run_dir_command(args, "attribute", body)


def unit_float(s: str) -> float:
    """A number in [0, 1] (argparse type)."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {s!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {s}")
    return v


def register(sub) -> None:
    from jaxinterp.attribution.registry import METHODS
    from jaxinterp.relevance.lrp import COMPOSITES

    p = sub.add_parser("attribute", help="attribution pictures and figures (seed layout)")
    p.add_argument("images", nargs="*", help="image files (default: shapes samples)")
    add_inputs(p, 4)
    p.add_argument("--method", type=method_list,
                   default=method_list("saliency,guided_backprop,grad_cam,guided_grad_cam,"
                                       "integrated_gradients"),
                   help="comma-separated: " + ", ".join(METHODS))
    p.add_argument("--target", default="auto",
                   help="auto (predicted class), a class index, or a class name")
    p.add_argument("--out", required=True,
                   help="output directory (written whole at the end; see --force)")
    p.add_argument("--force", action="store_true",
                   help="replace a previous jaxinterp output at --out (refused, nothing "
                   "changed, if it or its report/ holds files jaxinterp did not write)")
    p.add_argument("--batch", type=batch_size, default=16,
                   help="images loaded and attributed at a time (memory bound)")
    p.add_argument("--steps", type=positive_int, default=50, help="integrated-gradients steps")
    p.add_argument("--samples-sg", type=positive_int, default=50, help="SmoothGrad samples")
    p.add_argument("--composite", default="epsilon_plus_flat", choices=COMPOSITES,
                   help="LRP composite (zennit's names and defaults)")
    p.add_argument("--baseline", type=unit_float, default=0.0,
                   help="DeepLIFT baseline: one grey level in [0, 1] (0 = black)")
    p.add_argument("--batch-size", type=batch_size, default=16,
                   help="samples / steps / windows evaluated at a time (memory bound)")
    p.add_argument("--no-figures", dest="figures", action="store_false",
                   help="write the pictures only (no per-image table.png, no compare.png)")
    g = p.add_argument_group("data-set runs (--data)")
    g.add_argument("--data", default=None,
                   help="an image folder (recursive; jpg/png/webp; class subfolders give labels) "
                        "or shapes:N: a resumable run into --out (zarr arrays + run.json; "
                        "re-run the same command to continue after a crash); --target may be "
                        "label; --batch is the batch and chunk size")
    g.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="storage of attributions")
    g.add_argument("--metrics", type=lambda s: [v for v in s.split(",") if v],
                   default=["deletion", "insertion"],
                   help="comma list of deletion,insertion (AUC per image and method); '' for none")
    g.add_argument("--workers", type=workers, default=4,
                   help=f"image-decoding threads (at most {MAX_WORKERS})")
    g.add_argument("--coordinator", default=None,
                   help="multi-process: host:port of process 0 (jax.distributed; or from the "
                        "environment on TPU / SLURM / JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", type=positive_int, default=None,
                   help="multi-process: number of processes")
    g.add_argument("--process-id", type=nonnegative_int, default=None,
                   help="multi-process: this process's index")
    p.set_defaults(func=cmd_attribute)
