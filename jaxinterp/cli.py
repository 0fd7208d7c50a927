"""`jaxinterp` command line: thin subcommands over the library.

    jaxinterp info [MODEL]                              layers, shapes, parameters, preprocessing
    jaxinterp weights import SRC --arch vgg16 --out DIR torchvision .pth/.safetensors, Keras .h5
    jaxinterp predict [IMAGE ...] [--model M] [--top K] class names and percentages
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def progress(iterable, **kw):
    """`tqdm(iterable)` when tqdm is installed and stderr is a terminal or forced; else as is."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, **kw)


def enable_compilation_cache() -> None:
    """Turns on JAX's persistent compilation cache so repeated commands skip compiling."""
    import jax

    path = os.environ.get("JAXINTERP_CACHE", str(Path.home() / ".cache" / "jaxinterp" / "xla"))
    try:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except Exception:  # noqa: BLE001 — a cache is an optimization, never a failure
        pass


def describe(name: str | None) -> str:
    """Text report of a model: layers with output shapes, parameters, classes, preprocessing.

    Needs no weights in memory: shapes come from `jax.eval_shape`.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxinterp import model as model_lib
    from jaxinterp import weights

    if name is None or name == "vgg-mini":
        meta = model_lib.Meta.from_dict(weights.read_metadata(weights.default_checkpoint()))
        source = str(weights.default_checkpoint())
    elif os.path.isdir(name):
        meta = model_lib.Meta.from_dict(weights.read_metadata(name))
        source = name
    else:
        meta = model_lib.model_meta(name)
        source = "random initialization (load_model(arch, key=...))"
    module = model_lib.build_module(meta)
    variables = model_lib.abstract_variables(module)
    x = jax.ShapeDtypeStruct((1, *meta.input_size, 3), jnp.float32)
    _, feats = jax.eval_shape(lambda v, x: module.apply(v, x), variables, x)
    counts = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables.get("params", {}))[0]:
        layer = str(getattr(path[0], "key", path[0])).replace("_", ".")
        counts[layer] = counts.get(layer, 0) + int(np.prod(leaf.shape))
    total = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(variables))
    p = meta.preprocess
    lines = [f"model      {meta.arch}  ({source})",
             f"input      {meta.input_size[0]}x{meta.input_size[1]} RGB in [0, 1]",
             f"preprocess channel order {p.channel_order}, x * {p.scale:g}, mean {p.mean}, "
             f"std {p.std}",
             f"classes    {len(meta.classes)}: {', '.join(meta.classes[:8])}"
             + (", ..." if len(meta.classes) > 8 else ""),
             f"parameters {total:,}", "", f"{'layer':<14}{'alias':<10}{'output (NHWC)':<22}params"]
    for s in module.specs():
        shape = "x".join(map(str, feats[s.name].shape[1:]))
        lines.append(f"{s.name:<14}{s.alias or '':<10}{shape:<22}{counts.get(s.name, 0):,}")
    extra = meta.extra
    if "test" in extra:
        lines += ["", f"test accuracy {extra['test']['accuracy']:.4f} on {extra['test']['images']} "
                  f"held-out images"]
    return "\n".join(lines)


def cmd_info(args) -> int:
    print(describe(args.model))
    return 0


def cmd_import(args) -> int:
    import jaxinterp as ji

    m = ji.import_weights(args.src, arch=args.arch, fmt=args.fmt, out=args.out,
                          overwrite=args.force)
    print(f"imported {args.src} -> {args.out}: {m}")
    return 0


def cmd_predict(args) -> int:
    import jax
    import numpy as np

    import jaxinterp as ji
    from jaxinterp.images import load_image

    m = ji.load_model(args.model)
    names, images, failed = [], [], []
    if args.images:
        for path in args.images:
            try:
                images.append(load_image(path, m.input_size, fit=args.fit))
                names.append(path)
            except (OSError, ValueError) as e:
                failed.append(str(e))
                print(f"error: {e}", file=sys.stderr)
    else:
        b = ji.data.shapes(jax.random.key(args.seed), args.samples)
        images = list(np.asarray(b.images))
        names = [f"shapes[{i}] ({ji.data.CLASSES[int(y)]})" for i, y in enumerate(b.labels)]
    fwd = jax.jit(lambda m, x: jax.nn.softmax(m(x, check=False)[0]))
    for start in progress(range(0, len(images), args.batch), desc="predict", unit="batch",
                          disable=len(images) <= args.batch):
        x = np.stack(images[start:start + args.batch])
        ji.check_images(x)
        probs = np.asarray(fwd(m, x))
        for name, p in zip(names[start:start + args.batch], probs):
            top = np.argsort(-p)[: args.top]
            preds = ", ".join(f"{m.classes[i]} {100 * p[i]:.1f}%" for i in top)
            print(f"{name}: {preds}")
    if failed:
        print(f"{len(failed)} of {len(failed) + len(names)} images failed", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jaxinterp", description="Interpretability for JAX/Flax VGGs.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="describe a model: layers, output shapes, parameters")
    p.add_argument("model", nargs="?", default=None,
                   help="vgg-mini (default), vgg11/13/16/19[_bn], or a checkpoint directory")
    p.set_defaults(func=cmd_info)

    w = sub.add_parser("weights", help="weight files").add_subparsers(dest="action", required=True)
    p = w.add_parser("import", help="import torchvision .pth/.safetensors or Keras .h5 weights")
    p.add_argument("src", help="weight file")
    p.add_argument("--arch", required=True, help="vgg11, vgg13, vgg16, vgg19 (+_bn), vgg-mini")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--fmt", choices=["torch", "safetensors", "keras"], default=None,
                   help="file format (default: from the suffix)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("predict", help="top-K classes of images (default: shapes samples)")
    p.add_argument("images", nargs="*", help="image files (any Pillow format)")
    p.add_argument("--model", default=None, help="model name or checkpoint (default vgg-mini)")
    p.add_argument("--top", type=int, default=3, help="classes to show per image")
    p.add_argument("--fit", choices=["resize", "crop"], default="resize",
                   help="how images are brought to the model's input size")
    p.add_argument("--samples", type=int, default=8, help="shapes samples when no image is given")
    p.add_argument("--seed", type=int, default=1, help="seed of the shapes samples")
    p.add_argument("--batch", type=int, default=32, help="images per forward pass")
    p.set_defaults(func=cmd_predict)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    enable_compilation_cache()
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"jaxinterp: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
