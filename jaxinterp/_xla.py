"""The compiler options of jaxinterp's programs: the one place where jaxinterp tunes XLA.

XLA:CPU hands convolutions and dots to its YNN library fusion by default. Its convolutions are
the slow ones here: keeping YNN for dots only measured, on the 2-core Xeon of the benchmark
(jax 0.10.2, medians of interleaved runs), vgg-mini saliency (16 images) 28.9 -> 24.3 ms,
SmoothGrad 144 -> 112 ms, occlusion 106 -> 61 ms; VGG16 saliency 760 -> 655 ms (2 images),
2.99 -> 2.29 s (8 images), SmoothGrad 3.86 -> 2.86 s, incremental occlusion 4.3 -> 1.7 s.
Turning YNN off altogether is as fast for convolutions, but then the input gradient of VGG16's
fc6 (25,088 x 4,096) at 2-16 rows falls to a slow dot (0.2-0.6 s instead of 0.03-0.06 s).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax

OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def _trace_state_clean() -> bool:
    """False while JAX traces (inside `jit`, `grad`, `vmap`, ...)."""
    try:
        from jax._src.core import trace_state_clean
    except ImportError:  # a private name: without it, never pass options
        return False
    return trace_state_clean()


@functools.cache
def _accepted() -> bool:
    """Whether this backend is XLA:CPU and accepts `OPTIONS` (other jaxlibs may not)."""
    if jax.default_backend() != "cpu":
        return False
    try:
        jax.jit(lambda x: x + 1, compiler_options=OPTIONS)(0.0)
    except Exception:  # noqa: BLE001 — an unknown option or value: keep XLA's defaults
        return False
    return True


def compiler_options() -> dict:
    """The `compiler_options` for jaxinterp's top-level programs (empty: XLA's defaults)."""
    return dict(OPTIONS) if _accepted() else {}


def tuned_jit(static_argnames=()) -> Callable:
    """`jax.jit` with `compiler_options()` when called at the top level.

    Args:
      static_argnames: as `jax.jit`.
    Returns:
      A decorator. Inside another `jit` (or `grad`, `vmap`), the outer program's options apply.
    """

    def decorate(fn):
        compiled = {}

        @functools.wraps(fn)
        def call(*args, **kwargs):
            opts = compiler_options() if _trace_state_clean() else {}
            key = tuple(sorted(opts.items()))
            if key not in compiled:
                compiled[key] = jax.jit(fn, static_argnames=static_argnames,
                                        compiler_options=opts or None)
            return compiled[key](*args, **kwargs)

        call._cache_size = lambda: sum(j._cache_size() for j in compiled.values())  # tests
        return call

    return decorate
