"""`jaxinterp` command line: thin subcommands over the library.

    jaxinterp info [MODEL]                              layers, shapes, parameters, preprocessing
    jaxinterp weights import SRC --arch vgg16 --out DIR torchvision .pth/.safetensors, Keras .h5
    jaxinterp predict [IMAGE ...] [--model M] [--top K] class names and percentages
    jaxinterp attribute [IMAGE ...] --method a,b --out DIR   the seed's pictures and figures
    jaxinterp filters --layer L --out F.png              a conv layer's filters as a grid
    jaxinterp activations [IMAGE] --layer L --out F.png  an image's feature maps as a grid
    jaxinterp visualize --layer L [--channel C] --out F.png   feature visualization (Lucid-style)
    jaxinterp dream [IMAGE ...] --layer L --out DIR     DeepDream with octaves
    jaxinterp invert [IMAGE ...] --out F.png            reconstructions from several layers
    jaxinterp attack [IMAGE ...] --eps 2/255,8/255 --out DIR   FGSM / PGD and a success table
    jaxinterp texture STYLE --out DIR                   Gram-matrix texture synthesis
    jaxinterp style CONTENT STYLE --out DIR             neural style transfer
    jaxinterp dissect --layers L1,L2 --samples 2000 --out DIR   network dissection on shapes
    jaxinterp top --layer L --channel 0-7 --out F.png   top-activating patches per unit
    jaxinterp neighbors [IMAGE ...] --layer L --out F.png   nearest neighbours in feature space
    jaxinterp embed --layer L --method tsne --out F.png   a 2-D map of the data set
    jaxinterp tcav --layer L --concept color:red --target star   TCAV with a t-test
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import traceback
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

    Needs no weights in memory: shapes come from `jax.eval_shape`; what is described is what
    `load_model(name)` would load (`weights.load_meta`).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxinterp import model as model_lib
    from jaxinterp import weights

    meta, source = weights.load_meta(name)
    module = model_lib.build_module(meta)
    variables = model_lib.abstract_variables(module)
    x = jax.ShapeDtypeStruct((1, *meta.input_size, 3), jnp.float32)
    counts = {}
    if hasattr(module, "specs"):
        _, feats = jax.eval_shape(lambda v, x: module.apply(v, x), variables, x)
        rows = [(s.name, s.alias) for s in module.specs()]
        for path, leaf in jax.tree_util.tree_flatten_with_path(variables.get("params", {}))[0]:
            layer = str(getattr(path[0], "key", path[0])).replace("_", ".")
            counts[layer] = counts.get(layer, 0) + int(np.prod(leaf.shape))
    else:  # a ResNet: every submodule's output, by path; parameters of leaf modules
        feats = model_lib.assemble(module, variables, meta)._probe[1]
        rows = [(name, None) for name in feats]
        for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
            layer = "/".join(str(getattr(k, "key", k)) for k in path[1:-1])
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
    for name, alias in rows:
        shape = "x".join(map(str, feats[name].shape[1:]))
        lines.append(f"{name:<14}{alias or '':<10}{shape:<22}{counts.get(name, 0):,}")
    extra = meta.extra
    if "source" in extra:
        lines += ["", f"imported from {extra['source'].get('file')} "
                  f"({extra['source'].get('format')})"]
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


def _batches(args, m, batch: int, size: tuple[int, int] | None = None):
    """Yields `(names, images [n, H, W, 3])` `batch` images at a time, loading files lazily.

    Image files are loaded at `size` (default: the model's input size; `args.fit`); an unreadable one is
    reported on stderr, counted in `args.failed`, and skipped. With no files, `args.samples`
    shapes images of `args.seed` (image i depends on (seed, i) only); their names carry the
    true class.
    """
    import jax
    import numpy as np

    import jaxinterp as ji
    from jaxinterp.images import load_image

    if not args.images:
        key = jax.random.key(args.seed)
        for start in range(0, args.samples, batch):
            n = min(batch, args.samples - start)
            b = ji.data.shapes(key, n, start=start, size=(size or m.input_size)[0])
            names = [f"shapes{start + i} ({ji.data.CLASSES[int(y)]})"
                     for i, y in enumerate(b.labels)]
            yield names, np.asarray(b.images)
        return
    for start in range(0, len(args.images), batch):
        names, images = [], []
        for path in args.images[start:start + batch]:
            try:
                images.append(load_image(path, size or m.input_size, fit=args.fit))
                names.append(str(path))
            except (OSError, ValueError) as e:
                args.failed.append(str(e))
                print(f"error: {e}", file=sys.stderr)
        if images:
            yield names, np.stack(images)


def _padded(x, n: int):
    """`x` padded to `n` images by repeating its last one (one compiled shape for all batches)."""
    import numpy as np

    return x if len(x) >= n else np.concatenate([x, np.repeat(x[-1:], n - len(x), 0)])


def _total(args) -> int:
    return len(args.images) if args.images else args.samples


def _finish(args) -> int:
    """Exit status: 1 with a summary on stderr if any image failed, else 0."""
    if args.failed:
        print(f"{len(args.failed)} of {_total(args)} images failed", file=sys.stderr)
        return 1
    return 0


def cmd_predict(args) -> int:
    import jax
    import numpy as np

    import jaxinterp as ji

    m = ji.load_model(args.model)
    fwd = lambda m, x: jax.nn.softmax(m(x)[0])  # noqa: E731 — m(x) runs one compiled program
    chunks = -(-_total(args) // args.batch)
    for names, x in progress(_batches(args, m, args.batch), desc="predict", unit="batch",
                             total=chunks, disable=chunks <= 1):
        probs = np.asarray(fwd(m, _padded(x, args.batch) if chunks > 1 else x))[: len(x)]
        for name, p in zip(names, probs):
            top = np.argsort(-p)[: args.top]
            preds = ", ".join(f"{m.classes[i]} {100 * p[i]:.1f}%" for i in top)
            print(f"{name}: {preds}")
    return _finish(args)


PICTURES = ("colored", "negative", "positive", "heatmap", "overlay")
COMPARE_ROWS = 16  # images shown in compare.png (every image gets its own table)


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
               "occlusion": {"batch_size": args.batch_size}}
    methods = [name for name in args.method]
    who = f"[process {jax.process_index()}/{jax.process_count()}] " \
        if jax.process_count() > 1 else ""

    def bar(it, total):
        return progress(it, total=total, desc=f"{who}attribute", unit="img",
                        unit_scale=args.batch, smoothing=0.1, disable=total == 0)

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

    path = write_report(args.run, args.out, limit=args.limit, thumb=args.thumb, force=args.force)
    print(f"wrote {path}")
    return 0


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
                   "integrated_gradients": {"steps": args.steps}}
        compare, written, chunks = [], [], -(-_total(args) // args.batch)
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
    batch = next(_batches(args, m, 1), None)
    if batch is None:
        return 1
    x = batch[1]
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


def channel_spec(text: str) -> list:
    """argparse type of `--channel`: "3", "0,5,9", "0-15" or names -> [int | (lo, hi) | name]."""
    parts = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise argparse.ArgumentTypeError(f"empty item in {text!r} (use 3, 0,5,9 or 0-15)")
        range_ = re.fullmatch(r"(\d+)-(\d+)", part)
        if range_:
            lo, hi = int(range_.group(1)), int(range_.group(2))
            if lo > hi:
                raise argparse.ArgumentTypeError(f"range {part!r} runs backwards (use {hi}-{lo})")
            parts.append((lo, hi))
        elif part.isdigit():
            parts.append(int(part))
        elif re.fullmatch(r"-\d+(-\d+)?", part):
            raise argparse.ArgumentTypeError(f"{part!r}: channels are numbered from 0")
        else:
            parts.append(part)  # a class name, resolved against the model
    return parts


def _parse_units(spec, m, layer, kind):
    """Unit indices from a parsed `--channel` (`channel_spec`); None: all of them."""
    is_class = kind in ("logit", "prob")
    n = m.num_classes if is_class else m.channels(layer)
    if spec is None:
        return list(range(n))
    what = "classes" if is_class else "channels"
    out = []
    for part in spec:
        if isinstance(part, str):
            if not (is_class and part in m.classes):
                kind_ = "class index or name" if is_class else "channel index"
                raise ValueError(f"--channel {part!r} is not a {kind_} (use 3, 0,5,9 or 0-15)")
            out.append(m.classes.index(part))
            continue
        lo, hi = part if isinstance(part, tuple) else (part, part)
        if hi >= n:  # checked before expanding a range
            shown = f"{lo}-{hi}" if isinstance(part, tuple) else str(hi)
            raise ValueError(f"--channel {shown} out of range: {layer} of {m.arch} has {n} "
                             f"{what} (0 … {n - 1})")
        out += list(range(lo, hi + 1))
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
        from jaxinterp.attribution import default_layer

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

    _check_out_file(args)
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


def _run_dir_command(args, name: str, body) -> int:
    """Runs `body(run, m) -> (record, summary)` writing into a `RunDir` at `args.out`."""
    import jaxinterp as ji
    from jaxinterp.outputs import RunDir

    run = RunDir(args.out, force=args.force)  # checks --out before any computation
    try:
        m = ji.load_model(args.model)
        record, summary = body(run, m)
        if record is None:
            run.abort()
            return _finish(args) or 1
        if _interrupt.received is not None:  # a library swallowed the interrupt: still stop
            raise Interrupted(signal.Signals(_interrupt.received).name)
        out = run.commit({"command": name, "model": args.model or "vgg-mini", **record,
                          "failed": args.failed})
    except BaseException:
        run.abort()
        raise
    print(f"{summary} {out}")
    return _finish(args)


def _entry(args, run, name):
    return run.unique(Path(name).stem if args.images else name.split(" ")[0])


def cmd_dream(args) -> int:
    import numpy as np

    import jaxinterp as ji
    from jaxinterp import viz
    from jaxinterp.images import save_image

    def body(run, m):
        m.resolve(args.layer)
        size = (args.size, args.size) if args.size else None
        written, rows = [], []
        for names, x in _batches(args, m, args.batch, size):
            octaves = ji.synthesis.dream(m, x, args.layer, octaves=args.octaves,
                                         octave_scale=args.octave_scale, steps=args.steps,
                                         step_size=args.step_size, jitter=args.jitter,
                                         key=args.seed)
            report = []
            for o in progress(octaves, desc="dream", unit="octave", total=args.octaves,
                              disable=args.octaves <= 1):
                images, scores = np.asarray(o.images), np.asarray(o.scores)
                report.append(f"octave {o.index + 1}/{args.octaves} {images.shape[1]}x"
                              f"{images.shape[2]}: objective {scores[0].mean():.4g} -> "
                              f"{scores[-1].mean():.4g}")
            print("\n".join(report))
            for i, name in enumerate(names):
                entry = _entry(args, run, name)
                save_image(x[i], run.path(entry, "original.png"))
                save_image(images[i], run.path(entry, "dream.png"))
                written.append({"input": name, "output": entry})
                rows.append(([x[i], images[i]], entry))
        if not written:
            return None, ""
        if args.figures:
            viz.panel_figure([r[0] for r in rows], ["original", f"dream: {args.layer}"],
                             [r[1] for r in rows], run.path("dream.png"))
        options = {k: getattr(args, k) for k in ("layer", "octaves", "octave_scale", "steps",
                                                  "step_size", "jitter", "seed", "size")}
        return {"options": options, "images": written}, f"wrote {len(written)} dreams to"

    return _run_dir_command(args, "dream", body)


def _default_inversion_layers(m) -> list[str]:
    """The first ReLU and every pooling layer: reconstructions from shallow to deep."""
    first = next(s for s in m.specs if s.kind == "relu")
    return [s.alias or s.name for s in [first] + [s for s in m.specs if s.kind == "pool"]]


def cmd_invert(args) -> int:
    import numpy as np

    import jaxinterp as ji
    from jaxinterp import viz

    _check_out_file(args)
    m = ji.load_model(args.model)
    layers = args.layers or _default_inversion_layers(m)
    names = [m.resolve(layer) for layer in layers]
    batch = next(_batches(args, m, args.samples if not args.images else len(args.images)), None)
    if batch is None:
        return _finish(args) or 1
    labels, x = batch
    recon, quality = [], []
    for layer in progress(layers, desc="invert", unit="layer", disable=len(layers) <= 1):
        r = ji.invert(m, x, layer, steps=args.steps, lr=args.lr, tv_weight=args.tv_weight,
                      param=args.param, key=args.seed)
        images = np.asarray(r.images)
        psnr = 10 * np.log10(1 / np.maximum(((images - x) ** 2).mean((1, 2, 3)), 1e-12))
        recon.append(images)
        quality.append((psnr, np.asarray(r.error)))
        print(f"{layer}: PSNR {psnr.mean():.1f} dB, relative feature error "
              f"{np.asarray(r.error).mean():.3f}")
    panels = [[x[i]] + [rec[i] for rec in recon] for i in range(len(x))]
    titles = [["original"] + [f"{layer} ({name})\n{q[0][i]:.1f} dB" if name != layer else
                              f"{layer}\n{q[0][i]:.1f} dB"
                              for layer, name, q in zip(layers, names, quality)]
              for i in range(len(x))]
    row_labels = [Path(n).stem if args.images else n for n in labels]
    _save_figure(lambda path: viz.panel_figure(panels, titles, row_labels, path,
                                               title=f"feature inversion, {args.steps} steps"),
                 args)
    print(f"wrote {len(x)} images x {len(layers)} layers to {args.out}")
    return _finish(args)


def eps_list(text: str) -> list[float]:
    """argparse type of `--eps`: comma-separated budgets, numbers or fractions like 8/255."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            num, _, den = part.partition("/")
            v = float(num) / (float(den) if den else 1.0)
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(f"{part!r} is not a number or a fraction like 8/255"
                                             ) from None
        if not 0 <= v < float("inf"):
            raise argparse.ArgumentTypeError(f"budgets must be >= 0, got {part}")
        out.append(v)
    return out


def _fmt_eps(e: float) -> str:
    k = e * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 and k >= 1 else f"{e:g}"


def cmd_attack(args) -> int:
    import jax
    import numpy as np

    import jaxinterp as ji
    from jaxinterp import viz
    from jaxinterp.images import save_image

    def body(run, m):
        eps = sorted(args.eps)
        shown = eps[-1]
        table, written, rows, titles, labels = [], [], [], [], []
        chunks = -(-_total(args) // args.batch)
        for names, x in progress(_batches(args, m, args.batch), desc="attack", unit="batch",
                                 total=chunks, disable=chunks <= 1):
            logits = np.asarray(m(x)[0])
            y = _targets(args.target, m, logits)
            r = ji.robustness(m, x, y, eps, attack=args.attack, norm=args.norm, steps=args.steps,
                              restarts=args.restarts, targeted=args.target != "auto",
                              return_images=True, key=args.seed)
            table.append(np.asarray(r.success))
            adv = np.asarray(r.images[-1])
            p_clean = np.asarray(jax.nn.softmax(logits))
            p_adv = np.asarray(jax.nn.softmax(m(adv)[0]))
            for i, name in enumerate(names):
                entry = _entry(args, run, name)
                delta = adv[i] - x[i]
                amp = 0.5 + 0.5 * delta / max(float(np.abs(delta).max()), 1e-12)
                save_image(x[i], run.path(entry, "clean.png"))
                save_image(adv[i], run.path(entry, "adversarial.png"))
                save_image(amp, run.path(entry, "perturbation.png"))
                c, a = int(p_clean[i].argmax()), int(p_adv[i].argmax())
                written.append({"input": name, "output": entry, "clean": m.classes[c],
                                "clean_prob": float(p_clean[i, c]), "adversarial": m.classes[a],
                                "adversarial_prob": float(p_adv[i, a]),
                                "success": [bool(s) for s in np.asarray(r.success)[:, i]]})
                if len(rows) < COMPARE_ROWS:
                    rows.append([x[i], adv[i], amp])
                    titles.append([f"clean: {m.classes[c]} {100 * p_clean[i, c]:.1f}%",
                                   f"ε={_fmt_eps(shown)}: {m.classes[a]} {100 * p_adv[i, a]:.1f}%",
                                   "perturbation (amplified)"])
                    labels.append(entry)
        if not written:
            return None, ""
        success = np.concatenate(table, 1).mean(1)
        print(f"{'eps':>10}  success  robust accuracy")
        for e, s in zip(eps, success):
            print(f"{_fmt_eps(e):>10}  {100 * s:6.1f}%  {100 * (1 - s):6.1f}%")
        if args.figures:
            viz.panel_figure(rows, titles, labels, run.path("attack.png"),
                             title=f"{args.attack.upper()} {args.norm}, ε = {_fmt_eps(shown)}")
        options = {k: getattr(args, k) for k in ("attack", "norm", "steps", "restarts", "target",
                                                  "seed")}
        record = {"options": options, "eps": eps, "success_rate": success.tolist(),
                  "images": written}
        return record, f"wrote {len(written)} adversarial examples to"

    return _run_dir_command(args, "attack", body)


def _synthesis(args, name: str, spec) -> int:
    """Shared body of `texture` and `style`: chunks with a progress bar, snapshots as a strip."""
    import numpy as np

    from jaxinterp import viz
    from jaxinterp.images import load_image, save_image

    def body(out, m):
        if args.avg_pool:
            m = m.with_pool("avg")
        size = (args.size, args.size) if args.size else m.input_size
        images = {k: load_image(v, size, fit=args.fit) for k, v in spec["inputs"](args).items()}
        every = max(1, -(-args.steps // args.snapshots))
        snaps, bar = [], progress(range(args.steps), desc=name, unit="step",
                                  disable=args.steps <= every)

        def on_chunk(done, steps, carry):
            snaps.append((done, np.asarray(carry[0][0])))
            if hasattr(bar, "update"):
                bar.update(done - bar.n)

        r = spec["call"](m, images, every, on_chunk)
        if hasattr(bar, "close"):
            bar.close()
        for k, v in images.items():
            save_image(v, out.path(f"{k}.png"))
        save_image(np.asarray(r.images[0]), out.path(f"{name}.png"))
        panels = [[*images.values(), *[s[1] for s in snaps]]]
        titles = [*images.keys(), *[f"step {d}" for d, _ in snaps]]
        viz.panel_figure(panels, titles, [""], out.path("snapshots.png"), panel=2.0)
        losses = np.asarray(r.losses[:, 0])
        print(f"loss {losses[0]:.4g} -> {float(r.style_loss[0] + r.content_loss[0]):.4g} "
              f"(style {float(r.style_loss[0]):.4g}, content {float(r.content_loss[0]):.4g}) "
              f"in {args.steps} {args.optimizer} iterations")
        record = {"inputs": {k: str(v) for k, v in spec["inputs"](args).items()},
                  "options": {k: getattr(args, k) for k in spec["options"]},
                  "first_loss": float(losses[0]), "final_style_loss": float(r.style_loss[0]),
                  "final_content_loss": float(r.content_loss[0])}
        return record, f"wrote {name}.png and snapshots.png to"

    return _run_dir_command(args, name, body)


def cmd_texture(args) -> int:
    import jaxinterp as ji

    def call(m, images, every, on_chunk):
        return ji.texture(m, images["style"], layers=args.layers, steps=args.steps,
                          optimizer=args.optimizer, normalization=args.normalization,
                          lr=args.lr, key=args.seed, checkpoint_every=every,
                          checkpoint_dir=args.checkpoint_dir, progress=on_chunk)

    return _synthesis(args, "texture", {
        "inputs": lambda a: {"style": a.style}, "call": call,
        "options": ("size", "steps", "optimizer", "normalization", "layers", "lr", "seed",
                    "avg_pool")})


def cmd_style(args) -> int:
    import jaxinterp as ji

    def call(m, images, every, on_chunk):
        return ji.style_transfer(m, images["content"][None], images["style"],
                                 content_layer=args.content_layer, style_layers=args.layers,
                                 content_weight=args.content_weight,
                                 style_weight=args.style_weight, tv_weight=args.tv_weight,
                                 steps=args.steps, optimizer=args.optimizer, init=args.init,
                                 normalization=args.normalization, lr=args.lr, key=args.seed,
                                 checkpoint_every=every, checkpoint_dir=args.checkpoint_dir,
                                 progress=on_chunk)

    return _synthesis(args, "style", {
        "inputs": lambda a: {"content": a.content, "style": a.style}, "call": call,
        "options": ("size", "steps", "optimizer", "normalization", "layers", "content_layer",
                    "content_weight", "style_weight", "tv_weight", "init", "lr", "seed",
                    "avg_pool")})


def _shapes_stream(args, m, seed=None, start=0):
    """A factory of iterators over `args.samples` shapes images (streamed, `args.batch` at a
    time) and a progress wrapper for the concept functions."""
    import jax

    import jaxinterp as ji

    key, n, batch = jax.random.key(args.seed if seed is None else seed), args.samples, args.batch

    def stream():
        for s in range(0, n, batch):
            yield ji.data.shapes(key, min(batch, n - s), start=start + s, size=m.input_size[0])

    chunks = -(-n // batch)
    wrap = lambda it, desc: progress(it, desc=desc, unit="batch", total=chunks,  # noqa: E731
                                     disable=chunks <= 1)
    return stream, wrap


def cmd_dissect(args) -> int:
    import json

    import jaxinterp as ji
    from jaxinterp.concepts import figures

    def body(run, m):
        layers = args.layers or [s.alias or s.name for s in m.specs if s.kind == "relu"
                                 and s.name.startswith("features")]
        stream, wrap = _shapes_stream(args, m)
        results = ji.dissect(m, layers, stream, quantile=args.quantile,
                             iou_threshold=args.iou_threshold, progress=wrap)
        rows = ji.concepts.summary(results)
        print(f"{'layer':<10}{'units':>6}{'detectors':>10}{'shape':>7}{'color':>7}{'texture':>8}")
        for r in rows:
            print(f"{r['layer']:<10}{r['units']:>6}{r['detectors']:>10}{r['shape']:>7}"
                  f"{r['color']:>7}{r['texture']:>8}")
        units = {}
        for layer, r in results.items():
            units[layer] = [{"unit": u, "concept": str(r.concept_name[u]),
                             "category": str(r.category[u]), "iou": float(r.iou[u]),
                             "detector": bool(r.detector[u]), "threshold": float(r.threshold[u])}
                            for u in range(len(r.iou))]
            if args.figures:
                best = [int(u) for u in (-r.iou).argsort()[:args.show]]
                top = ji.top_activating(m, layer, best, stream, k=4, patches=False)
                figures.dissection_figure(m, r, top, run.path(f"{layer}.png"),
                                          title=f"{layer}: the {len(best)} units of highest IoU, "
                                          "their top images, mask outlined")
        with open(run.path("units.json"), "w") as f:
            json.dump(units, f, indent=1)
        record = {"samples": args.samples, "seed": args.seed, "quantile": args.quantile,
                  "iou_threshold": args.iou_threshold, "summary": rows}
        return record, f"dissected {len(results)} layers on {args.samples} images; wrote"

    return _run_dir_command(args, "dissect", body)


def cmd_top(args) -> int:
    import jaxinterp as ji
    from jaxinterp.concepts import figures

    _check_out_file(args)
    m = ji.load_model(args.model)
    name = m.resolve(args.layer)
    units = _parse_units(args.channel, m, name, "channel")[: args.max_units]
    stream, wrap = _shapes_stream(args, m)
    top = ji.top_activating(m, args.layer, units, stream, k=args.k, progress=wrap)
    labels = [f"{args.layer}:{u}" for u in units]
    what = "patches" if top.patches is not None else "images"
    _save_figure(lambda path: figures.top_activating_figure(
        top, path, labels, title=f"top-{args.k} {what} of {args.samples} shapes images"), args)
    print(f"wrote the top {args.k} of {len(units)} units of {args.layer} to {args.out}")
    return 0


def cmd_neighbors(args) -> int:
    import jax
    import numpy as np

    import jaxinterp as ji
    from jaxinterp import viz

    _check_out_file(args)
    m = ji.load_model(args.model)
    if args.images:
        batch = next(_batches(args, m, len(args.images)), None)
        if batch is None:
            return _finish(args) or 1
        names, queries = [Path(n).stem for n in batch[0]], batch[1]
    else:
        q = ji.data.shapes(jax.random.key(args.seed + 1), args.queries)
        queries = np.asarray(q.images)
        names = [f"query {i} ({ji.data.CLASSES[int(c)]})" for i, c in enumerate(q.labels)]
    stream, wrap = _shapes_stream(args, m)
    idx, dist = ji.nearest_neighbors(m, args.layer, queries, stream, k=args.k,
                                     metric=args.metric, progress=wrap)
    data = list(stream())  # one more pass for the neighbours' images and labels
    found = ji.concepts.data.gather(lambda: iter(data), idx)
    labels = np.concatenate([np.asarray(b.labels) for b in data])
    panels = [[queries[i], *found[i]] for i in range(len(queries))]
    titles = [["query"] + [f"{ji.data.CLASSES[labels[j]]} d={d:.3g}" for j, d in
                           zip(idx[i], dist[i])] for i in range(len(queries))]
    _save_figure(lambda path: viz.panel_figure(panels, titles, names, path,
                                               title=f"nearest neighbours in {args.layer} "
                                               f"({args.metric}) among {args.samples} images"),
                 args)
    for i, n in enumerate(names):
        print(f"{n}: " + ", ".join(f"#{j} {ji.data.CLASSES[labels[j]]} {d:.3g}"
                                   for j, d in zip(idx[i], dist[i])))
    print(f"wrote {args.out}")
    return _finish(args)


def cmd_embed(args) -> int:
    import numpy as np

    import jaxinterp as ji
    from jaxinterp.concepts import figures

    _check_out_file(args)
    m = ji.load_model(args.model)
    stream, wrap = _shapes_stream(args, m)
    data = list(wrap(stream(), "shapes"))  # the map shows every image: it is in memory anyway
    feats = ji.concepts.features(m, args.layer, data)
    points = ji.embed_2d(feats, method=args.method, key=args.seed)
    images = np.concatenate([np.asarray(b.images) for b in data])
    labels = np.concatenate([np.asarray(b.labels) for b in data])
    _save_figure(lambda path: figures.embedding_figure(
        points, images, path, title=f"{args.method} of {args.layer} ({len(images)} shapes images)",
        labels=labels, classes=ji.data.CLASSES), args)
    print(f"wrote a {args.method} map of {len(images)} images to {args.out}")
    return 0


def _concept_spec(text: str) -> tuple[str, str]:
    """argparse type of `--concept`: CATEGORY:NAME, e.g. shape:star, color:red, texture:dots."""
    from jaxinterp.data import shapes_dataset as sd

    names = {"shape": sd.CLASSES, "color": sd.COLOR_NAMES, "texture": sd.TEXTURES}
    cat, _, name = text.partition(":")
    if cat not in names or name not in names[cat]:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use shape:NAME ({', '.join(sd.CLASSES)}), color:NAME "
            f"({', '.join(sd.COLOR_NAMES)}) or texture:NAME ({', '.join(sd.TEXTURES)})")
    return cat, name


def cmd_tcav(args) -> int:
    import jax
    import numpy as np

    import jaxinterp as ji
    from jaxinterp.data import shapes_dataset as sd

    m = ji.load_model(args.model)
    d = ji.data.shapes(jax.random.key(args.seed), args.samples)
    field = {"shape": "labels", "color": "colors", "texture": "textures"}
    names = {"shape": sd.CLASSES, "color": sd.COLOR_NAMES, "texture": sd.TEXTURES}
    x = np.asarray(d.images)
    labels = np.asarray(d.labels)
    target = _targets(args.target, m, np.zeros((1, m.num_classes)))[0]
    half = len(x) // 2  # concepts and random sets from one half, tested inputs from the other
    inputs = x[half:][labels[half:] == target][: args.inputs]
    pool = x[:half][: args.random]
    if len(inputs) < 2:
        raise ValueError(f"--samples {args.samples} holds fewer than 2 images of class "
                         f"{m.classes[target]} to test; use more samples")
    print(f"{'concept':<20}{'TCAV':>7}{'random':>8}{'p':>10}  significant (alpha {args.alpha:g})")
    for cat, name in args.concept:
        value = names[cat].index(name)
        concept = x[:half][np.asarray(getattr(d, field[cat]))[:half] == value][: args.concept_size]
        r = ji.tcav(m, args.layer, concept, pool, inputs, int(target), runs=args.runs,
                    alpha=args.alpha, key=args.seed)
        print(f"{cat + ':' + name:<20}{r.score:>7.3f}{r.random_scores.mean():>8.3f}"
              f"{r.p_value:>10.2g}  {'yes' if r.significant else 'no'}")
    return 0


def _save_new(save, image, path, force):
    from jaxinterp.outputs import write_file

    write_file(path, lambda tmp: save(image, tmp), force)


def _check_out_file(args) -> None:
    """Refuses a single-file `--out` before any computation: a directory, or an existing file
    without `--force` (`write_file` checks again when writing)."""
    if Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a directory; give a PNG file name")
    if Path(args.out).exists() and not args.force:
        raise FileExistsError(f"{args.out} exists; pass --force to overwrite")


def _save_figure(draw, args) -> None:
    """Writes a figure through `draw(path)` atomically at `args.out`."""
    from jaxinterp.outputs import write_file

    write_file(args.out, draw, args.force)


def _number(kind: type, minimum: float, strict: bool):
    """An argparse type: `kind` (int or float), finite, `> minimum` (strict) or `>= minimum`."""
    noun = "integer" if kind is int else "number"
    want = (f"a positive {noun}" if strict and minimum == 0 else
            f"a{'n' if kind is int else ''} {noun} {'>' if strict else '>='} {minimum}")

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n' if kind is int else ''} "
                                             f"{noun}") from None
        if not (v > minimum if strict else v >= minimum) or v == float("inf"):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
        return v

    parse.__name__ = f"{'positive' if strict else 'nonnegative'}_{kind.__name__}"
    return parse


positive_int = _number(int, 0, strict=True)
nonnegative_int = _number(int, 0, strict=False)
positive_float = _number(float, 0, strict=True)
nonnegative_float = _number(float, 0, strict=False)


def layer_list(text: str) -> list[str]:
    """argparse type of `--layers`: comma-separated layer names or aliases (checked later
    against the model)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no layer given (e.g. relu1_1,pool2)")
    return names


def method_list(text: str) -> list[str]:
    """argparse type of `--method`: comma-separated registered attribution methods."""
    from jaxinterp.attribution.registry import METHODS

    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no method given; valid: {', '.join(METHODS)}")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method {', '.join(unknown)}; valid: "
                                         f"{', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    from jaxinterp.attribution.registry import METHODS

    ap = argparse.ArgumentParser(prog="jaxinterp", description="Interpretability for JAX/Flax VGGs.")
    ap.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="describe a model: layers, output shapes, parameters")
    p.add_argument("model", nargs="?", default=None,
                   help="vgg-mini (default), vgg11/13/16/19[_bn], or a checkpoint directory")
    p.set_defaults(func=cmd_info)

    w = sub.add_parser("weights", help="weight files").add_subparsers(dest="action", required=True)
    p = w.add_parser("import", help="import torchvision .pth/.safetensors or Keras .h5 weights")
    p.add_argument("src", help="weight file")
    p.add_argument("--arch", required=True,
                   help="vgg11, vgg13, vgg16, vgg19 (+_bn), vgg-mini, resnet18 … resnet152")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--fmt", choices=["torch", "safetensors", "keras"], default=None,
                   help="file format (default: from the suffix)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing jaxinterp checkpoint at --out (nothing else)")
    p.set_defaults(func=cmd_import)

    def inputs(p, samples):
        p.add_argument("--model", default=None, help="model name or checkpoint (default vgg-mini)")
        p.add_argument("--fit", choices=["resize", "crop"], default="resize",
                       help="how images are brought to the model's input size")
        p.add_argument("--samples", type=positive_int, default=samples,
                       help="shapes samples when no image is given")
        p.add_argument("--seed", type=nonnegative_int, default=1,
                       help="seed of the shapes samples (and of random starts / rolls)")

    p = sub.add_parser("predict", help="top-K classes of images (default: shapes samples)")
    p.add_argument("images", nargs="*", help="image files (any Pillow format)")
    inputs(p, 8)
    p.add_argument("--top", type=positive_int, default=3, help="classes to show per image")
    p.add_argument("--batch", type=positive_int, default=32,
                   help="images per forward pass (memory bound)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("attribute", help="attribution pictures and figures (seed layout)")
    p.add_argument("images", nargs="*", help="image files (default: shapes samples)")
    inputs(p, 4)
    p.add_argument("--method", type=method_list,
                   default=method_list("saliency,guided_backprop,grad_cam,guided_grad_cam,"
                                       "integrated_gradients"),
                   help="comma-separated: " + ", ".join(METHODS))
    p.add_argument("--target", default="auto",
                   help="auto (predicted class), a class index, or a class name")
    p.add_argument("--out", required=True,
                   help="output directory (written whole at the end; see --force)")
    p.add_argument("--force", action="store_true",
                   help="replace a previous jaxinterp output at --out (never other files)")
    p.add_argument("--batch", type=positive_int, default=16,
                   help="images loaded and attributed at a time (memory bound)")
    p.add_argument("--steps", type=positive_int, default=50, help="integrated-gradients steps")
    p.add_argument("--samples-sg", type=positive_int, default=50, help="SmoothGrad samples")
    p.add_argument("--batch-size", type=positive_int, default=16,
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
    g.add_argument("--workers", type=positive_int, default=4, help="image-decoding threads")
    g.add_argument("--coordinator", default=None,
                   help="multi-process: host:port of process 0 (jax.distributed; or from the "
                        "environment on TPU / SLURM / JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", type=positive_int, default=None,
                   help="multi-process: number of processes")
    g.add_argument("--process-id", type=nonnegative_int, default=None,
                   help="multi-process: this process's index")
    p.set_defaults(func=cmd_attribute)

    p = sub.add_parser("report", help="static HTML page of a data-set run (attribute --data)")
    p.add_argument("run", help="the run directory")
    p.add_argument("--out", default=None, help="report directory (default RUN/report)")
    p.add_argument("--limit", type=positive_int, default=200,
                   help="images shown in the grid (tables use all)")
    p.add_argument("--thumb", type=positive_int, default=96, help="picture size in pixels")
    p.add_argument("--force", action="store_true", help="replace an existing report")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("filters", help="a conv layer's filters as a grid (first layer: RGB)")
    p.add_argument("--model", default=None)
    p.add_argument("--layer", default="features.0", help="conv layer name or alias")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--zoom", type=positive_int, default=8, help="pixels per filter tap")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=cmd_filters)

    p = sub.add_parser("activations", help="an image's feature maps at a layer, as a grid")
    p.add_argument("image", nargs="?", default=None, help="image (default: a shapes sample)")
    p.add_argument("--model", default=None)
    p.add_argument("--layer", required=True, help="layer name or alias")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--fit", choices=["resize", "crop"], default="resize")
    p.add_argument("--seed", type=nonnegative_int, default=1)
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=cmd_activations)

    p = sub.add_parser("visualize", help="feature visualization: optimize images for units")
    p.add_argument("--model", default=None)
    p.add_argument("--layer", default=None,
                   help="layer name or alias (default: the logits, i.e. class visualizations)")
    p.add_argument("--channel", type=channel_spec, default=None,
                   help="unit(s): 9, 0,5,9, 0-15, or class names for logit/prob (default: all)")
    p.add_argument("--objective", default=None, choices=OBJECTIVES,
                   help="channel (spatial mean), neuron (centre), layer (DeepDream), logit, prob, "
                   "direction (random); default: logit at the last layer, else channel")
    p.add_argument("--negative", action="store_true", help="minimize the objective instead")
    p.add_argument("--diversity", type=nonnegative_float, default=0.0,
                   help="weight of a diversity term across the batch (needs --batch > 1)")
    p.add_argument("--diversity-layer", default=None,
                   help="layer whose Gram matrices --diversity compares (default: --layer, or the "
                   "last conv block for dense layers and classes)")
    p.add_argument("--directions", type=positive_int, default=4,
                   help="random directions to render")
    p.add_argument("--batch", type=positive_int, default=1, help="images per unit")
    p.add_argument("--size", type=positive_int, default=128, help="image side in pixels")
    p.add_argument("--steps", type=positive_int, default=512, help="optimization steps")
    p.add_argument("--lr", type=positive_float, default=0.05, help="Adam learning rate")
    p.add_argument("--param", choices=["fft", "pixel"], default="fft", help="parameterization")
    p.add_argument("--no-decorrelate", action="store_true", help="optimize plain RGB")
    p.add_argument("--transforms", choices=["standard", "jitter", "none"], default="standard")
    p.add_argument("--chunk", type=positive_int, default=16,
                   help="units rendered per compiled call")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", required=True, help="PNG grid to write (one row per unit if batch>1)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=cmd_visualize)

    p = sub.add_parser("dream", help="DeepDream: amplify what a layer sees, octave by octave")
    p.add_argument("images", nargs="*", help="image files (default: shapes samples)")
    inputs(p, 4)
    p.add_argument("--layer", default="relu3_2" , help="layer name or alias to amplify")
    p.add_argument("--size", type=positive_int, default=None,
                   help="image side to dream at (default: the model's input size)")
    p.add_argument("--octaves", type=positive_int, default=4, help="pyramid levels")
    p.add_argument("--octave-scale", type=positive_float, default=1.4,
                   help="size ratio between octaves (>= 1)")
    p.add_argument("--steps", type=positive_int, default=10, help="steps per octave")
    p.add_argument("--step-size", type=positive_float, default=1.5 / 255,
                   help="step per unit of normalized gradient, in [0, 1] pixel units "
                   "(default 1.5/255, the original's 1.5)")
    p.add_argument("--jitter", type=nonnegative_int, default=None,
                   help="largest random roll in pixels (default: 32/224 of the image side)")
    p.add_argument("--batch", type=positive_int, default=16, help="images dreamed together")
    p.add_argument("--out", required=True, help="output directory (see --force)")
    p.add_argument("--force", action="store_true",
                   help="replace a previous jaxinterp output at --out (never other files)")
    p.add_argument("--no-figures", dest="figures", action="store_false",
                   help="write the pictures only (no dream.png overview)")
    p.set_defaults(func=cmd_dream)

    p = sub.add_parser("invert", help="feature inversion: reconstruct images from several layers")
    p.add_argument("images", nargs="*", help="image files (default: shapes samples)")
    inputs(p, 2)
    p.add_argument("--layers", type=layer_list,
                   default=None, help="comma-separated layers (default: the first ReLU and "
                   "every pooling layer)")
    p.add_argument("--steps", type=positive_int, default=300, help="Adam steps per layer")
    p.add_argument("--lr", type=positive_float, default=0.05, help="Adam learning rate")
    p.add_argument("--tv-weight", type=nonnegative_float, default=0.5,
                   help="weight of the total-variation prior")
    p.add_argument("--param", choices=["pixel", "fft"], default="pixel", help="parameterization")
    p.add_argument("--out", required=True, help="PNG figure to write")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=cmd_invert)

    p = sub.add_parser("attack", help="adversarial examples (FGSM, PGD) and a success table")
    p.add_argument("images", nargs="*", help="image files (default: shapes samples)")
    inputs(p, 8)
    p.add_argument("--attack", choices=["pgd", "fgsm"], default="pgd")
    p.add_argument("--eps", type=eps_list, default=eps_list("1/255,2/255,4/255,8/255"),
                   help="budgets in [0, 1] pixel units, e.g. 2/255,8/255 (figure: the largest)")
    p.add_argument("--norm", choices=["linf", "l2"], default="linf")
    p.add_argument("--steps", type=positive_int, default=10, help="PGD steps")
    p.add_argument("--restarts", type=positive_int, default=1, help="PGD random restarts")
    p.add_argument("--target", default="auto",
                   help="auto (untargeted, away from the predicted class), or a class index or "
                   "name to reach (targeted)")
    p.add_argument("--batch", type=positive_int, default=32, help="images attacked together")
    p.add_argument("--out", required=True, help="output directory (see --force)")
    p.add_argument("--force", action="store_true",
                   help="replace a previous jaxinterp output at --out (never other files)")
    p.add_argument("--no-figures", dest="figures", action="store_false",
                   help="write the pictures only (no attack.png overview)")
    p.set_defaults(func=cmd_attack)

    def synthesis_options(p, steps):
        p.add_argument("--model", default=None, help="model name or checkpoint (default vgg-mini)")
        p.add_argument("--avg-pool", action="store_true",
                       help="use average pooling with the same weights (Gatys et al.)")
        p.add_argument("--size", type=positive_int, default=None,
                       help="image side the inputs are loaded at (default: the model's input)")
        p.add_argument("--fit", choices=["resize", "crop"], default="resize")
        p.add_argument("--steps", type=positive_int, default=steps, help="optimizer iterations")
        p.add_argument("--optimizer", choices=["lbfgs", "lbfgs-fixed", "adam"], default="lbfgs",
                       help="lbfgs: zoom line search; lbfgs-fixed: step 1, no line search "
                       "(torch.optim.LBFGS's default, faster per iteration); adam")
        p.add_argument("--lr", type=positive_float, default=0.02, help="Adam's learning rate")
        p.add_argument("--layers", type=layer_list,
                       default=None, help="comma-separated style layers (default: Gatys et al.'s)")
        p.add_argument("--snapshots", type=positive_int, default=5,
                       help="snapshots in snapshots.png (also the compiled chunks of the run)")
        p.add_argument("--checkpoint-dir", default=None,
                       help="save the run there after every chunk and resume from it")
        p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the noise start")
        p.add_argument("--out", required=True, help="output directory (see --force)")
        p.add_argument("--force", action="store_true",
                       help="replace a previous jaxinterp output at --out (never other files)")

    p = sub.add_parser("texture", help="Gram-matrix texture synthesis (Gatys et al. 2015)")
    p.add_argument("style", help="style image (any Pillow format)")
    synthesis_options(p, 200)
    p.add_argument("--normalization", choices=["paper", "tutorial"], default="paper")
    p.set_defaults(func=cmd_texture)

    p = sub.add_parser("style", help="neural style transfer (Gatys et al. 2016)")
    p.add_argument("content", help="content image")
    p.add_argument("style", help="style image")
    synthesis_options(p, 200)
    p.add_argument("--normalization", choices=["paper", "tutorial"], default="tutorial")
    p.add_argument("--content-layer", default=None, help="default: relu4_2 (relu3_2 on vgg-mini)")
    p.add_argument("--content-weight", type=nonnegative_float, default=1.0)
    p.add_argument("--style-weight", type=nonnegative_float, default=1e6)
    p.add_argument("--tv-weight", type=nonnegative_float, default=0.0)
    p.add_argument("--init", choices=["content", "noise"], default="content")
    p.set_defaults(func=cmd_style)

    def shapes_data(p, samples, batch=64):
        p.add_argument("--model", default=None, help="model name or checkpoint (default vgg-mini)")
        p.add_argument("--samples", type=positive_int, default=samples,
                       help="shapes images in the data set (generated, streamed)")
        p.add_argument("--seed", type=nonnegative_int, default=1000003,
                       help="seed of the shapes data set (default: the held-out seed)")
        p.add_argument("--batch", type=positive_int, default=batch, help="images per compiled call")

    p = sub.add_parser("dissect", help="network dissection on shapes (NetDissect's IoU)")
    shapes_data(p, 2000)
    p.add_argument("--layers", type=layer_list,
                   default=None, help="comma-separated layers (default: every ReLU)")
    p.add_argument("--quantile", type=positive_float, default=0.005)
    p.add_argument("--iou-threshold", type=nonnegative_float, default=0.04)
    p.add_argument("--show", type=positive_int, default=8, help="units per layer figure")
    p.add_argument("--out", required=True, help="output directory (see --force)")
    p.add_argument("--force", action="store_true",
                   help="replace a previous jaxinterp output at --out (never other files)")
    p.add_argument("--no-figures", dest="figures", action="store_false")
    p.set_defaults(func=cmd_dissect)

    p = sub.add_parser("top", help="the images / patches that activate units most")
    shapes_data(p, 1000)
    p.add_argument("--layer", required=True, help="layer name or alias")
    p.add_argument("--channel", type=channel_spec, default=None, help="units (default: all)")
    p.add_argument("--max-units", type=positive_int, default=16, help="at most this many rows")
    p.add_argument("--k", type=positive_int, default=9, help="images per unit")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=cmd_top)

    p = sub.add_parser("neighbors", help="nearest neighbours of images in a layer's features")
    p.add_argument("images", nargs="*", help="query images (default: --queries shapes images)")
    shapes_data(p, 1000)
    p.add_argument("--fit", choices=["resize", "crop"], default="resize")
    p.add_argument("--queries", type=positive_int, default=4, help="shapes queries if no image")
    p.add_argument("--layer", default="gap", help="layer name or alias (flattened)")
    p.add_argument("--k", type=positive_int, default=5)
    p.add_argument("--metric", choices=["l2", "cosine"], default="l2")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=cmd_neighbors)

    p = sub.add_parser("embed", help="a 2-D map (PCA, t-SNE, UMAP) of a layer's features")
    shapes_data(p, 500)
    p.add_argument("--layer", default="gap", help="layer name or alias (flattened)")
    p.add_argument("--method", choices=["pca", "tsne", "umap"], default="pca",
                   help="tsne / umap need the extra: pip install \"jaxinterp[concepts]\"")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("tcav", help="TCAV: does a concept matter to a class? (t-test)")
    shapes_data(p, 2000)
    p.add_argument("--layer", default="relu3_2", help="layer name or alias (bottleneck)")
    p.add_argument("--concept", type=_concept_spec, action="append", required=True,
                   help="shape:NAME, color:NAME or texture:NAME (repeat for several)")
    p.add_argument("--target", required=True, help="class index or name")
    p.add_argument("--runs", type=positive_int, default=10, help="random sets")
    p.add_argument("--alpha", type=positive_float, default=0.05, help="significance level")
    p.add_argument("--concept-size", type=positive_int, default=30, help="concept examples")
    p.add_argument("--random", type=positive_int, default=300, help="random pool size")
    p.add_argument("--inputs", type=positive_int, default=40, help="class images tested")
    p.set_defaults(func=cmd_tcav)
    return ap


# Errors that mean "the command was given something it cannot use": exit 2, like argparse's.
USAGE_ERRORS = (ValueError, TypeError, KeyError, LookupError, FileNotFoundError, FileExistsError,
                IsADirectoryError, NotADirectoryError, PermissionError, ImportError)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived (raised from the signal handler)."""


def _interrupt(signum, frame):
    _interrupt.received = signum
    raise Interrupted(signal.Signals(signum).name)


_interrupt.received = None


def main(argv: list[str] | None = None) -> int:
    """Runs a command. Exit status: 0 done, 1 a failure (or some inputs failed), 2 a usage
    error (bad option, file, model or value), 130 interrupted (SIGINT/SIGTERM; nothing
    half-written is left in place)."""
    args = build_parser().parse_args(argv)
    args.failed = []
    _interrupt.received = None
    enable_compilation_cache()
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = args.func(args)
    except (Interrupted, KeyboardInterrupt):
        code = None
    except Exception as e:  # noqa: BLE001 — one handler: a one-line message, the trace on --debug
        if args.debug:
            traceback.print_exc()
        message = str(e).strip() or type(e).__name__
        usage = isinstance(e, USAGE_ERRORS)
        if type(e).__name__ == "JaxRuntimeError":  # XLA failed; a usage error only if a check
            usage = "InputError" in message       # compiled into the program raised it
            message = message.strip().splitlines()[-1]
        kind = "error" if usage else f"failed ({type(e).__name__})"
        print(f"jaxinterp: {kind}: {message}", file=sys.stderr)
        code = 2 if usage else 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code is None or _interrupt.received is not None:  # even if a library swallowed it
        print("jaxinterp: interrupted; nothing half-written was left in place", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
