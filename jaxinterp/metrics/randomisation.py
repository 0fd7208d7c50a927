"""Randomisation: does the explanation depend on what the model learned? (Quantus 0.6's MPRT,
SmoothMPRT, RandomLogit; Adebayo et al. 2018's sanity checks.)

The attribution method is re-run inside the metric: on the model with more and more layers
re-initialised (MPRT), or for another class (random logit). One compiled program per call
shape: the randomised models differ only in their weights, which are traced, so every layer
reuses the same program.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import check_batch_size, check_count, check_real, unchecked_image_values
from jaxinterp.chunking import chunked_map
from jaxinterp.metrics import _common as c
from jaxinterp.metrics.robustness import explain, static_method

ORDERS = ("top_down", "bottom_up", "independent")
SIMILARITIES = ("spearman", "pearson", "ssim")


class Randomisation(NamedTuple):
    """A model parameter randomisation test's result.

    Attributes:
      scores: `[N]`, the similarity after the last stage (every layer randomised for the
        cascading orders): Quantus' `return_last_correlation`.
      curves: `[N, 1 + L]`, the similarity to the original explanation at each stage; column
        0 is the original model against itself (1 for a deterministic method).
      layers: `("original", name_1, …, name_L)`, the layer randomised at each stage.
    """

    scores: np.ndarray
    curves: np.ndarray
    layers: tuple


# --------------------------------------------------------------------------- randomised models


def weighted_layers(m) -> list[str]:
    """The names of the model's weight layers (convolutions and dense), input to output."""
    if not hasattr(m, "specs"):
        raise ValueError(f"layer randomisation follows jaxinterp VGG's layer list; {m.arch} has "
                         "none: pass the randomised models yourself (models=[...])")
    return [s.name for s in m.specs if s.kind in ("conv", "dense")]


@functools.partial(jax.jit, static_argnames=("depth",))
def _fresh_variables(m, key, depth):
    """`cascading_randomization(m, key, depth).variables`, compiled once per architecture
    (eagerly, it compiles the module's initializer anew at every call)."""
    from jaxinterp.evaluation import cascading_randomization

    return cascading_randomization(m, key, depth).variables


def randomize_layers(m, key: Any, layers: Sequence[str], *, fresh: Any = None):
    """The model with the weight layers `layers` re-initialised (from `key`), the rest kept.

    The fresh weights are those of `evaluation.cascading_randomization(m, key, ·)`, so
    randomising the top d layers here equals `cascading_randomization(m, key, d)`; a
    convolution's BatchNorm is reset with it.

    Args:
      m: a jaxinterp VGG model.
      key: PRNG key of the fresh weights.
      layers: names of weight layers (`weighted_layers(m)`).
      fresh: the fully re-initialised variables, if already computed (for many calls).
    Returns:
      A model with the same architecture and metadata.
    """
    from jaxinterp.checks import as_key
    from jaxinterp.models.vgg import param_name

    names = weighted_layers(m)
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise ValueError(f"unknown weight layers {unknown}; valid: {names}")
    if fresh is None:
        fresh = _fresh_variables(m, as_key(key), len(names))
    specs = [s.name for s in m.specs]
    variables = {k: dict(v) for k, v in m.variables.items()}
    for name in layers:
        i = specs.index(name)
        keys = [param_name(name)]
        if i + 1 < len(specs) and m.specs[i + 1].kind == "bn":
            keys.append(param_name(specs[i + 1]))
        for collection, values in variables.items():
            for k in keys:
                if k in values:
                    values[k] = fresh[collection][k]
    return m.with_variables(variables)


def randomisation_stages(m, key: Any, order: str = "top_down") -> list[tuple[str, Any]]:
    """`[(layer, model)]`: the models MPRT compares, one per weight layer in `order`:
    cumulative from the output ("top_down") or the input ("bottom_up"), or one layer at a
    time ("independent")."""
    from jaxinterp.checks import as_key

    c.check_choice(order, "order", ORDERS)
    names = weighted_layers(m)
    fresh = _fresh_variables(m, as_key(key), len(names))
    names = names[::-1] if order == "top_down" else names
    stages = []
    for i, name in enumerate(names):
        chosen = [name] if order == "independent" else names[:i + 1]
        stages.append((name, randomize_layers(m, key, chosen, fresh=fresh)))
    return stages


# --------------------------------------------------------------------------- similarities


def ssim_1d(a: jax.Array, b: jax.Array, win_size: int = 7) -> jax.Array:
    """skimage's `structural_similarity` of flat vectors `[..., F]` (Quantus' `ssim` on
    flattened explanations): box window of 7, sample covariance, K1 0.01, K2 0.03,
    `data_range` the pair's max − min, mean over the positions a whole window covers."""
    f = a.shape[-1]
    if f < win_size:
        raise ValueError(f"SSIM needs at least {win_size} features, got {f}")
    r = jnp.maximum(a.max(-1), b.max(-1)) - jnp.minimum(a.min(-1), b.min(-1))
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2

    def box(v):
        cs = jnp.concatenate([jnp.zeros((*v.shape[:-1], 1), v.dtype), jnp.cumsum(v, -1)], -1)
        return (cs[..., win_size:] - cs[..., :-win_size]) / win_size

    ux, uy = box(a), box(b)
    norm = win_size / (win_size - 1)
    vx = norm * (box(a * a) - ux * ux)
    vy = norm * (box(b * b) - uy * uy)
    vxy = norm * (box(a * b) - ux * uy)
    s = ((2 * ux * uy + c1[..., None]) * (2 * vxy + c2[..., None])) / (
        (ux * ux + uy * uy + c1[..., None]) * (vx + vy + c2[..., None]))
    return s.mean(-1)


def similarity(a: jax.Array, b: jax.Array, kind: str) -> jax.Array:
    """Row-wise similarity of flat explanations `[N, F]`: "spearman", "pearson" or "ssim"."""
    if kind == "spearman":
        return c.spearman(a, b)
    if kind == "pearson":
        return c.pearson(a, b)
    return ssim_1d(a, b)


# --------------------------------------------------------------------------- MPRT


def _smoothed(method, m, x, t, eps, normalise, absolute, batch_size):
    """Quantus' SmoothMPRT explanation: the mean of the method over the noisy copies `x + ε_k`
    and the clean image (`eps` `[samples − 1, N, H, W, 3]`, already scaled)."""
    from jaxinterp.attribution.core import loop_ready

    mr = loop_ready(m, batch_size)

    def one(e):
        with unchecked_image_values():
            return jnp.asarray(method(mr, x + e, t)).astype(x.dtype)

    with unchecked_image_values():
        clean = jnp.asarray(method(m, x, t)).astype(x.dtype)
    if eps.shape[0] == 0:
        total = clean
    else:
        total = chunked_map(one, eps, batch_size).sum(0) + clean
    return c.preprocess(total / (eps.shape[0] + 1), normalise, absolute)


@tuned_jit(static_argnames=("method", "normalise", "absolute", "batch_size"))
def _explained(mr, x, t, eps, method, normalise, absolute, batch_size):
    """The (smoothed, when `eps` has samples) explanation of `mr`, flat `[N, F]`."""
    if eps is None:
        a = explain(method, mr, x, t, normalise, absolute)
    else:
        a = _smoothed(method, mr, x, t, eps, normalise, absolute, batch_size)
    return c.features(a)


@tuned_jit(static_argnames=("sim",))
def _similar(a, b, sim):
    return similarity(a, b, sim)


def _stages(m, key, order, models):
    if models is None:
        return randomisation_stages(m, key, order)
    out = []
    for i, item in enumerate(models):
        out.append(tuple(item) if isinstance(item, tuple) else (f"stage_{i + 1}", item))
    if not out:
        raise ValueError("models is empty: pass at least one randomised model")
    return out


def _mprt(m, x, y, method, order, key, models, normalise, absolute, sim, eps, batch_size):
    batch_size = check_batch_size(batch_size)
    c.check_choice(sim, "similarity", SIMILARITIES)
    if not (callable(method) or isinstance(method, str)):
        raise TypeError("MPRT re-runs the attribution method on randomised models: pass the "
                        "method (m, x, y) -> attributions (or its name)")
    x, t = c.check_model_target(m, x, y)
    method = static_method(method)
    normalise = c.check_normalise(normalise)
    stages = _stages(m, key, order, models)
    eps = eps(x) if callable(eps) else eps
    run = lambda model: _explained(model, x, t, eps, method, normalise, bool(absolute),  # noqa
                                   batch_size)
    a0 = run(m)
    curves = [_similar(a0, run(m), sim)]  # Quantus' "original": the model against itself
    for _, model in stages:
        curves.append(_similar(a0, run(model), sim))
    curves = np.stack([np.asarray(v) for v in curves], 1)
    return Randomisation(curves[:, -1], curves, ("original", *(name for name, _ in stages)))


def mprt(m, x, y, method: Any, *, order: str = "top_down", key: Any = None,
         models: Sequence | None = None, similarity: str = "spearman",  # noqa: F811
         normalise: Any = "image", abs: bool = True) -> Randomisation:  # noqa: A002
    """Model parameter randomisation test (Adebayo et al. 2018): how similar the explanation
    stays as the model's layers are re-initialised, from the output down.

    Stage l re-initialises the top l weight layers (`randomisation_stages`: the fresh weights
    of `evaluation.cascading_randomization(m, key, ·)`); `method` is re-run on each randomised
    model and compared with the original explanation by Spearman rank correlation over the
    flat features. Lower similarity is better (the explanation depends on the weights).

    Quantus 0.6 `MPRT` defaults kept: top-down cascading order, Spearman, |a|, normalised by
    the maximum (no effect on ranks), logits. Quantus counts every module with
    `reset_parameters`, BatchNorm included, as its own stage; here a convolution's BatchNorm
    is reset with it (pass Quantus' randomised models as `models` to compare stage by stage).
    Quantus' average over layers (`return_average_correlation`) includes the "original"
    stage (its code skips a key "orig" that does not exist); `curves[:, 1:].mean(1)` is the
    average without it.

    Args:
      m: the model (jaxinterp's VGG for the default stages).
      x: images `[N, H, W, 3]` in [0, 1].
      y: class index, int array `[N]` or callable target.
      method: attribution function `(m, x, y) -> attributions` (or a registered name).
      order: "top_down" (Quantus), "bottom_up" or "independent".
      key: PRNG key of the fresh weights (`jax.random.key(0)` if omitted).
      models: explicit randomised models, in stage order: models or `(name, model)` pairs
        (overrides `order` and `key`; works for any model).
      similarity: "spearman" (Quantus), "pearson" or "ssim".
      normalise: "image", "batch" (Quantus) or None.
      abs: compare |a| (Quantus' default here).
    Returns:
      `Randomisation(scores [N], curves [N, 1 + L], layers)`, numpy.
    """
    return _mprt(m, x, y, method, order, key, models, normalise, abs, similarity, None, None)


def smooth_mprt(m, x, y, method: Any, *, samples: int = 50, noise: float = 0.1,
                order: str = "bottom_up", key: Any = None, models: Sequence | None = None,
                noise_draws: Any = None, similarity: str = "spearman",  # noqa: F811
                normalise: Any = "image", abs: bool = True,  # noqa: A002
                batch_size: int | None = None) -> Randomisation:
    """Smooth MPRT (Hedström et al. 2023): MPRT on explanations denoised by averaging over
    noisy copies of the input.

    Each explanation (original and randomised models) is the mean of `method` over
    `samples − 1` copies `x + ε`, `ε ~ N(0, (noise · (max x − min x))²)` per image, and the
    clean image (Quantus' `explain_smooth_batch`); the same draws serve every stage (common
    random numbers; Quantus draws anew for each). Lower similarity is better.

    Quantus 0.6 `SmoothMPRT` defaults kept: 50 samples, noise 0.1, bottom-up order, Spearman,
    |a| (its normalisation by the second moment does not change ranks). Noisy copies leave
    [0, 1]; the model sees them as they are (as Quantus). Draws from `key`.

    Args:
      m: the model (jaxinterp's VGG for the default stages).
      x: images `[N, H, W, 3]` in [0, 1].
      y: class index, int array `[N]` or callable target.
      method: attribution function `(m, x, y) -> attributions` (or a registered name).
      samples: explanations averaged per image (the last one on the clean image).
      noise: noise sd as a fraction of each image's (max − min).
      order: "bottom_up" (Quantus), "top_down" or "independent".
      key: PRNG key of the weights and the noise (`jax.random.key(0)` if omitted).
      models: explicit randomised models (as `mprt`).
      noise_draws: explicit standard-normal draws `[N, samples − 1, H, W, 3]` (scaled here by
        `noise · (max − min)`), overriding the key's.
      similarity: "spearman" (Quantus), "pearson" or "ssim".
      normalise: "image", "batch" (Quantus: by max) or None.
      abs: compare |a|.
      batch_size: noisy copies explained at a time (memory bound); None: all at once.
    Returns:
      `Randomisation(scores [N], curves [N, 1 + L], layers)`, numpy.
    """
    from jaxinterp.checks import as_key

    samples = check_count(samples, "samples")
    sd = check_real(noise, "noise", minimum=0.0)
    key = as_key(key)

    def eps(x):
        n = x.shape[0]
        if noise_draws is None:
            keys = c.key_per_example(jax.random.fold_in(key, 1), n)
            draws = jax.vmap(lambda k: jax.random.normal(k, (samples - 1, *x.shape[1:]),
                                                         x.dtype))(keys)
        else:
            draws = jnp.asarray(noise_draws, x.dtype)
            if draws.shape != (n, samples - 1, *x.shape[1:]):
                raise ValueError(f"noise_draws must be [N, samples - 1, H, W, 3] = "
                                 f"{(n, samples - 1, *x.shape[1:])}, got {draws.shape}")
        scale = sd.astype(x.dtype) * (x.max((1, 2, 3)) - x.min((1, 2, 3)))
        return jnp.swapaxes(draws * scale[:, None, None, None, None], 0, 1)

    return _mprt(m, x, y, method, order, key, models, normalise, abs, similarity, eps,
                 batch_size)


# --------------------------------------------------------------------------- random logit


def random_logit(m, x, y, method: Any, *, key: Any = None, other: Any = None,
                 similarity: str = "ssim", normalise: Any = "image",  # noqa: F811
                 abs: bool = False) -> np.ndarray:  # noqa: A002
    """Random logit (Sixt et al. 2020): similarity of the explanation for the target class and
    for a random other class.

    The other class is drawn uniformly among the model's other classes (from `key`, per
    example) or given as `other`; both explanations are normalised by their maximum and
    compared by SSIM over the flat features (skimage's, as Quantus). Lower is better (the
    explanation depends on the class).

    Quantus 0.6 `RandomLogit` defaults kept: SSIM, signed attributions, normalised ("image"
    here; Quantus: one maximum per batch, which here changes SSIM). Quantus draws the other
    class with `np.random.seed(42); randint(0, num_classes − 1)` among the classes ≠ y, whose
    exclusive upper bound never picks the last of them, and its `num_classes` defaults to
    1000 whatever the model; here the draw is uniform over all other classes of `m`.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      y: class index or int array `[N]`.
      method: attribution function `(m, x, y) -> attributions` (or a registered name).
      key: PRNG key of the other class (`jax.random.key(0)` if omitted), or `[N]` keys.
      other: explicit other classes `[N]` (overrides `key`).
      similarity: "ssim" (Quantus), "spearman" or "pearson".
      normalise: "image", "batch" (Quantus) or None.
      abs: compare |a|.
    Returns:
      `[N]` numpy similarities.
    """
    c.check_choice(similarity, "similarity", SIMILARITIES)
    if not (callable(method) or isinstance(method, str)):
        raise TypeError("random_logit re-runs the attribution method for another class: pass "
                        "the method (m, x, y) -> attributions (or its name)")
    x, t = c.check_model_target(m, x, y)
    if t.fn is not None:
        raise ValueError("random_logit needs class targets: y must be a class index or an int "
                         "array [N], not a callable")
    k = m.num_classes
    if k < 2:
        raise ValueError("random_logit needs a model with at least 2 classes")
    n = x.shape[0]
    if other is None:
        keys = c.key_per_example(key, n)
        shift = jax.vmap(lambda kk: jax.random.randint(kk, (), 1, k))(keys)
        other = (t.index + shift) % k
    other_t = c.check_model_target(m, x, jnp.asarray(other))[1]
    if bool(jnp.any(other_t.index == t.index)):
        raise ValueError("other must differ from y for every example")
    method = static_method(method)
    normalise = c.check_normalise(normalise)
    a = _explained(m, x, t, None, method, normalise, bool(abs), None)
    b = _explained(m, x, other_t, None, method, normalise, bool(abs), None)
    return np.asarray(_similar(a, b, similarity))
