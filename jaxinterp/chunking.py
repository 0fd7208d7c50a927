"""One way to evaluate many inputs with bounded memory."""

from typing import Any, Callable

import jax


def chunked_map(f: Callable, xs: Any, batch_size: int | None = None) -> Any:
    """Maps `f` over the leading axis of `xs`: all at once (`vmap`) or `batch_size` at a time.

    Args:
      f: function of one slice of `xs`.
      xs: pytree of arrays with a common leading axis K.
      batch_size: None for one `vmap` over all K; else `lax.map` over chunks of this many
        (memory bounded by the chunk, results equal to the unchunked map).
    Returns:
      The stacked results, leading axis K.
    """
    k = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if batch_size is None or batch_size >= k:
        return jax.vmap(f)(xs)
    return jax.lax.map(f, xs, batch_size=batch_size)
