"""`jaxinterp` command line: thin subcommands over the library.

    jaxinterp info [MODEL]                              layers, shapes, parameters, preprocessing
    jaxinterp weights import SRC --arch vgg16 --out DIR torchvision .pth/.safetensors, Keras .h5
    jaxinterp predict [IMAGE ...] [--model M] [--top K] class names and percentages
    jaxinterp attribute [IMAGE ...] --method a,b --out DIR   the seed's pictures and figures
    jaxinterp filters --layer L --out F.png              a conv layer's filters as a grid
    jaxinterp activations [IMAGE] --layer L --out F.png  an image's feature maps as a grid
    jaxinterp visualize --layer L [--channel C] --out F.png   feature visualization (Lucid-style)
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


def _load_inputs(args, m):
    """(names, images [N, H, W, 3] or None, failures, true classes of shapes samples or None).

    Image files are loaded at the model's input size (`args.fit`); an unreadable file is
    reported on stderr and skipped. With no files, `args.samples` shapes images of `args.seed`.
    """
    import jax
    import numpy as np

    import jaxinterp as ji
    from jaxinterp.images import load_image

    if not args.images:
        b = ji.data.shapes(jax.random.key(args.seed), args.samples, size=m.input_size[0])
        truth = [ji.data.CLASSES[int(y)] for y in b.labels]
        return [f"shapes{i}" for i in range(args.samples)], np.asarray(b.images), [], truth
    names, images, failed = [], [], []
    for path in args.images:
        try:
            images.append(load_image(path, m.input_size, fit=args.fit))
            names.append(Path(path).stem)
        except (OSError, ValueError) as e:
            failed.append(str(e))
            print(f"error: {e}", file=sys.stderr)
    return names, (np.stack(images) if images else None), failed, None


def _finish(failed, names) -> int:
    """Exit status: 1 with a summary on stderr if any image failed, else 0."""
    if failed:
        print(f"{len(failed)} of {len(failed) + len(names)} images failed", file=sys.stderr)
        return 1
    return 0



def cmd_predict(args) -> int:
    import jax
    import numpy as np

    import jaxinterp as ji

    m = ji.load_model(args.model)
    names, x, failed, truth = _load_inputs(args, m)
    if truth is not None:
        names = [f"{n} ({c})" for n, c in zip(names, truth)]
    fwd = lambda m, x: jax.nn.softmax(m(x)[0])  # noqa: E731 — m(x) runs one compiled program
    n = 0 if x is None else len(x)
    for start in progress(range(0, n, args.batch), desc="predict", unit="batch",
                          disable=n <= args.batch):
        probs = np.asarray(fwd(m, x[start:start + args.batch]))
        for name, p in zip(names[start:start + args.batch], probs):
            top = np.argsort(-p)[: args.top]
            preds = ", ".join(f"{m.classes[i]} {100 * p[i]:.1f}%" for i in top)
            print(f"{name}: {preds}")
    return _finish(failed, names)


ATTRIBUTION_METHODS = ("saliency", "input_x_gradient", "deconvnet", "guided_backprop",
                       "grad_cam", "guided_grad_cam", "cam", "smooth_grad",
                       "integrated_gradients", "occlusion")
PICTURES = ("colored", "negative", "positive", "heatmap", "overlay")


def _targets(arg, m, logits):
    import numpy as np

    if arg == "auto":
        return np.asarray(logits).argmax(-1)
    if arg.lstrip("-").isdigit():
        t = int(arg)
    elif arg in m.classes:
        t = m.classes.index(arg)
    else:
        raise ValueError(f"--target must be auto, a class index or a class name of {m.arch} "
                         f"({', '.join(m.classes[:10])}{', ...' if m.num_classes > 10 else ''}); "
                         f"got {arg!r}")
    if not 0 <= t < m.num_classes:
        raise ValueError(f"--target {t} out of range: {m.arch} has {m.num_classes} classes")
    return np.full(len(logits), t)


def cmd_attribute(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    import jaxinterp as ji
    from jaxinterp import viz
    from jaxinterp.images import save_image

    methods = [s.strip() for s in args.method.split(",") if s.strip()]
    unknown = [s for s in methods if s not in ATTRIBUTION_METHODS]
    if unknown:
        raise ValueError(f"unknown --method {', '.join(unknown)}; valid: "
                         f"{', '.join(ATTRIBUTION_METHODS)}")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise FileExistsError(f"{out} is not empty; pass --force to overwrite")
    m = ji.load_model(args.model)
    if "cam" in methods and m.module.head != "gap":
        raise ValueError(f"--method cam needs a GAP-head model; {m.arch} has none (use grad_cam)")
    names, x, failed, _ = _load_inputs(args, m)
    if x is not None:
        logits = m(x)[0]
        target = _targets(args.target, m, logits)
        fns = {"smooth_grad": lambda m, x, t: ji.smooth_grad(m, x, t, samples=args.samples_sg,
                                                             batch_size=args.batch_size),
               "integrated_gradients": lambda m, x, t: ji.integrated_gradients(
                   m, x, t, steps=args.steps, batch_size=args.batch_size),
               "occlusion": lambda m, x, t: ji.occlusion(m, x, t, batch_size=args.batch_size)}
        attrs = {}
        for name in progress(methods, desc="attribute", unit="method"):
            attrs[name] = np.asarray(fns.get(name, getattr(ji, name, None))(m, x, target))
        out.mkdir(parents=True, exist_ok=True)
        rows = {}
        for i, stem in enumerate(names):
            d = out / stem
            d.mkdir(exist_ok=True)
            save_image(x[i], d / "original.png")
            rows[stem] = {}
            for name in methods:
                row = viz.seed_row(x[i], attrs[name][i])
                rows[stem][name] = row
                for pic, img in zip(PICTURES, row[1:]):
                    save_image(img, d / f"{name}_{pic}.png")
            _table_figure(plt, rows[stem], f"{stem}: target {m.classes[int(target[i])]}",
                          d / "table.png")
        _compare_figure(plt, x, rows, names, methods, m, target, out / "compare.png")
        print(f"wrote {len(names)} x {len(methods)} attributions to {out}")
    return _finish(failed, names)


def _panel_figure(plt, panels, col_titles, row_labels, path, title=None, panel=1.9):
    """A grid of images: `panels[r][c]`, titles over the first row, labels left of each row."""
    nrows, ncols = len(panels), len(panels[0])
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols, panel * nrows + 0.4),
                             squeeze=False)
    for r, row in enumerate(panels):
        for c, img in enumerate(row):
            axes[r, c].imshow(img)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(col_titles[c], fontsize=8)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _table_figure(plt, rows, title, path):
    """The seed's table: one row per method, columns original | colored | ... | overlay."""
    from jaxinterp.viz import SEED_COLUMNS

    _panel_figure(plt, list(rows.values()), SEED_COLUMNS, list(rows), path, title, panel=2.0)


def _compare_figure(plt, x, rows, names, methods, m, target, path):
    """All methods side by side: one row per image, original then each method's overlay."""
    panels = [[x[r]] + [rows[stem][name][5] for name in methods] for r, stem in enumerate(names)]
    labels = [f"{stem}\n{m.classes[int(target[r])]}" for r, stem in enumerate(names)]
    _panel_figure(plt, panels, ["original"] + methods, labels, path)


def _conv_layer(m, layer):
    name = m.resolve(layer)
    spec = next(s for s in m.specs if s.name == name)
    if spec.kind != "conv":
        raise ValueError(f"--layer {layer} is a {spec.kind} layer; filters need a conv layer "
                         f"({', '.join(s.alias for s in m.specs if s.kind == 'conv')})")
    return name


def cmd_filters(args) -> int:
    import numpy as np

    import jaxinterp as ji
    from jaxinterp import viz
    from jaxinterp.images import save_image
    from jaxinterp.models.vgg import param_name

    m = ji.load_model(args.model)
    k = np.asarray(m.params[param_name(_conv_layer(m, args.layer))]["kernel"])  # [3, 3, in, out]
    k = k.transpose(3, 0, 1, 2)  # [out, 3, 3, in]
    tiles = k if k.shape[-1] == 3 else k.mean(-1)  # RGB filters, else the mean over inputs
    lo = tiles.reshape(len(tiles), -1).min(1).reshape((-1,) + (1,) * (tiles.ndim - 1))
    hi = tiles.reshape(len(tiles), -1).max(1).reshape((-1,) + (1,) * (tiles.ndim - 1))
    tiles = (tiles - lo) / np.where(hi > lo, hi - lo, 1)
    tiles = np.repeat(np.repeat(tiles, args.zoom, 1), args.zoom, 2)
    _save_new(save_image, viz.grid(tiles, pad=1), args.out, args.force)
    print(f"wrote {len(tiles)} filters of {args.layer} to {args.out}")
    return 0


def cmd_activations(args) -> int:
    import numpy as np

    import jaxinterp as ji
    from jaxinterp import viz
    from jaxinterp.images import save_image

    m = ji.load_model(args.model)
    name = m.resolve(args.layer)
    args.images, args.samples = [args.image] if args.image else [], 1
    _, x, failed, _ = _load_inputs(args, m)
    if failed:
        return 1
    a = np.asarray(m(x)[1][name][0])
    if a.ndim != 3:
        raise ValueError(f"--layer {args.layer} has no spatial maps (shape {a.shape})")
    maps = a.transpose(2, 0, 1)
    hi = maps.reshape(len(maps), -1).max(1)[:, None, None]
    lo = maps.reshape(len(maps), -1).min(1)[:, None, None]
    maps = (maps - lo) / np.where(hi > lo, hi - lo, 1)
    _save_new(save_image, viz.grid(maps, pad=1), args.out, args.force)
    print(f"wrote {len(maps)} feature maps of {args.layer} to {args.out}")
    return 0


OBJECTIVES = ("channel", "neuron", "layer", "logit", "prob", "direction")


def _parse_units(arg, m, layer, kind):
    """Unit indices from `--channel`: "3", "0,5,9", "0-15", class names; None: all of them."""
    is_class = kind in ("logit", "prob")
    n = m.num_classes if is_class else m.channels(layer)
    if arg is None:
        return list(range(n))
    out = []
    for part in arg.split(","):
        part = part.strip()
        if is_class and part in m.classes:
            out.append(m.classes.index(part))
        elif "-" in part[1:]:
            lo, hi = part.split("-", 1)
            out += list(range(int(lo), int(hi) + 1))
        elif part.lstrip("-").isdigit():
            out.append(int(part))
        else:
            what = "class index or name" if is_class else "channel index"
            raise ValueError(f"--channel {part!r} is not a {what} (use 3, 0,5,9 or 0-15)")
    bad = [c for c in out if not 0 <= c < n]
    if bad:
        raise ValueError(f"--channel {bad} out of range: {layer} of {m.arch} has {n} "
                         f"{'classes' if is_class else 'channels'} (0 … {n - 1})")
    return out


def _visualize_objectives(args, m):
    """(list of objectives, tile labels) for the command-line options."""
    import jax

    import jaxinterp as ji

    obj = ji.objectives
    last = m.layers[-1]
    layer = m.resolve(args.layer or "logits")
    kind = args.objective or ("logit" if layer == last else "channel")
    if kind not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {kind!r}")
    if kind in ("logit", "prob") and layer != last:
        raise ValueError(f"--objective {kind} reads the logits; use --layer {last} (or omit it)")
    if kind == "layer":
        objs, labels = [obj.deepdream(layer)], [f"deepdream {layer}"]
    elif kind == "direction":
        keys = jax.random.split(jax.random.key(args.seed), args.directions)
        objs = [obj.random_direction(m, layer, k) for k in keys]
        labels = [f"direction {i}" for i in range(args.directions)]
    else:
        chans = _parse_units(args.channel, m, layer, kind)
        objs = ji.optvis.units(m, layer, chans, kind)
        labels = [m.classes[c] if kind in ("logit", "prob") else f"{layer}:{c}" for c in chans]
    if args.negative:
        objs = [-o for o in objs]
    if args.diversity:
        if args.batch < 2:
            raise ValueError("--diversity needs --batch 2 or more")
        from jaxinterp.attribution.cam import default_layer

        div_layer = args.diversity_layer or (layer if layer.startswith("features")
                                             else default_layer(m))
        objs = [o + args.diversity * obj.diversity(div_layer) for o in objs]
    return objs, labels


def cmd_visualize(args) -> int:
    import jax
    import numpy as np

    import jaxinterp as ji
    from jaxinterp import viz
    from jaxinterp.images import save_image

    if Path(args.out).exists() and not args.force:
        raise FileExistsError(f"{args.out} exists; pass --force to overwrite")
    m = ji.load_model(args.model)
    objs, labels = _visualize_objectives(args, m)
    opts = dict(size=args.size, steps=args.steps, lr=args.lr, param=args.param,
                decorrelate=not args.no_decorrelate, transforms=args.transforms, batch=args.batch)
    chunk = max(1, min(args.chunk, len(objs)))
    key, images, scores = jax.random.key(args.seed), [], []
    for start in progress(range(0, len(objs), chunk), desc="visualize", unit="chunk",
                          disable=len(objs) <= chunk):
        part = objs[start:start + chunk]
        part = part + [part[-1]] * (chunk - len(part))  # one compiled shape for every chunk
        r = ji.visualize_units(m, part, key=jax.random.fold_in(key, start), **opts)
        images.append(np.asarray(r.images))
        scores.append(np.asarray(r.scores[:, -1].mean(-1)))
    images = np.concatenate(images)[: len(objs)]  # [K, B, H, W, 3]
    scores = np.concatenate(scores)[: len(objs)]
    tiles = images.reshape(-1, *images.shape[2:])
    ncols = args.batch if args.batch > 1 else None
    _save_new(save_image, viz.grid(tiles, ncols=ncols, pad=2), args.out, args.force)
    for label, s in zip(labels, scores):
        print(f"{label}: objective {s:.4g}")
    print(f"wrote {len(tiles)} visualizations ({len(objs)} units x {args.batch}) to {args.out}")
    return 0


def _save_new(save, image, path, force):
    if Path(path).exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save(image, path)


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

    p = sub.add_parser("attribute", help="attribution pictures and figures (seed layout)")
    p.add_argument("images", nargs="*", help="image files (default: shapes samples)")
    p.add_argument("--model", default=None, help="model name or checkpoint (default vgg-mini)")
    p.add_argument("--method", default="saliency,guided_backprop,grad_cam,guided_grad_cam,"
                   "integrated_gradients", help="comma-separated: " + ", ".join(ATTRIBUTION_METHODS))
    p.add_argument("--target", default="auto",
                   help="auto (predicted class), a class index, or a class name")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.add_argument("--fit", choices=["resize", "crop"], default="resize")
    p.add_argument("--samples", type=int, default=4, help="shapes samples when no image is given")
    p.add_argument("--seed", type=int, default=1, help="seed of the shapes samples")
    p.add_argument("--steps", type=int, default=50, help="integrated-gradients steps")
    p.add_argument("--samples-sg", type=int, default=50, help="SmoothGrad samples")
    p.add_argument("--batch-size", type=int, default=None,
                   help="bound memory: samples / steps / windows evaluated at a time")
    p.set_defaults(func=cmd_attribute)

    p = sub.add_parser("filters", help="a conv layer's filters as a grid (first layer: RGB)")
    p.add_argument("--model", default=None)
    p.add_argument("--layer", default="features.0", help="conv layer name or alias")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--zoom", type=int, default=8, help="pixels per filter tap")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_filters)

    p = sub.add_parser("activations", help="an image's feature maps at a layer, as a grid")
    p.add_argument("image", nargs="?", default=None, help="image (default: a shapes sample)")
    p.add_argument("--model", default=None)
    p.add_argument("--layer", required=True, help="layer name or alias")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--fit", choices=["resize", "crop"], default="resize")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_activations)

    p = sub.add_parser("visualize", help="feature visualization: optimize images for units")
    p.add_argument("--model", default=None)
    p.add_argument("--layer", default=None,
                   help="layer name or alias (default: the logits, i.e. class visualizations)")
    p.add_argument("--channel", default=None,
                   help="unit(s): 9, 0,5,9, 0-15, or class names for logit/prob (default: all)")
    p.add_argument("--objective", default=None, choices=OBJECTIVES,
                   help="channel (spatial mean), neuron (centre), layer (DeepDream), logit, prob, "
                   "direction (random); default: logit at the last layer, else channel")
    p.add_argument("--negative", action="store_true", help="minimize the objective instead")
    p.add_argument("--diversity", type=float, default=0.0,
                   help="weight of a diversity term across the batch (needs --batch > 1)")
    p.add_argument("--diversity-layer", default=None,
                   help="layer whose Gram matrices --diversity compares (default: --layer, or the "
                   "last conv block for dense layers and classes)")
    p.add_argument("--directions", type=int, default=4, help="random directions to render")
    p.add_argument("--batch", type=int, default=1, help="images per unit")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--steps", type=int, default=512, help="optimization steps")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    p.add_argument("--param", choices=["fft", "pixel"], default="fft", help="parameterization")
    p.add_argument("--no-decorrelate", action="store_true", help="optimize plain RGB")
    p.add_argument("--transforms", choices=["standard", "jitter", "none"], default="standard")
    p.add_argument("--chunk", type=int, default=16, help="units rendered per compiled call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="PNG grid to write (one row per unit if batch>1)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_visualize)
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
