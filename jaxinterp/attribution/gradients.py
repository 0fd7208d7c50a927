"""Gradient methods: saliency, input x gradient, DeconvNet, guided backprop."""

from __future__ import annotations

import jax

from jaxinterp.attribution.core import keeps_sharding, prepare, rule_gradient


@keeps_sharding
def saliency(m, x, target, *, abs: bool = False) -> jax.Array:  # noqa: A002
    """Vanilla gradient of the target score with respect to the input (Simonyan et al. 2013).

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      abs: return |gradient| (Captum's `Saliency` default); the raw signed gradient otherwise.
    Returns:
      `[N, H, W, 3]` gradients.
    """
    x, t = prepare(m, x, target)
    return rule_gradient(m, x, t, absolute=abs)


@keeps_sharding
def input_x_gradient(m, x, target) -> jax.Array:
    """Input times gradient (Shrikumar et al. 2016). Args as `saliency`; returns `[N, H, W, 3]`."""
    x, t = prepare(m, x, target)
    return rule_gradient(m, x, t, times_input=True)


@keeps_sharding
def deconvnet(m, x, target) -> jax.Array:
    """DeconvNet (Zeiler & Fergus 2014): every ReLU passes back the rectified gradient.

    Args as `saliency`; returns `[N, H, W, 3]`.
    """
    x, t = prepare(m, x, target)
    return rule_gradient(m, x, t, rule="deconv")


@keeps_sharding
def guided_backprop(m, x, target) -> jax.Array:
    """Guided backpropagation (Springenberg et al. 2015): gradient passes where both the ReLU's
    input and the incoming gradient are positive. Args as `saliency`; returns `[N, H, W, 3]`."""
    x, t = prepare(m, x, target)
    return rule_gradient(m, x, t, rule="guided")
