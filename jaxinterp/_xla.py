"""The compiler options of jaxinterp's programs: the one place where jaxinterp tunes XLA.

XLA:CPU hands convolutions and dots to its YNN library fusion by default. Its convolutions are
the slow ones on the VGG shapes here, so jaxinterp keeps YNN for dots only. What that gives per
method, against XLA's defaults in the same process, is measured by
`python scripts/bench.py --only options` (table in the README; it depends on the CPU: large
gains on vgg-mini's small convolutions, about none on VGG16's on the AMD EPYC of the last run).
Why not YNN off altogether: in an earlier session the input gradient of VGG16's fc6 (25,088 x
4,096) at 2-16 rows then fell to a slow dot path (observed, not reproduced by a script here).
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
