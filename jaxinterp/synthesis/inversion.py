"""Feature inversion (Mahendran & Vedaldi 2015), a preset over `optimize`.

Finds images whose features at a layer match given ones: the relative feature loss
‖Φ(x) − Φ₀‖² / ‖Φ₀‖² plus a total-variation prior (dx² + dy²)^(β/2) and an α-norm prior, on any
optvis parameterization, in one compiled call.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import as_key, check_count, check_images, check_real
from jaxinterp.model import layer_output
from jaxinterp.optvis import objectives as obj_lib
from jaxinterp.optvis import param as param_lib
from jaxinterp.optvis import transforms as tf_lib
from jaxinterp.optvis.optimize import features, optimize
from jaxinterp.models.convs import loop_conv


class Inverted(NamedTuple):
    """What `invert` returns.

    Attributes:
      images: the reconstructions `[N, H, W, 3]` in [0, 1].
      error: the final relative feature error ‖Φ(x̂) − Φ₀‖ / ‖Φ₀‖ per image `[N]`.
      losses: the total loss per step and image `[steps, N]`.
      snapshots: reconstructions after each threshold `[T, N, H, W, 3]`.
      thresholds: the steps of the snapshots.
    """

    images: jax.Array
    error: jax.Array
    losses: jax.Array
    snapshots: jax.Array
    thresholds: tuple


@dataclasses.dataclass(frozen=True)
class _Config:
    param: Any
    transforms: tuple
    steps: int
    thresholds: tuple
    optimizer: Any
    beta: float  # the TV exponent
    alpha: float  # the α-norm exponent


@tuned_jit(static_argnames=("cfg",))
def _invert(m, match, weights, key, lr, cfg: _Config):
    m = m.with_conv(loop_conv())
    k_init, k_loop = jax.random.split(key)
    n = jax.tree_util.tree_leaves(match)[0].shape[0]
    opt = cfg.optimizer or optax.inject_hyperparams(optax.adam)(learning_rate=lr)

    def loss(params, k):
        feats = features(m, cfg.param(params), k, cfg.transforms)
        priors = (obj_lib.tv_beta(cfg.beta), obj_lib.alpha_norm(cfg.alpha))
        return -match(feats) + sum(w * p(feats) for w, p in zip(weights, priors)), None

    out = optimize(loss, cfg.param.init(k_init, n), steps=cfg.steps, optimizer=opt, key=k_loop,
                   render=cfg.param, thresholds=cfg.thresholds)
    error = jnp.sqrt(-match(features(m, out.images)))
    return Inverted(out.images, error, out.values, out.snapshots, None)


def invert(m, x: jax.Array | None, layer: str, *, target: jax.Array | None = None,
           steps: int = 300, lr: float = 0.05, tv_weight: float = 0.5, tv_beta: float = 2.0,
           alpha_weight: float = 1e-3, alpha: float = 6.0, param: str = "pixel",
           decorrelate: bool = False, transforms: str | Sequence | None = None,
           size: int | tuple[int, int] | None = None, thresholds: Sequence[int] | None = None,
           optimizer: optax.GradientTransformation | None = None,
           key: jax.Array | int | None = None) -> Inverted:
    """Reconstructs images from their features at `layer` (Mahendran & Vedaldi 2015).

    Minimizes, per image, ‖Φ(x̂) − Φ₀‖² / ‖Φ₀‖² + tv_weight · mean (dx² + dy²)^(β/2)
    + alpha_weight · mean |2x̂ − 1|^α over pixels of x̂ in [0, 1] (the paper's regularizers, with
    pixels in fixed units instead of scaled by the mean image norm). The paper raises the TV
    weight with depth; one default serves vgg-mini's layers (see the README's table).

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1] whose features to invert; None when `target` is given.
      layer: layer name or alias.
      target: the features to invert instead of `x`'s, `[N, ...]` as the layer's output.
      steps: Adam steps.
      lr: Adam's learning rate (traced).
      tv_weight: weight of the total-variation prior (traced).
      tv_beta: its exponent β (2: the paper's).
      alpha_weight: weight of the α-norm prior (traced).
      alpha: its exponent (6: the paper's).
      param: "pixel" (default) or "fft" parameterization of the reconstruction.
      decorrelate: optimize in the decorrelated colour basis.
      transforms: optional robustness transforms (Lucid's recipe: "standard"); None: none.
      size: image size when `x` is None (default: the model's input size).
      thresholds: steps after which to keep snapshots (default: the last).
      optimizer: an optax optimizer instead of Adam(lr) (static: reuse the object).
      key: PRNG key or int seed for the initial image and transforms (default 0).
    Returns:
      `Inverted(images, error, losses, snapshots, thresholds)`.
    """
    name = m.resolve(layer)
    if target is None:
        if x is None:
            raise ValueError("invert needs images x or target= features")
        x = check_images(x, min_size=m.min_size)
        target = layer_output(m, x, name)
        size = tuple(x.shape[1:3])
    else:
        target = check_real(target, "target")
        size = size or (x.shape[1:3] if x is not None else m.input_size)
        if target.ndim < 2:
            raise ValueError(f"target must be features [N, ...] of layer {layer!r}, got shape "
                             f"{target.shape}")
    steps = check_count(steps, "steps", 1)
    for v, n in ((tv_weight, "tv_weight"), (alpha_weight, "alpha_weight"), (lr, "lr")):
        check_real(v, n, 0.0)
    thresholds = (steps,) if thresholds is None else tuple(int(t) for t in thresholds)
    if not thresholds or any(not 1 <= t <= steps for t in thresholds) or \
            list(thresholds) != sorted(set(thresholds)):
        raise ValueError(f"thresholds must be increasing steps in 1 … {steps}, got {thresholds}")
    p = param_lib.image_param(param, size, decorrelate=decorrelate, sigmoid=False)
    transforms = tf_lib.resolve(transforms)
    match = obj_lib.match(name, target)
    probe = jax.eval_shape(lambda m, x: layer_output(m, x, name), m,
                           jax.ShapeDtypeStruct((1, *p.size, 3), jnp.float32))
    if target.shape[1:] != probe.shape[1:]:
        raise ValueError(f"target has shape {target.shape[1:]} per image; layer {layer!r} gives "
                         f"{probe.shape[1:]} on {p.size[0]}x{p.size[1]} images")
    cfg = _Config(p, transforms, steps, thresholds, optimizer, float(tv_beta), float(alpha))
    weights = jnp.array([tv_weight, alpha_weight], jnp.float32)
    out = _invert(m, match, weights, as_key(key), jnp.float32(lr), cfg)
    return out._replace(thresholds=thresholds)
