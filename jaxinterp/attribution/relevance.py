"""DeepLIFT and LRP on any model, as rules over its traced function (no hooks).

The model's score is traced to a flat graph (`jaxinterp.relevance.graph`); each method walks it
backward with its rules (`jaxinterp.relevance`). Functional ReLUs, a module applied twice, a
residual sum: whatever the model does is in the trace, so nothing is missed.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jaxinterp.attribution.core import is_vgg, keeps_sharding, prepare
from jaxinterp.relevance import attn_lrp, engine, lrp as lrp_rules
from jaxinterp.relevance.graph import trace
from jaxinterp.targets import Target

DEEPLIFT_EPS = 1e-10  # Captum's: below this |Δin| a nonlinearity takes its plain gradient


def relevance_model(m):
    """`m` as the relevance rules take it: jaxinterp's VGG and ResNet with max pooling as one
    `reduce_window_max` and every convolution a `conv_general_dilated` (same values), any
    other model as it is."""
    if is_vgg(m):
        return m.with_pool("max_window") if m.module.pool == "max" else m
    if getattr(m, "resnet", None) is not None:
        return m.with_pool("max_window").with_conv("xla")
    return m


def score_graph(m, t: Target, x):
    """The target score of `m` as a traced graph of `(model, x)`, and the model it traced."""
    rm = relevance_model(m)

    def score(model, images):
        logits, feats = model(images, check=False)
        return t(logits, feats)

    return trace(score, rm, x), rm


def _baseline(x, baseline):
    b = jnp.asarray(baseline, x.dtype)
    try:
        return jnp.broadcast_to(b, x.shape)
    except ValueError:
        raise ValueError(f"baseline of shape {b.shape} does not broadcast to the images' "
                         f"{x.shape}") from None


def deeplift_rule(env0: dict, eps: float = DEEPLIFT_EPS):
    """DeepLIFT's Rescale rule (Captum's `DeepLift`) given the baseline's values `env0`."""

    def rule(g, u, env, cts):
        if u.kind == "region" and u.nonlinear:
            if len(u.outputs) != 1:
                raise engine.UnsupportedPrimitive(
                    f"DeepLIFT: the elementwise function at {u.path or 'the top level'} has "
                    f"{len(u.outputs)} outputs; the Rescale rule needs one")
            r, y = u.inputs[0], u.outputs[0]
            grad = engine.plain(g, u, env, cts)[0]
            d_in = env[r] - env0[r]
            small = jnp.abs(d_in) < eps
            return [jnp.where(small, grad,
                              cts[0] * (env[y] - env0[y]) / jnp.where(small, 1, d_in))]
        if u.kind == "maxpool":
            (x,) = u.inputs
            (y,), pull = engine.vjp(g, u, env)
            (y0,), pull0 = engine.vjp(g, u, env, at=[env0[x]])
            top = jnp.maximum(y, y0)
            moved = pull([cts[0] * (top - y0)])[0] + pull0([cts[0] * (y - top)])[0]
            d_in = env[x] - env0[x]
            small = jnp.abs(d_in) < eps
            return [jnp.where(small, pull(cts)[0], moved / jnp.where(small, 1, d_in))]
        if u.kind == "product" or u.kind == "plain" and not u.linear:
            raise engine.UnsupportedPrimitive(
                f"DeepLIFT has no rule for {engine.describe(u)} ({u.kind}); supported: "
                "elementwise nonlinearities of one input, max pooling, linear maps")
        return engine.plain(g, u, env, cts)

    return rule


def _deeplift_one(m, t, x, x0):
    g, rm = score_graph(m, t, x)
    env0 = engine.forward(g, rm, x0)
    env = engine.forward(g, rm, x)
    out = env[g.out_ids[0]]
    (mult,) = engine.backward(g, env, [jnp.ones_like(out)], deeplift_rule(env0))
    return (x - x0) * mult


@functools.partial(jax.jit, static_argnames=())
def _deeplift(m, t, x, x0):
    return _deeplift_one(m, t, x, x0)


@keeps_sharding
def deeplift(m, x, target, *, baseline=0.0) -> jax.Array:
    """DeepLIFT with the Rescale rule (Shrikumar et al. 2017), as Captum's `DeepLift`.

    Each elementwise nonlinearity (ReLU, ELU, leaky ReLU, sigmoid, tanh, softplus, GELU — any
    elementwise function of one activation, however many primitives it is written with, is one
    unit) passes back `g · Δout / Δin` between the input and the baseline (its plain gradient
    where |Δin| < 1e-10); max pooling uses Captum's rule; linear maps their gradient. Summation to
    delta holds: the attributions of an example add up to `f(x) − f(baseline)`.

    Args:
      m: the model (jaxinterp's VGG / ResNet or a wrapped model).
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      baseline: the reference: a float, or an array broadcastable to `x` (e.g. a blurred `x`).
    Returns:
      `[N, H, W, 3]`: `(x − baseline) · multiplier`.
    """
    x, t = prepare(m, x, target)
    return _deeplift(m, t, x, _baseline(x, baseline))


@jax.jit
def _deeplift_shap(m, t, x, baselines):
    per = jax.lax.map(lambda b: _deeplift_one(m, t, x, jnp.broadcast_to(b, x.shape)), baselines)
    return per.mean(0)


@keeps_sharding
def deeplift_shap(m, x, target, baselines) -> jax.Array:
    """DeepLIFT averaged over a set of baselines (Captum's `DeepLiftShap`).

    Args:
      m, x, target: as `deeplift`.
      baselines: `[B, H, W, 3]` reference images (each used for every example).
    Returns:
      `[N, H, W, 3]`: the mean over baselines of `deeplift(m, x, target, baseline=b)`.
    """
    x, t = prepare(m, x, target)
    b = jnp.asarray(baselines, x.dtype)
    if b.ndim != 4 or b.shape[1:] != x.shape[1:]:
        raise ValueError(f"baselines must be [B, H, W, C] images like x {x.shape[1:]}, "
                         f"got {b.shape}")
    return _deeplift_shap(m, t, x, b)


def _composite(composite, options) -> Callable:
    if isinstance(composite, str):
        return lrp_rules.composite(composite, **options)
    if callable(composite):
        if options:
            raise ValueError(f"options {sorted(options)} apply to built-in composites only; "
                             "put them into the rules your composite returns")
        return lambda info: composite(info.path, info.primitive)
    raise TypeError(f"composite must be a name or a function (path, primitive) -> rule, "
                    f"got {type(composite).__name__}")


@functools.partial(jax.jit, static_argnames=("composite", "start", "options"))
def _lrp(m, t, x, composite, start, options):
    g, rm = score_graph(m, t, x)
    opts = dict(options)
    env = engine.forward(g, rm, x)
    out = env[g.out_ids[0]]
    layer_rule = _composite(composite, opts)
    rule = lrp_rules.make_rule(layer_rule, opts.get("stabilizer", 1e-6),
                               lrp_rules.input_bounds(g, env))
    (rel,) = engine.backward(g, env, [out if start == "logit" else jnp.ones_like(out)], rule)
    return rel


@functools.partial(jax.jit, static_argnames=("mode", "start"))
def _graph_attn_lrp(m, t, x, mode, start):
    g, rm = score_graph(m, t, x)
    env = engine.forward(g, rm, x)
    out = env[g.out_ids[0]]
    (rel,) = attn_lrp.relevance(g, env, [jnp.ones_like(out)], mode)
    if start == "one":  # the target's relevance starts at 1, not at its score
        rel = rel / jnp.where(out == 0, 1, out).reshape((-1,) + (1,) * (rel.ndim - 1))
    return rel


@keeps_sharding
def lrp(m, x, target, *, composite="epsilon_plus_flat", start: str = "one",
        **rule_options) -> jax.Array:
    """Layer-wise relevance propagation with zennit's rules and composites.

    Layers are the model's dense and convolution primitives with their bias and any BatchNorm
    after them folded in (zennit's canonizer); average pools and means share relevance in
    proportion (Norm), a residual sum between its two inputs (Norm), elementwise activations
    pass it unchanged (Pass), max pooling to the maximum (its gradient). The input
    normalization passes relevance unchanged, so the result is zennit's relevance at the
    normalized input, shown on the pixels.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      composite: "epsilon_plus_flat" (default: conv ZPlus, dense Epsilon, first layer Flat),
        "epsilon", "epsilon_plus", "epsilon_gamma_box" (conv Gamma, dense Epsilon, first conv
        ZBox), "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat", or a function
        `(layer path, primitive) -> rule` with rules from `jaxinterp.relevance.lrp`
        (`Epsilon()`, `ZPlus()`, `Gamma()`, ...). For transformers: "attn_lrp" (AttnLRP) or
        "cp_lrp" (CP-LRP), LXT's rules as gradient rewrites — written into jaxinterp's ViT
        (`jaxinterp.attribution.transformers.transformer_lrp`), found in the traced function
        of any other model (`jaxinterp.relevance.attn_lrp`).
      start: "one" (the target's relevance starts at 1, zennit's one-hot) or "logit" (at the
        target score, Captum's `LRP`).
      **rule_options: for built-in composites: epsilon (1e-6), gamma (0.25), stabilizer
        (1e-6), low / high (ZBox bounds of the image in [0, 1]: 0.0 / 1.0; scalars or per
        channel), zero_params (("bias",) to drop biases).
    Returns:
      `[N, H, W, 3]` relevance.
    """
    if start not in ("one", "logit"):
        raise ValueError(f"start must be 'one' or 'logit', got {start!r}")
    x, t = prepare(m, x, target)
    if isinstance(composite, str) and composite in attn_lrp.MODES:
        from jaxinterp.attribution.transformers import _vit_module, transformer_lrp

        if rule_options:
            raise ValueError(f"composite={composite!r} takes no rule options, got "
                             f"{', '.join(rule_options)}")
        if _vit_module(m) is not None:  # jaxinterp's ViT: the rules are in its modules
            return transformer_lrp(m, x, t, composite, start)
        return _graph_attn_lrp(m, t, x, composite, start)
    options = tuple(sorted((k, _hashable(v)) for k, v in rule_options.items()))
    return _lrp(m, t, x, composite, start, options)


def _hashable(v):
    if isinstance(v, (list, tuple)):
        return tuple(float(e) if not isinstance(e, str) else e for e in v)
    if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0:
        return tuple(float(e) for e in jnp.ravel(jnp.asarray(v)))
    return v if isinstance(v, str) else float(v)
