"""Compiler options per model and call: the one place where jaxinterp tunes XLA.

XLA:CPU hands convolutions and dots to its YNN library fusion by default. Measured on the
2-core Xeon of the benchmark (medians, jax 0.10.2): without it, vgg-mini's small convolutions run
1.3-2x faster (XLA's own emitter), and so do the boxes of incremental occlusion on VGG16 (2.4x);
but the input gradient of a wide dense layer (VGG16's fc6, 25,088 x 4,096) at 2-16 rows takes
0.2-0.6 s instead of 0.03-0.06 s, while at one row YNN is the slow one (0.24 s against 0.015 s).
So YNN stays on only where a backward pass crosses a wide dense layer with 2 or more rows.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import jax

YNN_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}


def _trace_state_clean() -> bool:
    """False while JAX traces (inside `jit`, `grad`, `vmap`, ...)."""
    try:
        from jax._src.core import trace_state_clean
    except ImportError:  # a private name: without it, never pass options
        return False
    return trace_state_clean()


@functools.cache
def _can_switch() -> bool:
    """Whether this backend is XLA:CPU and accepts the YNN option (newer jaxlibs may drop it)."""
    if jax.default_backend() != "cpu":
        return False
    try:
        jax.jit(lambda x: x + 1, compiler_options=YNN_OFF)(0.0)
    except Exception:  # noqa: BLE001 — an unknown option: keep XLA's defaults
        return False
    return True


def compiler_options(module, backward: bool, rows: int) -> dict:
    """XLA options for a program that runs the VGG `module`.

    Args:
      module: the model's Flax module.
      backward: whether the program differentiates through the model.
      rows: examples per model evaluation (images x samples evaluated together).
    Returns:
      A `compiler_options` dict for `jax.jit` (empty: XLA's defaults).
    """
    wide_dense = module.head == "classifier"
    if not _can_switch() or (backward and wide_dense and rows >= 2):
        return {}
    return dict(YNN_OFF)


def model_jit(static_argnames=(), backward: bool = True,
              rows: Callable[[dict], int] = lambda a: a["x"].shape[0],
              module: Callable[[dict], object] = lambda a: a["m"].module) -> Callable:
    """`jax.jit` for `fn(m, ...)` with `compiler_options(module, backward, rows)`.

    Args:
      static_argnames: as `jax.jit`.
      backward: whether `fn` differentiates through the model.
      rows: examples per model evaluation, from `fn`'s bound arguments by name.
      module: the VGG module, from the bound arguments.
    Returns:
      A decorator. Inside another `jit`, the outer program's options apply.
    """

    def decorate(fn):
        sig, compiled = inspect.signature(fn), {}

        @functools.wraps(fn)
        def call(*args, **kwargs):
            a = sig.bind(*args, **kwargs).arguments
            nested = not _trace_state_clean()  # options are only accepted at the top level
            opts = {} if nested else compiler_options(module(a), backward, rows(a))
            key = tuple(sorted(opts.items()))
            if key not in compiled:
                compiled[key] = jax.jit(fn, static_argnames=static_argnames,
                                        compiler_options=opts or None)
            return compiled[key](*args, **kwargs)

        call._cache_size = lambda: sum(j._cache_size() for j in compiled.values())  # tests
        return call

    return decorate


def chunk_rows(a: dict, count: str) -> int:
    """Rows of one chunk of a multi-pass method: images x min(count, batch_size)."""
    k = a[count] if isinstance(a[count], int) else len(a[count])
    return a["x"].shape[0] * min(k, a.get("batch_size") or k)
