"""zennit's LRP rules and composites, on the layers of a traced graph.

A rule maps the relevance at a layer's output to the relevance at its input. The basic rules are
zennit's `BasicHook`: the layer's forward is run again with modified inputs and parameters,
the relevance divided by a (stabilized) modified output is pulled back through each, and the
results are combined with the modified inputs. A layer here is `z = s * lin(a, w) + c` with any
affine chain folded in (`s`, `c`: BatchNorm, bias), so parameter modifiers act on the folded weight
`w * s` and bias `c`, as after zennit's `MergeBatchNorm` canonizer. Clamping the folded weight uses
`(w s)+ = s+ w+ + s- w-` per output element, so no axis of `s` has to be known.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from jaxinterp.relevance import engine
from jaxinterp.relevance.graph import Graph, Lit, Unit


def stabilize(z, epsilon=1e-6):
    """zennit's stabilizer: `z + epsilon * sign(z)`, with sign(0) = +1."""
    return z + ((z == 0).astype(z.dtype) + jnp.sign(z)) * epsilon


@dataclasses.dataclass(frozen=True)
class ParamMod:
    """A parameter modifier: the weight as a sum of `coef * part` (part: "w", "pos" = w+,
    "neg" = w-, "sq" = w², "one" = ones) and a function of the bias (None: zero bias)."""

    terms: tuple
    bias: Callable | None


NO_MOD = ParamMod(((1.0, "w"),), lambda c: c)


def clamp_mod(sign: str, zero_bias: bool = False) -> ParamMod:
    """zennit's `ClampMod(min=0)` ("pos") or `ClampMod(max=0)` ("neg")."""
    f = (lambda c: jnp.maximum(c, 0)) if sign == "pos" else (lambda c: jnp.minimum(c, 0))
    return ParamMod(((1.0, sign),), None if zero_bias else f)


def gamma_mod(gamma: float, sign: str, zero_bias: bool = False) -> ParamMod:
    """zennit's `GammaMod`: `w + gamma * clamp(w)` (sign "pos": w+, "neg": w-)."""
    clamp = jnp.maximum if sign == "pos" else jnp.minimum
    return ParamMod(((1.0, "w"), (gamma, sign)),
                    None if zero_bias else (lambda c: c + gamma * clamp(c, 0)))


class Layer:
    """A `layer` / `fixed` unit at its forward values: `z = s * lin(a, w) + c`."""

    def __init__(self, g: Graph, u: Unit, env: dict, bounds=None):
        self.g, self.u, self.env, self._bounds = g, u, env, bounds
        node = g.nodes[u.lin]
        self.node = node
        self.a = env[u.inputs[0]]
        self.z = env[u.outputs[0]]
        self.w = engine.read(env, node.ins[1 - u.x_pos]) if len(node.ins) == 2 else None
        s = c = None
        for k, pos in u.chain:
            n = g.nodes[k]
            if n.name == "neg":
                s = -1.0 if s is None else -s
                c = None if c is None else -c
                continue
            v = jnp.asarray(engine.read(env, n.ins[pos]), self.z.dtype)
            if n.name == "add":
                c = v if c is None else c + v
            elif n.name == "sub" and pos == 1:
                c = -v if c is None else c - v
            elif n.name == "sub":
                s = -1.0 if s is None else -s
                c = v if c is None else v - c
            elif n.name == "mul":
                s = v if s is None else s * v
                c = None if c is None else c * v
            else:  # div by v
                s = 1.0 / v if s is None else s / v
                c = None if c is None else c / v
        self.s, self.c = s, c
        self.nonnegative = u.inputs[0] in g.nonnegative

    def bias_only(self, mod: ParamMod):
        """The layer's output for a zero input: its (modified) bias, or 0."""
        return 0.0 if self.c is None or mod.bias is None else mod.bias(self.c)

    def lin(self, a, w=None):
        vals = [engine.read(self.env, i) for i in self.node.ins]
        vals[self.u.x_pos] = a
        if w is not None:
            vals[1 - self.u.x_pos] = w
        return self.node.bind(*vals)[0]

    def _part(self, a, part):
        s, w = self.s, self.w
        if part == "w":
            out = self.lin(a)
            return out if s is None else s * out
        if w is None:
            raise ValueError(f"{engine.describe(self.u)} has no weight to modify")
        if part == "one":
            return self.lin(a, jnp.ones_like(w))
        if part == "sq":
            out = self.lin(a, w * w)
            return out if s is None else s * s * out
        pos, neg = jnp.maximum(w, 0), jnp.minimum(w, 0)
        first, second = (pos, neg) if part == "pos" else (neg, pos)
        if s is None:
            return self.lin(a, first)
        return jnp.maximum(s, 0) * self.lin(a, first) + jnp.minimum(s, 0) * self.lin(a, second)

    def forward(self, a, mod: ParamMod):
        """The layer with modified parameters applied to `a`."""
        out = sum(coef * self._part(a, part) for coef, part in mod.terms)
        if self.c is not None and mod.bias is not None:
            out = out + mod.bias(self.c)
        return out

    def bounds(self, value):
        """A bound given on the traced function's input (pixels), carried to this layer's input
        through the elementwise steps before it (normalization)."""
        if self._bounds is None:
            raise ValueError("bounds are only known for the first layer")
        return self._bounds(self.u.inputs[0], value)


def basic_rule(inputs, params, grad_map, reducer, name="rule"):
    """zennit's `BasicHook` as a function `(layer, relevance) -> input relevance`.

    Args:
      inputs: input modifiers, `layer -> array` each.
      params: a `ParamMod` per input modifier.
      grad_map: `(relevance, modified outputs) -> a cotangent per modified output`.
      reducer: `(modified inputs, their gradients) -> input relevance`.
      name: the rule's name (for messages).
    Returns:
      The rule.
    """

    def rule(layer: Layer, r):
        ins, outs, pulls = [], [], []
        for f, mod in zip(inputs, params):
            if f is negative_part and layer.nonnegative:  # a zero input: only the bias is left
                ins.append(0.0)
                outs.append(layer.bias_only(mod))
                pulls.append(None)
                continue
            a = f(layer)
            o, pull = jax.vjp(lambda a_, mod=mod: layer.forward(a_, mod), a)
            ins.append(a)
            outs.append(o)
            pulls.append(pull)
        grads = [0.0 if pull is None else pull(c)[0]
                 for pull, c in zip(pulls, grad_map(r, outs))]
        return reducer(ins, grads)

    rule.__name__ = rule.__qualname__ = name
    return rule


def positive_part(layer):
    """Input modifier: a+."""
    return jnp.maximum(layer.a, 0)


def negative_part(layer):
    """Input modifier: a- (zero, and skipped, where the input is a ReLU's output)."""
    return jnp.minimum(layer.a, 0)


def _zero_bias(zero_params):
    return "bias" in tuple(zero_params or ())


def Epsilon(epsilon: float = 1e-6, zero_params=()):  # noqa: N802 (zennit's names)
    """LRP-ε: `a * lin'(R / stab(z, ε))`; ε = 0 is LRP-0."""
    mod = NO_MOD if not _zero_bias(zero_params) else ParamMod(NO_MOD.terms, None)
    return basic_rule([lambda L: L.a], [mod], lambda r, o: [r / stabilize(o[0], epsilon)],
                      lambda i, g: i[0] * g[0], "Epsilon")


def ZPlus(stabilizer: float = 1e-6, zero_params=()):  # noqa: N802
    """LRP-z+ (α1β0 for any input sign): a+ with w+ and a- with w-."""
    zb = _zero_bias(zero_params)
    return basic_rule(
        [positive_part, negative_part],
        [clamp_mod("pos", zb), clamp_mod("neg", True)],
        lambda r, o: [r / stabilize(o[0] + o[1], stabilizer)] * 2,
        lambda i, g: i[0] * g[0] + i[1] * g[1], "ZPlus")


def Gamma(gamma: float = 0.25, stabilizer: float = 1e-6, zero_params=()):  # noqa: N802
    """LRP-γ, zennit's sign-aware form: positive outputs share over the `w + γ w+` (a+) and
    `w + γ w-` (a-) contributions, negative outputs over the mirrored ones."""
    zb = _zero_bias(zero_params)

    def grad_map(r, o):
        up = (o[4] > 0).astype(r.dtype) * r / stabilize(o[0] + o[1], stabilizer)
        down = (o[4] < 0).astype(r.dtype) * r / stabilize(o[2] + o[3], stabilizer)
        return [up, up, down, down, jnp.zeros_like(r)]

    pos, neg = positive_part, negative_part
    return basic_rule(
        [pos, neg, pos, neg, lambda L: L.a],
        [gamma_mod(gamma, "pos", zb), gamma_mod(gamma, "neg", True), gamma_mod(gamma, "neg", zb),
         gamma_mod(gamma, "pos", True), NO_MOD],
        grad_map, lambda i, g: sum(a * b for a, b in zip(i[:4], g[:4])), "Gamma")


def AlphaBeta(alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6,  # noqa: N802
              zero_params=()):
    """LRP-αβ: α times the positive contributions' share minus β times the negative ones'."""
    if alpha < 0 or beta < 0 or alpha - beta != 1:
        raise ValueError(f"AlphaBeta needs alpha, beta >= 0 and alpha - beta = 1, got "
                         f"alpha={alpha}, beta={beta}")
    zb = _zero_bias(zero_params)
    pos, neg = positive_part, negative_part
    return basic_rule(
        [pos, neg, pos, neg],
        [clamp_mod("pos", zb), clamp_mod("neg", True), clamp_mod("neg", zb),
         clamp_mod("pos", True)],
        lambda r, o: [r / stabilize(o[0] + o[1], stabilizer)] * 2
        + [r / stabilize(o[2] + o[3], stabilizer)] * 2,
        lambda i, g: alpha * (i[0] * g[0] + i[1] * g[1]) - beta * (i[2] * g[2] + i[3] * g[3]),
        "AlphaBeta")


def ZBox(low=0.0, high=1.0, stabilizer: float = 1e-6, zero_params=()):  # noqa: N802
    """LRP-z^B for bounded inputs: `z = a w − l w+ − h w−`; `low`, `high` are bounds of the
    traced function's input (pixels; scalars or per channel), carried through normalization."""
    zb = _zero_bias(zero_params)
    mods = [ParamMod(NO_MOD.terms, None if zb else NO_MOD.bias), clamp_mod("pos", zb),
            clamp_mod("neg", zb)]
    return basic_rule(
        [lambda L: L.a, lambda L: L.bounds(low), lambda L: L.bounds(high)], mods,
        lambda r, o: [r / stabilize(o[0] - o[1] - o[2], stabilizer)] * 3,
        lambda i, g: i[0] * g[0] - i[1] * g[1] - i[2] * g[2], "ZBox")


def WSquare(stabilizer: float = 1e-6, zero_params=()):  # noqa: N802
    """LRP-w²: relevance shared by squared weights, whatever the input."""
    mod = ParamMod(((1.0, "sq"),), None if _zero_bias(zero_params) else (lambda c: c * c))
    return basic_rule([lambda L: jnp.ones_like(L.a)], [mod],
                      lambda r, o: [r / stabilize(o[0], stabilizer)], lambda i, g: g[0],
                      "WSquare")


def Flat(stabilizer: float = 1e-6, zero_params=()):  # noqa: N802
    """LRP-flat: relevance shared uniformly over each output's receptive field."""
    return basic_rule([lambda L: jnp.ones_like(L.a)], [ParamMod(((1.0, "one"),), None)],
                      lambda r, o: [r / stabilize(o[0], stabilizer)], lambda i, g: g[0], "Flat")


def Norm(stabilizer: float = 1e-6):  # noqa: N802
    """Relevance shared in proportion to each input's part of the output (sums, average pools)."""
    return basic_rule([lambda L: L.a], [NO_MOD], lambda r, o: [r / stabilize(o[0], stabilizer)],
                      lambda i, g: i[0] * g[0], "Norm")


def Pass():  # noqa: N802
    """Relevance passed through unchanged (zennit's rule for activations)."""
    def rule(layer, r):
        return r
    rule.__name__ = "Pass"
    return rule


RULES = {"epsilon": Epsilon, "zplus": ZPlus, "gamma": Gamma, "alpha_beta": AlphaBeta,
         "zbox": ZBox, "wsquare": WSquare, "flat": Flat, "norm": Norm, "pass": Pass}


# --------------------------------------------------------------------------- composites
@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """What a composite sees of a layer: its module path, kind ("conv" | "dense") and whether it
    is the first layer (the first in evaluation order)."""

    path: str
    op: str
    first: bool
    primitive: str


def _layer_map(conv, dense, first=None, first_ops=("conv", "dense")):
    def composite(info: LayerInfo):
        if first is not None and info.first and info.op in first_ops:
            return first
        return conv if info.op == "conv" else dense
    return composite


def _options(epsilon=1e-6, gamma=0.25, stabilizer=1e-6, low=0.0, high=1.0, zero_params=()):
    return dict(epsilon=epsilon, gamma=gamma, stabilizer=stabilizer, low=low, high=high,
                zero_params=zero_params)


def composite(name, **options):
    """A built-in composite by zennit's name, with zennit's defaults.

    Args:
      name: "epsilon" (ε everywhere), "epsilon_plus", "epsilon_plus_flat",
        "epsilon_gamma_box", "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat".
      **options: epsilon (1e-6), gamma (0.25), stabilizer (1e-6), low / high (ZBox bounds in
        the input's space, 0 / 1), zero_params (e.g. ("bias",)).
    Returns:
      `LayerInfo -> rule`.
    """
    o = _options(**options)
    zp, st = o["zero_params"], o["stabilizer"]
    eps = Epsilon(o["epsilon"], zp)
    table = {
        "epsilon": lambda: _layer_map(eps, eps),
        "epsilon_plus": lambda: _layer_map(ZPlus(st, zp), eps),
        "epsilon_plus_flat": lambda: _layer_map(ZPlus(st, zp), eps, Flat(st, zp)),
        "epsilon_gamma_box": lambda: _layer_map(Gamma(o["gamma"], st, zp), eps,
                                                ZBox(o["low"], o["high"], st, zp), ("conv",)),
        "epsilon_alpha2_beta1": lambda: _layer_map(AlphaBeta(2.0, 1.0, st, zp), eps),
        "epsilon_alpha2_beta1_flat": lambda: _layer_map(AlphaBeta(2.0, 1.0, st, zp), eps,
                                                        Flat(st, zp)),
    }
    if name not in table:
        raise ValueError(f"unknown composite {name!r}; valid: {', '.join(table)}, or a function "
                         "(layer path, primitive) -> rule")
    return table[name]()


COMPOSITES = ("epsilon", "epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box",
              "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat")


def make_rule(layer_rule: Callable, stabilizer: float, bounds):
    """The engine rule of LRP: `layer_rule(LayerInfo)` for layers, Norm for fixed linear maps
    (pooling) and residual sums, Pass for elementwise functions, the gradient for max-pooling and
    reshapes; an error naming the primitive for anything else."""
    norm = Norm(stabilizer)

    def rule(g: Graph, u: Unit, env: dict, cts: list):
        if u.kind == "layer":
            info = LayerInfo(u.path, u.op, u.first, g.nodes[u.lin].name)
            chosen = layer_rule(info)
            if chosen is None:
                raise ValueError(f"the composite gave no rule for {engine.describe(u)}")
            return [chosen(Layer(g, u, env, bounds if u.first else None), cts[0])]
        if u.kind == "fixed":
            return [norm(Layer(g, u, env), cts[0])]
        if u.kind == "join":
            z = env[u.outputs[0]]
            pulled = engine.plain(g, u, env, [cts[0] / stabilize(z, stabilizer)])
            return [env[i] * p for i, p in zip(u.inputs, pulled)]
        if u.kind == "region":
            if len(u.outputs) != 1 or g.avals[u.outputs[0]].shape != g.avals[u.inputs[0]].shape:
                raise engine.UnsupportedPrimitive(
                    f"LRP: the elementwise function at {u.path or 'the top level'} has "
                    f"{len(u.outputs)} outputs; Pass needs exactly one")
            return [cts[0]]
        if u.kind == "maxpool" or u.kind == "plain" and u.linear:
            return engine.plain(g, u, env, cts)
        raise engine.UnsupportedPrimitive(
            f"LRP has no rule for {engine.describe(u)} ({u.kind}): products of two activations "
            "(gates, attention) and other nonlinear primitives need a rule (AttnLRP's arrive "
            "with the transformer models)")

    return rule


def input_bounds(g: Graph, env: dict):
    """`(layer input id, value) -> array`: the traced function's input set to `value` everywhere
    (broadcast over its last axis), carried to that layer's input through elementwise steps."""

    def bounds(target, value):
        needed, stack = set(), [target]
        producer = {o: k for k, n in enumerate(g.nodes) for o in n.outs}
        while stack:
            i = stack.pop()
            if i in producer and producer[i] not in needed and i in g.dep:
                k = producer[i]
                needed.add(k)
                unit = g.units[g.unit_of[k]]
                if unit.kind not in ("region", "plain") or unit.kind == "plain" and not (
                        unit.linear):
                    raise ValueError(
                        f"ZBox: the first layer's input is not an elementwise function of the "
                        f"image ({engine.describe(unit)} lies between them)")
                stack.extend(j for j in g.nodes[k].ins if not isinstance(j, Lit))
        local = dict(env)
        for x in g.x_ids:
            local[x] = jnp.broadcast_to(jnp.asarray(value, g.avals[x].dtype), g.avals[x].shape)
        for k in sorted(needed):
            node = g.nodes[k]
            local.update(zip(node.outs, node.bind(*[engine.read(local, i) for i in node.ins])))
        return local[target]

    return bounds
