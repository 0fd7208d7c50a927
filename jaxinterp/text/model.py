"""`LanguageModel`: a GPT-2-layout decoder, its parameters and its tokenizer, callable as
`logits, feats = m(ids)`.

Like `Model`, it is a pytree (parameters are leaves; module, tokenizer and records are static),
so it passes through `jax.jit`, `vmap` and `grad`. `feats` holds every block's output `h.<i>`
`[N, T, D]` and attention probabilities `h.<i>.attn.probs` `[N, heads, T, T]`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import is_traced
from jaxinterp.model import _Described
from jaxinterp.models import gpt2 as gpt2_lib
from jaxinterp.text.tokenizer import Tokenizer

KIND = "language_model"


@tuned_jit(static_argnames=("module",))
def _forward(module, params, ids, token_embeddings):
    if not isinstance(module, gpt2_lib.GPT2LMHeadModel):  # a wrapped function
        logits = module.logits(params, ids, token_embeddings)
        return logits, {f"attention.{i}": a for i, a in enumerate(module.attention(params, ids))}
    (logits, _), state = module.apply({"params": params}, ids, token_embeddings,
                                      mutable=["intermediates"])
    return logits, _named(state["intermediates"])


def param_dtype(params):
    """The floating dtype of the parameters (of the first floating leaf)."""
    for leaf in jax.tree_util.tree_leaves(params):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            return jnp.result_type(leaf)
    return jnp.float32


def _named(tree) -> dict:
    """Sown intermediates -> `{"h.0": out, "h.0.attn.probs": probs, ...}`."""
    out = {}
    for i, block in tree["transformer"]["h"].items():
        out[f"h.{i}"] = block["out"][0]
        out[f"h.{i}.attn.probs"] = block["attn"]["probs"][0]
    return out


@jax.tree_util.register_pytree_node_class
class LanguageModel:
    """A decoder (`models.gpt2.GPT2LMHeadModel`) with its parameters and tokenizer.

    Attributes:
      module: the Flax module (its `config` holds the sizes, its `rule` the relevance rule).
      params: the parameter tree (Hugging Face's names, see `models.gpt2`).
      tokenizer: a `Tokenizer` (or None when the model came without one).
      arch: "gpt2", "lm-mini", … (from the records).
    """

    def __init__(self, module: gpt2_lib.GPT2LMHeadModel, params: Any,
                 tokenizer: Tokenizer | None = None, arch: str = "gpt2", extra: dict | None = None):
        self.module, self.params = module, params
        # tokenizer and records ride in the pytree structure, outside JIT cache keys
        self._static = _Described((tokenizer, json.dumps({"arch": arch, **(extra or {})},
                                                         sort_keys=True)))

    def tree_flatten(self):
        return (self.params,), (self.module, self._static)

    @classmethod
    def tree_unflatten(cls, aux, children):
        m = object.__new__(cls)
        m.module, m._static = aux
        (m.params,) = children
        return m

    @property
    def config(self) -> gpt2_lib.GPT2Config:
        return self.module.config

    @property
    def tokenizer(self) -> Tokenizer | None:
        return self._static.meta[0]

    @property
    def extra(self) -> dict:
        return json.loads(self._static.meta[1])

    @property
    def arch(self) -> str:
        return self.extra["arch"]

    @property
    def is_gpt2(self) -> bool:
        """Whether the decoder is jaxinterp's GPT-2 (else a wrapped function, `text.wrap`)."""
        return isinstance(self.module, gpt2_lib.GPT2LMHeadModel)

    @property
    def layers(self) -> list[str]:
        """Names of the recorded intermediates: block outputs and attention probabilities
        (a wrapped function: `attention.<i>`, its softmaxes over the sequence)."""
        if not self.is_gpt2:
            return ["attention.<i>"]
        return [n for i in range(self.config.n_layer) for n in (f"h.{i}", f"h.{i}.attn.probs")]

    def __repr__(self):
        c = self.config
        if not self.is_gpt2:
            return f"LanguageModel({self.arch}, wrapped function, vocabulary {c.vocab_size})"
        return (f"LanguageModel({self.arch}, {c.n_layer} layers, width {c.n_embd}, "
                f"vocabulary {c.vocab_size})")

    def with_rule(self, rule: str | None) -> "LanguageModel":
        """The same model with a relevance rule (`None`, "attn_lrp", "cp_lrp") on its gradients."""
        if not self.is_gpt2 and rule is not None:
            raise ValueError(f"relevance rules need jaxinterp's GPT-2 layout; {self.arch} is a "
                             "wrapped function (use the gradient, perturbation or rollout "
                             "methods)")
        out = jax.tree_util.tree_unflatten(*reversed(jax.tree_util.tree_flatten(self)))
        out.module = dataclasses.replace(self.module, rule=rule)
        return out

    def embed(self, ids: jax.Array) -> jax.Array:
        """The token embeddings `wte[ids]` `[N, T, D]` (the input of token attributions)."""
        return self.module.embed(self.params, ids)

    def __call__(self, ids, *, token_embeddings=None) -> tuple[jax.Array, dict]:
        """`(logits [N, T, vocab], feats)` of token ids `[N, T]` (or `[T]`, batched as N = 1).

        Args:
          ids: int token ids, each < vocab size; T <= the model's positions.
          token_embeddings: `[N, T, D]` used instead of `wte[ids]` (attributions differentiate
            here); ids then only fix the shape.
        """
        ids = check_ids(self, ids)
        return _forward(self.module, self.params, ids, token_embeddings)

    def metadata(self) -> dict:
        """What a checkpoint records besides the parameters."""
        if not self.is_gpt2:
            raise ValueError(f"{self.arch} is a wrapped function: save its parameters with "
                             "your own code (a function cannot be stored in a checkpoint)")
        tok = self.tokenizer
        return {"kind": KIND, "arch": self.arch, "config": self.config.to_dict(),
                "tokenizer": None if tok is None else tok.to_dict(),
                "extra": {k: v for k, v in self.extra.items() if k != "arch"}}


def check_ids(m: LanguageModel, ids) -> jax.Array:
    """Token ids as int32 `[N, T]`; a clear error for floats, out-of-range ids, too long input."""
    ids = jnp.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"token ids must be integers, got {ids.dtype}")
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"token ids must be [N, T] with T >= 1, got shape {ids.shape}")
    c = m.config
    if c.n_positions is not None and ids.shape[1] > c.n_positions:
        raise ValueError(f"{ids.shape[1]} tokens exceed the model's {c.n_positions} positions")
    if not is_traced(ids):
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= c.vocab_size:
            raise ValueError(f"token ids must be in [0, {c.vocab_size}), got [{lo}, {hi}]")
    return ids.astype(jnp.int32)


def init_language_model(arch: str = "gpt2", key: Any = 0, *, tokenizer: Tokenizer | None = None,
                        **config) -> LanguageModel:
    """A decoder with random weights (Hugging Face's initialization: normal 0.02, residual
    projections 0.02 / sqrt(2 layers)).

    Args:
      arch: "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl" or "lm-mini" (sizes).
      key: PRNG key or int seed.
      tokenizer: a `Tokenizer` to carry.
      **config: `GPT2Config` fields to override (`n_layer=2`, `vocab_size=...`).
    Returns:
      A `LanguageModel`.
    """
    from jaxinterp.checks import as_key

    cfg = gpt2_lib.config_for(arch, **config)
    module = gpt2_lib.GPT2LMHeadModel(cfg)
    params = jax.jit(module.init)(as_key(key), jnp.zeros((1, 1), jnp.int32))["params"]
    return LanguageModel(module, params, tokenizer, arch)


def from_metadata(meta: dict) -> tuple[gpt2_lib.GPT2LMHeadModel, Tokenizer | None, str, dict]:
    """Module, tokenizer, arch and records from checkpoint metadata (`ValueError` if invalid)."""
    if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("arch"), str):
        raise ValueError("language-model metadata needs arch (a string) and config (an object)")
    try:
        cfg = gpt2_lib.GPT2Config.from_dict(meta["config"])
    except TypeError as e:
        raise ValueError(f"config does not describe a decoder: {e}") from None
    tok = meta.get("tokenizer")
    tok = None if tok is None else Tokenizer.from_dict(tok)
    if tok is not None and len(tok) > cfg.vocab_size:
        raise ValueError(f"the tokenizer has {len(tok)} tokens for {cfg.vocab_size} embeddings")
    extra = meta.get("extra", {})
    if not isinstance(extra, dict):
        raise ValueError("metadata extra must be an object")
    return gpt2_lib.GPT2LMHeadModel(cfg), tok, meta["arch"], extra


def abstract_params(module: gpt2_lib.GPT2LMHeadModel) -> Any:
    """The parameter tree's shapes and dtypes (no memory)."""
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    return jax.eval_shape(module.init, jax.random.key(0), ids)["params"]


def as_numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)
