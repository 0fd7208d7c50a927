"""AttnLRP and CP-LRP as rules over any traced function: LXT's efficient rules, found by the
structure of the graph instead of by the model's module classes.

In LXT's Gradient*Input form a rule rewrites a gradient, and the relevance of the input is the
input times the rewritten gradient. The graph's units (`jaxinterp.relevance.graph`) get:

* a softmax (`exp(z) / sum(exp(z))`, what `jax.nn.softmax` traces to): its gradient (AttnLRP's
  softmax rule is the gradient times the input);
* an elementwise nonlinearity of one activation (GELU, SiLU, tanh, ...; any region with a smooth
  primitive in it): the identity rule, gradient `f(x) / (x + 1e-10)`; piecewise-linear regions
  (ReLU, masking, affine maps) keep their gradient;
* a division or product by a statistic of an activation (a `reduce_sum` / `reduce_max` reached
  through elementwise and shape steps: LayerNorm's standard deviation, RMSNorm's `rsqrt`): no
  gradient through the statistic (the identity rule of the normalization);
* a product of two activations (`dot_general` such as `q k^T` and `A v`, or an elementwise
  `mul` such as a gate): AttnLRP's uniform rule, each operand's gradient halved; CP-LRP instead
  stops the gradient through the attention (the operand that is a softmax's output, so that
  `q k^T` gets none) or through a gate (the operand that is a nonlinearity's output);
* linear layers, sums, residual joins, max pooling, reshapes: their gradient (LRP-0).

An elementwise function of the traced function's input itself (the input normalization) passes
relevance unchanged: the relevance returned is its output times the rewritten gradient there,
as LXT's attribution at the normalized input.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxinterp.relevance import engine
from jaxinterp.relevance.graph import ELEMENTWISE, Graph, Lit, Unit

MODES = ("attn_lrp", "cp_lrp")
IDENTITY_EPS = 1e-10  # LXT's `identity_rule_implicit` epsilon
SMOOTH = frozenset((
    "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "erf", "erfc", "erf_inv", "sqrt",
    "rsqrt", "cbrt", "pow", "integer_pow", "square", "sin", "cos", "tan", "atan", "atan2",
    "asinh", "acosh", "atanh", "sinh", "cosh"))
_SHAPE_STEPS = ("broadcast_in_dim", "reshape", "convert_element_type", "expand_dims", "squeeze",
                "transpose", "copy", "copy_p", "reduce_precision")
_STATISTICS = ("reduce_sum", "reduce_max", "reduce_min")


class Structure:
    """What the rules need to know about a graph: softmaxes, statistics, producers."""

    def __init__(self, g: Graph):
        self.g = g
        self.producer = {o: k for k, n in enumerate(g.nodes) for o in n.outs}
        self.softmax_divs, self.softmax_exps = set(), set()
        for k, node in enumerate(g.nodes):
            exp = self._softmax_exp(node)
            if exp is not None:
                self.softmax_divs.add(k)
                self.softmax_exps.add(exp)
        self._statistics = set()  # nodes in evaluation order: one forward pass
        for node in g.nodes:
            acts = [j for j in node.ins if not isinstance(j, Lit) and j in g.dep]
            if acts and (node.name in _STATISTICS or (
                    node.name in _SHAPE_STEPS or node.name in ELEMENTWISE) and
                    all(j in self._statistics for j in acts)):
                self._statistics.update(node.outs)

    def _node_of(self, i):
        return None if isinstance(i, Lit) or i not in self.producer else self.producer[i]

    def _softmax_exp(self, node):
        """The `exp` node of `node` if `node` is a softmax's `exp(z) / broadcast(sum(exp(z)))`."""
        if node.name != "div" or any(isinstance(i, Lit) for i in node.ins):
            return None
        num, den = node.ins
        e = self._node_of(num)
        if e is None or self.g.nodes[e].name != "exp":
            return None
        d = self._node_of(den)
        while d is not None and self.g.nodes[d].name in _SHAPE_STEPS:
            d = self._node_of(self.g.nodes[d].ins[0])
        if d is not None and self.g.nodes[d].name == "reduce_sum" and \
                self.g.nodes[d].ins[0] == num:
            return e
        return None

    def statistic(self, i) -> bool:
        """Whether activation `i` is a statistic of others: every path back from it through
        elementwise and shape steps ends at a reduction (a normalization's mean, variance or
        standard deviation, however it is written)."""
        return i in self._statistics

    def attention(self, i) -> bool:
        """Whether activation `i` is a softmax's output (through shape steps)."""
        k = self._node_of(i)
        while k is not None and k not in self.softmax_divs and \
                self.g.nodes[k].name in _SHAPE_STEPS:
            k = self._node_of(self.g.nodes[k].ins[0])
        return k is not None and k in self.softmax_divs

    def gate(self, i) -> bool:
        """Whether activation `i` is the output of a smooth elementwise nonlinearity."""
        k = self._node_of(i)
        if k is None or self.g.unit_of.get(k) is None:
            return False
        u = self.g.units[self.g.unit_of[k]]
        return u.kind == "region" and smooth(self.g, u) and not set(u.nodes) & self.softmax_exps


def smooth(g: Graph, u: Unit) -> bool:
    """Whether a region computes a smooth nonlinearity (not only affine / piecewise-linear
    steps: ReLU, clamps and masks keep their gradient, which the identity rule equals)."""
    active = lambda i: not isinstance(i, Lit) and i in g.dep  # noqa: E731
    return any(g.nodes[k].name in SMOOTH or g.nodes[k].name in ("mul", "div") and
               sum(active(i) for i in g.nodes[k].ins) > 1 for k in u.nodes)


def _scaled(cts, factor):
    return [None if c is None else c * factor for c in cts]


def _zero(cts, positions):
    return [None if p in positions else c for p, c in enumerate(cts)]


def make_rule(g: Graph, mode: str, captured: dict):
    """The engine rule of AttnLRP (`mode="attn_lrp"`) or CP-LRP (`"cp_lrp"`) on graph `g`.

    Args:
      g: the traced graph.
      mode: "attn_lrp" or "cp_lrp".
      captured: filled with `{input id: relevance}` for elementwise functions of the graph's
        inputs (their output times its rewritten gradient).
    Returns:
      `rule(g, unit, env, cts) -> input cotangents` for `engine.backward`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    s = Structure(g)

    def rule(g, u, env, cts):
        if u.kind == "region":
            # a softmax's exp (with any casts before it): the softmax keeps its gradient
            if set(u.nodes) & s.softmax_exps or not smooth(g, u) and u.inputs[0] not in g.x_ids:
                return engine.plain(g, u, env, cts)
            if len(u.outputs) != 1 or g.avals[u.outputs[0]].shape != g.avals[u.inputs[0]].shape:
                raise engine.UnsupportedPrimitive(
                    f"{mode}: the elementwise function at {u.path or 'the top level'} has "
                    f"{len(u.outputs)} outputs; the identity rule needs one of its input's shape")
            (x,), (y,) = u.inputs, u.outputs
            if x in g.x_ids:  # the input normalization: relevance passes unchanged
                captured[x] = captured.get(x, 0) + env[y] * cts[0]
                return [None]
            return [cts[0] * env[y] / (env[x] + IDENTITY_EPS)]
        if u.kind == "product":
            node = g.nodes[u.nodes[0]]
            if u.nodes[0] in s.softmax_divs:
                return engine.plain(g, u, env, cts)
            pulled = engine.plain(g, u, env, cts)
            stats = {p for p, i in enumerate(u.inputs) if s.statistic(i)}
            if node.name == "div" and len(u.inputs) == 2 and stats == {1}:
                return _zero(pulled, {1})  # x / std: no gradient through the statistic
            if node.name == "mul" and len(u.inputs) == 2:
                if len(stats) == 1:
                    return _zero(pulled, stats)  # x * rsqrt(var)
                return _product(mode, u, pulled, s)
            raise engine.UnsupportedPrimitive(
                f"{mode} has no rule for {engine.describe(u)} of two activations; supported: "
                "softmax, products (mul, dot_general), division by a statistic (normalization)")
        if u.kind == "plain" and not u.linear:
            if u.op in ("dot_general", "conv_general_dilated") and len(u.inputs) == 2:
                return _product(mode, u, engine.plain(g, u, env, cts), s)
            raise engine.UnsupportedPrimitive(
                f"{mode} has no rule for {engine.describe(u)}; supported: linear maps, "
                "elementwise functions, softmax, normalizations, products of two activations, "
                "max pooling")
        return engine.plain(g, u, env, cts)

    return rule


def _product(mode, u, pulled, s: Structure):
    """A product of two activations: AttnLRP halves both gradients (uniform rule); CP-LRP
    stops the attention or the gate."""
    if mode == "attn_lrp":
        return _scaled(pulled, 0.5)
    # (`q k^T` gets no gradient once the attention is stopped: the engine never asks for it)
    stopped = {p for p, i in enumerate(u.inputs) if s.attention(i)} or \
        {p for p, i in enumerate(u.inputs) if s.gate(i)}
    if len(stopped) != 1:
        raise engine.UnsupportedPrimitive(
            f"cp_lrp: the product {engine.describe(u)} has no single attention (a softmax's "
            "output) or gate (a nonlinearity's output) operand to stop")
    return _zero(pulled, stopped)


def relevance(g: Graph, env: dict, out_cts: list, mode: str) -> list:
    """AttnLRP / CP-LRP relevance of the graph's inputs: each input times its rewritten gradient
    (the output of an elementwise function of an input times the gradient there).

    Args:
      g: the traced graph.
      env: `engine.forward(g, ...)`.
      out_cts: the relevance (gradient) at each output, None for none.
      mode: "attn_lrp" or "cp_lrp".
    Returns:
      A relevance array per `x` leaf of the graph.
    """
    captured = {}
    cts = engine.backward(g, env, out_cts, make_rule(g, mode, captured))
    return [env[x] * c + captured.get(x, 0) for x, c in zip(g.x_ids, cts)]
