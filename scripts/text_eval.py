"""Scores every `ji.text` method on lm-mini's procedural language, where the answer's source
tokens are known by construction (the text counterpart of `scripts/attribution_eval.py`).

Per method and task, over unseen examples the model answers correctly:
  pointing  — the share whose top-attributed prompt token is a source of the answer;
  drop      — the answer's log-probability lost when that top token is replaced by `<unk>`
              (higher: the method found a token the answer depends on), beside the drop for a
              uniformly random prompt token and for the source itself (the reference).

    python scripts/text_eval.py [--per-length 12] [--out docs/text_eval.json]

Writes the JSON and prints the markdown table used in docs/site/text.md and the README.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxinterp as ji  # noqa: E402
from jaxinterp.text import language  # noqa: E402

# (label, method, options): Captum's defaults unless said
METHODS = [("saliency", "saliency", {}),
           ("input × gradient", "input_x_gradient", {}),
           ("integrated gradients", "integrated_gradients", {}),
           ("AttnLRP", "lrp", {"composite": "attn_lrp"}),
           ("CP-LRP", "lrp", {"composite": "cp_lrp"}),
           ("feature ablation", "feature_ablation", {}),
           ("Shapley sampling (25)", "shapley_sampling", {}),
           ("KernelSHAP (25)", "kernel_shap", {}),
           ("LIME (25)", "lime", {}),
           ("attention rollout", "attention_rollout", {})]
SEED = 900_001  # unseen: scripts/train_lm.py trains on seeds below 10**6 - 10**5


def log_prob(m, ids, answers):
    logits, _ = m(ids)
    return np.asarray(jax.nn.log_softmax(logits[:, -1], -1))[np.arange(len(answers)), answers]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-length", type=int, default=12, help="examples per task and size")
    ap.add_argument("--out", default="docs/text_eval.json")
    args = ap.parse_args()
    m = ji.load_model("lm-mini")
    rng = np.random.default_rng(0)
    rows = {label: {} for label, _, _ in METHODS}
    refs, seconds = {}, {label: 0.0 for label, _, _ in METHODS}
    for t, task in enumerate(language.TASKS):
        lo, hi = language.LENGTHS[task]
        hits = {label: [] for label, _, _ in METHODS}
        drops = {label: [] for label, _, _ in METHODS}
        ref = {"random": [], "source": []}
        for length in range(lo, hi + 1):
            ex = language.sample(SEED + 100 * t + length, args.per_length, task, length)
            ids = np.stack([e.prompt for e in ex])
            answers = np.array([e.answer for e in ex])
            right = np.asarray(ji.text.generate(m, ids, 1))[:, -1] == answers
            ids, answers = ids[right], answers[right]
            ex = [e for e, r in zip(ex, right) if r]
            if not len(ex):
                continue
            clean = log_prob(m, ids, answers)

            def drop(pos):
                cut = ids.copy()
                cut[np.arange(len(cut)), pos] = 0
                return clean - log_prob(m, cut, answers)

            ref["random"] += drop(rng.integers(0, ids.shape[1], len(ids))).tolist()
            ref["source"] += drop(np.array([e.sources[0] for e in ex])).tolist()
            for label, method, kw in METHODS:
                t0 = time.perf_counter()
                a = np.asarray(ji.text.attribute(m, ids, answers[:, None], method=method,
                                                 key=jax.random.key(length), **kw))
                seconds[label] += time.perf_counter() - t0
                top = a.argmax(-1)
                hits[label] += [int(p in e.sources) for p, e in zip(top, ex)]
                drops[label] += drop(top).tolist()
        for label in rows:
            rows[label][task] = {"pointing": float(np.mean(hits[label])),
                                 "drop": float(np.mean(drops[label])), "n": len(hits[label])}
        refs[task] = {k: float(np.mean(v)) for k, v in ref.items()}
        print(f"{task}: {len(ref['random'])} examples answered right", file=sys.stderr)
    out = {"model": "lm-mini", "per_length": args.per_length, "seed": SEED, "rows": rows,
           "reference_drop": refs, "seconds": seconds}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    tasks = language.TASKS
    print("| method | " + " | ".join(f"{t} pointing" for t in tasks) + " | "
          + " | ".join(f"{t} drop" for t in tasks) + " | s |")
    print("|---|" + "---|" * (2 * len(tasks) + 1))
    for label in rows:
        print(f"| {label} | " + " | ".join(f"{rows[label][t]['pointing']:.2f}" for t in tasks)
              + " | " + " | ".join(f"{rows[label][t]['drop']:.2f}" for t in tasks)
              + f" | {seconds[label]:.1f} |")
    for k in ("source", "random"):
        print(f"| *{k} token (reference)* | " + " | ".join("" for _ in tasks) + " | "
              + " | ".join(f"{refs[t][k]:.2f}" for t in tasks) + " | |")


if __name__ == "__main__":
    main()
