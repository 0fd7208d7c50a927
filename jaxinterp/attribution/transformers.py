"""Attention-based explanations of vision transformers: attention rollout (Abnar & Zuidema 2020)
and Chefer et al.'s relevance (CVPR 2021 "Transformer Interpretability Beyond Attention
Visualization"; ICCV 2021 "Generic Attention-model Explainability").

Both read every block's attention probabilities `[N, heads, T, T]` (the class token first),
which jaxinterp's ViT records as `encoder/layers/encoder_layer_i/self_attention/probs`. On a
user's model they are found in its traced function: every softmax (`exp(z) / sum(exp(z))`, as
`jax.nn.softmax` and Flax's attention trace) with an `[N, heads, T, T]` output, in the order
computed (`rules.softmax_outputs`); or named with `attention=` (layers, in block order).
Each method is one compiled program for the batch; maps are the class token's row over the
patches, `[N, gh, gw]`, upsampled to `[N, H, W]` by default.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxinterp._xla import tuned_jit
from jaxinterp.attribution.cam import _resize, grid_layout
from jaxinterp.attribution.core import keeps_sharding, prepare, total_score
from jaxinterp.checks import check_images

HEAD_FUSIONS = ("mean", "max", "min")
VARIANTS = ("cvpr2021", "iccv2021")


def _vit_module(m):
    from jaxinterp.models import vit as vit_lib

    meta = getattr(getattr(m, "info", None), "meta", None)
    module = getattr(getattr(m, "apply", None), "module", None)
    if meta is not None and isinstance(module, vit_lib.VisionTransformer):
        return module
    return None


SOFTMAX = "softmax"  # attention found as the softmaxes of the traced function


def attention_layers(m, attention: Sequence[str] | None = None):
    """The layers holding each block's attention probabilities, in block order.

    Args:
      m: a jaxinterp ViT, or a wrapped model.
      attention: layer names of `[N, heads, T, T]` outputs (rows summing to 1); None: the
        ViT's own, or for another model the softmaxes found in its traced function.
    Returns:
      Resolved layer names, or `SOFTMAX` (found by tracing).
    """
    if attention is None:
        module = _vit_module(m)
        if module is None:
            if not hasattr(m, "apply"):
                raise ValueError(f"{m.arch} has no attention (jaxinterp's VGG)")
            _attention_softmaxes(m)  # raises when there are none
            return SOFTMAX
        from jaxinterp.models import vit as vit_lib

        attention = vit_lib.attention_layers(module)
    if isinstance(attention, str) or not len(attention):
        raise ValueError("attention must be a non-empty list of layer names")
    names = tuple(m.resolve(a) for a in attention)
    for name in names:
        shape = m.output_shape(name)
        if len(shape) != 4 or shape[-1] != shape[-2]:
            raise ValueError(f"{name!r} is not an attention-probability layer: its output is "
                             f"{shape}, not [N, heads, T, T]")
    return names


def _softmax_run(m, x, taps=()):
    """`(logits, [softmax outputs])` of a wrapped model on images `x` (unchecked)."""
    from jaxinterp import rules
    from jaxinterp.wrapped import _forward_fn

    fwd = _forward_fn(m.apply, m.preprocess_fn, m.act)
    (logits, _), probs = rules.softmax_outputs(lambda v, x: fwd(v, x, {}), taps)(m.variables, x)
    return logits, probs


def _attention_softmaxes(m, x_shape=None) -> list[int]:
    """Indices of the softmaxes whose outputs are attention probabilities `[N, heads, T, T]`
    (found by tracing the model once per image size; remembered with the model)."""
    size = tuple(x_shape or (1, *(m.info.input_size or (224, 224)), 3))
    cache_key = ("attention_softmaxes", size[1:])
    if cache_key in m.info.cache:
        return m.info.cache[cache_key]
    _, probs = jax.eval_shape(lambda x: _softmax_run(m, x), jax.ShapeDtypeStruct(size,
                                                                                 jnp.float32))
    keep = [k for k, p in enumerate(probs) if p.ndim == 4 and p.shape[-1] == p.shape[-2]]
    if not keep:
        raise ValueError(f"no attention found in {m.arch}: its traced function computes "
                         f"{len(probs)} softmax(es), none of shape [N, heads, T, T]; name its "
                         "attention-probability layers with attention=[...]")
    m.info.cache[cache_key] = keep
    return keep


def _attention(m, x, t, layers):
    """`(probs, grads)`: each block's attention `[N, heads, T, T]` and the gradient of the
    summed target scores at it (None without a target)."""
    if layers == SOFTMAX:
        keep = _attention_softmaxes(m, x.shape)
        if t is None:
            return [p for k, p in enumerate(_softmax_run(m, x)[1]) if k in keep], None
        shapes = jax.eval_shape(lambda x: _softmax_run(m, x)[1], x)
        zeros = [jnp.zeros(s.shape, s.dtype) for s in shapes]

        def score(d):
            logits, probs = _softmax_run(m, x, d)
            return t(logits, {}).sum(), probs

        grads, probs = jax.grad(score, has_aux=True)(zeros)
        return [probs[k] for k in keep], [grads[k] for k in keep]
    if t is None:
        _, feats = m(x, check=False)
        return [feats[k] for k in layers], None
    grads, feats = _layer_gradients(m, x, t, layers)
    return [feats[k] for k in layers], [grads[k] for k in layers]


def _layer_gradients(m, x, t, layers):
    """`(grads, feats)`: the summed target score's gradient at each of `layers` (through taps)
    and every layer's output, from one forward and backward pass."""
    shapes = jax.eval_shape(lambda x: m(x, check=False)[1], x)
    zeros = {k: jnp.zeros(shapes[k].shape, shapes[k].dtype) for k in layers}
    return jax.grad(lambda d: total_score(m, t, x, d), has_aux=True)(zeros)


def _cls_map(rows, image_hw, upsample, interpolation):
    """The class token's row `[N, T]` (itself excluded) as a patch-grid map, upsampled."""
    layout = grid_layout(rows.shape[-1] + 1, image_hw)
    if layout is None or layout[0] != 1:
        raise ValueError(f"{rows.shape[-1] + 1} tokens are not a class token and a patch grid "
                         f"of a {image_hw[0]}x{image_hw[1]} image")
    _, gh, gw = layout
    grid = rows.reshape(rows.shape[0], gh, gw)
    return _resize(grid, image_hw, interpolation) if upsample else grid


def _fuse(a, head_fusion):
    """Heads `[N, heads, T, T]` -> `[N, T, T]` by mean / max / min."""
    return {"mean": jnp.mean, "max": jnp.max, "min": jnp.min}[head_fusion](a, axis=1)


def _discard(a, ratio):
    """Zeroes each image's `int(T * T * ratio)` smallest fused weights, never the class token's
    own (vit-explain's `discard_ratio`)."""
    n, t, _ = a.shape
    k = int(t * t * ratio)
    if k == 0:
        return a
    flat = a.reshape(n, t * t)
    rank = jnp.argsort(jnp.argsort(flat, axis=1), axis=1)
    drop = (rank < k) & (jnp.arange(t * t) != 0)
    return jnp.where(drop, 0, flat).reshape(n, t, t)


def rollout(mats, start_layer: int = 0):
    """Chefer's `compute_rollout_attention`: `(A_i + I)` row-normalised, multiplied from
    block `start_layer` up. `mats`: `[N, T, T]` per block. Returns `[N, T, T]`."""
    eye = jnp.eye(mats[0].shape[-1], dtype=mats[0].dtype)
    mats = [a + eye for a in mats]
    mats = [a / a.sum(-1, keepdims=True) for a in mats]
    joint = mats[start_layer]
    for a in mats[start_layer + 1:]:
        joint = a @ joint
    return joint


@tuned_jit(static_argnames=("layers", "head_fusion", "discard_ratio", "start_layer", "upsample",
                            "interpolation"))
def _rollout(m, x, layers, head_fusion, discard_ratio, start_layer, upsample, interpolation):
    probs, _ = _attention(m, x, None, layers)
    mats = [_discard(_fuse(a, head_fusion), discard_ratio) for a in probs]
    return _cls_map(rollout(mats, start_layer)[:, 0, 1:], x.shape[1:3], upsample, interpolation)


def _check_start(start_layer, layers, m=None):
    n = len(_attention_softmaxes(m)) if layers == SOFTMAX else len(layers)
    if not isinstance(start_layer, int) or not 0 <= start_layer < n:
        raise ValueError(f"start_layer must be an int in [0, {n}), got {start_layer!r}")


@keeps_sharding
def attention_rollout(m, x, target=None, *, head_fusion: str = "mean", discard_ratio: float = 0.0,
                      start_layer: int = 0, attention: Sequence[str] | None = None,
                      upsample: bool = True, interpolation: str = "bilinear") -> jax.Array:
    """Attention rollout (Abnar & Zuidema 2020): the class token's row of the product of the
    blocks' head-fused attention matrices plus identity, each row-normalised.

    As Chefer et al.'s `compute_rollout_attention` (`(A + I)` divided by its row sums — the
    same as vit-explain's `(A + I) / 2` for mean fusion; vit-explain's own code divides by
    column sums through a broadcasting slip). Class-independent: no target.

    Args:
      m: a ViT (jaxinterp's, or a wrapped model with `attention=`).
      x: images `[N, H, W, 3]` in [0, 1].
      target: ignored (rollout is class-independent); accepted so that every method is called
        alike.
      head_fusion: "mean", "max" or "min" over heads (vit-explain's options).
      discard_ratio: fraction of each image's fused attention weights set to 0, the smallest
        first, before adding the identity (the class token's own weight is kept).
      start_layer: the first block multiplied in (Chefer's `start_layer`).
      attention: the attention-probability layers of a wrapped model; None: found as the
        `[N, heads, T, T]` softmaxes of its traced function.
      upsample: resize to the input size; False returns the patch grid `[N, gh, gw]`.
      interpolation: "bilinear" or "nearest".
    Returns:
      `[N, H, W]` maps (raw rollout weights, not rescaled).
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    if not isinstance(discard_ratio, (int, float)) or not 0 <= discard_ratio < 1:
        raise ValueError(f"discard_ratio must be a number in [0, 1), got {discard_ratio!r}")
    ratio = float(discard_ratio)
    x = check_images(x, min_size=m.min_size)
    layers = attention_layers(m, attention)
    _check_start(start_layer, layers, m)
    return _rollout(m, x, layers, head_fusion, ratio, start_layer, upsample, interpolation)


# --------------------------------------------------------------------------- Chefer et al.

def safe_divide(a, b):
    """Chefer's `safe_divide`: `a / (b + 1e-9)`, 0 where `b == 0`."""
    den = b + 1e-9
    den = den + (den == 0).astype(den.dtype) * 1e-9
    return a / den * (b != 0).astype(b.dtype)


def _linear_relprop(x, kernel, r):
    """Chefer's `Linear.relprop` with alpha = 1 (beta = 0): the bias-free z+ rule over signed
    inputs, `x+ * (S @ W+) + x- * (S @ W-)` with `S = R / (x+ W+ + x- W-)`. `kernel`: `[in,
    out]`."""
    wp, wn = jnp.maximum(kernel, 0), jnp.minimum(kernel, 0)
    xp, xn = jnp.maximum(x, 0), jnp.minimum(x, 0)
    s = safe_divide(r, xp @ wp + xn @ wn)
    return xp * (s @ wp.T) + xn * (s @ wn.T)


def _sum(a):
    return a.sum(tuple(range(1, a.ndim)), keepdims=True)


def _add_relprop(a_in, b_in, r):
    """Chefer's `Add.relprop`: `x * R / (a + b)` for each summand, rescaled so the summands
    share `sum R` in proportion to their absolute totals (per image)."""
    s = safe_divide(r, a_in + b_in)
    a, b = a_in * s, b_in * s
    a_sum, b_sum = jnp.abs(_sum(a)), jnp.abs(_sum(b))
    total = _sum(r)
    a_fact = safe_divide(a_sum, a_sum + b_sum) * total
    b_fact = safe_divide(b_sum, a_sum + b_sum) * total
    return a * safe_divide(a_fact, _sum(a)), b * safe_divide(b_fact, _sum(b))


def _clone_relprop(x, r1, r2):
    """Chefer's `Clone.relprop`: `x * (R1 / x + R2 / x)`."""
    return x * (safe_divide(r1, x) + safe_divide(r2, x))


def attention_relevance(m, x, t, feats, module):
    """The LRP relevance of every block's attention probabilities `[N, heads, T, T]` under
    Chefer et al.'s rules (`Transformer-Explainability`, `layers_ours.py`, alpha = 1), from the
    target's one-hot down to block 0, in block order.

    Rules: Linear alpha-beta (alpha 1); LayerNorm, GELU, softmax: identity; residual sums:
    `_add_relprop`; the two attention products (`q k^T`, `A v`): each operand `x * grad(R /
    Z)`, halved; the class-token pooling: `x * R / x`.
    """
    from jaxinterp.models import vit as vit_lib

    p = m.variables["params"]
    n = x.shape[0]
    heads = module.num_heads
    r = jax.nn.one_hot(t.index, module.num_classes, dtype=x.dtype)
    encoded = feats["encoder/ln"]
    r_cls = _linear_relprop(encoded[:, 0], p["heads"]["head"]["kernel"], r)
    cls = encoded[:, 0]
    r = jnp.zeros_like(encoded).at[:, 0].set(cls * safe_divide(r_cls, cls))
    out = []
    blocks = vit_lib.block_names(module)
    for i in reversed(range(len(blocks))):
        b, bp = blocks[i], p["encoder"]["layers"][f"encoder_layer_{i}"]
        tokens = feats[b]
        mlp_out = feats[f"{b}/mlp"]
        y = tokens - mlp_out
        r_res, r_mlp = _add_relprop(y, mlp_out, r)
        u = feats[f"{b}/mlp/0"]
        g = jax.nn.gelu(u, approximate=module.approximate_gelu)
        r_mlp = _linear_relprop(g, bp["mlp"]["3"]["kernel"], r_mlp)  # GELU: identity
        r_mlp = _linear_relprop(feats[f"{b}/ln_2"], bp["mlp"]["0"]["kernel"], r_mlp)
        r = _clone_relprop(y, r_res, r_mlp)
        attn_out = feats[f"{b}/self_attention"]
        block_in = y - attn_out
        r_res, r_attn = _add_relprop(block_in, attn_out, r)
        sa, sp = f"{b}/self_attention", bp["self_attention"]
        q, k, v = (feats[f"{sa}/{s}"].reshape(n, -1, heads, module.hidden_dim // heads)
                   for s in ("query", "key", "value"))
        a = feats[f"{sa}/probs"]
        o = jnp.einsum("nhqk,nkhd->nqhd", a, v)
        r_o = _linear_relprop(o.reshape(n, -1, module.hidden_dim), sp["out_proj"]["kernel"],
                              r_attn).reshape(o.shape)
        s = safe_divide(r_o, o)
        r_a = a * jnp.einsum("nqhd,nkhd->nhqk", s, v) / 2
        r_v = v * jnp.einsum("nhqk,nqhd->nkhd", a, s) / 2
        out.append(r_a)
        if i == 0:
            break
        zqk = jnp.einsum("nqhd,nkhd->nhqk", q, k)
        s = safe_divide(r_a, zqk)  # softmax: identity
        r_q = q * jnp.einsum("nhqk,nkhd->nqhd", s, k) / 2
        r_k = k * jnp.einsum("nhqk,nqhd->nkhd", s, q) / 2
        h1 = feats[f"{b}/ln_1"]
        r_h1 = sum(_linear_relprop(h1, sp[name]["kernel"], rr.reshape(n, -1, module.hidden_dim))
                   for name, rr in (("query", r_q), ("key", r_k), ("value", r_v)))
        r = _clone_relprop(block_in, r_res, r_h1)  # ln_1: identity
    return out[::-1]


@tuned_jit(static_argnames=("layers", "variant", "start_layer", "upsample", "interpolation"))
def _chefer(m, x, t, layers, variant, start_layer, upsample, interpolation):
    if variant == "iccv2021":
        probs, grads = _attention(m, x, t, layers)
        tokens = probs[0].shape[-1]
        r = jnp.broadcast_to(jnp.eye(tokens, dtype=x.dtype), (x.shape[0], tokens, tokens))
        for a, g in zip(probs, grads):
            cam = jnp.maximum(g * a, 0).mean(1)
            r = r + cam @ r
        rows = r[:, 0, 1:]
    else:
        grads, feats = _layer_gradients(m, x, t, layers)
        relevance = attention_relevance(m, x, t, feats, _vit_module(m))
        cams = [jnp.maximum(grads[k] * ra, 0).mean(1) for k, ra in zip(layers, relevance)]
        rows = rollout(cams, start_layer)[:, 0, 1:]
    return _cls_map(rows, x.shape[1:3], upsample, interpolation)


@keeps_sharding
def transformer_attribution(m, x, target, *, variant: str = "cvpr2021", start_layer: int = 0,
                            attention: Sequence[str] | None = None, upsample: bool = True,
                            interpolation: str = "bilinear") -> jax.Array:
    """Chefer et al.'s class-specific relevance of a ViT's patches.

    "cvpr2021" (Transformer Interpretability Beyond Attention Visualization, the
    `transformer_attribution` method of `ViT_explanation_generator.py`): per block, the mean
    over heads of `clamp(dA ⊙ R_A, 0)` — `dA` the target logit's gradient at the attention
    probabilities, `R_A` their LRP relevance under the paper's rules
    (`attention_relevance`) — then rolled out (`rollout`) and read at the class token's row.
    Needs jaxinterp's ViT (the rules follow its layout). Precision: the residual rule divides
    by sums of signed relevance, which float32 rounding moves; on a random vit-mini the float32
    map differed from the float64 one by 0.7 % of its largest value (run under
    `jax.enable_x64` with float64 variables for exact comparisons; "iccv2021": 3e-6).

    "iccv2021" (Generic Attention-model Explainability): `R = I`, then for each block
    `R += mean_heads(clamp(dA ⊙ A, 0)) @ R`; the class token's row. Works on any model: its
    attention is found as the `[N, heads, T, T]` softmaxes of the traced function, or named
    (`attention=`).

    Args:
      m: a ViT.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index or int array `[N]` (the logit's gradient, as Chefer's one-hot).
      variant: "cvpr2021" or "iccv2021".
      start_layer: the first block rolled out ("cvpr2021"; Chefer's default 0).
      attention: the attention-probability layers of a wrapped model ("iccv2021"); None:
        found as the `[N, heads, T, T]` softmaxes of its traced function.
      upsample: resize to the input size; False returns the patch grid `[N, gh, gw]`.
      interpolation: "bilinear" or "nearest".
    Returns:
      `[N, H, W]` maps (raw relevance, not rescaled).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if callable(target):
        raise ValueError("transformer_attribution propagates a one-hot class target: pass a "
                         "class index or an int array")
    if variant == "cvpr2021" and _vit_module(m) is None:
        raise ValueError("variant='cvpr2021' propagates LRP through jaxinterp's ViT layout; "
                         f"{m.arch} is another model: use variant='iccv2021' with attention=")
    x, t = prepare(m, x, target)
    layers = attention_layers(m, attention)
    _check_start(start_layer, layers, m)
    return _chefer(m, x, t, layers, variant, start_layer, upsample, interpolation)


# --------------------------------------------------------------------------- AttnLRP / CP-LRP
TRANSFORMER_COMPOSITES = ("attn_lrp", "cp_lrp")


@tuned_jit(static_argnames=("rule", "start"))
def _transformer_lrp(m, x, t, rule, start):
    module = _vit_module(m).clone(rule=rule)
    xn = m.preprocess(x)

    def score(xn):
        s = t(module.apply(m.variables, xn), {})
        return s.sum(), s

    g, s = jax.grad(score, has_aux=True)(xn)
    r = xn * g
    if start == "one":  # the target's relevance starts at 1, not at its logit
        r = r / jnp.where(s == 0, 1, s)[:, None, None, None]
    return r


def transformer_lrp(m, x, t, composite: str, start: str):
    """AttnLRP (Achtibat et al. 2024) or CP-LRP (Ali et al. 2022) on jaxinterp's ViT, as LXT's
    efficient implementation computes them: the gradient of the target under rewritten
    backward rules, times the normalized input.

    Rules ("attn_lrp"): GELU's gradient `f(x) / (x + 1e-10)` (identity rule); LayerNorm without
    gradient through its standard deviation (identity rule); the gradients of the queries and
    keys divided by 4 and of the values by 2 (uniform rule on `q k^T` and `A v`, the softmax
    keeping its gradient); linear layers and the patch convolution keep theirs (LRP-0).
    "cp_lrp": the same outside attention, and no gradient through queries and keys.
    `ji.lrp(m, x, target, composite="attn_lrp")` calls this.
    """
    if _vit_module(m) is None:
        raise ValueError(f"composite={composite!r} rewrites the gradients of jaxinterp's ViT "
                         f"(GELU, LayerNorm, attention); {m.arch} is another model")
    if t.fn is not None:
        raise ValueError(f"composite={composite!r} explains a class score: pass a class index "
                         "or an int array")
    return _transformer_lrp(m, x, t, composite, start)
