"""The render loop (Lucid's `render_vis`): optimize a parameterized image for an objective.

The whole optimization is `lax.scan`s inside one `jit` (one segment per snapshot threshold);
many units render in one compiled call by `vmap` over a stacked objective.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxinterp import rules
from jaxinterp._xla import tuned_jit
from jaxinterp.chunking import chunked_map
from jaxinterp.optvis import objectives as obj_lib
from jaxinterp.optvis import param as param_lib
from jaxinterp.optvis import transforms as tf_lib


class Rendered(NamedTuple):
    """What `visualize` returns (a leading unit axis K is added by `visualize_units`).

    Attributes:
      images: the final images `[B, H, W, 3]` in [0, 1].
      snapshots: images at each threshold `[T, B, H, W, 3]`.
      scores: the objective per step and image `[steps, B]`, measured on that step's transformed
        input before the update.
      thresholds: the steps after which `snapshots` were taken.
    """

    images: jax.Array
    snapshots: jax.Array
    scores: jax.Array
    thresholds: tuple


@dataclasses.dataclass(frozen=True)
class Yosinski:
    """Yosinski et al. (2015) regularization, applied to a pixel parameter after each update.

    Parameter value 0 is mid-gray, so "clipping" a pixel sets its parameter to 0.

    Attributes:
      decay: L2 decay, params *= 1 - decay every step.
      blur_every: blur with a Gaussian of sd `blur_sigma` every this many steps (0: never).
      blur_sigma: Gaussian sd in pixels.
      norm_pct: zero the pixels whose colour norm is below this percentile (0: off).
      contrib_pct: zero the pixels whose |sum over channels of param * gradient| (first-order
        contribution to the objective) is below this percentile (0: off).
    """

    decay: float = 0.0
    blur_every: int = 0
    blur_sigma: float = 0.5
    norm_pct: float = 0.0
    contrib_pct: float = 0.0

    def __call__(self, step, params, grad):
        if self.decay:
            params = params * (1.0 - self.decay)
        if self.blur_every and self.blur_sigma > 0:
            blurred = gaussian_blur(params, self.blur_sigma)
            params = jnp.where((step + 1) % self.blur_every == 0, blurred, params)
        if self.norm_pct:
            params = _clip_below(params, jnp.linalg.norm(params, axis=-1), self.norm_pct)
        if self.contrib_pct:
            params = _clip_below(params, jnp.abs((params * grad).sum(-1)), self.contrib_pct)
        return params


def _clip_below(params, score, pct):
    """Zeroes pixels whose `score` `[B, H, W]` is below the per-image `pct` percentile."""
    cut = jnp.percentile(score.reshape(score.shape[0], -1), pct, axis=1)[:, None, None]
    return jnp.where((score < cut)[..., None], 0.0, params)


def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of `[B, H, W, C]` with sd `sigma` pixels (edges replicated)."""
    r = max(1, int(3 * sigma + 0.5))
    k = jnp.exp(-0.5 * (jnp.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    x = sum(k[i] * xp[:, i:i + h] for i in range(2 * r + 1))
    return sum(k[i] * x[:, :, i:i + w] for i in range(2 * r + 1))


@dataclasses.dataclass(frozen=True)
class _Config:
    param: Any
    transforms: tuple
    batch: int
    steps: int
    thresholds: tuple
    optimizer: Any
    regularize: Any
    redirect_relu: bool


def _render(m, objective, key, lr, cfg: _Config) -> Rendered:
    """The loop itself (traceable; `visualize` jits it, `visualize_units` vmaps it)."""
    m = m.with_conv("explicit")  # reverse mode only, and fast inside the scan (see VGG.conv)
    if cfg.redirect_relu:
        m = m.with_act(rules.redirected_relu)
    k_init, k_loop = jax.random.split(key)
    params = cfg.param.init(k_init, cfg.batch)
    opt = cfg.optimizer or optax.inject_hyperparams(optax.adam)(learning_rate=lr)
    state = opt.init(params)

    def loss(params, k):
        image = cfg.param(params)
        logits, feats = m(tf_lib.apply(cfg.transforms, k, image), check=False)
        scores = objective({**feats, "logits": logits, "input": image})
        return -scores.sum(), scores

    def step(carry, i):
        params, state = carry
        (_, scores), grad = jax.value_and_grad(loss, has_aux=True)(params, jax.random.fold_in(k_loop, i))
        updates, state = opt.update(grad, state, params)
        params = optax.apply_updates(params, updates)
        if cfg.regularize is not None:
            params = cfg.regularize(i, params, grad)
        return (params, state), scores

    carry, snaps, scores, start = (params, state), [], [], 0
    for end in sorted(set(cfg.thresholds) | {cfg.steps}):
        carry, s = jax.lax.scan(step, carry, jnp.arange(start, end))
        scores.append(s)
        if end in cfg.thresholds:
            snaps.append(cfg.param(carry[0]))
        start = end
    return Rendered(cfg.param(carry[0]), jnp.stack(snaps), jnp.concatenate(scores), None)


_render_jit = tuned_jit(static_argnames=("cfg",))(_render)


def _config(m, size, steps, param, decorrelate, sigmoid, transforms, batch, thresholds, optimizer,
            regularize, sd, decay_power, redirect_relu) -> _Config:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    thresholds = (steps,) if thresholds is None else tuple(int(t) for t in thresholds)
    if not thresholds or any(not 1 <= t <= steps for t in thresholds) or \
            list(thresholds) != sorted(set(thresholds)):
        raise ValueError(f"thresholds must be increasing steps in 1 … {steps}, got {thresholds}")
    kw = {"decay_power": decay_power} if param == "fft" else {}
    p = param_lib.image_param(param, size, decorrelate=decorrelate, sigmoid=sigmoid, sd=sd, **kw)
    transforms = tf_lib.resolve(transforms)
    out = tf_lib.output_size(transforms, p.size)
    if min(out) < m.min_size:
        raise ValueError(f"size {p.size} becomes {out} after the transforms; {m.arch} needs at "
                         f"least {m.min_size}x{m.min_size}")
    if regularize is not None and not isinstance(p, param_lib.Pixel):
        raise ValueError("regularize= (Yosinski-style blur / clipping) acts on pixels: use "
                         "param='pixel'")
    return _Config(p, transforms, batch, steps, thresholds, optimizer, regularize,
                   bool(redirect_relu))


def visualize(m, objective, *, size: int | tuple[int, int] = 128, steps: int = 512,
              lr: float = 0.05, param: str = "fft", decorrelate: bool = True, sigmoid: bool = True,
              transforms: str | Sequence | None = "standard", batch: int = 1,
              thresholds: Sequence[int] | None = None, key: jax.Array | None = None,
              optimizer: optax.GradientTransformation | None = None, regularize=None,
              sd: float = 0.01, decay_power: float = 1.0, redirect_relu: bool = True) -> Rendered:
    """Optimizes images to maximize `objective` (Lucid's `render_vis`), as one compiled call.

    Args:
      m: the model.
      objective: a `ji.objectives` objective (or a callable `feats -> [B]` scores); maximized.
      size: image side (or (H, W)) of the parameterized image, before transforms.
      steps: optimization steps.
      lr: Adam's learning rate (traced: changing it does not recompile).
      param: "fft" (1/f-scaled spectrum) or "pixel".
      decorrelate: optimize in the decorrelated colour basis.
      sigmoid: map to [0, 1] with a sigmoid (else clip with a straight-through gradient).
      transforms: "standard" (Lucid's: pad 12, jitter 8, scale, rotate, jitter 4), "jitter",
        "none"/None, or a sequence of `ji.optvis.transforms` objects; each image in the batch
        draws its own random transform every step.
      batch: images optimized together (with `diversity`, or for several random starts).
      thresholds: steps after which to keep a snapshot (default: the last step).
      key: PRNG key for the initialization and the transforms (default `jax.random.key(0)`).
      optimizer: an optax optimizer to use instead of Adam(lr) (static: reuse the object).
      regularize: a `Yosinski(...)` (or any hashable `f(step, params, grad) -> params`) applied
        after each update; needs param="pixel".
      sd: standard deviation of the initial parameters.
      decay_power: the FFT spectrum's 1/f exponent.
      redirect_relu: back-propagate through the model's ReLUs with `ji.rules.redirected_relu`
        (Lucid's default), so units that are off at the start still get a gradient.
    Returns:
      `Rendered(images, snapshots, scores, thresholds)`.
    """
    objective = obj_lib.as_objective(objective)
    objective.check(m)
    cfg = _config(m, size, steps, param, decorrelate, sigmoid, transforms, batch, thresholds,
                  optimizer, regularize, sd, decay_power, redirect_relu)
    key = jax.random.key(0) if key is None else key
    out = _render_jit(m, objective, key, jnp.float32(lr), cfg)
    return out._replace(thresholds=cfg.thresholds)


@tuned_jit(static_argnames=("cfg", "batch_size", "k"))
def _render_units(m, objective, key, lr, cfg, batch_size, k):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(k))
    return chunked_map(lambda ok: _render(m, ok[0], ok[1], lr, cfg), (objective, keys), batch_size)


def visualize_units(m, objectives: Sequence, *, batch_size: int | None = None,
                    key: jax.Array | None = None, **kw) -> Rendered:
    """Renders K objectives of one structure (e.g. every channel of a layer) in one compiled call.

    Unit k uses `fold_in(key, k)`, so its result does not depend on the other units or on
    `batch_size`.

    Args:
      m: the model.
      objectives: a list of objectives that differ only in indices / vectors (see `units`), or
        one objective already stacked with `ji.objectives.stack`.
      batch_size: render this many units at a time (memory bound); None: all at once.
      key: PRNG key (default `jax.random.key(0)`).
      **kw: the options of `visualize` (size, steps, lr, param, transforms, batch, ...).
    Returns:
      `Rendered` with a leading unit axis: images `[K, B, H, W, 3]`, snapshots `[K, T, B, ...]`,
      scores `[K, steps, B]`.
    """
    if isinstance(objectives, obj_lib.Objective):
        stacked, leaves = objectives, jax.tree_util.tree_leaves(objectives)
        if not leaves:
            raise ValueError("a stacked objective needs leaves with a unit axis; pass a list")
        k = leaves[0].shape[0]
    else:
        stacked, k = obj_lib.stack(objectives), len(objectives)
    stacked.check(m)
    options = {n: p.default for n, p in inspect.signature(visualize).parameters.items()
               if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "key"}
    unknown = set(kw) - set(options)
    if unknown:
        raise TypeError(f"visualize_units got unknown options {sorted(unknown)}; valid: "
                        f"{', '.join([*options, 'batch_size', 'key'])}")
    options.update(kw)
    lr = options.pop("lr")
    cfg = _config(m, **options)
    key = jax.random.key(0) if key is None else key
    out = _render_units(m, stacked, key, jnp.float32(lr), cfg, batch_size, k)
    return out._replace(thresholds=cfg.thresholds)


def units(m, layer: str, channels: Sequence[int] | None = None, kind: str = "channel") -> list:
    """One objective per channel of `layer` (all by default), for `visualize_units`.

    Args:
      m: the model.
      layer: layer name or alias ("logits" for classes).
      channels: the channels (default: all).
      kind: "channel", "neuron" (centre), "logit" or "prob" (class objectives).
    Returns:
      A list of objectives.
    """
    makers = {"channel": lambda c: obj_lib.channel(layer, c),
              "neuron": lambda c: obj_lib.neuron(layer, c),
              "logit": obj_lib.logit, "prob": obj_lib.prob}
    if kind not in makers:
        raise ValueError(f"kind must be one of {', '.join(makers)}, got {kind!r}")
    n = m.num_classes if kind in ("logit", "prob") else m.channels(layer)
    channels = range(n) if channels is None else channels
    return [makers[kind](int(c)) for c in channels]
