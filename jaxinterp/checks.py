"""Argument checks that hold in every mode: eagerly, and inside `jit`, `vmap` and `grad`.

A check on values (range, NaN, class index) runs on the host at once when the values are
concrete. When they are traced (the method runs inside a user's `jit`, `vmap` or `grad`), the
check is compiled into the program as a `jax.pure_callback` whose zero result is added to the
checked array, so XLA cannot drop it; it raises when the program runs. The error then arrives as
a `jax.errors.JaxRuntimeError` whose message ends with the same `ValueError` text as the eager
check. The cost is one host callback of a few scalars per call (measured by `scripts/bench.py
--only checks`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


class InputError(ValueError):
    """A bad argument found by a check compiled into a program (raised inside a callback)."""


class _DropInputErrors(logging.Filter):
    """JAX logs every exception raised in a callback with its traceback before re-raising it;
    ours are the user's input errors, reported once by the exception itself."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, InputError)


logging.getLogger("jax._src.callback").addFilter(_DropInputErrors())


_VALUES_CHECKED = contextvars.ContextVar("jaxinterp_image_values_checked", default=True)


@contextlib.contextmanager
def unchecked_image_values():
    """Within this block (at trace time), `check_images` checks shapes and dtypes only.

    For methods that feed other methods inputs outside [0, 1] on purpose (SmoothGrad's noisy
    copies); the caller has checked the original images.
    """
    token = _VALUES_CHECKED.set(False)
    try:
        yield
    finally:
        _VALUES_CHECKED.reset(token)


def is_traced(*values) -> bool:
    """Whether any of `values` is a tracer (we are inside `jit`, `vmap`, `grad`, ...)."""
    return any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(values))


def guarded(x: jax.Array, problem: Callable[..., str | None], *stats) -> jax.Array:
    """`x`, after checking `problem(*stats)` (None: fine; a message: `ValueError(message)`).

    Args:
      x: the array the check protects (returned unchanged).
      problem: a function of the host values of `stats` returning an error message or None.
      *stats: scalars computed from the checked values (on device).
    Returns:
      `x` (plus a traced zero that ties the check into the program when `stats` are traced).
    """
    if not is_traced(*stats):
        message = problem(*(np.asarray(s) for s in stats))
        if message:
            raise ValueError(message)
        return x

    def host(*values):
        message = problem(*values)
        if message:
            raise InputError(message)
        return np.zeros(np.shape(values[0]), np.dtype(x.dtype))

    stats = [jax.lax.stop_gradient(jnp.asarray(s)) for s in stats]
    zero = jax.pure_callback(host, jax.ShapeDtypeStruct(stats[0].shape, x.dtype), *stats,
                             vmap_method="expand_dims")
    return x + zero.reshape(zero.shape + (1,) * (jnp.ndim(x) - zero.ndim))


@jax.jit
def _image_stats(x):
    finite = jnp.isfinite(x)  # explicit: XLA:CPU's min/max reductions may skip NaN
    lo = jnp.min(jnp.where(finite, x, jnp.inf))
    hi = jnp.max(jnp.where(finite, x, -jnp.inf))
    return jnp.stack([jnp.all(finite).astype(jnp.float32), lo.astype(jnp.float32),
                      hi.astype(jnp.float32)])


def _range_problem(name):
    def problem(finite, lo, hi):
        finite, lo, hi = (np.asarray(v) for v in (finite, lo, hi))
        if not np.all(finite):
            return f"{name} contains NaN or infinite values"
        lo, hi = float(np.min(lo)), float(np.max(hi))
        if lo < -1e-6 or hi > 1 + 1e-6:
            return (f"{name} must have values in [0, 1], got range [{lo:.4g}, {hi:.4g}] "
                    "(preprocessing is applied inside the model)")
        return None

    return problem


def check_images(x: Any, name: str = "x", min_size: int = 1) -> jax.Array:
    """Checks that `x` is a float batch `[N, H, W, 3]` with finite values in [0, 1].

    Shapes and dtypes are checked at once; values eagerly when concrete, else when the program
    runs (see the module docstring).

    Args:
      x: the images.
      name: the argument name used in error messages.
      min_size: smallest height/width the model accepts.
    Returns:
      `x` as a jax array (unchanged values).
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        try:
            x = np.asarray(x)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"{name} must be an array of images [N, H, W, 3], got {type(x)}") from e
    shape = tuple(x.shape)
    if len(shape) != 4:
        hint = " (one image? add a batch axis: x[None])" if len(shape) == 3 else ""
        raise ValueError(f"{name} must have rank 4 [N, H, W, 3], got shape {shape}{hint}")
    if shape[-1] != 3:
        hint = " (NCHW? use x.transpose(0, 2, 3, 1))" if shape[1] == 3 else ""
        raise ValueError(f"{name} must have 3 RGB channels last [N, H, W, 3], got shape {shape}{hint}")
    if shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (N = 0); pass at least one image")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be floating point in [0, 1], got dtype {x.dtype}"
                        + (" (use x.astype('float32') / 255)" if x.dtype == np.uint8 else ""))
    if shape[1] < min_size or shape[2] < min_size:
        raise ValueError(f"{name} is {shape[1]}x{shape[2]}; this model needs at least "
                         f"{min_size}x{min_size}")
    x = jnp.asarray(x)
    if not _VALUES_CHECKED.get():
        return x
    stats = _image_stats(x)
    if not is_traced(stats):
        stats = np.asarray(stats)  # one transfer to the host
    return guarded(x, _range_problem(name), stats[0], stats[1], stats[2])


def check_count(value: Any, name: str, minimum: int = 1) -> int:
    """`value` as a Python int >= `minimum` (Python and numpy integers); else a clear error."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_batch_size(batch_size: Any) -> int | None:
    """`batch_size` as None or a positive Python int."""
    if batch_size is None:
        return None
    if (isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, numbers.Integral)
            or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    return int(batch_size)


def check_real(value: Any, name: str, minimum: float | None = None) -> jax.Array:
    """A finite real scalar or array (`>= minimum` if given), checked in every mode."""
    arr = jnp.asarray(value)
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"{name} must be a real number or array, got dtype {arr.dtype}")
    arr = arr.astype(jnp.result_type(float)) if jnp.issubdtype(arr.dtype, jnp.integer) else arr

    def problem(finite, lo):
        if not np.all(finite):
            return f"{name} must be finite, got NaN or infinity"
        if minimum is not None and float(np.min(lo)) < minimum:
            return f"{name} must be >= {minimum}, got {float(np.min(lo)):.4g}"
        return None

    finite = jnp.all(jnp.isfinite(arr)).astype(jnp.float32)
    lo = jnp.min(arr).astype(jnp.float32) if arr.size else jnp.float32(0)
    return guarded(arr, problem, finite, lo)


def as_key(key: Any, default: int | None = 0, name: str = "key") -> jax.Array:
    """A typed PRNG key (or a batch of them) from a typed key, a legacy `PRNGKey` or an int.

    Args:
      key: `jax.random.key(...)` (one or `[N]`), a legacy `jax.random.PRNGKey(...)` (uint32
        `[2]` or `[N, 2]`), a Python/numpy int seed, or None.
      default: the seed used when `key` is None (None: a key is required).
      name: argument name for error messages.
    Returns:
      A typed key array.
    """
    if key is None:
        if default is None:
            raise ValueError(f"{name} is required: pass jax.random.key(seed)")
        return jax.random.key(default)
    if isinstance(key, numbers.Integral) and not isinstance(key, (bool, np.bool_)):
        return jax.random.key(int(key))
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return key
    if dtype == np.uint32 and np.ndim(key) >= 1 and np.shape(key)[-1] == 2:
        return jax.random.wrap_key_data(key)  # legacy jax.random.PRNGKey(seed)
    raise TypeError(f"{name} must be a PRNG key (jax.random.key(seed)), a legacy "
                    f"jax.random.PRNGKey(seed) or an int seed; got {type(key).__name__}"
                    + (f" of dtype {dtype} and shape {np.shape(key)}" if dtype is not None else ""))

