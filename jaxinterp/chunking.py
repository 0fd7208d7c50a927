"""One way to evaluate many inputs with bounded memory."""

from typing import Any, Callable

import jax
import jax.numpy as jnp


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
    k = _count(xs, batch_size)
    if batch_size is None or batch_size >= k:
        return jax.vmap(f)(xs)
    return jax.lax.map(f, xs, batch_size=batch_size)


def chunked_sum(f: Callable, xs: Any, batch_size: int | None = None) -> Any:
    """Sums `f` over the leading axis of `xs`, holding at most `batch_size` results at a time.

    Args:
      f: function of one slice of `xs`.
      xs: pytree of arrays with a common leading axis K.
      batch_size: None for one `vmap` over all K; else a running sum over chunks of this many
        (a `lax.scan`; a last partial chunk is one more `vmap`).
    Returns:
      `sum_k f(xs[k])`.
    """
    k = _count(xs, batch_size)
    total = lambda part: jax.tree_util.tree_map(lambda a: a.sum(0), jax.vmap(f)(part))  # noqa: E731
    if batch_size is None or batch_size >= k:
        return total(xs)
    full = k // batch_size * batch_size
    chunks = jax.tree_util.tree_map(
        lambda a: a[:full].reshape(k // batch_size, batch_size, *a.shape[1:]), xs)
    add = lambda u, v: jax.tree_util.tree_map(jnp.add, u, v)  # noqa: E731
    first = total(jax.tree_util.tree_map(lambda a: a[0], chunks))
    rest = jax.tree_util.tree_map(lambda a: a[1:], chunks)
    acc = jax.lax.scan(lambda c, part: (add(c, total(part)), None), first, rest)[0]
    if full < k:
        acc = add(acc, total(jax.tree_util.tree_map(lambda a: a[full:], xs)))
    return acc


def _count(xs: Any, batch_size: int | None) -> int:
    if batch_size is not None:
        from jaxinterp.checks import check_batch_size

        batch_size = check_batch_size(batch_size)
    return jax.tree_util.tree_leaves(xs)[0].shape[0]
