"""Trains the embedded defaults, `vgg-mini` (or `vit-mini`), on a stream of fresh `shapes` images.

    python scripts/train_default.py                       # writes weights/vgg-mini/
    python scripts/train_default.py --steps 200 --out /tmp/mini   # a quick run
    python scripts/train_default.py --arch vit-mini       # writes weights/vit-mini/ (its own
                                                          # defaults: see VIT_DEFAULTS)
    python scripts/train_default.py --arch vit-mini --init-from CKPT --start-step 8000 ...
                                                          # a second stage (see weights' metadata)

Each step draws a new batch (`shapes(train_key, batch, start=step * batch)`) inside the compiled
step, so no image is seen twice. Test accuracy is measured on 2,000 images of a seed never used in
training and written into the checkpoint's metadata with the training config.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jaxinterp as ji  # noqa: E402
from jaxinterp import model as model_lib  # noqa: E402
from jaxinterp.data import shapes_dataset as shapes_lib  # noqa: E402

TRAIN_SEED = 0
TEST_SEED = 1_000_003  # held out: never used for training
# A ViT has no convolutional prior: more steps, a longer warm-up and stronger weight decay than
# vgg-mini (the usual ViT recipe, scaled down); 3e-3 beat 1e-3 and 3e-4 over 500 steps.
VIT_DEFAULTS = {"steps": 8000, "lr": 3e-3, "warmup": 400, "weight_decay": 0.05}


def make_step(module, opt, batch, smoothing, preprocess):
    key = jax.random.key(TRAIN_SEED)

    def loss_fn(params, stats, x, y):
        if stats is None:  # a ViT: no BatchNorm
            logits, mut = module.apply({"params": params}, preprocess(x)), {"batch_stats": None}
        else:
            logits, mut = module.apply({"params": params, "batch_stats": stats}, preprocess(x),
                                       train=True, mutable=["batch_stats"])
            logits = logits[0]
        labels = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1]), smoothing)
        loss = optax.softmax_cross_entropy(logits, labels).mean()
        return loss, (mut["batch_stats"], (logits.argmax(-1) == y).mean())

    @jax.jit
    def step(params, stats, opt_state, i):
        data = shapes_lib._shapes(key, batch, (i * batch).astype(jnp.uint32), shapes_lib.SIZE)
        (loss, (stats, acc)), g = jax.value_and_grad(loss_fn, has_aux=True)(
            params, stats, data["images"], data["labels"])
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, loss, acc

    return step


def scale_init(params, scale: float):
    """The initial parameters with the position embedding and every query / key kernel times
    `scale` (attention far from uniform from the first step)."""
    def f(path, v):
        names = [str(getattr(k, "key", k)) for k in path]
        hit = names[-1] == "pos_embedding" or (names[-1] == "kernel"
                                               and names[-2] in ("query", "key"))
        return v * scale if hit else v
    return params if scale == 1.0 else jax.tree_util.tree_map_with_path(f, params)


def evaluate(m, n, seed=TEST_SEED, chunk=500):
    """Accuracy and per-class accuracy of `m` on `n` shapes images of `seed`."""
    fwd = jax.jit(lambda m, x: m(x, check=False)[0].argmax(-1))
    preds, labels = [], []
    for start in range(0, n, chunk):
        b = ji.data.shapes(jax.random.key(seed), min(chunk, n - start), start=start)
        preds.append(np.asarray(fwd(m, b.images)))
        labels.append(np.asarray(b.labels))
    p, y = np.concatenate(preds), np.concatenate(labels)
    per_class = {c: float((p[y == i] == i).mean()) for i, c in enumerate(shapes_lib.CLASSES)}
    return float((p == y).mean()), per_class


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--arch", choices=model_lib.SHAPES_ARCHS, default="vgg-mini")
    ap.add_argument("--steps", type=int, default=None, help="default 2400 (vit-mini: 8000)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=None, help="peak rate, default 3e-3 (vit-mini too)")
    ap.add_argument("--warmup", type=int, default=None, help="default 100 (vit-mini: 400)")
    ap.add_argument("--weight-decay", type=float, default=None,
                    help="default 5e-4 (vit-mini: 0.05)")
    ap.add_argument("--smoothing", type=float, default=0.05)
    ap.add_argument("--init-scale", type=float, default=None,
                    help="vit-mini: factor on the initial position embedding and query / key "
                         "kernels (sharper attention from the start), default 1")
    ap.add_argument("--test", type=int, default=2000, help="held-out test images")
    ap.add_argument("--init-from", default=None,
                    help="continue from this checkpoint (a second stage: its metadata is kept "
                         "under 'previous_stage'; batches continue after --start-step)")
    ap.add_argument("--start-step", type=int, default=0,
                    help="index of the first batch drawn (a second stage starts after the "
                         "first's last batch, so no image is seen twice)")
    ap.add_argument("--out", default=None, help="default weights/<arch>/")
    ap.add_argument("--force", action="store_true", help="overwrite --out")
    args = ap.parse_args(argv)
    defaults = VIT_DEFAULTS if args.arch == "vit-mini" else {
        "steps": 2400, "lr": 3e-3, "warmup": 100, "weight_decay": 5e-4}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.init_scale is None:
        args.init_scale = VIT_DEFAULTS.get("init_scale", 1.0) if args.arch == "vit-mini" else 1.0
    if args.init_scale != 1.0 and args.arch != "vit-mini":
        ap.error("--init-scale applies to vit-mini only")
    if not 0 <= args.warmup < args.steps:
        ap.error(f"--warmup ({args.warmup}) must be below --steps ({args.steps})")
    if args.out is None:
        args.out = str(Path(__file__).resolve().parent.parent / "weights" / args.arch)
    from tqdm import tqdm

    meta = model_lib.model_meta(args.arch)
    module = model_lib.build_module(meta)
    previous = None
    if args.init_from:
        init = ji.load_model(args.init_from)
        if init.arch != args.arch:
            ap.error(f"--init-from holds {init.arch}, not {args.arch}")
        previous = init.meta.extra
        params, stats = init.variables["params"], init.variables.get("batch_stats")
    else:
        init = model_lib.init_model(args.arch, jax.random.key(TRAIN_SEED + 1))
        params, stats = init.variables["params"], init.variables.get("batch_stats")
        params = scale_init(params, args.init_scale)
    sched = optax.warmup_cosine_decay_schedule(0.0, args.lr, args.warmup, args.steps, args.lr * 1e-3)
    opt = optax.adamw(sched, weight_decay=args.weight_decay)
    opt_state = opt.init(params)
    step = make_step(module, opt, args.batch, args.smoothing, meta.preprocess)

    t0, history = time.time(), []
    bar = tqdm(range(args.steps), desc=f"train {args.arch}", unit="step")
    for i in bar:
        params, stats, opt_state, loss, acc = step(params, stats, opt_state,
                                                   jnp.uint32(args.start_step + i))
        if i % 25 == 0 or i == args.steps - 1:
            history.append({"step": i, "loss": round(float(loss), 4),
                            "batch_accuracy": round(float(acc), 4),
                            "seconds": round(time.time() - t0, 1)})
            bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{float(acc):.3f}")
    train_s = time.time() - t0

    variables = {"params": params} if stats is None else {"params": params, "batch_stats": stats}
    m = model_lib.assemble(module, variables, meta)
    acc, per_class = evaluate(m, args.test)
    print(f"test accuracy {acc:.4f} on {args.test} images (seed {TEST_SEED}); per class:",
          json.dumps({k: round(v, 4) for k, v in per_class.items()}))
    extra = {
        "dataset": {"name": "shapes", "version": shapes_lib.VERSION, "train_seed": TRAIN_SEED,
                    "images_seen": args.steps * args.batch,
                    "first_batch": args.start_step},
        "training": {"steps": args.steps, "batch": args.batch, "optimizer": "adamw",
                     "lr": args.lr, "warmup": args.warmup, "schedule": "warmup_cosine",
                     "weight_decay": args.weight_decay, "label_smoothing": args.smoothing,
                     "init_scale": args.init_scale,
                     "seconds": round(train_s, 1), "jax": jax.__version__,
                     "history": history},
        "test": {"seed": TEST_SEED, "images": args.test, "accuracy": acc,
                 "per_class_accuracy": per_class},
    }
    if previous is not None:  # a second stage: the first stage's record, history dropped
        previous = json.loads(previous) if isinstance(previous, str) else dict(previous)
        previous.get("training", {}).pop("history", None)
        extra["previous_stage"] = previous
        extra["training"]["init_from"] = "the previous stage's checkpoint"
    m = model_lib.assemble(module, variables,
                           model_lib.Meta(meta.arch, meta.config, meta.classes, meta.input_size,
                                          meta.preprocess, json.dumps(extra, sort_keys=True)))
    path = ji.save_model(m, args.out, overwrite=args.force)
    print(f"wrote {path} ({train_s / 60:.1f} min of training)")


if __name__ == "__main__":
    main()
