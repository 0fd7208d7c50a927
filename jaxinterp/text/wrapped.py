"""Any JAX decoder `fn(params, ids) -> logits` as a `LanguageModel`: the token-embedding lookup
is found in the traced function (or named by the user), so every `ji.text` method runs on
models jaxinterp did not write (penzai, Gemma ports, a user's Flax decoder).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.rules import _CALLS, _sub_jaxprs, softmax_outputs


@dataclasses.dataclass(frozen=True)
class DecoderInfo:
    """Sizes `ji.text` checks inputs against (a wrapped decoder has no `GPT2Config`)."""

    vocab_size: int
    n_positions: int | None = None
    n_embd: int = 0


def _var(v):
    return isinstance(v, jax.extend.core.Var)


def _find_lookup(jaxpr, table, ids, width):
    """Path `[eqn index, ...]` to the equation whose output is the embedding lookup, and that
    output's index, in `jaxpr` (descending into jit calls); None if absent.

    The lookup is the first equation reading the table and the ids (or values computed from
    the ids alone: casts, reshapes, negative-index wrapping) with an output of shape
    `ids.shape + (width,)`.
    """
    from_ids = {ids}
    for i, eqn in enumerate(jaxpr.eqns):
        ins = [v for v in eqn.invars if _var(v)]
        if (ins and all(v in from_ids for v in ins)
                and not list(_sub_jaxprs(eqn.params))):  # index arithmetic: casts, wraps
            from_ids.update(eqn.outvars)
            continue
        if table in ins and any(v in from_ids for v in ins):
            subs = list(_sub_jaxprs(eqn.params))
            if eqn.primitive.name in _CALLS and subs:
                inner = subs[0][0]
                offset = len(eqn.invars) - len(inner.invars)
                t = inner.invars[eqn.invars.index(table) - offset]
                d = next(inner.invars[k - offset] for k, v in enumerate(eqn.invars)
                         if v in from_ids)
                found = _find_lookup(inner, t, d, width)
                if found is not None:
                    return [i, *found[0]], found[1]
            for k, o in enumerate(eqn.outvars):
                if o.aval.shape == (*ids.aval.shape, width):
                    return [i], k
    return None


def _eval_with(jaxpr, consts, args, path, out_index, replace):
    """`jaxpr` evaluated with the output at `path` replaced by `replace(value)`."""
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    read = lambda v: v.val if isinstance(v, jax.extend.core.Literal) else env[v]  # noqa: E731
    for i, eqn in enumerate(jaxpr.eqns):
        invals = [read(v) for v in eqn.invars]
        if path and i == path[0] and len(path) > 1:
            (j, c), = list(_sub_jaxprs(eqn.params))[:1]
            outs = _eval_with(j, c, invals[len(invals) - len(j.invars):], path[1:], out_index,
                              replace)
        else:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outs = list(outs) if eqn.primitive.multiple_results else [outs]
            if path and i == path[0]:
                outs[out_index] = replace(outs[out_index])
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


@dataclasses.dataclass(frozen=True, eq=False)
class FunctionDecoder:
    """`fn(params, ids) -> logits [N, T, vocab]` with the `ji.text` decoder protocol
    (`logits`, `attention`, `embed`); hashed by identity (a static argument of `jit`)."""

    fn: Callable
    table: tuple  # the embedding table's path in params (keys)
    config: DecoderInfo
    rule: None = None

    def embed(self, params, ids):
        t = params
        for k in self.table:
            t = t[k]
        return jnp.asarray(t)[ids]

    def _leaf(self, params):
        leaves = jax.tree_util.tree_leaves_with_path(params)
        for n, (path, _) in enumerate(leaves):
            if tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path) == self.table:
                return n
        raise KeyError(self.table)

    def logits(self, params, ids, token_embeddings=None):
        if token_embeddings is None:
            return self.fn(params, ids)
        closed = jax.make_jaxpr(self.fn)(params, ids)
        leaves = jax.tree_util.tree_leaves(params)
        jaxpr = closed.jaxpr
        table = jaxpr.invars[self._leaf(params)]
        found = _find_lookup(jaxpr, table, jaxpr.invars[len(leaves)], self.config.n_embd)
        if found is None:
            raise ValueError("the embedding lookup was not found in the traced function: it "
                             "must read the table and the ids (casts and reshapes allowed) "
                             "and give [N, T, width]")
        out = _eval_with(jaxpr, closed.consts, [*leaves, ids], found[0], found[1],
                         lambda _: token_embeddings)
        return out[0]

    def attention(self, params, ids) -> list:
        _, probs = softmax_outputs(self.fn)(params, ids)
        return [p for p in probs if p.ndim == 4 and p.shape[-1] == p.shape[-2] == ids.shape[1]]


def wrap(fn: Callable[[Any, jax.Array], jax.Array], params: Any, *, embedding=None,
         tokenizer=None, max_positions: int | None = None, name: str | None = None):
    """Wraps any decoder `fn(params, ids) -> logits` as a `LanguageModel`.

    Args:
      fn: a JAX function of the parameters and int token ids `[N, T]` returning logits
        `[N, T, vocab]` (a causal decoder: position t sees tokens ≤ t).
      params: its parameters (a pytree).
      embedding: the path of the token-embedding table in `params` (a tuple of keys, or a
        "/"-joined string); None: the one 2-D leaf `[vocab, width]` that the traced function
        looks the ids up in (the first such lookup).
      tokenizer: a `Tokenizer` to carry.
      max_positions: the longest input the model takes (checked), or None.
      name: shown in `repr` (default `fn`'s name).
    Returns:
      A `LanguageModel`: `ji.text.attribute` (every method; `lrp` finds AttnLRP's rules in
      the traced function, `jaxinterp.relevance.attn_lrp`) and `ji.text.generate`
      (recomputing the whole prefix per token: no key / value cache) run on it.
    """
    from jaxinterp.text.model import LanguageModel, check_ids

    leaves = jax.tree_util.tree_leaves_with_path(params)
    paths = [tuple(getattr(k, "key", getattr(k, "idx", k)) for k in p) for p, _ in leaves]
    probe = jnp.zeros((1, 2), jnp.int32)
    closed = jax.make_jaxpr(fn)(params, probe)
    ids_var = closed.jaxpr.invars[len(leaves)]
    if embedding is not None:
        want = tuple(embedding.split("/")) if isinstance(embedding, str) else tuple(embedding)
        if want not in paths:
            raise ValueError(f"embedding {'/'.join(map(str, want))} is not a parameter path; "
                             f"2-D ones: {', '.join('/'.join(map(str, p)) for p, (_, v) in zip(paths, leaves) if np.ndim(v) == 2)}")
        candidates = [paths.index(want)]
    else:
        candidates = [n for n, (_, v) in enumerate(leaves) if np.ndim(v) == 2]
    for n in candidates:
        width = int(np.shape(leaves[n][1])[1])
        if _find_lookup(closed.jaxpr, closed.jaxpr.invars[n], ids_var, width) is not None:
            vocab = int(np.shape(leaves[n][1])[0])
            decoder = FunctionDecoder(fn, paths[n], DecoderInfo(vocab, max_positions, width))
            m = LanguageModel(decoder, params, tokenizer, name or getattr(fn, "__name__", "fn"))
            check_ids(m, probe)
            return m
    raise ValueError("no token-embedding lookup found: the traced function reads no 2-D "
                     "parameter [vocab, width] at the token ids; pass embedding=path")
