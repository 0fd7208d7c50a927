"""Models and weights: `info`, `weights import`, `predict`."""

from __future__ import annotations

from .common import (_batches, _finish, _padded, _total, add_inputs, batch_size,
                     check_images_memory, positive_int, progress)


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

    lm = _language_model_description(name)
    if lm is not None:
        return lm
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
    else:  # a ResNet / ViT: every submodule's output, by path; parameters of leaf modules
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
             f"parameters {total:,}", ""]
    width = max([14] + [len(name) + 2 for name, _ in rows])
    lines.append(f"{'layer':<{width}}{'alias':<10}{'output (NHWC)':<22}params")
    for name, alias in rows:
        shape = "x".join(map(str, feats[name].shape[1:]))
        lines.append(f"{name:<{width}}{alias or '':<10}{shape:<22}{counts.get(name, 0):,}")
    extra = meta.extra
    if "source" in extra:
        lines += ["", f"imported from {extra['source'].get('file')} "
                  f"({extra['source'].get('format')})"]
    if "test" in extra:
        lines += ["", f"test accuracy {extra['test']['accuracy']:.4f} on {extra['test']['images']} "
                  f"held-out images"]
    return "\n".join(lines)


def _language_model_description(name) -> str | None:
    """`info` of a decoder (an architecture or a language-model checkpoint), else None."""
    import jax
    import numpy as np

    from jaxinterp import weights
    from jaxinterp.models import gpt2 as gpt2_lib

    kind, where = weights.locate(name)
    if kind == "arch" and where not in gpt2_lib.ARCHS:
        return None
    if kind != "arch" and weights.read_metadata(where).get("kind") != "language_model":
        return None
    m = weights.load_model(where, key=0) if kind == "arch" else weights.load_checkpoint(where)
    c, extra = m.config, m.extra
    total = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(m.params))
    lines = [f"model      {m.arch}  ({'random initialization' if kind == 'arch' else where})",
             f"decoder    {c.n_layer} blocks, width {c.n_embd}, {c.n_head} heads, MLP "
             f"{c.inner}, {c.activation_function}, {c.n_positions} positions",
             f"vocabulary {c.vocab_size}; tokenizer "
             f"{m.tokenizer if m.tokenizer is not None else 'none (pass --tokenizer)'}",
             f"parameters {total:,}", "",
             "layers     " + ", ".join(m.layers[:6]) + (", ..." if len(m.layers) > 6 else "")]
    if "source" in extra:
        lines += ["", f"imported from {extra['source'].get('file')} "
                  f"({extra['source'].get('format')})"]
    if "test" in extra:
        lines += ["", "test accuracy " + ", ".join(
            f"{k} {v:.4f}" for k, v in extra["test"].get("accuracy", {}).items())]
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

    m = ji.load_model(args.model)
    fwd = lambda m, x: jax.nn.softmax(m(x)[0])  # noqa: E731 — m(x) runs one compiled program
    chunks = -(-_total(args) // args.batch)
    check_images_memory(m, f"predict with --batch {min(args.batch, _total(args))}",
                        min(args.batch, _total(args)), m.input_size, backward=False)
    for names, x in progress(_batches(args, m, args.batch), desc="predict", unit="batch",
                             total=chunks, disable=chunks <= 1):
        probs = np.asarray(fwd(m, _padded(x, args.batch) if chunks > 1 else x))[: len(x)]
        for name, p in zip(names, probs):
            top = np.argsort(-p)[: args.top]
            preds = ", ".join(f"{m.classes[i]} {100 * p[i]:.1f}%" for i in top)
            print(f"{name}: {preds}")
    return _finish(args)


def register(sub) -> None:
    p = sub.add_parser("info", help="describe a model: layers, output shapes, parameters")
    p.add_argument("model", nargs="?", default=None,
                   help="vgg-mini (default), an architecture (vgg11/13/16/19[_bn], resnet18 …, "
                   "vit_b_16 …), or a checkpoint directory")
    p.set_defaults(func=cmd_info)

    w = sub.add_parser("weights", help="weight files").add_subparsers(dest="action", required=True)
    p = w.add_parser("import", help="import torchvision .pth/.safetensors, Keras .h5 or "
                     "vision_transformer .npz weights")
    p.add_argument("src", help="weight file (for gpt2 also a save_pretrained directory)")
    p.add_argument("--arch", required=True,
                   help="vgg11, vgg13, vgg16, vgg19 (+_bn), vgg-mini, resnet18 … resnet152, "
                   "vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14, vit-mini, gpt2 (a Hugging "
                   "Face GPT-2 model.safetensors / .bin or its save_pretrained directory)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--fmt", choices=["torch", "safetensors", "keras", "npz"], default=None,
                   help="file format (default: from the suffix)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing jaxinterp checkpoint at --out (nothing else)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("predict", help="top-K classes of images (default: shapes samples)")
    p.add_argument("images", nargs="*", help="image files (any Pillow format)")
    add_inputs(p, 8)
    p.add_argument("--top", type=positive_int, default=3, help="classes to show per image")
    p.add_argument("--batch", type=batch_size, default=32,
                   help="images per forward pass (memory bound)")
    p.set_defaults(func=cmd_predict)
