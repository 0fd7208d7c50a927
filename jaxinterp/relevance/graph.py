"""A traced function as a flat graph of units that relevance rules act on.

`trace(fn, params, x)` turns `fn(params, x)` into one flat list of primitive applications (calls,
`jit`, `remat` and `custom_jvp` / `custom_vjp` functions inlined; dead code dropped) and groups
the ones that depend on `x` into units:

* `layer`: a `dot_general` or `conv_general_dilated` of an activation with a parameter (any value
  derived from `params`), followed by its affine chain: adds, subtractions, multiplications and
  divisions by values that do not depend on `x` (bias, BatchNorm in inference). The chain folds
  into the layer: `z = s * lin(a, w) + c` (zennit's canonizer, for any chain).
* `fixed`: the same with a constant instead of a parameter, or a `reduce_sum` /
  `reduce_window_sum`: a fixed linear map such as average pooling or a mean.
* `region`: a maximal elementwise function of one activation (ReLU, GELU written as a dozen
  primitives, an input normalization): every primitive in it is elementwise and all its inputs
  that depend on `x` come from the same root. `nonlinear` tells whether anything in it is more
  than affine.
* `join`: an add or subtraction of two activations (a residual connection).
* `maxpool`: `reduce_window_max` or `reduce_max`.
* `product`: any other elementwise primitive of two different activations (gates, attention).
* `plain`: everything else that depends on `x` (reshapes, slices, transposes, concatenation);
  `linear` tells whether the engine may pass cotangents through it unchanged by any rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from jaxinterp.rules import _sub_jaxprs  # the jaxprs nested in a primitive's params

_INLINE = ("jit", "pjit", "closed_call", "core_call", "checkpoint", "remat", "remat2",
           "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr", "custom_lin")
ELEMENTWISE = frozenset((
    "add", "sub", "mul", "div", "neg", "max", "min", "exp", "exp2", "log", "log1p", "expm1",
    "tanh", "logistic", "erf", "erfc", "erf_inv", "sqrt", "rsqrt", "cbrt", "pow", "integer_pow",
    "abs", "sign", "select_n", "square", "sin", "cos", "tan", "atan", "atan2", "asinh", "acosh",
    "atanh", "sinh", "cosh", "clamp", "ge", "gt", "le", "lt", "eq", "ne", "and", "or", "not",
    "xor", "convert_element_type", "copy", "copy_p", "floor", "ceil", "round", "is_finite",
    "nextafter", "reduce_precision", "rem", "stop_gradient"))
# elementwise primitives that are affine in their one activation operand
AFFINE = frozenset(("add", "sub", "mul", "div", "neg", "convert_element_type", "copy", "copy_p",
                    "reduce_precision"))
# primitives that only move, select or sum values: any rule passes cotangents through them
LINEAR = frozenset((
    "reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "slice",
    "dynamic_slice", "concatenate", "pad", "gather", "rev", "copy", "copy_p",
    "convert_element_type", "reduce_precision", "dynamic_update_slice", "scatter-add",
    "scatter_add", "cumsum", "real", "imag", "split", "select_and_gather_add"))
LINEAR_OPS = ("dot_general", "conv_general_dilated")
SUMS = ("reduce_sum", "reduce_window_sum")
MAXPOOLS = ("reduce_window_max", "reduce_max")


@dataclasses.dataclass(frozen=True)
class Lit:
    """A literal operand."""

    val: Any


@dataclasses.dataclass
class Node:
    """One primitive application: `outs = prim.bind(*ins, **params)` (ins: ids or `Lit`s)."""

    prim: Any
    params: dict
    ins: tuple
    outs: tuple
    path: str

    @property
    def name(self) -> str:
        return self.prim.name

    def bind(self, *vals):
        out = self.prim.bind(*vals, **self.prim.get_bind_params(self.params))
        return list(out) if self.prim.multiple_results else [out]


@dataclasses.dataclass
class Unit:
    """A group of nodes that a rule treats as one function of its activation inputs."""

    kind: str
    nodes: list            # node indices, in evaluation order
    inputs: list           # ids of the activation (x-dependent) inputs
    outputs: list          # ids used outside the unit
    path: str = ""
    op: str = ""           # layer / fixed: "conv", "dense", "sum"; else the primitive
    lin: int = -1          # layer / fixed: index of the linear node
    x_pos: int = 0         # layer / fixed: operand position of the activation
    chain: list = dataclasses.field(default_factory=list)  # (node index, const operand position)
    nonlinear: bool = False
    linear: bool = True
    first: bool = False    # the first layer that sees the input (zennit's "first layer")


@dataclasses.dataclass
class Graph:
    """A flat traced function: nodes, the ids of its inputs / outputs, constants, avals."""

    nodes: list
    param_ids: list
    x_ids: list
    out_ids: list
    consts: dict
    avals: dict
    units: list = dataclasses.field(default_factory=list)
    dep: set = dataclasses.field(default_factory=set)        # ids depending on x (any dtype)
    nonnegative: set = dataclasses.field(default_factory=set)  # ids known to be >= 0
    unit_of: dict = dataclasses.field(default_factory=dict)  # node index -> unit index

    def is_float(self, i) -> bool:
        return not isinstance(i, Lit) and jnp.issubdtype(self.avals[i].dtype, jnp.inexact)

    def active(self, i) -> bool:
        """Whether `i` carries a cotangent: depends on x and is a float."""
        return not isinstance(i, Lit) and i in self.dep and self.is_float(i)


def _join(prefix, stack):
    stack = str(stack)
    return "/".join(p for p in (prefix, stack) if p)


class _Flattener:
    def __init__(self):
        self.nodes, self.consts, self.avals, self.count = [], {}, {}, 0

    def new(self, aval):
        self.count += 1
        self.avals[self.count] = aval
        return self.count

    def run(self, jaxpr, consts, ins, prefix=""):
        env = {}

        def read(v):
            return Lit(v.val) if isinstance(v, jax.extend.core.Literal) else env[v]

        for v, c in zip(jaxpr.constvars, consts):
            env[v] = self.new(v.aval)
            self.consts[env[v]] = c
        env.update(zip(jaxpr.invars, ins))
        for eqn in jaxpr.eqns:
            args = [read(v) for v in eqn.invars]
            path = _join(prefix, eqn.source_info.name_stack)
            subs = list(_sub_jaxprs(eqn.params))
            if eqn.primitive.name in _INLINE and subs:
                j, c = subs[0]
                offset = len(args) - len(j.invars)
                outs = self.run(j, c, args[offset:], path)
            else:
                outs = [self.new(v.aval) for v in eqn.outvars]
                self.nodes.append(Node(eqn.primitive, dict(eqn.params), tuple(args),
                                       tuple(outs), path))
            for v, o in zip(eqn.outvars, outs):
                if not isinstance(v, jax.extend.core.DropVar):
                    env[v] = o
        return [read(v) for v in jaxpr.outvars]


def _dce(nodes, out_ids):
    live = {i for i in out_ids if not isinstance(i, Lit)}
    keep = []
    for node in reversed(nodes):
        if any(o in live for o in node.outs):
            keep.append(node)
            live.update(i for i in node.ins if not isinstance(i, Lit))
    return keep[::-1]


def _pointwise(act, out) -> bool:
    """Whether a `dot_general` maps an NHWC map to an NHWC map over its channels alone: a 1x1
    convolution written as a matmul (jaxinterp's ResNet `conv="dot"`), ruled as a conv."""
    return len(act.shape) == 4 and len(out.shape) == 4 and act.shape[:3] == out.shape[:3]


def trace(fn, params, x) -> Graph:
    """`fn(params, x)` (pytrees) traced to a flat `Graph` with its units.

    Args:
      fn: a function of parameters and input; its outputs' leaves are the graph's outputs.
      params: the parameters (any value derived from them counts as a layer's weight).
      x: the input that relevance flows to.
    Returns:
      The `Graph`, units classified.
    """
    closed = jax.make_jaxpr(fn)(params, x)
    fl = _Flattener()
    p_leaves = jax.tree_util.tree_leaves(params)
    ins = [fl.new(v.aval) for v in closed.jaxpr.invars]
    outs = fl.run(closed.jaxpr, closed.consts, ins)
    g = Graph(_dce(fl.nodes, outs), ins[: len(p_leaves)], ins[len(p_leaves):], outs, fl.consts,
              fl.avals)
    _classify(g)
    return g


def _depends(g, roots) -> set:
    dep = set(roots)
    for node in g.nodes:
        if any(not isinstance(i, Lit) and i in dep for i in node.ins):
            dep.update(node.outs)
    return dep


def _uses(g) -> dict:
    uses = {}
    for k, node in enumerate(g.nodes):
        for i in node.ins:
            if not isinstance(i, Lit):
                uses.setdefault(i, []).append(k)
    for i in g.out_ids:
        if not isinstance(i, Lit):
            uses.setdefault(i, []).append(-1)
    return uses


def _chain(g, uses, out, assigned):
    """The affine steps after a linear node: [(node index, const operand position)], last id."""
    chain = []
    while True:
        us = uses.get(out, [])
        if len(us) != 1 or us[0] < 0 or us[0] in assigned:
            return chain, out
        k = us[0]
        node = g.nodes[k]
        if node.name not in ("add", "sub", "mul", "div", "neg"):
            return chain, out
        if g.avals[node.outs[0]].shape != g.avals[out].shape:
            return chain, out
        others = [p for p, i in enumerate(node.ins) if i != out]
        if node.name == "neg":
            chain.append((k, None))
        elif len(others) != 1 or (not isinstance(node.ins[others[0]], Lit)
                                   and node.ins[others[0]] in g.dep):
            return chain, out
        elif node.name == "div" and others[0] != 1:
            return chain, out
        else:
            chain.append((k, others[0]))
        out = node.outs[0]


def _classify(g):
    g.dep = _depends(g, g.x_ids)
    from_params = _depends(g, g.param_ids)
    uses = _uses(g)
    active = lambda i: not isinstance(i, Lit) and i in g.dep  # noqa: E731
    units, assigned = [], {}

    def add(unit):
        for k in unit.nodes:
            assigned[k] = len(units)
        units.append(unit)

    root = {i: i for i in g.x_ids}
    regions = {}
    for k, node in enumerate(g.nodes):
        if k in assigned or not any(active(i) for i in node.ins):
            continue
        acts = [p for p, i in enumerate(node.ins) if active(i)]
        name = node.name
        if name in LINEAR_OPS + SUMS and len(acts) == 1:
            chain, last = _chain(g, uses, node.outs[0], assigned)
            if name in SUMS:
                op, kind = "sum", "fixed"
            else:
                other = node.ins[1 - acts[0]]
                op = "conv" if name == "conv_general_dilated" or _pointwise(
                    g.avals[node.ins[acts[0]]], g.avals[node.outs[0]]) else "dense"
                kind = "layer" if not isinstance(other, Lit) and other in from_params else "fixed"
            add(Unit(kind, [k] + [c for c, _ in chain], [node.ins[acts[0]]], [last], node.path,
                     op, k, acts[0], chain))
            root[last] = last
            continue
        if name in ELEMENTWISE and len(node.outs) == 1:
            roots = {root.get(node.ins[p]) for p in acts}
            same_shape = all(g.avals[node.ins[p]].shape == g.avals[node.outs[0]].shape
                             for p in acts)
            if len(roots) == 1 and None not in roots and same_shape:
                r = roots.pop()
                root[node.outs[0]] = r
                regions.setdefault(r, []).append(k)
                continue
            kind = "join" if name in ("add", "sub") and len(acts) == 2 else "product"
        elif name in MAXPOOLS:
            kind = "maxpool"
        else:
            kind = "plain"
        for o in node.outs:
            root[o] = o
        add(Unit(kind, [k], [node.ins[p] for p in dict.fromkeys(acts)], list(node.outs),
                 node.path, name, linear=name in LINEAR or kind == "join"))
    for r, ks in regions.items():
        members = set(ks)
        outs = [o for k in ks for o in g.nodes[k].outs
                if any(u < 0 or u not in members for u in uses.get(o, []))]
        nonlinear = any(g.nodes[k].name not in AFFINE or g.nodes[k].name in ("mul", "div")
                        and sum(active(i) for i in g.nodes[k].ins) > 1 for k in ks)
        add(Unit("region", ks, [r], outs, g.nodes[ks[0]].path, "elementwise",
                 nonlinear=nonlinear, linear=not nonlinear))
    order = sorted(range(len(units)), key=lambda u: units[u].nodes[0])
    g.units = [units[u] for u in order]
    g.unit_of = {k: n for n, u in enumerate(g.units) for k in u.nodes}
    layers = [u for u in g.units if u.kind == "layer"]
    if layers:
        layers[0].first = True
    g.nonnegative = _nonnegative(g)


# primitives that keep a nonnegative operand nonnegative
_KEEPS_SIGN = ("reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "slice",
               "rev", "copy", "copy_p", "convert_element_type", "reduce_precision",
               "reduce_window_max", "reduce_max")


def _nonnegative(g) -> set:
    """Activations that are >= 0 by construction: a ReLU's output (`max` with a nonnegative
    literal), and what shape changes and max pooling make of one. The rules use it to skip terms
    whose input is the (then zero) negative part."""

    def known(i, out):
        if isinstance(i, Lit):
            return bool(np.all(np.asarray(i.val) >= 0))
        return i in out

    out = set()
    for node in g.nodes:
        if len(node.outs) != 1 or not g.is_float(node.outs[0]):
            continue
        if node.name == "max" and any(known(i, out) for i in node.ins):
            out.add(node.outs[0])
        elif node.name in _KEEPS_SIGN and known(node.ins[0], out):
            out.add(node.outs[0])
        elif node.name == "concatenate" and all(known(i, out) for i in node.ins):
            out.add(node.outs[0])
    return out
