"""`jaxinterp text`: token attributions of a decoder's answer as heat maps."""

from __future__ import annotations

import argparse

from .common import _run_dir_command, positive_int

ALIASES = {"ig": "integrated_gradients", "attn_lrp": "lrp:attn_lrp", "cp_lrp": "lrp:cp_lrp",
           "rollout": "attention_rollout", "ablation": "feature_ablation"}


def text_methods(text: str) -> list[str]:
    """argparse type of `--method`: comma-separated `ji.text` methods or aliases (ig,
    attn_lrp, cp_lrp, rollout, ablation)."""
    from jaxinterp.text import METHODS

    names = [ALIASES.get(s.strip(), s.strip()) for s in text.split(",") if s.strip()]
    valid = sorted(set(METHODS) | set(ALIASES))
    unknown = [n for n in names if n.split(":")[0] not in METHODS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown method {', '.join(unknown) or '(none)'}; "
                                         f"valid: {', '.join(valid)}")
    return list(dict.fromkeys(names))


def cmd_text(args) -> int:
    import json

    import jax
    import numpy as np

    import jaxinterp as ji
    from jaxinterp.text import Tokenizer, attribute, generate

    def body(run, m):
        if not isinstance(m, ji.text.LanguageModel):
            raise ValueError(f"--model {args.model} is not a language model (lm-mini, an "
                             "imported GPT-2 checkpoint)")
        tok = Tokenizer.from_file(args.tokenizer) if args.tokenizer else m.tokenizer
        if tok is None:
            raise ValueError(f"{args.model} carries no tokenizer: pass --tokenizer "
                             "tokenizer.json")
        prompt = tok.encode(args.prompt)
        if not prompt:
            raise ValueError("--prompt has no tokens")
        if args.target is not None:
            target = tok.encode(args.target)
            if not target:
                raise ValueError("--target has no tokens")
        else:  # the model's own greedy answer
            target = np.asarray(generate(m, prompt, args.new_tokens))[len(prompt):].tolist()
        words, answer = tok.tokens(prompt), tok.tokens(target)
        print(f"prompt: {' '.join(words)}\ntarget: {' '.join(answer)}"
              f"{'' if args.target else ' (greedy)'}")
        out = {"prompt": words, "prompt_ids": prompt, "target": answer, "target_ids": target,
               "methods": {}}
        for spec in args.method:
            name, _, composite = spec.partition(":")
            kw = {"composite": composite} if composite else {}
            if name in ("shapley_sampling", "kernel_shap", "lime"):
                kw["key"] = jax.random.key(args.key)
            if name == "integrated_gradients":
                kw["steps"] = args.steps
            per_token = name not in ("kernel_shap", "lime") and len(target) > 1
            a = np.asarray(attribute(m, prompt, target, method=name, per_token=per_token, **kw))
            label = composite or name
            rows = answer if per_token else [" ".join(answer)]
            title = f"{label}: {' '.join(answer)} <- {' '.join(words)}"
            ji.viz.text_heatmap(words, a, rows=rows, title=title,
                                path=run.path(f"{label}.html"))
            ji.viz.text_heatmap(words, a, rows=rows, title=title, path=run.path(f"{label}.png"))
            seq = a.sum(0) if per_token else a
            out["methods"][label] = {"scores": a.tolist(), "top_token": int(np.argmax(seq))}
            print(f"{label:>22}: top {words[int(np.argmax(seq))]!r} "
                  f"(position {int(np.argmax(seq))})")
        with open(run.path("attributions.json"), "w") as f:
            json.dump(out, f, indent=1)
        record = {"prompt": args.prompt, "target": answer, "methods": list(out["methods"])}
        return record, f"attributed {len(answer)} target token(s) with {len(args.method)} " \
                       "method(s); wrote"

    return _run_dir_command(args, "text", body)


def register(sub) -> None:
    p = sub.add_parser("text", help="token attributions of a decoder's answer (heat maps)")
    p.add_argument("--prompt", required=True, help='the prompt, e.g. "a=3 b=7 ; b ?"')
    p.add_argument("--target", default=None,
                   help="the answer to explain (default: the model's greedy continuation of "
                   "--new-tokens tokens)")
    p.add_argument("--new-tokens", type=positive_int, default=1,
                   help="tokens generated when --target is omitted (default 1)")
    p.add_argument("--method", type=text_methods, default=text_methods("ig,attn_lrp"),
                   help="comma-separated ji.text methods or aliases: ig, attn_lrp, cp_lrp, "
                   "rollout, ablation, saliency, input_x_gradient, shapley_sampling, "
                   "shapley_values, kernel_shap, lime (default ig,attn_lrp)")
    p.add_argument("--model", default="lm-mini",
                   help="lm-mini (default) or a language-model checkpoint directory "
                   "(`jaxinterp weights import model.safetensors --arch gpt2 --out DIR`)")
    p.add_argument("--tokenizer", default=None,
                   help="a Hugging Face tokenizer.json (needs the tokenizers package; default: "
                   "the model's own)")
    p.add_argument("--steps", type=positive_int, default=50, help="IG steps (default 50)")
    p.add_argument("--key", type=int, default=0, help="seed of the sampling methods' draws")
    p.add_argument("--out", required=True, help="output directory (see --force)")
    p.add_argument("--force", action="store_true",
                   help="replace a previous jaxinterp output at --out (never other files)")
    p.set_defaults(func=cmd_text, failed=[])
