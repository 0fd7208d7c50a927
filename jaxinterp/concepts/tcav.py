"""Testing with concept activation vectors (Kim et al. 2018), seeded and compiled.

A CAV is the normal of a linear classifier separating a concept's activations from a random
set's; an input's conceptual sensitivity is the directional derivative of the target's score
along it. The TCAV score is the fraction of inputs with a positive derivative: above 0.5 the
concept raises the score, below 0.5 it lowers it. Its significance is a t-test of the concept's
scores (one per random set) against random-vs-random scores: two-sided by default, as in the
paper and tensorflow/tcav (a concept that consistently lowers the score is significant too);
`alternative="greater"` asks only whether the concept raises the score.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import as_key, check_count, check_images, check_real
from jaxinterp.concepts.data import layer_output
from jaxinterp.optvis.optimize import optimize
from jaxinterp.targets import as_target


class TCAV(NamedTuple):
    """What `tcav` returns.

    Attributes:
      score: the mean TCAV score over the runs.
      scores: the concept's TCAV score against each random set `[runs]`.
      random_scores: scores of random-vs-random CAVs `[runs]`.
      p_value: t-test of `scores` against `random_scores` (`alternative` of `tcav`: two-sided
        by default, so it says whether the concept matters, not in which direction; `score`
        above or below 0.5 gives the direction).
      significant: p_value < alpha.
      accuracy: each concept CAV's training accuracy `[runs]`.
    """

    score: float
    scores: np.ndarray
    random_scores: np.ndarray
    p_value: float
    significant: bool
    accuracy: np.ndarray


def _fit_cav(pos, neg, l2):
    """The unit normal of an L2-regularized logistic regression, `pos` (label 1) vs `neg`."""
    x = jnp.concatenate([pos, neg])
    y = jnp.concatenate([jnp.ones(len(pos)), jnp.zeros(len(neg))])
    scale = jnp.maximum(jnp.abs(x).mean(), 1e-12)  # conditions the problem; the normal is unchanged
    x = x / scale

    def loss(p, k):
        z = x @ p["w"] + p["b"]
        ce = optax.sigmoid_binary_cross_entropy(z, y).mean()
        return (ce + 0.5 * l2 * (p["w"] ** 2).sum())[None], None

    p0 = {"w": jnp.zeros(x.shape[1]), "b": jnp.zeros(())}
    p = optimize(loss, p0, steps=100, optimizer=optax.lbfgs()).params
    acc = ((x @ p["w"] + p["b"] > 0) == (y > 0.5)).mean()
    return p["w"] / jnp.maximum(jnp.linalg.norm(p["w"]), 1e-12), acc


@tuned_jit(static_argnames=("name",))
def _acts(m, x, name):
    return layer_output(m, x, name).reshape(x.shape[0], -1)


@tuned_jit(static_argnames=("name", "start"))
def _gradients(m, x, target, name, start):
    h = m(x, check=False)[1][name]
    if start is None:  # a wrapped model: the gradient at the layer through a zero tap
        tapped = lambda d: target(*m(x, check=False, taps={name: d})).sum()  # noqa: E731
        return jax.grad(tapped)(jnp.zeros_like(h)).reshape(x.shape[0], -1)

    def score(h):
        logits, feats = m.resume(h, start)
        return target(logits, feats).sum()

    return jax.grad(score)(h).reshape(x.shape[0], -1)


@tuned_jit()
def _scores(concept, randoms, grads, l2):
    """TCAV scores of concept-vs-random and random-vs-random CAVs (vmapped over runs)."""
    cavs, acc = jax.vmap(lambda r: _fit_cav(concept, r, l2))(randoms)
    rand_cavs, _ = jax.vmap(lambda a, b: _fit_cav(a, b, l2))(randoms,
                                                            jnp.roll(randoms, 1, axis=0))
    frac = lambda c: ((grads @ c.T) > 0).mean(0)  # noqa: E731
    return frac(cavs), frac(rand_cavs), acc


ALTERNATIVES = ("two-sided", "greater", "less")


def p_value(scores: np.ndarray, random_scores: np.ndarray,
            alternative: str = "two-sided") -> float:
    """Student's t-test (pooled variance: scipy's `ttest_ind`, as tensorflow/tcav) of a
    concept's TCAV scores against random-vs-random scores; `alternative="greater"`: the
    concept's scores are higher. 1.0 when both samples are one and the same constant."""
    from scipy import stats

    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, "
                         f"got {alternative!r}")
    scores, random_scores = np.asarray(scores), np.asarray(random_scores)
    if np.all(scores == scores[0]) and np.all(random_scores == scores[0]):
        return 1.0
    with warnings.catch_warnings():  # scores of a clear concept are often all 1.0
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(scores, random_scores, alternative=alternative).pvalue)
    return 1.0 if np.isnan(p) else p


def tcav(m, layer: str, concept_images: jax.Array, random_images: jax.Array,
         inputs: jax.Array, target: Any, *, runs: int = 10, alpha: float = 0.05,
         alternative: str = "two-sided", l2: float = 0.01,
         key: jax.Array | int | None = None) -> TCAV:
    """How much a concept matters to a class's score at `layer` (TCAV, Kim et al. 2018).

    Args:
      m: the model.
      layer: layer name or alias (bottleneck).
      concept_images: examples of the concept `[Nc, H, W, 3]` in [0, 1].
      random_images: a pool of random counter-examples `[Nr, H, W, 3]`; each run draws `Nc` of
        them (without replacement within a set) from `key`.
      inputs: the images whose class scores are tested `[Ni, H, W, 3]` (e.g. images of the
        class).
      target: the class (an int or an int array `[Ni]`) or a callable `(logits, feats) -> [Ni]`;
        its score (pre-softmax) is differentiated.
      runs: random sets (the tcav notebooks use 5–10, the paper 500).
      alpha: significance level of the t-test.
      alternative: the t-test's alternative hypothesis about the concept's scores against the
        random-vs-random scores: "two-sided" (default; the paper's and tensorflow/tcav's test:
        the concept matters, raising or lowering the score), "greater" (it raises the score:
        the question "does the class use this concept?"), or "less" (it lowers it).
      l2: the classifier's L2 penalty (tcav's SGDClassifier alpha 0.01); the classifier is a
        logistic regression solved with L-BFGS on all examples (tcav: hinge loss, SGD, a 33 %
        test split).
      key: PRNG key or int seed (default 0): the random sets, hence the result; tcav's runs
        are unseeded.
    Returns:
      `TCAV(score, scores, random_scores, p_value, significant, accuracy)`.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, "
                         f"got {alternative!r}")
    name = m.resolve(layer)
    check_count(runs, "runs", 2)
    check_real(l2, "l2", 0.0)
    concept_images = check_images(concept_images, "concept_images", m.min_size)
    random_images = check_images(random_images, "random_images", m.min_size)
    inputs = check_images(inputs, "inputs", m.min_size)
    nc = concept_images.shape[0]
    if nc < 2:
        raise ValueError(f"concept_images needs at least 2 images, got {nc}")
    if random_images.shape[0] < nc:
        raise ValueError(f"random_images has {random_images.shape[0]} images; each random set "
                         f"needs as many as concept_images ({nc})")
    t = as_target(m, target, inputs.shape[0])
    start = m.layers.index(name) + 1 if hasattr(m, "resume") else None
    concept = _acts(m, concept_images, name)
    pool = _acts(m, random_images, name)
    keys = jax.random.split(as_key(key), runs)
    draw = jax.vmap(lambda k: jax.random.permutation(k, pool.shape[0])[:nc])(keys)
    grads = _gradients(m, inputs, t, name, start)
    scores, random_scores, acc = (np.asarray(a) for a in
                                  _scores(concept, pool[draw], grads, jnp.float32(l2)))
    p = p_value(scores, random_scores, alternative)
    return TCAV(float(scores.mean()), scores, random_scores, p, p < alpha, acc)
