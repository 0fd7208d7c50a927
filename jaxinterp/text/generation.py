"""Greedy decoding with a key / value cache, one compiled program per shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import check_count
from jaxinterp.text.model import LanguageModel, check_ids, param_dtype


@tuned_jit(static_argnames=("module", "n"))
def _greedy(module, params, ids, n):
    c = module.config
    batch, t = ids.shape
    shape = (batch, c.n_head, t + n, c.n_embd // c.n_head)
    dtype = param_dtype(params)
    caches = tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(c.n_layer))
    apply = lambda tokens, caches, index: module.apply(  # noqa: E731
        {"params": params}, tokens, None, caches, index)
    logits, caches = apply(ids, caches, 0)  # the prompt fills the cache
    first = jnp.argmax(logits[:, -1], -1).astype(jnp.int32)

    def step(carry, i):
        caches, tok = carry
        logits, caches = apply(tok[:, None], caches, t + i)
        return (caches, jnp.argmax(logits[:, -1], -1).astype(jnp.int32)), tok

    (_, last), toks = jax.lax.scan(step, (caches, first), jnp.arange(n - 1))
    return jnp.concatenate([ids, toks.T, last[:, None]], 1)


@tuned_jit(static_argnames=("module", "n"))
def _greedy_uncached(module, params, ids, n):
    """Greedy decoding recomputing the prefix: the buffer of T + n tokens is run whole each step
    and the logits at the last filled position are read (a causal decoder's later positions do
    not change them)."""
    batch, t = ids.shape
    buf = jnp.concatenate([ids, jnp.zeros((batch, n), ids.dtype)], 1)

    def step(i, buf):
        logits = module.logits(params, buf)
        nxt = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, t + i - 1, 1, False), -1)
        return jax.lax.dynamic_update_index_in_dim(buf, nxt.astype(buf.dtype), t + i, 1)

    return jax.lax.fori_loop(0, n, step, buf)


def generate(m: LanguageModel, ids, n: int) -> jax.Array:
    """Greedy continuation: the `n` most likely tokens one after another.

    The prompt fills a key / value cache in one pass; each new token is then one cached step,
    all inside one compiled program (a `lax.scan`). A wrapped function (`text.wrap`) has no
    cache: each step runs the whole T + n buffer (still one compiled program).

    Args:
      m: a `LanguageModel`.
      ids: int prompt ids `[N, T]` (or `[T]`).
      n: tokens to add (T + n must fit the model's positions).
    Returns:
      `[N, T + n]` ids, the prompt first (`[T + n]` for 1-D ids).
    """
    single = np.ndim(ids) == 1
    ids = check_ids(m, ids)
    n = check_count(n, "n")
    if not m.is_gpt2:
        out = _greedy_uncached(m.module, m.params, ids, n)
        return out[0] if single else out
    if ids.shape[1] + n > m.config.n_positions:
        raise ValueError(f"{ids.shape[1]} prompt tokens + {n} new ones exceed the model's "
                         f"{m.config.n_positions} positions")
    out = _greedy(m.module, m.params, ids, n)
    return out[0] if single else out
