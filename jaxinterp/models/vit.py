"""Vision transformers in Flax with torchvision's module layout and parameter names.

Submodules carry torchvision's `VisionTransformer` names (`conv_proj`, `class_token`,
`encoder/pos_embedding`, `encoder/layers/encoder_layer_3/ln_1`, `.../self_attention`,
`.../mlp/0`, `encoder/ln`, `heads/head`), so a torchvision state dict maps 1:1 (the attention's
packed `in_proj_weight` is split into `query`, `key`, `value`) and `ji.wrap` lists the same
names as layers. Each block records its attention probabilities `[N, heads, T, T]` as
`.../self_attention/probs` (T = 1 + patches, the class token first); a block's output is its
tokens `[N, T, D]`. GELU is exact (`approximate=False`, torchvision's `nn.GELU()`) unless
`approximate_gelu` (google-research/vision_transformer's Flax models use the tanh form);
LayerNorm's epsilon is 1e-6.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# (patch, layers, heads, hidden, mlp) — torchvision's `vit_*` builders.
CONFIGS = {"vit_b_16": (16, 12, 12, 768, 3072), "vit_b_32": (32, 12, 12, 768, 3072),
           "vit_l_16": (16, 24, 16, 1024, 4096), "vit_l_32": (32, 24, 16, 1024, 4096),
           "vit_h_14": (14, 32, 16, 1280, 5120), "vit-mini": (8, 4, 4, 96, 192)}
ARCHS = tuple(CONFIGS)
LN_EPS = 1e-6
RULES = (None, "attn_lrp", "cp_lrp")  # the forward is the same; only gradients differ


@jax.custom_vjp
def _identity_rule(x, y):
    """`y = f(x)` passed on, with `f(x) / (x + 1e-10)` as its gradient (AttnLRP's identity
    rule for elementwise nonlinearities, LXT's `identity_rule_implicit`)."""
    return y


def _identity_rule_fwd(x, y):
    return y, y / (x + 1e-10)


def _identity_rule_bwd(ratio, g):
    return g * ratio, jnp.zeros_like(g)


_identity_rule.defvjp(_identity_rule_fwd, _identity_rule_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def divide_gradient(x, factor):
    """`x`, its gradient divided by `factor` (LXT's `divide_gradient`: AttnLRP's uniform rule
    for a product of two activations)."""
    return x


def _divide_fwd(x, factor):
    return x, None


def _divide_bwd(factor, _, g):
    return (g / factor,)


divide_gradient.defvjp(_divide_fwd, _divide_bwd)


def standardize(x, eps: float, rule: str | None = None):
    """`(x - mean) / sqrt(var + eps)` over the last axis; with a relevance rule, no gradient
    through the standard deviation (AttnLRP's identity rule, LXT's `layer_norm_forward`)."""
    centred = x - x.mean(-1, keepdims=True)
    std = jnp.sqrt((centred * centred).mean(-1, keepdims=True) + eps)
    if rule is not None:
        std = jax.lax.stop_gradient(std)
    return centred / std


class LayerNorm(nn.Module):
    """LayerNorm with Flax's parameter names (`scale`, `bias`), epsilon 1e-6; with a relevance
    rule, no gradient through the standard deviation (AttnLRP's identity rule, LXT's
    `layer_norm_forward`)."""

    rule: str | None = None

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,))
        bias = self.param("bias", nn.initializers.zeros, (d,))
        return standardize(x, LN_EPS, self.rule) * scale + bias


def _ln(name, rule=None):
    return LayerNorm(rule, name=name)


def _gelu(x, approximate, rule):
    y = nn.gelu(x, approximate=approximate)
    return y if rule is None else _identity_rule(x, y)


class AttentionProbs(nn.Module):
    """Softmax over keys: the attention probabilities, recorded as a layer of their own."""

    @nn.compact
    def __call__(self, logits):
        return jax.nn.softmax(logits, axis=-1)


class SelfAttention(nn.Module):
    """torch's `nn.MultiheadAttention(batch_first=True)` on one sequence, `in_proj` split."""

    num_heads: int
    rule: str | None = None

    @nn.compact
    def __call__(self, x):
        n, t, d = x.shape
        hd = d // self.num_heads
        dense = lambda name: nn.Dense(d, kernel_init=nn.initializers.xavier_uniform(),  # noqa: E731
                                      name=name)
        q, k, v = (dense(s)(x).reshape(n, t, self.num_heads, hd)
                   for s in ("query", "key", "value"))
        if self.rule == "attn_lrp":  # LXT: q k^T and A v are products: q, k / 4; v / 2
            q, k, v = divide_gradient(q, 4.0), divide_gradient(k, 4.0), divide_gradient(v, 2.0)
        elif self.rule == "cp_lrp":  # no gradient through the attention weights
            q, k = jax.lax.stop_gradient(q), jax.lax.stop_gradient(k)
        logits = jnp.einsum("nqhd,nkhd->nhqk", q, k) / np.sqrt(hd).astype(x.dtype)
        probs = AttentionProbs(name="probs")(logits)
        out = jnp.einsum("nhqk,nkhd->nqhd", probs, v).reshape(n, t, d)
        return nn.Dense(d, name="out_proj")(out)


class MLPBlock(nn.Module):
    """torchvision's `MLPBlock`: Linear `0`, GELU, Linear `3` (dropouts are inactive)."""

    mlp_dim: int
    approximate_gelu: bool = False
    rule: str | None = None

    @nn.compact
    def __call__(self, x):
        init = dict(kernel_init=nn.initializers.xavier_uniform(),
                    bias_init=nn.initializers.normal(1e-6))
        h = _gelu(nn.Dense(self.mlp_dim, name="0", **init)(x), self.approximate_gelu, self.rule)
        return nn.Dense(x.shape[-1], name="3", **init)(h)


class EncoderBlock(nn.Module):
    """Pre-norm block: `x + attn(ln_1(x))`, then `+ mlp(ln_2(.))`."""

    num_heads: int
    mlp_dim: int
    approximate_gelu: bool = False
    rule: str | None = None

    @nn.compact
    def __call__(self, x):
        r = self.rule
        y = x + SelfAttention(self.num_heads, r, name="self_attention")(_ln("ln_1", r)(x))
        return y + MLPBlock(self.mlp_dim, self.approximate_gelu, r, name="mlp")(
            _ln("ln_2", r)(y))


class Layers(nn.Module):
    """torchvision's `encoder.layers`: blocks named `encoder_layer_0`, `encoder_layer_1`, …"""

    num_layers: int
    num_heads: int
    mlp_dim: int
    approximate_gelu: bool = False
    rule: str | None = None

    @nn.compact
    def __call__(self, x):
        for i in range(self.num_layers):
            x = EncoderBlock(self.num_heads, self.mlp_dim, self.approximate_gelu, self.rule,
                             name=f"encoder_layer_{i}")(x)
        return x


class Encoder(nn.Module):
    """Adds the position embedding, runs the blocks, normalizes (`ln`)."""

    num_layers: int
    num_heads: int
    mlp_dim: int
    approximate_gelu: bool = False
    rule: str | None = None

    @nn.compact
    def __call__(self, x):
        pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, *x.shape[1:]))
        x = Layers(self.num_layers, self.num_heads, self.mlp_dim, self.approximate_gelu,
                   self.rule, name="layers")(x + pos)
        return _ln("ln", self.rule)(x)


class Heads(nn.Module):
    """torchvision's `heads`: one Linear named `head`."""

    num_classes: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.num_classes, name="head")(x)


class VisionTransformer(nn.Module):
    """torchvision's `VisionTransformer` (class-token head); returns logits.

    Attributes:
      patch_size: side of the square patches (`conv_proj`'s kernel and stride).
      num_layers, num_heads, hidden_dim, mlp_dim: the encoder.
      num_classes: outputs of `heads.head`.
      image_size: side of the square input (fixes the position embedding's length).
      approximate_gelu: tanh-approximate GELU (google-research/vision_transformer's models).
      rule: None, or "attn_lrp" / "cp_lrp": the same forward with LXT's gradient rewrites
        (AttnLRP / CP-LRP in the Gradient*Input framework; `ji.lrp` sets it).

    Random initialization follows torchvision except for `heads.head`, which torchvision sets
    to zero (every logit 0, every gradient 0): here LeCun normal, so a random model has
    non-trivial attributions.
    """

    patch_size: int = 16
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    mlp_dim: int = 3072
    num_classes: int = 1000
    image_size: int = 224
    approximate_gelu: bool = False
    rule: str | None = None

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @nn.compact
    def __call__(self, x):
        if x.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"this ViT takes {self.image_size}x{self.image_size} images (its "
                             f"position embedding has {self.grid}x{self.grid} patches); got "
                             f"{x.shape[1]}x{x.shape[2]}: resize the images")
        p = self.patch_size
        fan_in = p * p * x.shape[-1]
        x = nn.Conv(self.hidden_dim, (p, p), (p, p), "VALID", name="conv_proj",
                    kernel_init=nn.initializers.truncated_normal(np.sqrt(1.0 / fan_in)))(x)
        n = x.shape[0]
        x = x.reshape(n, -1, self.hidden_dim)
        cls = self.param("class_token", nn.initializers.zeros, (1, 1, self.hidden_dim))
        x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, self.hidden_dim)).astype(x.dtype), x], 1)
        x = Encoder(self.num_layers, self.num_heads, self.mlp_dim, self.approximate_gelu,
                    self.rule, name="encoder")(x)
        return Heads(self.num_classes, name="heads")(x[:, 0])


def vit(arch: str, num_classes: int = 1000, image_size: int | None = None,
        approximate_gelu: bool = False) -> VisionTransformer:
    """Builds `vit_b_16|vit_b_32|vit_l_16|vit_l_32|vit_h_14|vit-mini` (224² input; vit-mini
    64², the `shapes` size)."""
    if arch not in CONFIGS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    patch, layers, heads, hidden, mlp = CONFIGS[arch]
    size = image_size or (64 if arch == "vit-mini" else 224)
    if size % patch:
        raise ValueError(f"image_size {size} is not a multiple of {arch}'s patch size {patch}")
    return VisionTransformer(patch, layers, heads, hidden, mlp, num_classes, size,
                             approximate_gelu)


def block_names(module: VisionTransformer) -> list[str]:
    """Layer paths of the blocks, `encoder/layers/encoder_layer_0` … (input order)."""
    return [f"encoder/layers/encoder_layer_{i}" for i in range(module.num_layers)]


def attention_layers(module: VisionTransformer) -> list[str]:
    """Layer paths of every block's attention probabilities `[N, heads, T, T]`."""
    return [f"{b}/self_attention/probs" for b in block_names(module)]


def default_cam_layer(module: VisionTransformer) -> str:
    """The last block's `ln_1` (the tokens its attention reads; pytorch-grad-cam's ViT example
    takes `blocks[-1].norm1`): later token maps reach the class score through the class token
    only, so their patch gradients are zero."""
    return f"{block_names(module)[-1]}/ln_1"


# --------------------------------------------------------------------------- weight files


def _set(tree: dict, path: list[str], value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _expected(module: VisionTransformer) -> dict:
    x = jax.ShapeDtypeStruct((1, module.image_size, module.image_size, 3), jnp.float32)
    want = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
    return {"/".join(str(getattr(k, "key", k)) for k in path): v.shape
            for path, v in jax.tree_util.tree_flatten_with_path(want)[0]}


def convert_torch(state: dict, module: VisionTransformer) -> dict:
    """torchvision ViT state dict -> Flax variables (keys not used are kept under their torch
    names, for the mismatch report)."""
    state = {k.replace(".mlp.linear_1.", ".mlp.0.").replace(".mlp.linear_2.", ".mlp.3."): v
             for k, v in state.items()}  # torchvision's pre-0.13 MLP names
    params, used = {}, set()

    def take(key, fn=lambda w: w):
        used.add(key)
        return None if key not in state else fn(np.asarray(state[key]))

    def put(path, value):
        if value is not None:
            _set(params, path.split("/"), value)

    put("class_token", take("class_token"))
    put("conv_proj/kernel", take("conv_proj.weight", lambda w: w.transpose(2, 3, 1, 0)))
    put("conv_proj/bias", take("conv_proj.bias"))
    put("encoder/pos_embedding", take("encoder.pos_embedding"))
    for i in range(module.num_layers):
        t, f = f"encoder.layers.encoder_layer_{i}", f"encoder/layers/encoder_layer_{i}"
        for ln in ("ln_1", "ln_2"):
            put(f"{f}/{ln}/scale", take(f"{t}.{ln}.weight"))
            put(f"{f}/{ln}/bias", take(f"{t}.{ln}.bias"))
        w, b = take(f"{t}.self_attention.in_proj_weight"), take(f"{t}.self_attention.in_proj_bias")
        for j, name in enumerate(("query", "key", "value")):
            if w is not None:
                put(f"{f}/self_attention/{name}/kernel", np.split(w, 3, 0)[j].T)
            if b is not None:
                put(f"{f}/self_attention/{name}/bias", np.split(b, 3, 0)[j])
        put(f"{f}/self_attention/out_proj/kernel",
            take(f"{t}.self_attention.out_proj.weight", np.transpose))
        put(f"{f}/self_attention/out_proj/bias", take(f"{t}.self_attention.out_proj.bias"))
        for j in ("0", "3"):
            put(f"{f}/mlp/{j}/kernel", take(f"{t}.mlp.{j}.weight", np.transpose))
            put(f"{f}/mlp/{j}/bias", take(f"{t}.mlp.{j}.bias"))
    put("encoder/ln/scale", take("encoder.ln.weight"))
    put("encoder/ln/bias", take("encoder.ln.bias"))
    put("heads/head/kernel", take("heads.head.weight", np.transpose))
    put("heads/head/bias", take("heads.head.bias"))
    for k in state:
        if k not in used:
            params[k] = state[k]
    return {"params": params}


def convert_npz(arrays: dict, module: VisionTransformer) -> dict:
    """A google-research/vision_transformer `.npz` (`Transformer/encoderblock_0/...`) -> Flax
    variables in torchvision's layout (unused entries kept for the mismatch report)."""
    params, used = {}, set()
    d = module.hidden_dim

    def take(key, fn=lambda w: w):
        used.add(key)
        return None if key not in arrays else fn(np.asarray(arrays[key]))

    def put(path, value):
        if value is not None:
            _set(params, path.split("/"), value)

    put("class_token", take("cls"))
    put("conv_proj/kernel", take("embedding/kernel"))
    put("conv_proj/bias", take("embedding/bias"))
    put("encoder/pos_embedding", take("Transformer/posembed_input/pos_embedding"))
    for i in range(module.num_layers):
        s, f = f"Transformer/encoderblock_{i}", f"encoder/layers/encoder_layer_{i}"
        for theirs, ours in (("LayerNorm_0", "ln_1"), ("LayerNorm_2", "ln_2")):
            put(f"{f}/{ours}/scale", take(f"{s}/{theirs}/scale"))
            put(f"{f}/{ours}/bias", take(f"{s}/{theirs}/bias"))
        a = f"{s}/MultiHeadDotProductAttention_1"
        for name in ("query", "key", "value"):  # kernel [D, heads, hd], bias [heads, hd]
            put(f"{f}/self_attention/{name}/kernel", take(f"{a}/{name}/kernel",
                                                          lambda w: w.reshape(d, -1)))
            put(f"{f}/self_attention/{name}/bias", take(f"{a}/{name}/bias",
                                                        lambda w: w.reshape(-1)))
        put(f"{f}/self_attention/out_proj/kernel", take(f"{a}/out/kernel",
                                                        lambda w: w.reshape(-1, d)))
        put(f"{f}/self_attention/out_proj/bias", take(f"{a}/out/bias"))
        for theirs, ours in (("Dense_0", "0"), ("Dense_1", "3")):
            put(f"{f}/mlp/{ours}/kernel", take(f"{s}/MlpBlock_3/{theirs}/kernel"))
            put(f"{f}/mlp/{ours}/bias", take(f"{s}/MlpBlock_3/{theirs}/bias"))
    put("encoder/ln/scale", take("Transformer/encoder_norm/scale"))
    put("encoder/ln/bias", take("Transformer/encoder_norm/bias"))
    put("heads/head/kernel", take("head/kernel"))
    put("heads/head/bias", take("head/bias"))
    for k in arrays:
        if k not in used:
            params[k.replace("/", ".")] = arrays[k]
    return {"params": params}


def sizes_from_params(params: dict, arch: str) -> dict:
    """`num_classes` and `image_size` read off imported parameters (head, position embedding)."""
    patch = CONFIGS[arch][0]
    out = {}
    head = params.get("heads", {}).get("head", {})
    if "bias" in head:
        out["num_classes"] = int(np.shape(head["bias"])[0])
    pos = params.get("encoder", {}).get("pos_embedding")
    if pos is not None:
        grid = int(round(np.sqrt(np.shape(pos)[1] - 1)))
        if grid * grid == np.shape(pos)[1] - 1:
            out["image_size"] = grid * patch
    return out
