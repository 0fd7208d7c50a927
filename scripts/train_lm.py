"""Trains `lm-mini`, the shipped decoder, on the procedural language of `jaxinterp.text.language`.

    python scripts/train_lm.py                          # writes weights/lm-mini/
    python scripts/train_lm.py --steps 300 --out /tmp/lm   # a quick run

Each step draws a fresh batch (`language.batches`: batch k from seed `--seed + k`), right-padded
to one shape; the loss is the cross-entropy of the answer token alone, read at the prompt's last
position. Exact-answer accuracy is then measured per task on 1,000 examples of seeds never used
in training (`EVAL_SEED + task index`), and the checkpoint is written (atomically, replacing an
earlier one) only if every task reaches `--min-accuracy`; its metadata records the recipe, the
seeds, the curriculum's course and the accuracies.

With GPT-2's initialization (normal 0.02) and the answer as the only target, `kv` and `index` sat
on a plateau (answering some value of the prompt, 25-40 % right) for 10,000+ steps. Two things
get them off it:
- the token and position embeddings and the attention's query / key / value weights start
  `--init-scale` (10) times larger, so attention is far from uniform at the start (`index` is
  then learned in a few hundred steps);
- a curriculum through two easier forms of `kv` (`language.TRAINING_TASKS`): `kv_bare` and
  `kv_open` first (learned in ~300 steps), then with `kv`, then every task; a stage ends when
  its tasks reach `--pass-at` on 200 monitored examples each (checked every 100 steps). The
  third layer makes the step to `kv` reliable (two layers reached it late or not on some seeds).
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
from jaxinterp.models import gpt2 as gpt2_lib  # noqa: E402
from jaxinterp.text import language  # noqa: E402
from jaxinterp.text.model import LanguageModel  # noqa: E402

EVAL_SEED = 1_000_000_000  # task i is evaluated on seed EVAL_SEED + i; training seeds stay below
MONITOR_SEED = EVAL_SEED + 100  # the curriculum's and the progress lines' accuracy (200 each)
CHECK_EVERY = 100  # steps between checks of the curriculum stage's accuracy
# the curriculum: the next stage starts when every task of the current one reaches --pass-at
STAGES = (("kv_bare", "kv_open"), ("kv_bare", "kv_open", "kv"), language.TRAINING_TASKS)


def scale_init(params, scale: float):
    """GPT-2's initial parameters with `wte`, `wpe` and every `c_attn` weight times `scale`."""
    def f(path, v):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        hit = name.endswith("weight") and any(s in name for s in ("wte", "wpe", "c_attn"))
        return v * scale if hit else v

    return jax.tree_util.tree_map_with_path(f, params)


def make_step(module, opt):
    def loss_fn(params, ids, last, answers):
        logits, _ = module.apply({"params": params}, ids)
        logits = logits[jnp.arange(ids.shape[0]), last]  # [B, V] at each prompt's `?`
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, answers).mean()
        return loss, (logits.argmax(-1) == answers).mean()

    @jax.jit
    def step(params, opt_state, ids, last, answers):
        (loss, acc), g = jax.value_and_grad(loss_fn, has_aux=True)(params, ids, last, answers)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    return step


@jax.jit
def predict(m: LanguageModel, ids, last):
    """The most likely token after each prompt `[N]` (read at position `last`)."""
    return m(ids)[0][jnp.arange(ids.shape[0]), last].argmax(-1)


def evaluate(m: LanguageModel, n: int, seed: int = EVAL_SEED, tasks=language.TASKS,
             chunk: int = 500) -> dict[str, float]:
    """Exact-answer accuracy per task on `n` examples of each task's held-out seed
    (`seed` + its index in `language.TRAINING_TASKS`)."""
    width = language.max_prompt_length()
    out = {}
    for task in tasks:
        ex = language.sample(seed + language.TRAINING_TASKS.index(task), n, task)
        right = 0
        for s in range(0, n, chunk):
            ids, last, answers = language.stack(ex[s:s + chunk], width)
            right += int((np.asarray(predict(m, ids, last)) == answers).sum())
        out[task] = right / n
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0, help="init seed; batch k uses seed + k")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ap.add_argument("--warmup", type=int, default=200, help="at most half the steps")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--init-scale", type=float, default=10.0,
                    help="factor on the initial wte, wpe and c_attn weights")
    ap.add_argument("--pass-at", type=float, default=0.95,
                    help="a curriculum stage ends when its tasks reach this (monitored)")
    ap.add_argument("--layers", type=int, default=None, help="default: lm-mini's")
    ap.add_argument("--width", type=int, default=None, help="default: lm-mini's")
    ap.add_argument("--heads", type=int, default=None, help="default: lm-mini's")
    ap.add_argument("--eval", type=int, default=1000, help="held-out examples per task")
    ap.add_argument("--min-accuracy", type=float, default=0.99,
                    help="write the checkpoint only if every task reaches this")
    ap.add_argument("--log-every", type=int, default=250)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "weights"
                                         / "lm-mini"))
    args = ap.parse_args(argv)
    args.warmup = min(args.warmup, args.steps // 2)
    if args.seed + args.steps > EVAL_SEED:
        ap.error(f"training seeds must stay below the evaluation seeds ({EVAL_SEED})")

    overrides = {k: v for k, v in (("n_layer", args.layers), ("n_embd", args.width),
                                   ("n_head", args.heads)) if v is not None}
    tok = language.tokenizer()
    cfg = gpt2_lib.config_for("lm-mini", **overrides)
    if len(tok) > cfg.vocab_size:
        raise SystemExit(f"the language has {len(tok)} tokens, lm-mini {cfg.vocab_size}")
    m = ji.text.init_language_model("lm-mini", jax.random.key(args.seed), tokenizer=tok,
                                    **overrides)
    sched = optax.warmup_cosine_decay_schedule(0.0, args.lr, args.warmup, args.steps,
                                               args.lr * 1e-2)
    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.adamw(sched, weight_decay=args.weight_decay))
    params = scale_init(m.params, args.init_scale)
    opt_state = opt.init(params)
    step = make_step(m.module, opt)

    print(f"lm-mini: {cfg.n_layer} layers, width {cfg.n_embd}, {cfg.n_head} heads, "
          f"{sum(p.size for p in jax.tree_util.tree_leaves(params)):,} parameters", flush=True)
    t0, history, stages, losses, accs = time.time(), [], [], [], []
    stage = 0
    data = language.batches(args.seed, args.batch, STAGES[0])
    for i in range(args.steps):
        params, opt_state, loss, acc = step(params, opt_state, *next(data))
        losses.append(loss)
        accs.append(acc)
        log = (i + 1) % args.log_every == 0 or i + 1 == args.steps
        if (i + 1) % CHECK_EVERY and not log:
            continue
        held = evaluate(LanguageModel(m.module, params), 200, MONITOR_SEED, STAGES[stage])
        if stage + 1 < len(STAGES) and min(held.values()) >= args.pass_at:
            stage += 1
            stages.append(i + 1)
            print(f"step {i + 1:5d}  stage {stage + 1}: {', '.join(STAGES[stage])}", flush=True)
            data = language.batches(args.seed, args.batch, STAGES[stage], start=i + 1)
        if log:
            loss, acc = float(np.mean(losses)), float(np.mean(accs))
            losses, accs = [], []
            s = time.time() - t0
            history.append({"step": i + 1, "loss": round(loss, 4), "batch_accuracy": round(acc, 4),
                            "seconds": round(s, 1), "held_out": held})
            print(f"step {i + 1:5d}  loss {loss:.4f}  accuracy {acc:.4f}  "
                  f"({s / (i + 1) * 1e3:.1f} ms/step)  held out: "
                  + "  ".join(f"{k} {v:.3f}" for k, v in held.items()), flush=True)
    train_s = time.time() - t0

    m = LanguageModel(m.module, params, tok, "lm-mini")
    acc = evaluate(m, args.eval)
    print("held-out exact-answer accuracy:", json.dumps({k: round(v, 4) for k, v in acc.items()}))
    if min(acc.values()) < args.min_accuracy:
        print(f"not written: a task is below {args.min_accuracy:.0%}", file=sys.stderr)
        return 1
    extra = {
        "dataset": {"name": "text.language", "tasks": list(language.TASKS),
                    "lengths": {k: list(v) for k, v in language.LENGTHS.items()},
                    "curriculum": {"stages": [list(t) for t in STAGES], "pass_at": args.pass_at,
                                   "started_at_steps": stages},
                    "train_seeds": [args.seed, args.seed + args.steps - 1],
                    "examples_seen": args.steps * args.batch},
        "training": {"steps": args.steps, "batch": args.batch, "init_seed": args.seed,
                     "init": f"GPT-2's, wte / wpe / c_attn weights x {args.init_scale:g}",
                     "optimizer": "adamw", "lr": args.lr, "warmup": args.warmup,
                     "schedule": "warmup_cosine", "weight_decay": args.weight_decay,
                     "clip_global_norm": 1.0, "loss": "cross-entropy of the answer token",
                     "seconds": round(train_s, 1), "jax": jax.__version__, "history": history},
        "test": {"seeds": {t: EVAL_SEED + i for i, t in enumerate(language.TASKS)},
                 "examples_per_task": args.eval, "accuracy": acc},
    }
    m = LanguageModel(m.module, params, tok, "lm-mini", extra)
    path = ji.save_model(m, args.out, overwrite=True)
    print(f"wrote {path} ({train_s / 60:.1f} min of training)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
