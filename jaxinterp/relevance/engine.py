"""Evaluates a `Graph` forward and its cotangents backward, unit by unit, under a method's rules.

A method is a function `backward(graph, unit, env, cts) -> input cotangents`; the engine walks the
units in reverse order and asks it for each unit's input cotangents given the output ones.
`plain` (the true vjp of the unit) is what a method returns where it has nothing to change.
Everything is ordinary JAX code, so the result works under `jit`, `vmap` and `grad`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinterp.relevance.graph import Graph, Lit, Unit


class UnsupportedPrimitive(ValueError):
    """The method has no rule for a primitive the traced function applies to its input."""


def forward(g: Graph, params, x) -> dict:
    """Every value of the traced function, `{id: array}`."""
    env = dict(g.consts)
    env.update(zip(g.param_ids, jax.tree_util.tree_leaves(params)))
    env.update(zip(g.x_ids, jax.tree_util.tree_leaves(x)))
    read = lambda i: i.val if isinstance(i, Lit) else env[i]  # noqa: E731
    for node in g.nodes:
        with jax.named_scope(node.path or node.name):
            env.update(zip(node.outs, node.bind(*[read(i) for i in node.ins])))
    return env


def read(env, i):
    """A value of the environment (or a literal)."""
    return i.val if isinstance(i, Lit) else env[i]


def unit_fn(g: Graph, u: Unit, env: dict, outputs=None):
    """The unit as a function of its activation inputs, returning `outputs` (default: its
    outputs that carry cotangents); every other operand is read from `env`."""
    outputs = [o for o in u.outputs if g.is_float(o)] if outputs is None else outputs

    def f(*inputs):
        local = dict(zip(u.inputs, inputs))
        for k in u.nodes:
            node = g.nodes[k]
            vals = [local[i] if not isinstance(i, Lit) and i in local else read(env, i)
                    for i in node.ins]
            local.update(zip(node.outs, node.bind(*vals)))
        return [local[o] for o in outputs]

    return f


def float_inputs(g: Graph, u: Unit) -> list:
    """Positions of the unit's inputs that carry cotangents."""
    return [p for p, i in enumerate(u.inputs) if g.is_float(i)]


def vjp(g: Graph, u: Unit, env: dict, at=None):
    """`(outputs, pullback)` of the unit at its inputs' values in `env` (or `at`, a list aligned
    with `u.inputs`); the pullback maps float-output cotangents to float-input cotangents."""
    vals = [env[i] for i in u.inputs] if at is None else list(at)
    pos = float_inputs(g, u)
    f = unit_fn(g, u, env)

    def of_floats(*fl):
        full = list(vals)
        for p, v in zip(pos, fl):
            full[p] = v
        return f(*full)

    outs, pull = jax.vjp(of_floats, *[vals[p] for p in pos])
    return outs, lambda cts: _place(pull(list(cts)), pos, len(vals))


def _place(cts, pos, n):
    full = [None] * n
    for p, c in zip(pos, cts):
        full[p] = c
    return full


def plain(g: Graph, u: Unit, env: dict, cts: list) -> list:
    """The true vjp of the unit: cotangents for `u.inputs` (None for non-float inputs)."""
    return vjp(g, u, env)[1](cts)


def describe(u: Unit) -> str:
    """`primitive` at `path`, for error messages."""
    return f"`{u.op}`" + (f" at {u.path}" if u.path else "")


def backward(g: Graph, env: dict, out_cts: list, rule) -> list:
    """Cotangents of the graph's `x` inputs, walking units in reverse under `rule`.

    Args:
      g: the graph.
      env: `forward(g, ...)` values.
      out_cts: a cotangent per graph output (None: no cotangent).
      rule: `rule(g, unit, env, cts) -> input cotangents` (see `plain`).
    Returns:
      A cotangent per `x` leaf (zeros where nothing reaches it).
    """
    ct = {}

    def accumulate(i, c):
        if c is not None and not isinstance(i, Lit) and g.active(i):
            ct[i] = ct[i] + c if i in ct else c

    for i, c in zip(g.out_ids, out_cts):
        accumulate(i, c)
    for u in reversed(g.units):
        outs = [o for o in u.outputs if g.is_float(o)]
        if not any(o in ct for o in outs):
            continue
        cts = [ct.pop(o) if o in ct else jnp.zeros(g.avals[o].shape, g.avals[o].dtype)
               for o in outs]
        with jax.named_scope(f"relevance/{u.kind}/{u.path}"):
            for i, c in zip(u.inputs, rule(g, u, env, cts)):
                accumulate(i, c)
    return [ct.get(i, jnp.zeros(g.avals[i].shape, g.avals[i].dtype)) for i in g.x_ids]
