"""Adversarial examples (FGSM, PGD under L∞ and L2), presets over `ji.optvis.optimize`.

Conventions are torchattacks' (REFERENCE.md): images in [0, 1], ε in the same units, cross-entropy
loss, the step then the ε-ball projection then the [0, 1] clamp. Unlike torchattacks, ε and the
step size are traced (a list of ε runs in one compiled call), restarts run vmapped and keep the
best restart per example, and an example stops changing once it has succeeded.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import as_key, check_count, check_images, check_real, is_traced
from jaxinterp.optvis.hooks import project
from jaxinterp.optvis.optimize import optimize
from jaxinterp.targets import as_target
from jaxinterp.models.convs import loop_conv

NORMS = ("linf", "l2")


@dataclasses.dataclass(frozen=True)
class _Config:
    norm: str
    steps: int
    random_start: bool
    restarts: int
    targeted: bool
    early_stop: bool


def _descent_step(norm: str, size: jax.Array) -> optax.GradientTransformation:
    """-size · sign(g) for L∞, -size · g / (‖g‖ + 1e-10) for L2, per example (torchattacks)."""

    def update(g, state, params=None):
        per_example = lambda v: v.reshape((-1,) + (1,) * (g.ndim - 1))
        if norm == "linf":
            d = jnp.sign(g)
        else:
            d = g / per_example(jnp.sqrt((g ** 2).reshape(g.shape[0], -1).sum(1)) + 1e-10)
        return -per_example(size) * d, state

    return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


def _random_start(key, x, eps, norm):
    e = eps.reshape((-1,) + (1,) * (x.ndim - 1))
    if norm == "linf":  # uniform in the ε-cube
        return jnp.clip(x + jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * e, 0.0, 1.0)
    kd, kr = jax.random.split(key)  # torchattacks PGDL2: a random direction, radius U(0, 1) · ε
    d = jax.random.normal(kd, x.shape, x.dtype)
    n = jnp.sqrt((d ** 2).reshape(x.shape[0], -1).sum(1)).reshape(e.shape)
    r = jax.random.uniform(kr, e.shape, x.dtype)
    return jnp.clip(x + d * r / n * e, 0.0, 1.0)


def _attack(m, x, y, eps, step_size, key, cfg: _Config):
    """Adversarial images, success and loss per example (traceable; eps, step_size `[N]`)."""
    m = m.with_conv(loop_conv())

    def outcome(adv):
        logits = m(adv, check=False)[0]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        hit = logits.argmax(-1) == y
        return ce, hit if cfg.targeted else ~hit

    def loss(adv, k):
        ce, success = outcome(adv)
        return (ce if cfg.targeted else -ce), success

    def one(k):
        start = _random_start(k, x, eps, cfg.norm) if cfg.random_start else x
        adv = optimize(loss, start, steps=cfg.steps, optimizer=_descent_step(cfg.norm, step_size),
                       key=k,
                       hook=lambda i, p, g: project(p, x, eps, cfg.norm),
                       stop=(lambda success: success) if cfg.early_stop else None).params
        ce, success = outcome(adv)
        return adv, success, ce

    keys = jax.random.split(key, cfg.restarts)
    adv, success, ce = jax.vmap(one)(keys)  # [R, N, ...]
    # best restart per example: a success first, then the highest (untargeted) or lowest
    # (targeted) loss
    rank = jnp.where(success, 1e30, 0.0) + jnp.where(cfg.targeted, -ce, ce)
    best = rank.argmax(0)
    pick = lambda a: jnp.take_along_axis(a, best.reshape((1, -1) + (1,) * (a.ndim - 2)), 0)[0]
    return pick(adv), pick(success), pick(ce)


def _step_vector(step_size, eps, steps, n):
    if step_size is None:
        return 2.5 * eps / steps
    return jnp.broadcast_to(check_real(step_size, "step_size", 0.0).astype(eps.dtype), (n,))


@tuned_jit(static_argnames=("cfg",))
def _attack_jit(m, x, y, eps, step_size, key, cfg):
    return _attack(m, x, y, eps, step_size, key, cfg)


@tuned_jit(static_argnames=("cfg", "rule"))
def _sweep(m, x, y, eps_list, step_size, key, cfg, rule):
    def at(eps, k):
        e = jnp.broadcast_to(eps, (x.shape[0],))
        s = {"madry": 2.5 * e / cfg.steps, "eps": e, "fixed": step_size * jnp.ones_like(e)}[rule]
        return _attack(m, x, y, e, s, k, cfg)

    keys = jax.random.split(key, eps_list.shape[0])
    return jax.vmap(at)(eps_list, keys)


def _check_eps(eps, norm, name="eps"):
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    eps = check_real(eps, name, 0.0)
    if norm == "linf" and not is_traced(eps) and np.max(np.asarray(eps), initial=0.0) > 1.0:
        raise ValueError(f"{name} must be in [0, 1] for norm='linf' (pixel units of [0, 1] images), "
                         f"got {float(np.max(np.asarray(eps))):g}")
    return eps


def _prepare(m, x, y, eps, norm, steps, restarts):
    x = check_images(x, min_size=m.min_size)
    n = x.shape[0]
    y = as_target(m, y, n).index
    if y is None:
        raise TypeError("y must be class indices (an int or an int array [N]), not a function")
    eps = _check_eps(eps, norm)
    if eps.ndim > 1 or (eps.ndim == 1 and eps.shape[0] != n):
        raise ValueError(f"eps must be a number or one per image [{n}], got shape {eps.shape}")
    check_count(steps, "steps", 1)
    check_count(restarts, "restarts", 1)
    return x, y, jnp.broadcast_to(eps, (n,)).astype(x.dtype)


def pgd(m, x: jax.Array, y, *, eps, norm: str = "linf", steps: int = 10,
        step_size: float | None = None, random_start: bool = True, restarts: int = 1,
        targeted: bool = False, early_stop: bool = True,
        key: jax.Array | int | None = None) -> jax.Array:
    """Projected gradient descent (Madry et al. 2018) under an L∞ or L2 budget, in one call.

    Each step moves by `step_size · sign(g)` (L∞) or `step_size · g / ‖g‖` (L2) of the
    cross-entropy gradient, projects onto the ε-ball around `x`, then clamps to [0, 1].

    Args:
      m: the model.
      x: clean images `[N, H, W, 3]` in [0, 1].
      y: true labels (untargeted: move away from them) or target classes (`targeted=True`),
        an int or an int array `[N]`.
      eps: the budget in [0, 1] pixel units (L∞: at most 1; L2: the Euclidean norm of the
        change over all pixels and channels), a number or one per image (traced).
      norm: "linf" or "l2".
      steps: gradient steps.
      step_size: step length in the same units (traced); default `2.5 * eps / steps` (Madry et
        al.'s rule: 2/255 at ε = 8/255 and 10 steps, torchattacks' default).
      random_start: start from a uniform point of the L∞ cube, or (L2) a random direction at a
        uniform radius in [0, ε] (torchattacks); else from `x`.
      restarts: independent random starts, run vmapped; each example keeps its best (a success
        first, then the highest loss).
      targeted: minimize the cross-entropy of `y` instead of maximizing it.
      early_stop: an example stops changing once it is misclassified (untargeted) or classified
        as its target; False: every example takes every step (torchattacks' loop).
      key: PRNG key or int seed for the random starts (default 0).
    Returns:
      Adversarial images `[N, H, W, 3]` in [0, 1], within ε of `x`.
    """
    x, y, eps = _prepare(m, x, y, eps, norm, steps, restarts)
    cfg = _Config(norm, steps, bool(random_start), restarts, bool(targeted), bool(early_stop))
    step = _step_vector(step_size, eps, steps, x.shape[0])
    return _attack_jit(m, x, y, eps, step, as_key(key), cfg)[0]


def fgsm(m, x: jax.Array, y, *, eps, norm: str = "linf", targeted: bool = False) -> jax.Array:
    """The fast gradient sign method (Goodfellow et al. 2015): one step of ε.

    `x + ε · sign(∇ CE)` for L∞ (torchattacks' `FGSM`), `x + ε · ∇ CE / ‖∇ CE‖` for L2 (the
    fast gradient method), clamped to [0, 1]; targeted steps down the target's cross-entropy.

    Args:
      m: the model.
      x: clean images `[N, H, W, 3]` in [0, 1].
      y: true labels, or target classes when `targeted`.
      eps: the step and budget in [0, 1] pixel units (traced).
      norm: "linf" or "l2".
      targeted: step towards `y` instead of away from it.
    Returns:
      Adversarial images `[N, H, W, 3]` in [0, 1].
    """
    x, y, eps = _prepare(m, x, y, eps, norm, 1, 1)
    cfg = _Config(norm, 1, False, 1, bool(targeted), False)
    return _attack_jit(m, x, y, eps, eps, jax.random.key(0), cfg)[0]


class Robustness(NamedTuple):
    """Attack outcomes over a list of budgets.

    Attributes:
      eps: the budgets `[E]`.
      success: whether the attack succeeded, per budget and example `[E, N]` (untargeted: the
        prediction is not `y`; targeted: it is).
      success_rate: mean success per budget `[E]`.
      robust_accuracy: per budget, the fraction still classified as `y` `[E]` (untargeted: 1 −
        success rate; targeted: the fraction where the target was not reached).
      images: the adversarial images `[E, N, H, W, 3]` (None unless asked for).
    """

    eps: jax.Array
    success: jax.Array
    success_rate: jax.Array
    robust_accuracy: jax.Array
    images: jax.Array | None


def robustness(m, x: jax.Array, y, eps: Sequence[float], *, attack: str = "pgd",
               norm: str = "linf", steps: int = 10, step_size: float | None = None,
               random_start: bool = True, restarts: int = 1, targeted: bool = False,
               early_stop: bool = True, return_images: bool = False,
               key: jax.Array | int | None = None) -> Robustness:
    """Success rate and robust accuracy of FGSM or PGD for each ε of a list, in one compiled call.

    The budgets are vmapped (traced: another list of the same length reuses the compilation).
    Foolbox's convention: images already misclassified count as successes.

    Args:
      m: the model.
      x: clean images `[N, H, W, 3]` in [0, 1].
      y: true labels (or targets when `targeted`).
      eps: the budgets, a list of numbers.
      attack: "pgd" or "fgsm" (FGSM ignores steps, step_size, random_start, restarts).
      norm, steps, step_size, random_start, restarts, targeted, early_stop, key: as `pgd`
        (default step size `2.5 * eps / steps` for each ε).
      return_images: also return the adversarial images of every ε.
    Returns:
      `Robustness(eps, success, success_rate, robust_accuracy, images)`.
    """
    if attack not in ("pgd", "fgsm"):
        raise ValueError(f"attack must be 'pgd' or 'fgsm', got {attack!r}")
    eps_list = _check_eps(np.asarray(eps, np.float32).reshape(-1), norm)
    if eps_list.shape[0] == 0:
        raise ValueError("eps must list at least one budget")
    if attack == "fgsm":
        steps, random_start, restarts, early_stop = 1, False, 1, False
    x, y, _ = _prepare(m, x, y, 0.0, norm, steps, restarts)
    cfg = _Config(norm, steps, bool(random_start), restarts, bool(targeted), bool(early_stop))
    rule = "eps" if attack == "fgsm" else "madry" if step_size is None else "fixed"
    step = jnp.float32(0) if rule != "fixed" else check_real(step_size, "step_size", 0.0)
    adv, success, _ = _sweep(m, x, y, eps_list, step, as_key(key), cfg, rule)
    rate = success.mean(1)
    return Robustness(eps_list, success, rate, 1.0 - rate, adv if return_images else None)
