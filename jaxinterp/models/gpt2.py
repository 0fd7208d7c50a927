"""GPT-2-layout decoders in Flax with Hugging Face's module layout and parameter names.

The parameter tree is `transformer/{wte,wpe}/weight`, `transformer/h/<i>/{ln_1, attn/{c_attn,
c_proj}, ln_2, mlp/{c_fc, c_proj}}/{weight,bias}`, `transformer/ln_f/{weight,bias}`: joined with
dots, the keys of a `GPT2LMHeadModel` state dict (`c_attn`, `c_fc`, `c_proj` are HF's `Conv1D`,
weight `[in, out]`), so a `model.safetensors` maps 1:1. The language-model head is tied to `wte`.
GELU is the tanh form (HF's `gelu_new`), LayerNorm's epsilon 1e-5 (both from the config).

Each block sows its attention probabilities `[N, heads, T, T]` as `h.<i>.attn.probs` and its
output `[N, T, D]` as `h.<i>` in the `intermediates` collection; `token_embeddings` replaces
the `wte` lookup (the point where token attributions are taken); a key / value `cache` makes
`generate` one compiled program.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.models.vit import _identity_rule, divide_gradient, standardize

ARCHS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "lm-mini")
RULES = (None, "attn_lrp", "cp_lrp")
ACTIVATIONS = ("gelu_new", "gelu", "relu")
# (layers, heads, width): Hugging Face's GPT-2 sizes (vocabulary 50,257, 1,024 positions)
SIZES = {"gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024), "gpt2-large": (36, 20, 1280),
         "gpt2-xl": (48, 25, 1600)}


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """A decoder's sizes, with `GPT2Config`'s field names (`n_embd`, `n_layer`, …)."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None: 4 * n_embd
    layer_norm_epsilon: float = 1e-5
    activation_function: str = "gelu_new"

    def __post_init__(self):
        for f in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            v = getattr(self, f)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"GPT2Config.{f} must be a positive integer, got {v!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"activation_function must be one of {ACTIVATIONS}, got "
                             f"{self.activation_function!r}")

    @property
    def inner(self) -> int:
        return self.n_inner or 4 * self.n_embd

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPT2Config":
        """From a dict such as Hugging Face's `config.json` (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def config_for(arch: str, **overrides) -> GPT2Config:
    """The config of `gpt2|gpt2-medium|gpt2-large|gpt2-xl` (Hugging Face's), `lm-mini`'s, or
    `overrides` on them."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    if arch == "lm-mini":
        base = dict(vocab_size=32, n_positions=64, n_embd=64, n_layer=3, n_head=4)
    else:
        layers, heads, width = SIZES[arch]
        base = dict(n_layer=layers, n_head=heads, n_embd=width)
    return GPT2Config(**{**base, **overrides})


def _activation(x, name, rule):
    if name == "relu":
        y = jax.nn.relu(x)
    else:
        y = nn.gelu(x, approximate=name == "gelu_new")
    return y if rule is None else _identity_rule(x, y)


class Conv1D(nn.Module):
    """HF's `Conv1D`: `x @ weight + bias`, weight `[in, out]`."""

    features: int
    std: float = 0.02

    @nn.compact
    def __call__(self, x):
        w = self.param("weight", nn.initializers.normal(self.std), (x.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        return x @ w.astype(x.dtype) + b.astype(x.dtype)


class LayerNorm(nn.Module):
    """torch's LayerNorm (`weight`, `bias`); with a relevance rule, no gradient through the
    standard deviation (AttnLRP)."""

    eps: float = 1e-5
    rule: str | None = None

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        w = self.param("weight", nn.initializers.ones, (d,))
        b = self.param("bias", nn.initializers.zeros, (d,))
        return standardize(x, self.eps, self.rule) * w.astype(x.dtype) + b.astype(x.dtype)


class Attention(nn.Module):
    """Causal self-attention (`c_attn` packs query, key, value; `c_proj`)."""

    config: GPT2Config
    rule: str | None = None

    @nn.compact
    def __call__(self, x, cache=None, index=None):
        c = self.config
        n, t, d = x.shape
        hd = d // c.n_head
        qkv = Conv1D(3 * d, name="c_attn")(x)
        q, k, v = (a.reshape(n, t, c.n_head, hd).transpose(0, 2, 1, 3)
                   for a in jnp.split(qkv, 3, axis=-1))  # [N, heads, T, hd]
        if self.rule == "attn_lrp":  # LXT: q k^T and A v are products: q, k / 4; v / 2
            q, k, v = divide_gradient(q, 4.0), divide_gradient(k, 4.0), divide_gradient(v, 2.0)
        elif self.rule == "cp_lrp":
            q, k = jax.lax.stop_gradient(q), jax.lax.stop_gradient(k)
        qpos = jnp.arange(t)
        if cache is not None:  # keys / values of the earlier positions, [N, heads, L, hd] each
            kc, vc = cache
            k = jax.lax.dynamic_update_slice(kc, k.astype(kc.dtype), (0, 0, index, 0))
            v = jax.lax.dynamic_update_slice(vc, v.astype(vc.dtype), (0, 0, index, 0))
            cache = (k, v)
            qpos = qpos + index
        kpos = jnp.arange(k.shape[2])
        logits = jnp.einsum("nhqd,nhkd->nhqk", q, k) / np.sqrt(hd).astype(x.dtype)
        visible = kpos[None, :] <= qpos[:, None]
        logits = jnp.where(visible, logits, jnp.finfo(logits.dtype).min)
        probs = jax.nn.softmax(logits, axis=-1)
        self.sow("intermediates", "probs", probs)
        out = jnp.einsum("nhqk,nhkd->nhqd", probs, v).transpose(0, 2, 1, 3).reshape(n, t, d)
        return Conv1D(d, 0.02 / math.sqrt(2 * c.n_layer), name="c_proj")(out), cache


class MLP(nn.Module):
    """`c_fc`, GELU, `c_proj`."""

    config: GPT2Config
    rule: str | None = None

    @nn.compact
    def __call__(self, x):
        c = self.config
        h = _activation(Conv1D(c.inner, name="c_fc")(x), c.activation_function, self.rule)
        return Conv1D(x.shape[-1], 0.02 / math.sqrt(2 * c.n_layer), name="c_proj")(h)


class Block(nn.Module):
    """Pre-norm block: `x + attn(ln_1(x))`, then `+ mlp(ln_2(.))`."""

    config: GPT2Config
    rule: str | None = None

    @nn.compact
    def __call__(self, x, cache=None, index=None):
        eps, r = self.config.layer_norm_epsilon, self.rule
        a, cache = Attention(self.config, r, name="attn")(LayerNorm(eps, r, name="ln_1")(x),
                                                          cache, index)
        x = x + a
        x = x + MLP(self.config, r, name="mlp")(LayerNorm(eps, r, name="ln_2")(x))
        self.sow("intermediates", "out", x)
        return x, cache


class Blocks(nn.Module):
    """HF's `h`: blocks named `0`, `1`, …"""

    config: GPT2Config
    rule: str | None = None

    @nn.compact
    def __call__(self, x, caches=None, index=None):
        new = []
        for i in range(self.config.n_layer):
            x, c = Block(self.config, self.rule, name=str(i))(
                x, None if caches is None else caches[i], index)
            new.append(c)
        return x, (None if caches is None else tuple(new))


class Embedding(nn.Module):
    """torch's `nn.Embedding` (`weight` `[count, width]`)."""

    count: int
    width: int
    std: float

    def setup(self):
        self.weight = self.param("weight", nn.initializers.normal(self.std),
                                 (self.count, self.width))

    def table(self):
        return self.weight

    def __call__(self, ids):
        return self.weight[ids]


class Transformer(nn.Module):
    """HF's `GPT2Model`: `wte`, `wpe`, `h`, `ln_f`."""

    config: GPT2Config
    rule: str | None = None

    @nn.compact
    def __call__(self, ids, token_embeddings=None, caches=None, index=None):
        c = self.config
        wte = Embedding(c.vocab_size, c.n_embd, 0.02, name="wte")
        wpe = Embedding(c.n_positions, c.n_embd, 0.02, name="wpe")
        e = wte(ids) if token_embeddings is None else token_embeddings
        t = e.shape[1]
        start = 0 if index is None else index
        pos = jax.lax.dynamic_slice_in_dim(wpe.table(), start, t, 0)
        x, caches = Blocks(c, self.rule, name="h")(e + pos.astype(e.dtype), caches, index)
        x = LayerNorm(c.layer_norm_epsilon, self.rule, name="ln_f")(x)
        return x @ wte.table().T.astype(x.dtype), caches  # the tied `lm_head`


class GPT2LMHeadModel(nn.Module):
    """HF's `GPT2LMHeadModel` (tied head): `(ids [N, T]) -> (logits [N, T, vocab], caches)`.

    Attributes:
      config: the sizes.
      rule: None, or "attn_lrp" / "cp_lrp": the same forward with LXT's gradient rewrites
        (GELU's f(x) / x, LayerNorm without gradient through the standard deviation, query and
        key gradients / 4 and value / 2 — or no gradient through query and key).
    """

    config: GPT2Config
    rule: str | None = None

    # the decoder protocol of `ji.text` (also met by `text.wrapped.FunctionDecoder`)
    def logits(self, params, ids, token_embeddings=None):
        """`[N, T, vocab]` logits; `token_embeddings` replace `wte[ids]` when given."""
        return self.apply({"params": params}, ids, token_embeddings)[0]

    def attention(self, params, ids) -> list:
        """Every block's attention probabilities `[N, heads, T, T]`, in order."""
        _, state = self.apply({"params": params}, ids, mutable=["intermediates"])
        blocks = state["intermediates"]["transformer"]["h"]
        return [blocks[str(i)]["attn"]["probs"][0] for i in range(self.config.n_layer)]

    def embed(self, params, ids):
        """The token embeddings `wte[ids]` `[N, T, D]`."""
        return params["transformer"]["wte"]["weight"][ids]

    @nn.compact
    def __call__(self, ids, token_embeddings=None, caches=None, index=None):
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        return Transformer(self.config, self.rule, name="transformer")(
            ids, token_embeddings, caches, index)


# --------------------------------------------------------------------------- weight files

IGNORED = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older transformers


def convert_hf(state: dict, config: GPT2Config) -> tuple[dict, list[str]]:
    """A `GPT2LMHeadModel` / `GPT2Model` state dict -> Flax params.

    Returns:
      `(params, unexpected)`: the parameter tree (keys without `transformer.` accepted) and the
      state-dict keys that are not GPT-2 parameters (a tied `lm_head.weight` equal to `wte` and
      the old causal-mask buffers are not counted).
    """
    params, unexpected = {}, []
    wte = None
    for key, value in state.items():
        k = key if key.startswith(("transformer.", "lm_head.")) else f"transformer.{key}"
        if k.endswith(IGNORED):
            continue
        if k == "lm_head.weight":
            continue  # checked below against the tied wte
        parts = k.split(".")
        tree = params
        for p in parts[:-1]:
            tree = tree.setdefault(p, {})
        tree[parts[-1]] = np.asarray(value)
        if k == "transformer.wte.weight":
            wte = np.asarray(value)
    head = state.get("lm_head.weight")
    if head is not None and (wte is None or np.shape(head) != np.shape(wte)
                             or not np.array_equal(np.asarray(head), wte)):
        unexpected.append("lm_head.weight (not tied to transformer.wte.weight)")
    return params, unexpected


def config_from_params(params: dict, **known) -> GPT2Config:
    """The sizes read off a parameter tree; heads (not in any shape) from `known` or the GPT-2
    family's head width of 64."""
    t = params.get("transformer", {})
    try:
        vocab, width = np.shape(t["wte"]["weight"])
        positions = np.shape(t["wpe"]["weight"])[0]
        layers = len([k for k in t["h"] if k.isdigit()])
        inner = np.shape(t["h"]["0"]["mlp"]["c_fc"]["weight"])[1]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a GPT-2 state dict: no {e}") from None
    d = dict(vocab_size=int(vocab), n_positions=int(positions), n_embd=int(width),
             n_layer=layers, n_head=max(int(width) // 64, 1),
             n_inner=None if inner == 4 * width else int(inner))
    return GPT2Config(**{**d, **known})


def expected_shapes(config: GPT2Config) -> dict:
    """`{dotted name: shape}` of every parameter of the decoder."""
    module = GPT2LMHeadModel(config)
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    tree = jax.eval_shape(module.init, jax.random.key(0), ids)["params"]
    return {".".join(str(getattr(k, "key", k)) for k in path): v.shape
            for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
