"""Robustness: does the explanation stay put when the input barely moves? (Quantus 0.6's
MaxSensitivity, AvgSensitivity, LocalLipschitzEstimate; Captum's `sensitivity_max`.)

The attribution method is re-run inside the metric, on every noisy copy of the batch, in one
compiled program: the copies are evaluated `batch_size` at a time (`chunking.chunked_map`).

Out-of-range inputs: the noisy copies leave [0, 1] (uniform ±0.2 around a pixel at 0.9 reaches
1.1) and the model and the method see them as they are, as in Quantus and Captum (jaxinterp's
range check is off for them: `checks.unchecked_image_values`). `clip=True` clips the copies to
[0, 1] instead (a smaller, one-sided neighbourhood at saturated pixels).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.attribution.core import loop_ready
from jaxinterp.checks import check_batch_size, check_count, check_real, unchecked_image_values
from jaxinterp.chunking import chunked_map
from jaxinterp.metrics import _common as c


class _ByIdentity:
    """A method that is not hashable (a registry `Method` holds a dict) as a static argument
    of `jit`: equal when it is the same object."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __hash__(self):
        return id(self.fn)

    def __eq__(self, other):
        return isinstance(other, _ByIdentity) and other.fn is self.fn


def static_method(method: Any):
    """`method` (a callable or a registered name) as a hashable static argument."""
    method = c.resolve_method(method)
    try:
        hash(method)
        return method
    except TypeError:
        return _ByIdentity(method)


def explain(method, m, x, t, normalise, absolute):
    """`method(m, x, t)` as Quantus' `explain_batch` returns it: normalised, |a| if asked,
    as `[N, H, W]` or `[N, H, W, C]` (range check off: `x` may leave [0, 1])."""
    with unchecked_image_values():
        a = jnp.asarray(method(m, x, t))
    return c.preprocess(a.astype(x.dtype), normalise, absolute)


KINDS = ("max", "avg", "lipschitz")


@tuned_jit(static_argnames=("method", "kind", "normalise", "absolute", "nan_on_change",
                            "clip", "batch_size"))
def _robustness(m, x, t, noise, method, kind, normalise, absolute, nan_on_change, clip,
                batch_size):
    n = x.shape[0]
    a0 = explain(method, m, x, t, normalise, absolute).reshape(n, -1)
    pred0 = c.predictions(m, x)
    mr = loop_ready(m, batch_size)

    def at(e):  # one noisy copy of the batch
        xs = x + e
        xs = jnp.clip(xs, 0, 1) if clip else xs
        a = explain(method, mr, xs, t, normalise, absolute).reshape(n, -1)
        if kind == "lipschitz":  # Quantus' lipschitz_constant: ‖Δa‖₂ / (‖Δx‖₂ + 1e-10)
            value = jnp.linalg.norm(a0 - a, axis=-1) / (
                jnp.linalg.norm((x - xs).reshape(n, -1), axis=-1) + 1e-10)
        else:  # ‖Δa‖_F / ‖a‖_F
            value = jnp.linalg.norm(a0 - a, axis=-1) / jnp.linalg.norm(a0, axis=-1)
        if nan_on_change:
            value = jnp.where(c.predictions(m, xs) != pred0, jnp.nan, value)
        return value

    values = chunked_map(at, noise, batch_size).T  # [N, samples]
    if kind == "avg":
        return jnp.mean(values, -1) if nan_on_change else jnp.nanmean(values, -1)
    return jnp.max(values, -1) if nan_on_change else jnp.nanmax(values, -1)


def _noise(key, x, samples, draw, noise, name="noise"):
    n = x.shape[0]
    if noise is None:
        samples = check_count(samples, "samples")
        keys = c.key_per_example(key, n)
        noise = jax.vmap(lambda k: draw(k, (samples, *x.shape[1:]), x.dtype))(keys)
    else:
        noise = jnp.asarray(noise, x.dtype)
        if noise.ndim != 5 or noise.shape[0] != n or noise.shape[2:] != x.shape[1:]:
            raise ValueError(f"{name} must be [N, samples, H, W, 3] with N, H, W as the images "
                             f"{x.shape}, got {noise.shape}")
    return jnp.swapaxes(noise, 0, 1)


def _run(kind, m, x, y, method, noise, normalise, absolute, nan_on_change, clip, batch_size):
    batch_size = check_batch_size(batch_size)
    if not (callable(method) or isinstance(method, str)):
        raise TypeError("robustness metrics re-run the attribution method on noisy inputs: "
                        "pass the method (m, x, y) -> attributions (or its name), not "
                        "attributions")
    return np.asarray(_robustness(m, x, y, noise, static_method(method), kind,
                                  c.check_normalise(normalise), bool(absolute),
                                  bool(nan_on_change), bool(clip), batch_size))


def _uniform(radius):
    def draw(k, shape, dtype):
        return jax.random.uniform(k, shape, dtype, -radius, radius)

    return draw


def max_sensitivity(m, x, y, method: Any, *, samples: int = 200, radius: float = 0.2,
                    normalise: Any = None, abs: bool = False,  # noqa: A002
                    nan_on_change: bool = False, clip: bool = False, key: Any = None,
                    noise: Any = None, batch_size: int | None = None) -> np.ndarray:
    """Max-sensitivity (Yeh et al. 2019): the largest relative change of the explanation under
    small uniform input noise.

    `max_k ‖a(x) − a(x + ε_k)‖_F / ‖a(x)‖_F` over `samples` draws `ε_k ~ U(−radius, radius)`
    per pixel and channel; `method` is re-run on each noisy copy. Lower is better.

    Quantus 0.6 `MaxSensitivity` defaults kept: 200 samples, radius 0.2, Frobenius norms, no
    normalisation, signed attributions, logits, NaN samples dropped (`nanmax`). Captum 0.9's
    `sensitivity_max` is the same quantity with `radius=0.02, samples=10`. Noisy inputs leave
    [0, 1] and are seen as they are (`clip=True` clips them).

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      y: class index, int array `[N]` or callable target.
      method: attribution function `(m, x, y) -> attributions` (or a registered name).
      samples: noisy copies per image.
      radius: half-width of the uniform noise, in [0, 1] pixel units.
      normalise: None (Quantus), "image" or "batch": divide each explanation by its maximum.
      abs: compare |a|.
      nan_on_change: a sample whose noise changes the predicted class counts as NaN (and so
        makes the result NaN; Quantus' `return_nan_when_prediction_changes`).
      clip: clip the noisy copies to [0, 1].
      key: PRNG key of the noise (`jax.random.key(0)` if omitted), or `[N]` keys.
      noise: explicit noise `[N, samples, H, W, 3]` (overrides `key`, `samples`, `radius`).
      batch_size: noisy copies evaluated at a time (memory bound); None: all at once.
    Returns:
      `[N]` numpy, ≥ 0.
    """
    x, t = c.check_model_target(m, x, y)
    radius = float(check_real(radius, "radius", minimum=0.0))
    eps = _noise(key, x, samples, _uniform(radius), noise)
    return _run("max", m, x, t, method, eps, normalise, abs, nan_on_change, clip, batch_size)


def avg_sensitivity(m, x, y, method: Any, *, samples: int = 200, radius: float = 0.2,
                    normalise: Any = None, abs: bool = False,  # noqa: A002
                    nan_on_change: bool = False, clip: bool = False, key: Any = None,
                    noise: Any = None, batch_size: int | None = None) -> np.ndarray:
    """Avg-sensitivity (Yeh et al. 2019): the mean relative change of the explanation under
    small uniform input noise.

    As `max_sensitivity` with the mean (`nanmean`) over samples instead of the maximum. Quantus
    0.6 `AvgSensitivity` defaults kept (200 samples, radius 0.2, no normalisation). Lower is
    better. Args and returns as `max_sensitivity`.
    """
    x, t = c.check_model_target(m, x, y)
    radius = float(check_real(radius, "radius", minimum=0.0))
    eps = _noise(key, x, samples, _uniform(radius), noise)
    return _run("avg", m, x, t, method, eps, normalise, abs, nan_on_change, clip, batch_size)


def local_lipschitz_estimate(m, x, y, method: Any, *, samples: int = 200, std: float = 0.1,
                             normalise: Any = "image", abs: bool = False,  # noqa: A002
                             nan_on_change: bool = False, clip: bool = False, key: Any = None,
                             noise: Any = None, batch_size: int | None = None) -> np.ndarray:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018): the largest ratio of
    explanation change to input change under Gaussian input noise.

    `max_k ‖a(x) − a(x + ε_k)‖₂ / (‖ε_k‖₂ + 1e-10)` over `samples` draws `ε_k ~ N(0, std²)`
    per pixel and channel, the explanations normalised by their maximum. Lower is better.

    Quantus 0.6 `LocalLipschitzEstimate` defaults kept: 200 samples, sd 0.1, Euclidean norms,
    normalised by the maximum ("image" here: Quantus takes one maximum per batch, so an image's
    score depends on its neighbours in the batch), signed attributions, `nanmax`. Noisy inputs
    leave [0, 1] and are seen as they are (`clip=True` clips them; then ‖Δx‖ is the clipped
    change).

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      y: class index, int array `[N]` or callable target.
      method: attribution function `(m, x, y) -> attributions` (or a registered name).
      samples: noisy copies per image.
      std: sd of the Gaussian noise, in [0, 1] pixel units.
      normalise: "image", "batch" (Quantus) or None.
      abs: compare |a|.
      nan_on_change: a sample that changes the predicted class counts as NaN.
      clip: clip the noisy copies to [0, 1].
      key: PRNG key of the noise (`jax.random.key(0)` if omitted), or `[N]` keys.
      noise: explicit noise `[N, samples, H, W, 3]` (overrides `key`, `samples`, `std`).
      batch_size: noisy copies evaluated at a time (memory bound); None: all at once.
    Returns:
      `[N]` numpy, ≥ 0.
    """
    x, t = c.check_model_target(m, x, y)
    std = float(check_real(std, "std", minimum=0.0))

    def draw(k, shape, dtype):
        return std * jax.random.normal(k, shape, dtype)

    eps = _noise(key, x, samples, draw, noise)
    return _run("lipschitz", m, x, t, method, eps, normalise, abs, nan_on_change, clip,
                batch_size)
