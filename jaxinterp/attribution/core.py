"""What every attribution method shares: input checks, the score, its gradients, the layer."""

from __future__ import annotations

import functools

import jax
from jax.sharding import NamedSharding, PartitionSpec

import jax.numpy as jnp

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import check_images
from jaxinterp.rules import RULES
from jaxinterp.targets import Target, as_target
from jaxinterp.models.convs import loop_conv


def prepare(m, x, target) -> tuple[jax.Array, Target]:
    """Checks images and target; returns `x` as an array and a `Target`."""
    x = check_images(x, min_size=m.min_size)
    return x, as_target(m, target, x.shape[0])


def total_score(m, t: Target, x, taps=None):
    """Sum over the batch of the target scores (examples are independent, so its gradient is
    every example's own gradient), and the features."""
    logits, feats = m(x, check=False, taps=taps)
    return t(logits, feats).sum(), feats


def input_gradient(m, t: Target, x):
    """d score / d x for every example."""
    return jax.grad(lambda x: total_score(m, t, x)[0])(x)


@tuned_jit(static_argnames=("rule", "absolute", "times_input"))
def rule_gradient(m, x, t: Target, rule: str | None = None, absolute: bool = False,
                  times_input: bool = False):
    """The input gradient of the score under a ReLU backward rule, one compiled program.

    Args:
      m: the model.
      x: checked images `[N, H, W, 3]`.
      t: a `Target`.
      rule: None (the true gradient) or a key of `rules.RULES` ("guided", "deconv", ...).
      absolute: return |gradient|.
      times_input: multiply by `x` (input x gradient).
    Returns:
      `[N, H, W, 3]`.
    """
    g = input_gradient(m.with_act(RULES[rule]) if rule else m, t, x)
    g = g * x if times_input else g
    return jnp.abs(g) if absolute else g


def is_vgg(m) -> bool:
    """Whether `m` is jaxinterp's VGG `Model` (layer specs, partial runs), not a wrapped model."""
    return hasattr(m, "specs")


def default_layer(m) -> str:
    """The output of the last convolutional block before the head (relu5_3 on VGG16); for a
    wrapped model, its last layer with a spatial output."""
    if not is_vgg(m):
        return m.default_layer()
    return [s.name for s in m.specs if s.kind == "relu" and s.name.startswith("features")][-1]


def loop_ready(m, batch_size):
    """`m` as it should run under `chunked_map(..., batch_size)`.

    Chunks run in a `lax.map` loop, where XLA:CPU computes JAX's convolution input gradient on a
    slow generic path (measured 4x slower for SmoothGrad on vgg-mini); `conv="explicit"` writes
    that gradient as an ordinary convolution (same values; reverse-mode AD only).
    """
    return m if batch_size is None else m.with_conv(loop_conv())


def keeps_sharding(fn):
    """Decorates `fn(m, x, ...)` so that outputs come back sharded like `x` along its axes.

    XLA propagates a batch sharding through most methods by itself; where it chooses another
    layout (e.g. after a reduction over samples) the result is moved back.
    """

    @functools.wraps(fn)
    def wrapper(m, x, *args, **kwargs):
        out = fn(m, x, *args, **kwargs)
        sharding = getattr(x, "sharding", None)
        if isinstance(x, jax.core.Tracer) or not isinstance(sharding, NamedSharding):
            return out

        def place(a):
            spec = PartitionSpec(*tuple(sharding.spec)[: a.ndim])
            return jax.device_put(a, NamedSharding(sharding.mesh, spec))

        return jax.tree_util.tree_map(place, out)

    return wrapper
