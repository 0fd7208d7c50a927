"""SmoothGrad, SmoothGrad² and VarGrad over any attribution method (samples vmapped)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxinterp._xla import tuned_jit
from jaxinterp.attribution.core import keeps_sharding, loop_ready, prepare
from jaxinterp.attribution.gradients import saliency
from jaxinterp.checks import (as_key, check_batch_size, check_count, check_real,
                              unchecked_image_values)
from jaxinterp.chunking import chunked_map

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


@tuned_jit(static_argnames=("method", "samples", "kind", "batch_size"))
def _smooth(m, x, t, key, noise, method, samples, kind, batch_size):
    sigma = noise * (x.max((1, 2, 3)) - x.min((1, 2, 3)))
    if key.ndim == 0:  # one key: example i draws from fold_in(key, i)
        key = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(x.shape[0]))
    eps = jax.vmap(lambda k: jax.random.normal(k, (samples, *x.shape[1:]), x.dtype))(key)
    eps = eps.swapaxes(0, 1)  # [samples, N, H, W, 3]
    m = loop_ready(m, batch_size)
    with unchecked_image_values():  # noisy copies leave [0, 1] by design
        a = chunked_map(lambda e: method(m, x + sigma[:, None, None, None] * e, t), eps,
                        batch_size)
    if kind == "smoothgrad":
        return a.mean(0)
    if kind == "smoothgrad_sq":
        return (a * a).mean(0)
    return (a * a).mean(0) - a.mean(0) ** 2  # vargrad, as Captum's NoiseTunnel


@keeps_sharding
def smooth_grad(m, x, target, method: Callable = saliency, samples: int = 50,
                noise: float = 0.15, kind: str = "smoothgrad", key: jax.Array | None = None,
                batch_size: int | None = None) -> jax.Array:
    """SmoothGrad (Smilkov et al. 2017) and its variants over any attribution method.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable.
      method: any attribution function `(m, x, target) -> array` (saliency, guided_backprop,
        integrated_gradients via functools.partial, ...). Noisy inputs may leave [0, 1].
      samples: noisy copies per image.
      noise: noise standard deviation as a fraction of each image's (max - min), as in the paper.
      kind: "smoothgrad" (mean), "smoothgrad_sq" (mean of squares), "vargrad" (variance).
      key: PRNG key for the noise, `jax.random.key(0)` if omitted (runs repeat exactly); or
        one key per example, shape `[N]`, so that an example's noise does not depend on the
        batch it is in. Legacy `jax.random.PRNGKey` keys and int seeds are accepted.
      batch_size: evaluate this many samples at a time (memory bound); None: all at once.
    Returns:
      An array shaped like `method`'s output.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    samples = check_count(samples, "samples")
    batch_size = check_batch_size(batch_size)
    x, t = prepare(m, x, target)
    noise = check_real(noise, "noise", minimum=0.0)
    if noise.ndim:
        raise ValueError(f"noise must be a scalar fraction, got shape {noise.shape}")
    key = as_key(key)
    if key.ndim not in (0, 1) or (key.ndim == 1 and key.shape[0] != x.shape[0]):
        raise ValueError(f"key must be one PRNG key or one per example ({x.shape[0]}), got "
                         f"shape {key.shape}")
    return _smooth(m, x, t, key, noise.astype(x.dtype), method, samples, kind, batch_size)
