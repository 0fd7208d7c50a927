"""Concepts and features: `filters`, `activations`, `dissect`, `top`, `neighbors`, `embed`,
`tcav`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (MAX_ZOOM, _batches, _check_out_file, _finish, _number, _parse_units,
                     _run_dir_command, _save_figure, _save_new, _targets, activation_bytes,
                     batch_size, busy, channel_spec, check_memory, layer_list, nonnegative_int,
                     positive_int, probability, progress, unit_interval)

MAX_PANELS = 64  # rows or columns of a figure (each panel is drawn: a 64 x 64 figure is ~650 MB)
panels = _number(int, 0, strict=True, maximum=MAX_PANELS, why=" (panels of the figure)")
panels.__name__ = "panels"
zoom = _number(int, 0, strict=True, maximum=MAX_ZOOM,
               why=" (the 512 filters of a VGG16 conv5 layer at zoom 64 take ~230 MB)")
zoom.__name__ = "zoom"


def _check_held(m, what: str, samples: int, layer: str | None = None) -> None:
    """`check_memory` for `samples` shapes images held in memory at once (with their label
    maps), and their flattened `layer` features."""
    h, w = m.input_size
    per = 2 * 12 * h * w + (activation_bytes(m, m.input_size, m.resolve(layer)) if layer else 0)
    check_memory(what, samples * per)


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
    if args.k > args.samples:
        raise ValueError(f"--k {args.k} is more than --samples {args.samples}")
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
    if args.k > args.samples:
        raise ValueError(f"--k {args.k} is more than --samples {args.samples}")
    _check_held(m, f"neighbors among --samples {args.samples}", args.samples)
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
    _check_held(m, f"embed of --samples {args.samples} at {args.layer}", args.samples, args.layer)
    stream, wrap = _shapes_stream(args, m)
    data = list(wrap(stream(), "shapes"))  # the map shows every image: it is in memory anyway
    feats = ji.concepts.features(m, args.layer, data, progress=wrap)
    with busy(f"{args.method} of {len(feats)} points"):
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
    _check_held(m, f"tcav on --samples {args.samples}", args.samples)
    check_memory(f"tcav with --runs {args.runs} x --concept-size {args.concept_size}",
                 (2 * args.runs * args.concept_size + args.random + 2 * args.inputs)
                 * activation_bytes(m, m.input_size, m.resolve(args.layer)))
    with busy(f"shapes: {args.samples} images"):
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
    print(f"{'concept':<20}{'TCAV':>7}{'random':>8}{'p':>10}  significant "
          f"(alpha {args.alpha:g}, {args.alternative})")
    for cat, name in args.concept:
        value = names[cat].index(name)
        concept = x[:half][np.asarray(getattr(d, field[cat]))[:half] == value][: args.concept_size]
        with busy(f"tcav {cat}:{name} ({args.runs} runs)"):
            r = ji.tcav(m, args.layer, concept, pool, inputs, int(target), runs=args.runs,
                        alpha=args.alpha, alternative=args.alternative, key=args.seed)
        print(f"{cat + ':' + name:<20}{r.score:>7.3f}{r.random_scores.mean():>8.3f}"
              f"{r.p_value:>10.2g}  {'yes' if r.significant else 'no'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("filters", help="a conv layer's filters as a grid (first layer: RGB)")
    p.add_argument("--model", default=None)
    p.add_argument("--layer", default="features.0", help="conv layer name or alias")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--zoom", type=zoom, default=8,
                   help=f"pixels per filter tap (at most {MAX_ZOOM})")
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

    def shapes_data(p, samples, batch=64):
        p.add_argument("--model", default=None, help="model name or checkpoint (default vgg-mini)")
        p.add_argument("--samples", type=positive_int, default=samples,
                       help="shapes images in the data set (generated, streamed)")
        p.add_argument("--seed", type=nonnegative_int, default=1000003,
                       help="seed of the shapes data set (default: the held-out seed)")
        p.add_argument("--batch", type=batch_size, default=batch,
                       help="images per compiled call (memory bound)")

    p = sub.add_parser("dissect", help="network dissection on shapes (NetDissect's IoU)")
    shapes_data(p, 2000)
    p.add_argument("--layers", type=layer_list,
                   default=None, help="comma-separated layers (default: every ReLU)")
    p.add_argument("--quantile", type=probability, default=0.005,
                   help="top quantile of a unit's activations that forms its mask, in (0, 1)")
    p.add_argument("--iou-threshold", type=unit_interval, default=0.04,
                   help="IoU over which a unit is a detector, in [0, 1]")
    p.add_argument("--show", type=panels, default=8,
                   help=f"units per layer figure (at most {MAX_PANELS})")
    p.add_argument("--out", required=True, help="output directory (see --force)")
    p.add_argument("--force", action="store_true",
                   help="replace a previous jaxinterp output at --out (never other files)")
    p.add_argument("--no-figures", dest="figures", action="store_false")
    p.set_defaults(func=cmd_dissect)

    p = sub.add_parser("top", help="the images / patches that activate units most")
    shapes_data(p, 1000)
    p.add_argument("--layer", required=True, help="layer name or alias")
    p.add_argument("--channel", type=channel_spec, default=None, help="units (default: all)")
    p.add_argument("--max-units", type=panels, default=16,
                   help=f"at most this many rows (at most {MAX_PANELS})")
    p.add_argument("--k", type=panels, default=9,
                   help=f"images per unit (at most {MAX_PANELS} and --samples)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=cmd_top)

    p = sub.add_parser("neighbors", help="nearest neighbours of images in a layer's features")
    p.add_argument("images", nargs="*", help="query images (default: --queries shapes images)")
    shapes_data(p, 1000)
    p.add_argument("--fit", choices=["resize", "crop"], default="resize")
    p.add_argument("--queries", type=panels, default=4,
                   help=f"shapes queries if no image (at most {MAX_PANELS})")
    p.add_argument("--layer", default="gap", help="layer name or alias (flattened)")
    p.add_argument("--k", type=panels, default=5,
                   help=f"neighbours per query (at most {MAX_PANELS} and --samples)")
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
    p.add_argument("--runs", type=positive_int, default=10,
                   help="random sets (--runs x --concept-size activations are held: checked "
                   "against memory)")
    p.add_argument("--alpha", type=probability, default=0.05,
                   help="significance level, in (0, 1)")
    p.add_argument("--alternative", choices=("two-sided", "greater", "less"),
                   default="two-sided", help="t-test alternative: two-sided (as the paper: the "
                   "concept matters either way), greater (it raises the class score), less")
    p.add_argument("--concept-size", type=positive_int, default=30, help="concept examples")
    p.add_argument("--random", type=positive_int, default=300, help="random pool size")
    p.add_argument("--inputs", type=positive_int, default=40, help="class images tested")
    p.set_defaults(func=cmd_tcav)
