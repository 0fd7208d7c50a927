"""Optimization: `visualize`, `dream`, `invert`, `attack`, `texture`, `style`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (COMPARE_ROWS, MAX_SIDE, _batches, _check_out_file, _entry, _finish, _number,
                     _parse_units, _run_dir_command, _save_figure, _save_new, _targets, _total,
                     activation_bytes, add_inputs, at_least_one, batch_size, busy, channel_spec,
                     check_images_memory, check_memory, layer_list, load_input,
                     nonnegative_float, nonnegative_int, positive_float, positive_int, progress,
                     side)


OBJECTIVES = ("channel", "neuron", "layer", "logit", "prob", "direction")


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
    from jaxinterp.rules import UnsupportedReLU

    _check_out_file(args)
    m = ji.load_model(args.model)
    objs, labels = _visualize_objectives(args, m)
    opts = dict(size=args.size, steps=args.steps, lr=args.lr, param=args.param,
                decorrelate=not args.no_decorrelate, transforms=args.transforms, batch=args.batch,
                redirect_relu=args.redirect_relu)
    chunk = max(1, min(args.chunk, len(objs)))
    check_memory(f"visualize at --size {args.size} with {chunk} units x --batch {args.batch} per "
                 f"call ({len(objs)} units)",
                 chunk * args.batch * 2 * activation_bytes(m, args.size)
                 + len(objs) * args.batch * 12 * args.size ** 2)
    key, images, scores = jax.random.key(args.seed), [], []
    for start in progress(range(0, len(objs), chunk), desc="visualize", unit="chunk",
                          disable=len(objs) <= chunk):
        part = objs[start:start + chunk]
        part = part + [part[-1]] * (chunk - len(part))  # one compiled shape for every chunk
        try:
            r = ji.visualize_units(m, part, key=jax.random.fold_in(key, start), **opts)
        except UnsupportedReLU as e:  # the library says redirect_relu=False: the option here
            message = str(e).replace("pass redirect_relu=False", "pass --no-redirect-relu")
            if "--no-redirect-relu" not in message:
                message = f"{message.rstrip('.')}; pass --no-redirect-relu to optimize through " \
                    "the plain gradient"
            raise ValueError(message) from None
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


def cmd_dream(args) -> int:
    import numpy as np

    import jaxinterp as ji
    from jaxinterp import viz
    from jaxinterp.images import save_image

    def body(run, m):
        m.resolve(args.layer)
        size = (args.size, args.size) if args.size else None
        check_images_memory(m, f"dream at --size {(size or m.input_size)[0]} x --batch "
                            f"{min(args.batch, _total(args))}", min(args.batch, _total(args)),
                            size or m.input_size)
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
    check_images_memory(m, f"invert of {_total(args)} images", _total(args), m.input_size)
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
        n = min(args.batch, _total(args)) * len(eps) * (
            args.restarts if args.attack == "pgd" else 1)
        check_images_memory(m, f"attack of --batch {min(args.batch, _total(args))} x {len(eps)} "
                            f"budgets x --restarts {args.restarts}", n, m.input_size)
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


MAX_SNAPSHOTS = 20  # panels in snapshots.png (2 inches each)
STYLE_SIZE = 128  # style's default side: at the model's 64 px, vgg-mini's style loses the content
snapshots = _number(int, 0, strict=True, maximum=MAX_SNAPSHOTS, why=" panels")


def _synthesis(args, name: str, spec) -> int:
    """Shared body of `texture` and `style`: chunks with a progress bar, snapshots as a strip.
    Writes the inputs under their names (`spec["inputs"]`), `result.png` and `snapshots.png`."""
    import contextlib

    import numpy as np

    from jaxinterp import viz
    from jaxinterp.images import save_image

    def body(out, m):
        if args.avg_pool:
            m = m.with_pool("avg")
        if args.size:
            size = (args.size, args.size)
        elif spec.get("size"):  # style's default: STYLE_SIZE or the model's input if larger
            size = (max(spec["size"], *m.input_size),) * 2
        else:
            size = tuple(m.input_size)
        inputs = spec["inputs"](args)
        check_images_memory(m, f"{name} at --size {size[0]}", len(inputs) + 1, size)
        images = {k: load_input(v, size, fit=args.fit) for k, v in inputs.items()}
        every = max(1, -(-args.steps // args.snapshots))
        snaps, bar = [], progress(range(args.steps), desc=name, unit="step",
                                  disable=args.steps <= every)
        if not hasattr(bar, "update"):  # one compiled call: a status line instead of a bar
            bar = None

        def on_chunk(done, steps, carry):
            snaps.append((done, np.asarray(carry[0][0])))
            if bar is not None:
                bar.update(done - bar.n)

        with busy(name) if bar is None else contextlib.nullcontext():
            r = spec["call"](m, images, every, on_chunk)
        if bar is not None:
            bar.close()
        losses = np.asarray(r.losses[:, 0])
        resumed = args.steps - len(losses)  # steps done by an earlier run (--checkpoint-dir)
        for k, v in images.items():
            save_image(v, out.path(f"{k}.png"))
        save_image(np.asarray(r.images[0]), out.path("result.png"))
        panels = [[*images.values(), *[s[1] for s in snaps]]]
        titles = [*images.keys(), *[f"step {d}" + (" (resumed)" if d == resumed and d else "")
                                    for d, _ in snaps]]
        viz.panel_figure(panels, titles, [""], out.path("snapshots.png"), panel=2.0)
        final = float(r.style_loss[0] + r.content_loss[0])
        start = (f"loss {losses[0]:.4g} -> " if len(losses) else "loss ") + f"{final:.4g}"
        print(f"{start} (style {float(r.style_loss[0]):.4g}, content "
              f"{float(r.content_loss[0]):.4g}) in {args.steps} {args.optimizer} iterations"
              + (f" (resumed at step {resumed}: the loss before it is not kept)" if resumed
                 else ""))
        record = {"inputs": {k: str(v) for k, v in inputs.items()},
                  "options": {**{k: getattr(args, k) for k in spec["options"]},
                              "size": size[0] if size[0] == size[1] else list(size)},
                  "first_loss": float(losses[0]) if len(losses) and not resumed else None,
                  "final_style_loss": float(r.style_loss[0]),
                  "final_content_loss": float(r.content_loss[0])}
        if resumed:
            record["resumed_at_step"] = resumed
            record["loss_at_resume"] = float(losses[0]) if len(losses) else None
        return record, "wrote result.png and snapshots.png to"

    return _run_dir_command(args, name, body)


def cmd_texture(args) -> int:
    import jaxinterp as ji

    def call(m, images, every, on_chunk):
        return ji.texture(m, images["source"], layers=args.layers, steps=args.steps,
                          optimizer=args.optimizer, normalization=args.normalization,
                          lr=args.lr, key=args.seed, checkpoint_every=every,
                          checkpoint_dir=args.checkpoint_dir, progress=on_chunk)

    return _synthesis(args, "texture", {
        "inputs": lambda a: {"source": a.source}, "call": call,
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
        "size": STYLE_SIZE,
        "options": ("size", "steps", "optimizer", "normalization", "layers", "content_layer",
                    "content_weight", "style_weight", "tv_weight", "init", "lr", "seed",
                    "avg_pool")})


def register(sub) -> None:
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
    p.add_argument("--batch", type=batch_size, default=1, help="images per unit")
    p.add_argument("--size", type=side, default=128,
                   help=f"image side in pixels (at most {MAX_SIDE}; --size x --chunk x --batch "
                   "is checked against memory)")
    p.add_argument("--steps", type=positive_int, default=512, help="optimization steps")
    p.add_argument("--lr", type=positive_float, default=0.05, help="Adam learning rate")
    p.add_argument("--param", choices=["fft", "pixel"], default="fft", help="parameterization")
    p.add_argument("--no-decorrelate", action="store_true", help="optimize plain RGB")
    p.add_argument("--transforms", choices=["standard", "jitter", "none"], default="standard")
    p.add_argument("--chunk", type=batch_size, default=16,
                   help="units rendered per compiled call (memory bound)")
    p.add_argument("--no-redirect-relu", dest="redirect_relu", action="store_false",
                   default=None,
                   help="back-propagate the plain ReLU gradient (for models whose ReLUs cannot "
                   "be redirected; models without ReLUs, a ViT, take it anyway)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", required=True, help="PNG grid to write (one row per unit if batch>1)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=cmd_visualize)

    p = sub.add_parser("dream", help="DeepDream: amplify what a layer sees, octave by octave")
    p.add_argument("images", nargs="*", help="image files (default: shapes samples)")
    add_inputs(p, 4)
    p.add_argument("--layer", default="relu3_2" , help="layer name or alias to amplify")
    p.add_argument("--size", type=side, default=None,
                   help=f"image side to dream at (default: the model's input size; at most "
                   f"{MAX_SIDE}, and --size x --batch is checked against memory)")
    p.add_argument("--octaves", type=positive_int, default=4, help="pyramid levels")
    p.add_argument("--octave-scale", type=at_least_one, default=1.4,
                   help="size ratio between octaves (>= 1)")
    p.add_argument("--steps", type=positive_int, default=10, help="steps per octave")
    p.add_argument("--step-size", type=positive_float, default=1.5 / 255,
                   help="step per unit of normalized gradient, in [0, 1] pixel units "
                   "(default 1.5/255, the original's 1.5)")
    p.add_argument("--jitter", type=nonnegative_int, default=None,
                   help="largest random roll in pixels (default: 32/224 of the image side)")
    p.add_argument("--batch", type=batch_size, default=16,
                   help="images dreamed together (memory bound)")
    p.add_argument("--out", required=True, help="output directory (see --force)")
    p.add_argument("--force", action="store_true",
                   help="replace a previous jaxinterp output at --out (never other files)")
    p.add_argument("--no-figures", dest="figures", action="store_false",
                   help="write the pictures only (no dream.png overview)")
    p.set_defaults(func=cmd_dream)

    p = sub.add_parser("invert", help="feature inversion: reconstruct images from several layers")
    p.add_argument("images", nargs="*", help="image files (default: shapes samples)")
    add_inputs(p, 2)
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
    add_inputs(p, 8)
    p.add_argument("--attack", choices=["pgd", "fgsm"], default="pgd")
    p.add_argument("--eps", type=eps_list, default=eps_list("1/255,2/255,4/255,8/255"),
                   help="budgets in [0, 1] pixel units, e.g. 2/255,8/255 (figure: the largest)")
    p.add_argument("--norm", choices=["linf", "l2"], default="linf")
    p.add_argument("--steps", type=positive_int, default=10, help="PGD steps")
    p.add_argument("--restarts", type=positive_int, default=1,
                   help="PGD random restarts (--batch x budgets x restarts images are attacked "
                   "at once: checked against memory)")
    p.add_argument("--target", default="auto",
                   help="auto (untargeted, away from the predicted class), or a class index or "
                   "name to reach (targeted)")
    p.add_argument("--batch", type=batch_size, default=32,
                   help="images attacked together (memory bound)")
    p.add_argument("--out", required=True, help="output directory (see --force)")
    p.add_argument("--force", action="store_true",
                   help="replace a previous jaxinterp output at --out (never other files)")
    p.add_argument("--no-figures", dest="figures", action="store_false",
                   help="write the pictures only (no attack.png overview)")
    p.set_defaults(func=cmd_attack)

    def synthesis_options(p, steps, default_size):
        p.add_argument("--model", default=None, help="model name or checkpoint (default vgg-mini)")
        p.add_argument("--avg-pool", action="store_true",
                       help="use average pooling with the same weights (Gatys et al.)")
        p.add_argument("--size", type=side, default=None,
                       help=f"image side the inputs are loaded at (default: {default_size}; at "
                       f"most {MAX_SIDE}, and checked against memory)")
        p.add_argument("--fit", choices=["resize", "crop"], default="resize")
        p.add_argument("--steps", type=positive_int, default=steps, help="optimizer iterations")
        p.add_argument("--optimizer", choices=["lbfgs", "lbfgs-fixed", "adam"], default="lbfgs",
                       help="lbfgs: zoom line search; lbfgs-fixed: step 1, no line search "
                       "(torch.optim.LBFGS's default, faster per iteration); adam")
        p.add_argument("--lr", type=positive_float, default=0.02, help="Adam's learning rate")
        p.add_argument("--layers", type=layer_list,
                       default=None, help="comma-separated style layers (default: Gatys et al.'s)")
        p.add_argument("--snapshots", type=snapshots, default=5,
                       help="snapshots in snapshots.png (also the compiled chunks of the run; at "
                       f"most {MAX_SNAPSHOTS})")
        p.add_argument("--checkpoint-dir", default=None,
                       help="save the run there after every chunk and resume from it")
        p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the noise start")
        p.add_argument("--out", required=True, help="output directory (see --force)")
        p.add_argument("--force", action="store_true",
                       help="replace a previous jaxinterp output at --out (never other files)")

    p = sub.add_parser("texture", help="Gram-matrix texture synthesis (Gatys et al. 2015)")
    p.add_argument("source", metavar="SOURCE",
                   help="the texture's source image (any Pillow format); writes source.png, "
                   "result.png, snapshots.png")
    synthesis_options(p, 200, "the model's input size")
    p.add_argument("--normalization", choices=["paper", "tutorial"], default="paper")
    p.set_defaults(func=cmd_texture)

    p = sub.add_parser("style", help="neural style transfer (Gatys et al. 2016)")
    p.add_argument("content", help="content image")
    p.add_argument("style", help="style image")
    synthesis_options(p, 200, f"{STYLE_SIZE}, or the model's input size if larger")
    p.add_argument("--normalization", choices=["paper", "tutorial"], default="tutorial")
    p.add_argument("--content-layer", default=None, help="default: relu4_2 (relu3_2 on vgg-mini)")
    p.add_argument("--content-weight", type=nonnegative_float, default=1.0)
    p.add_argument("--style-weight", type=nonnegative_float, default=1e6)
    p.add_argument("--tv-weight", type=nonnegative_float, default=0.0)
    p.add_argument("--init", choices=["content", "noise"], default="content")
    p.set_defaults(func=cmd_style)
