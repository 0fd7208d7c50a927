"""Token attribution for decoders: which prompt tokens the target tokens' probability comes from.

The score is Captum's (`LLMAttribution`, `LLMGradientAttribution`): the log-probability of the
target tokens given the prompt, read in one teacher-forced pass over prompt + target (a causal
decoder gives position `T_prompt - 1 + j` exactly what Captum's j-th step sees), summed over
the target for the sequence attribution, one row per target token with `per_token=True`.
Gradient methods differentiate the prompt's token embeddings (`wte[ids]`, Captum's
`LayerIntegratedGradients` on the embedding layer) and sum over the embedding width;
perturbation methods replace prompt tokens by a baseline token (Captum's `TextTokenInput`).
Every method is one compiled program; perturbations are vmapped `batch_size` at a time.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.attribution.feature_masks import (check_draws, draw, example_keys, lasso,
                                                 shapley_weights, weighted_lstsq)
from jaxinterp.attribution.perturbation import quadrature
from jaxinterp.attribution.shapley import KERNEL_SHAP_INF_WEIGHT, MAX_EXACT_FEATURES
from jaxinterp.checks import check_batch_size, check_count, check_real
from jaxinterp.chunking import chunked_map, chunked_sum
from jaxinterp.relevance import attn_lrp, engine as relevance_engine, graph as relevance_graph
from jaxinterp.text.model import LanguageModel, check_ids, param_dtype

GRADIENT = ("saliency", "input_x_gradient", "integrated_gradients", "lrp")
PERTURBATION = ("feature_ablation", "shapley_sampling", "shapley_values", "kernel_shap", "lime")
METHODS = GRADIENT + PERTURBATION + ("attention_rollout",)
SCORES = ("log_prob", "prob", "logit")
PER_TOKEN = ("saliency", "input_x_gradient", "integrated_gradients", "lrp", "feature_ablation",
             "shapley_sampling", "shapley_values", "attention_rollout")


def _scores(module, params, ids, emb, tp: int, score: str):
    """Per-target scores `[N, T_target]` of the sequences `ids` (prompt + target)."""
    lg = module.logits(params, ids, emb)[:, tp - 1:-1]  # the predictions of the target tokens
    target = ids[:, tp:, None]
    if score == "logit":
        return jnp.take_along_axis(lg, target, -1)[..., 0]
    lp = jnp.take_along_axis(jax.nn.log_softmax(lg, -1), target, -1)[..., 0]
    return jnp.exp(lp) if score == "prob" else lp


def _prompt_fn(module, params, ids, tp, score):
    """`e_prompt [N, Tp, D] -> scores [N, Tt]`, the target tokens' embeddings held fixed."""
    e = module.embed(params, ids)
    return lambda ep: _scores(module, params, ids, jnp.concatenate([ep, e[:, tp:]], 1), tp,
                              score), e[:, :tp]


def _gradients(f, ep, per_token: bool):
    """∇ of the summed scores `[N, Tp, D]`, or of each target's `[N, Tt, Tp, D]`."""
    out, vjp = jax.vjp(f, ep)
    if not per_token:
        return vjp(jnp.ones_like(out))[0]
    eye = jnp.eye(out.shape[1], dtype=out.dtype)
    g = jax.vmap(lambda c: vjp(jnp.broadcast_to(c, out.shape))[0])(eye)  # [Tt, N, Tp, D]
    return g.transpose(1, 0, 2, 3)


@tuned_jit(static_argnames=("module", "tp", "score", "kind", "per_token"))
def _gradient_method(module, params, ids, tp, score, kind, per_token):
    f, ep = _prompt_fn(module, params, ids, tp, score)
    g = _gradients(f, ep, per_token)
    e = ep[:, None] if per_token else ep
    if kind == "saliency":
        return jnp.sqrt((g * g).sum(-1))
    return (e * g).sum(-1)


@tuned_jit(static_argnames=("module", "tp", "score", "mode", "per_token"))
def _graph_lrp(module, params, ids, tp, score, mode, per_token):
    """AttnLRP / CP-LRP of a wrapped decoder: LXT's rules found in its traced graph
    (`jaxinterp.relevance.attn_lrp`), relevance summed over each prompt token's embedding."""
    e = module.embed(params, ids)

    def f(p, ep):
        return _scores(module, p, ids, jnp.concatenate([ep, e[:, tp:]], 1), tp, score)

    ep = e[:, :tp]
    g = relevance_graph.trace(f, params, ep)
    env = relevance_engine.forward(g, params, ep)
    out = env[g.out_ids[0]]

    def one(ct):
        return attn_lrp.relevance(g, env, [ct], mode)[0].sum(-1)

    if not per_token:
        return one(jnp.ones_like(out))
    eye = jnp.eye(out.shape[1], dtype=out.dtype)
    return jax.vmap(lambda c: one(jnp.broadcast_to(c, out.shape)))(eye).transpose(1, 0, 2)


@tuned_jit(static_argnames=("module", "tp", "score", "per_token", "batch_size"))
def _integrated(module, params, ids, base, alphas, weights, tp, score, per_token, batch_size):
    f, ep = _prompt_fn(module, params, ids, tp, score)
    base = jnp.broadcast_to(base, ep.shape).astype(ep.dtype)

    def at(aw):
        a, w = aw
        return w * _gradients(f, base + a * (ep - base), per_token)

    total = chunked_sum(at, (alphas, weights), batch_size)
    delta = (ep - base)[:, None] if per_token else ep - base
    return (delta * total).sum(-1)


@tuned_jit(static_argnames=("module", "tp", "fusion"))
def _rollout(module, params, ids, tp, fusion):
    t = ids.shape[1]
    eye = jnp.eye(t)
    r = jnp.broadcast_to(eye, (ids.shape[0], t, t))
    for probs in module.attention(params, ids):
        a = getattr(jnp, fusion)(probs, axis=1)
        a = a + eye
        a = a / a.sum(-1, keepdims=True)
        r = a @ r
    return r[:, tp - 1:t - 1, :tp]  # [N, Tt, Tp]: the rows that predict the targets


def _coalition_scorer(module, params, ids, tp, score, base_id, positions):
    """`z [N, F] -> scores [N, Tt]` with the prompt tokens of the features out of z replaced
    by the baseline token."""
    def run(z):
        keep = jnp.take_along_axis(z, positions, 1)  # [N, Tp]
        prompt = jnp.where(keep, ids[:, :tp], base_id)
        return _scores(module, params, jnp.concatenate([prompt, ids[:, tp:]], 1), None, tp,
                       score)
    return run


def _spread(values, positions):
    """Feature values `[N, ..., F]` on the prompt positions `[N, ..., Tp]`."""
    idx = positions.reshape(positions.shape[0], *(1,) * (values.ndim - 2), -1)
    idx = jnp.broadcast_to(idx, (*values.shape[:-1], positions.shape[-1]))
    return jnp.take_along_axis(values, idx, -1)


@tuned_jit(static_argnames=("module", "tp", "score", "f", "batch_size"))
def _ablation(module, params, ids, base_id, positions, tp, score, f, batch_size):
    run = _coalition_scorer(module, params, ids, tp, score, base_id, positions)
    n = ids.shape[0]
    clean = run(jnp.ones((n, f), bool))
    dropped = chunked_map(lambda j: run(jnp.broadcast_to(jnp.arange(f) != j, (n, f))),
                          jnp.arange(f), batch_size)  # [F, N, Tt]
    return _spread((clean[None] - dropped).transpose(1, 2, 0), positions)  # [N, Tt, Tp]


@tuned_jit(static_argnames=("module", "tp", "score", "batch_size"))
def _sampling(module, params, ids, base_id, positions, permutations, tp, score, batch_size):
    run = _coalition_scorer(module, params, ids, tp, score, base_id, positions)
    ranks = jnp.argsort(permutations, axis=-1).astype(jnp.int32)  # [N, S, F]
    n, s, f = ranks.shape
    empty = run(jnp.zeros((n, f), bool))  # [N, Tt]
    which, step = jnp.repeat(jnp.arange(s), f), jnp.tile(jnp.arange(f), s)
    v = chunked_map(lambda sk: run(ranks[:, sk[0]] <= sk[1]), (which, step), batch_size)
    v = v.reshape(s, f, n, -1)  # v[s, k]: the first k + 1 features of permutation s
    prev = jnp.concatenate([jnp.broadcast_to(empty, (s, 1, *empty.shape)), v[:, :-1]], 1)
    gain = (v - prev).transpose(2, 3, 0, 1)  # [N, Tt, S, position]
    idx = jnp.broadcast_to(ranks[:, None], gain.shape)
    phi = jnp.take_along_axis(gain, idx, -1).sum(2) / s  # [N, Tt, F]
    return _spread(phi, positions)


@tuned_jit(static_argnames=("module", "tp", "score", "batch_size"))
def _exact(module, params, ids, base_id, positions, coalitions, coef, tp, score, batch_size):
    run = _coalition_scorer(module, params, ids, tp, score, base_id, positions)
    n = ids.shape[0]
    v = chunked_map(lambda z: run(jnp.broadcast_to(z, (n, z.size))), coalitions, batch_size)
    return _spread(jnp.einsum("cnt,cf->ntf", v, coef.astype(v.dtype)), positions)


@tuned_jit(static_argnames=("module", "tp", "score", "batch_size", "lime", "max_iter"))
def _surrogate(module, params, ids, base_id, positions, z, alpha, width, tol, tp, score,
               batch_size, lime, max_iter):
    run = _coalition_scorer(module, params, ids, tp, score, base_id, positions)
    y = chunked_map(lambda zs: run(zs).sum(-1), z.swapaxes(0, 1), batch_size).T  # [N, S]
    design = z.astype(y.dtype)
    if lime:  # Captum's cosine kernel between the all-ones interpretable input and z
        f = z.shape[-1]
        cos = design.sum(-1) / jnp.maximum(jnp.sqrt(f * design.sum(-1)), 1e-8)
        sim = jnp.exp(-((1 - cos) ** 2) / (2 * width ** 2))
        coef = jax.vmap(lambda d, yy, w: lasso(d, yy, w, alpha, tol, max_iter)[0])(design, y, sim)
    else:
        size = z.sum(-1)
        w = jnp.where((size == 0) | (size == z.shape[-1]), KERNEL_SHAP_INF_WEIGHT, 1.0)
        coef = jax.vmap(lambda d, yy, ww: weighted_lstsq(d, yy, ww)[0])(design, y,
                                                                        w.astype(y.dtype))
    return _spread(coef, positions)


def _features(feature_mask, n: int, tp: int) -> tuple[jax.Array, int]:
    """Positions' feature ids `[N, Tp]` and the count F (default: every prompt token)."""
    if feature_mask is None:
        return jnp.broadcast_to(jnp.arange(tp, dtype=jnp.int32), (n, tp)), tp
    mask = np.asarray(feature_mask)
    if not np.issubdtype(mask.dtype, np.integer):
        raise TypeError(f"feature_mask must hold int feature ids, got {mask.dtype}")
    if mask.ndim == 1:
        mask = np.broadcast_to(mask, (n, tp))
    if mask.shape != (n, tp):
        raise ValueError(f"feature_mask must be [T_prompt] or [N, T_prompt] = [{n}, {tp}], "
                         f"got {np.shape(feature_mask)}")
    if mask.min() < 0:
        raise ValueError("feature_mask ids must be >= 0 (consecutive from 0)")
    f = int(mask.max()) + 1
    return jnp.asarray(mask, jnp.int32), f


def _batched(m, prompt_ids, target_ids):
    prompt = check_ids(m, prompt_ids)
    target = check_ids(m, target_ids)
    if target.shape[0] == 1 and prompt.shape[0] > 1:
        target = jnp.broadcast_to(target, (prompt.shape[0], target.shape[1]))
    if prompt.shape[0] != target.shape[0]:
        raise ValueError(f"{prompt.shape[0]} prompts but {target.shape[0]} targets")
    ids = check_ids(m, jnp.concatenate([prompt, target], 1))
    return ids, prompt.shape[1], np.ndim(prompt_ids) == 1


def attribute(m: LanguageModel, prompt_ids, target_ids, *, method: str = "integrated_gradients",
              per_token: bool = False, score: str | None = None, baseline=0,
              steps: int = 50, ig_method: str = "gausslegendre", feature_mask=None,
              samples: int | None = None, permutations=None, coalitions=None, key=None,
              alpha: float = 0.01, kernel_width: float = 1.0, head_fusion: str = "mean",
              composite: str = "attn_lrp", batch_size: int | None = 64,
              tol: float = 1e-12, max_iter: int = 10_000) -> jax.Array:
    """Attributes the target tokens' score to the prompt tokens.

    Args:
      m: a `LanguageModel` (`ji.load_model("lm-mini")`, an imported GPT-2).
      prompt_ids: int token ids `[N, T_prompt]` (or `[T_prompt]`).
      target_ids: int token ids `[N, T_target]` (or `[T_target]`, shared by the prompts).
      method: "saliency" (L2 norm of the embedding gradient), "input_x_gradient",
        "integrated_gradients" (on the embeddings, Captum's `LayerIntegratedGradients`),
        "lrp" (AttnLRP / CP-LRP rules, `composite`), "feature_ablation", "shapley_sampling",
        "shapley_values" (exact, ≤ 16 features), "kernel_shap", "lime" (Captum's defaults),
        "attention_rollout" (Abnar & Zuidema over the causal attention).
      per_token: one row per target token (`[N, T_target, T_prompt]`); not for kernel_shap
        and lime, whose surrogate fits the summed score (as Captum's).
      score: "log_prob" (Captum's, the default), "prob", or "logit"; lrp defaults to "logit"
        (LXT explains the logit), attention_rollout has no score.
      baseline: token id replacing removed tokens (perturbations) and whose embedding is the
        IG baseline; Captum's default 0. IG also takes "zeros" (the zero embedding).
      steps, ig_method: IG's quadrature (Captum's default: 50 Gauss–Legendre points).
      feature_mask: int ids `[T_prompt]` or `[N, T_prompt]` grouping prompt tokens into
        features (perturbation methods); default every token its own feature.
      samples: permutations (shapley_sampling, default 25) or coalitions (kernel_shap,
        lime; default 25).
      permutations, coalitions: the draws to use instead (`[S, F]` or `[N, S, F]`);
        coalitions serve kernel_shap and lime.
      key: PRNG key for the draws (`jax.random.key(0)` if omitted).
      alpha, kernel_width, tol, max_iter: LIME's Lasso and kernel (as `ji.lime`).
      head_fusion: "mean", "max" or "min" over heads (attention_rollout).
      composite: "attn_lrp" or "cp_lrp" (lrp).
      batch_size: perturbations or IG steps evaluated at a time (a memory bound).
    Returns:
      `[N, T_prompt]` (or `[T_prompt]` for 1-D prompt ids), or `[N, T_target, T_prompt]`
      with `per_token`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if per_token and method not in PER_TOKEN:
        raise ValueError(f"{method} fits one surrogate to the summed score: per_token is not "
                         f"available (methods with it: {', '.join(PER_TOKEN)})")
    score = score or ("logit" if method == "lrp" else "log_prob")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    batch_size = check_batch_size(batch_size)
    ids, tp, single = _batched(m, prompt_ids, target_ids)
    module, params = m.module, m.params
    if method in ("saliency", "input_x_gradient"):
        out = _gradient_method(module, params, ids, tp, score, method, per_token)
    elif method == "lrp":
        if composite not in ("attn_lrp", "cp_lrp"):
            raise ValueError(f"composite must be 'attn_lrp' or 'cp_lrp', got {composite!r}")
        if m.is_gpt2:  # jaxinterp's GPT-2: the rules are in its modules
            out = _gradient_method(m.with_rule(composite).module, params, ids, tp, score,
                                   "input_x_gradient", per_token)
        else:  # a wrapped function: the same rules found in its traced graph
            out = _graph_lrp(module, params, ids, tp, score, composite, per_token)
    elif method == "integrated_gradients":
        alphas, weights = quadrature(ig_method, steps)
        dtype = param_dtype(params)
        base = _baseline_embedding(m, baseline)
        out = _integrated(module, params, ids, base, jnp.asarray(alphas, dtype),
                          jnp.asarray(weights, dtype), tp, score, per_token, batch_size)
    elif method == "attention_rollout":
        if head_fusion not in ("mean", "max", "min"):
            raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")
        out = _rollout(module, params, ids, tp, head_fusion)
        out = out if per_token else out.sum(1)
    else:
        out = _perturb(m, ids, tp, method, score, per_token, baseline, feature_mask, samples,
                       permutations, coalitions, key, alpha, kernel_width, batch_size, tol,
                       max_iter)
    return out[0] if single else out


def _baseline_embedding(m, baseline):
    if isinstance(baseline, str):
        if baseline != "zeros":
            raise ValueError(f"baseline must be a token id or 'zeros', got {baseline!r}")
        return jnp.zeros((), m.param_dtype(params))
    return m.embed(_baseline_id(m, baseline))


def _baseline_id(m, baseline) -> jax.Array:
    if isinstance(baseline, str) or np.ndim(baseline) != 0 or not np.issubdtype(
            np.asarray(baseline).dtype, np.integer):
        raise TypeError(f"baseline must be a token id (int) for perturbations, got {baseline!r}")
    if not 0 <= int(baseline) < m.config.vocab_size:
        raise ValueError(f"baseline token {int(baseline)} is outside [0, {m.config.vocab_size})")
    return jnp.asarray(int(baseline), jnp.int32)


def _perturb(m, ids, tp, method, score, per_token, baseline, feature_mask, samples,
             permutations, coalitions, key, alpha, kernel_width, batch_size, tol, max_iter):
    module, params, n = m.module, m.params, ids.shape[0]
    base_id = _baseline_id(m, baseline)
    positions, f = _features(feature_mask, n, tp)
    if method == "feature_ablation":
        out = _ablation(module, params, ids, base_id, positions, tp, score, f, batch_size)
    elif method == "shapley_sampling":
        if permutations is None:
            s = 25 if samples is None else check_count(samples, "samples")
            permutations = draw(example_keys(key, n), "permutations", s, f)
        else:
            permutations = check_draws(permutations, "permutations", n, f, samples, False)
        out = _sampling(module, params, ids, base_id, positions, permutations, tp, score,
                        batch_size)
    elif method == "shapley_values":
        if f > MAX_EXACT_FEATURES:
            raise ValueError(f"exact Shapley values need 2^F forward passes; F = {f} features "
                             f"is more than {MAX_EXACT_FEATURES}: group tokens with "
                             "feature_mask or use shapley_sampling")
        z, coef = shapley_weights(f)
        out = _exact(module, params, ids, base_id, positions, jnp.asarray(z),
                     jnp.asarray(coef), tp, score, batch_size)
    else:
        lime = method == "lime"
        if coalitions is None:
            if not lime and f < 2:
                raise ValueError("kernel_shap needs at least 2 features")
            s = 25 if samples is None else check_count(samples, "samples", 1 if lime else 2)
            coalitions = draw(example_keys(key, n), "bernoulli" if lime else "kernel_shap", s, f)
        else:
            coalitions = check_draws(coalitions, "coalitions", n, f, samples, True)
        dtype = param_dtype(params)
        width = check_real(kernel_width, "kernel_width").astype(dtype)
        if float(width) <= 0:
            raise ValueError(f"kernel_width must be > 0, got {float(width)}")
        return _surrogate(module, params, ids, base_id, positions, coalitions,
                          check_real(alpha, "alpha", minimum=0.0).astype(dtype), width,
                          check_real(tol, "tol", minimum=0.0).astype(dtype), tp, score,
                          batch_size, lime, check_count(max_iter, "max_iter"))
    return out if per_token else out.sum(1)
