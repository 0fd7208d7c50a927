"""Feature visualization (Lucid's `render_vis`): a preset over `optimize`.

The whole optimization runs inside one `jit`; many units render in one compiled call by `vmap`
over a stacked objective.
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
from jaxinterp.optvis.optimize import features, optimize
from jaxinterp.models.convs import loop_conv


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
    """The preset's loss and start for `optimize` (traceable; jitted / vmapped by the callers)."""
    m = m.with_conv(loop_conv())  # reverse mode only, and fast inside the scan (see VGG.conv)
    if cfg.redirect_relu:
        m = m.with_act(rules.redirected_relu)
    k_init, k_loop = jax.random.split(key)
    opt = cfg.optimizer or optax.inject_hyperparams(optax.adam)(learning_rate=lr)

    def loss(params, k):
        return -objective(features(m, cfg.param(params), k, cfg.transforms)), None

    try:
        out = optimize(loss, cfg.param.init(k_init, cfg.batch), steps=cfg.steps, optimizer=opt,
                       key=k_loop, render=cfg.param, hook=cfg.regularize,
                       thresholds=cfg.thresholds)
    except rules.UnsupportedReLU as e:  # say how to run anyway
        raise rules.UnsupportedReLU(f"{str(e).rstrip('.')}; pass redirect_relu=False to optimize "
                                    "through the plain gradient") from None
    return Rendered(out.images, out.snapshots, -out.values, None)


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
    fixed = tuple(m.input_size)
    if min(fixed) <= m.min_size and out != fixed:  # a model taking one size only (a ViT)
        transforms = (*transforms, tf_lib.resize(fixed))
    elif min(out) < m.min_size:
        raise ValueError(f"size {p.size} becomes {out} after the transforms; {m.arch} needs at "
                         f"least {m.min_size}x{m.min_size}")
    if regularize is not None and not isinstance(p, param_lib.Pixel):
        raise ValueError("regularize= (Yosinski-style blur / clipping) acts on pixels: use "
                         "param='pixel'")
    if redirect_relu is None:  # where the model has ReLUs
        x = jax.ShapeDtypeStruct((1, *tf_lib.output_size(transforms, p.size), 3), jnp.float32)
        redirect_relu = rules.count_relus(jax.make_jaxpr(lambda x: m(x, check=False)[0])(x)) > 0
    return _Config(p, transforms, batch, steps, thresholds, optimizer, regularize,
                   bool(redirect_relu))


def visualize(m, objective, *, size: int | tuple[int, int] = 128, steps: int = 512,
              lr: float = 0.05, param: str = "fft", decorrelate: bool = True, sigmoid: bool = True,
              transforms: str | Sequence | None = "standard", batch: int = 1,
              thresholds: Sequence[int] | None = None, key: jax.Array | None = None,
              optimizer: optax.GradientTransformation | None = None, regularize=None,
              sd: float = 0.01, decay_power: float = 1.0,
              redirect_relu: bool | None = None) -> Rendered:
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
        draws its own random transform every step. A model that takes only its input size (a
        ViT) gets a final `resize` to it.
      batch: images optimized together (with `diversity`, or for several random starts).
      thresholds: steps after which to keep a snapshot (default: the last step).
      key: PRNG key for the initialization and the transforms (default `jax.random.key(0)`).
      optimizer: an optax optimizer to use instead of Adam(lr) (static: reuse the object).
      regularize: a `Yosinski(...)` (or any hashable `f(step, params, grad) -> params`) applied
        after each update; needs param="pixel".
      sd: standard deviation of the initial parameters.
      decay_power: the FFT spectrum's 1/f exponent.
      redirect_relu: back-propagate through the model's ReLUs with `ji.rules.redirected_relu`
        (Lucid's default), so units that are off at the start still get a gradient. None (the
        default): where the model has ReLUs (a ViT has none: the plain gradient); True on a
        model without them raises.
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
