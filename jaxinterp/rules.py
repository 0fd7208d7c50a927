"""ReLUs with other backward rules (custom_vjp), swapped into a model with `Model.with_act`.

Forward passes are all `max(x, 0)`; only the gradient each passes back differs:

* `guided_relu` (guided backprop, Springenberg et al. 2015): `g * [x > 0] * [g > 0]`.
* `deconv_relu` (DeconvNet, Zeiler & Fergus 2014): `g * [g > 0]`, ignoring the forward sign.
* `redirected_relu` (Lucid's `redirected_relu_grad`, for feature visualization): the ordinary
  ReLU gradient, except for an example whose gradient is zero everywhere at this ReLU; there the
  gradient also passes through negative inputs when it would raise them, so units that are dead
  at the start of an optimization can still be reached. It assumes the cotangent is that of a
  loss to be minimized.
"""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np


def _relu_with_backward(backward, name, doc):
    """`max(x, 0)` whose vjp is `backward(x, g)`."""

    @jax.custom_vjp
    def relu(x):
        return jnp.maximum(x, 0)

    relu.defvjp(lambda x: (jnp.maximum(x, 0), x), lambda x, g: (backward(x, g).astype(g.dtype),))
    relu.__name__ = relu.__qualname__ = name
    relu.__doc__ = doc
    return relu


guided_relu = _relu_with_backward(
    lambda x, g: jnp.where(x > 0, jnp.maximum(g, 0), 0), "guided_relu",
    "ReLU whose gradient passes only where the input and the incoming gradient are positive.")

deconv_relu = _relu_with_backward(
    lambda x, g: jnp.maximum(g, 0), "deconv_relu",
    "ReLU whose gradient is the rectified incoming gradient, whatever the forward sign.")

def _redirected(x, g):
    relu_grad = jnp.where(x < 0, 0, g)
    redirected = jnp.where((x < 0) & (g > 0), 0, g)  # g > 0: descent would push x lower
    alive = jnp.any(relu_grad.reshape(x.shape[0], -1) != 0, axis=1)
    return jnp.where(alive.reshape((-1,) + (1,) * (x.ndim - 1)), relu_grad, redirected)


redirected_relu = _relu_with_backward(
    _redirected, "redirected_relu",
    "ReLU whose gradient, for an example where none gets through, passes where it raises x.")

RULES = {"guided": guided_relu, "deconv": deconv_relu, "redirected": redirected_relu}


# --------------------------------------------------------------------------- jaxpr rewrite
# Any JAX function, whatever module or helper calls its ReLUs, is traced to a jaxpr and
# evaluated again equation by equation, with each `max(x, 0)` replaced by a rule.

_CALLS = ("jit", "pjit", "closed_call", "core_call", "checkpoint", "remat", "remat2",
          "custom_jvp_call")  # evaluated inline (custom_jvp_call only when it holds a ReLU)
_ZERO_PRESERVING = ("broadcast_in_dim", "convert_element_type", "reshape", "copy")


class UnsupportedReLU(ValueError):
    """A ReLU the rewrite cannot swap (inside a loop, a branch or a custom_vjp), or none at all."""


def _sub_jaxprs(params):
    for v in params.values():
        for item in (v if isinstance(v, (tuple, list)) else (v,)):
            if isinstance(item, jax.extend.core.ClosedJaxpr):
                yield item.jaxpr, item.consts
            elif isinstance(item, jax.extend.core.Jaxpr):
                yield item, ()


def _is_zero(v, zeros) -> bool:
    if isinstance(v, jax.extend.core.Literal):
        return bool(np.all(np.asarray(v.val) == 0))
    return v in zeros


def _relu_operand(eqn, zeros):
    """The non-zero operand of `max(x, 0)` / `max(0, x)`, or None."""
    if eqn.primitive.name != "max":
        return None
    a, b = eqn.invars
    if _is_zero(b, zeros) and not _is_zero(a, zeros):
        return a
    if _is_zero(a, zeros) and not _is_zero(b, zeros):
        return b
    return None


def _zero_vars(jaxpr, consts=()):
    zeros = {v for v, c in zip(jaxpr.constvars, consts)
             if not isinstance(c, jax.core.Tracer) and np.size(c) and np.all(np.asarray(c) == 0)}
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _ZERO_PRESERVING and _is_zero(eqn.invars[0], zeros):
            zeros.update(eqn.outvars)
    return zeros


# A `max(x, 0)` counts as an activation unless its result only normalises: Flax's LayerNorm /
# GroupNorm (and `jax.nn.standardize`) clamp a variance with `max(0, E[x²] − E[x]²)` before an
# `rsqrt`; that clamp keeps its plain gradient. The result is followed through shape, dtype and
# affine steps (`_PASS`) and through calls; it is a clamp when every use ends as the operand of
# a normaliser (`_NORMALISERS`: sqrt, rsqrt, log, pow's base, a division's denominator).
_PASS = ("broadcast_in_dim", "convert_element_type", "reshape", "copy", "squeeze",
         "expand_dims", "transpose", "add", "sub", "mul", "neg")
_NORMALISERS = {"sqrt": (0,), "rsqrt": (0,), "log": (0,), "pow": (0,), "div": (1,)}
_NORM, _OTHER, _UNUSED = "norm", "other", "unused"


def _combine(kinds) -> str:
    kinds = set(kinds)
    return _OTHER if _OTHER in kinds else _NORM if _NORM in kinds else _UNUSED


def _use_kinds(jaxpr, out_kinds=None) -> dict:
    """For each var of `jaxpr`: `_NORM` if every use of it ends in a normaliser, `_OTHER` if
    some use reaches anything else (an output counts as `out_kinds`, default `_OTHER`)."""
    out_kinds = out_kinds or [_OTHER] * len(jaxpr.outvars)
    kind = {}
    for v, k in zip(jaxpr.outvars, out_kinds):
        if isinstance(v, jax.extend.core.Var):
            kind[v] = _combine((kind.get(v, _UNUSED), k))
    for eqn in reversed(jaxpr.eqns):  # uses come after definitions: one backward sweep
        name = eqn.primitive.name
        outs = [kind.get(v, _UNUSED) for v in eqn.outvars]
        subs = list(_sub_jaxprs(eqn.params))
        for i, v in enumerate(eqn.invars):
            if not isinstance(v, jax.extend.core.Var):
                continue
            if i in _NORMALISERS.get(name, ()):
                use = _NORM
            elif name in _PASS:
                use = _combine(outs)
            elif name in _CALLS and subs:
                j = subs[0][0]
                offset = len(eqn.invars) - len(j.invars)
                use = _use_kinds(j, outs).get(j.invars[i - offset], _UNUSED) \
                    if i >= offset else _OTHER
            else:
                use = _OTHER
            kind[v] = _combine((kind.get(v, _UNUSED), use))
    return kind


def _activations(jaxpr, consts=(), out_kinds=None) -> dict:
    """`{eqn index: operand}` for each activation ReLU (`max(x, 0)` that is not a clamp)."""
    zeros = _zero_vars(jaxpr, consts)
    kinds = None
    found = {}
    for i, eqn in enumerate(jaxpr.eqns):
        x = _relu_operand(eqn, zeros)
        if x is None:
            continue
        kinds = _use_kinds(jaxpr, out_kinds) if kinds is None else kinds
        if kinds.get(eqn.outvars[0], _UNUSED) != _NORM:
            found[i] = x
    return found


def _call_out_kinds(jaxpr, out_kinds=None) -> list:
    """For each equation, the use kinds of its outputs (the context of a nested jaxpr)."""
    kinds = _use_kinds(jaxpr, out_kinds)
    return [[kinds.get(v, _UNUSED) for v in eqn.outvars] for eqn in jaxpr.eqns]


def count_relus(jaxpr, consts=(), out_kinds=None) -> int:
    """Activation ReLUs in `jaxpr` and every jaxpr nested in it (variance clamps excluded).

    Args:
      jaxpr: a `Jaxpr` or `ClosedJaxpr` (e.g. from `jax.make_jaxpr(fn)(*args)`).
      consts: the jaxpr's constants (taken from a `ClosedJaxpr` when given one).
      out_kinds: how the jaxpr's outputs are used by a caller (internal).
    Returns:
      The number of `max(x, 0)` equations that the rewrite replaces by a rule.
    """
    if isinstance(jaxpr, jax.extend.core.ClosedJaxpr):
        jaxpr, consts = jaxpr.jaxpr, jaxpr.consts
    n = len(_activations(jaxpr, consts, out_kinds))
    contexts = _call_out_kinds(jaxpr, out_kinds)
    for eqn, ctx in zip(jaxpr.eqns, contexts):
        subs = list(_sub_jaxprs(eqn.params))
        if eqn.primitive.name in _CALLS and subs:
            n += count_relus(subs[0][0], subs[0][1], ctx)
        else:
            n += sum(count_relus(j, c) for j, c in subs)
    return n


_SHAPE_STEPS = ("broadcast_in_dim", "reshape", "convert_element_type", "expand_dims")


def _softmax_divs(jaxpr) -> set:
    """Indices of the equations ending a softmax: `exp(z) / broadcast(reduce_sum(exp(z)))`,
    what `jax.nn.softmax` (and Flax's attention) trace to."""
    producer = {v: eqn for eqn in jaxpr.eqns for v in eqn.outvars}
    found = set()
    for i, eqn in enumerate(jaxpr.eqns):
        if eqn.primitive.name != "div" or not all(
                isinstance(v, jax.extend.core.Var) for v in eqn.invars):
            continue
        num, den = eqn.invars
        if getattr(producer.get(num), "primitive", None) is None or \
                producer[num].primitive.name != "exp":
            continue
        d = producer.get(den)
        while d is not None and d.primitive.name in _SHAPE_STEPS:
            d = producer.get(d.invars[0]) if isinstance(d.invars[0], jax.extend.core.Var) \
                else None
        if d is not None and d.primitive.name == "reduce_sum" and d.invars[0] is num:
            found.add(i)
    return found


def count_softmaxes(jaxpr, consts=()) -> int:
    """Softmaxes in `jaxpr` and every jaxpr nested in it (see `softmax_outputs`)."""
    if isinstance(jaxpr, jax.extend.core.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    return len(_softmax_divs(jaxpr)) + sum(
        count_softmaxes(j) for eqn in jaxpr.eqns for j, _ in _sub_jaxprs(eqn.params))


def softmax_outputs(fn, taps=()):
    """`fn` evaluated through its jaxpr, also returning every softmax it computes, in order.

    A softmax is `exp(z) / sum(exp(z))` as `jax.nn.softmax` traces it, in plain code or inside
    `jit` / `remat` calls (not in loops or branches). `taps[k]`, when given, is added to the
    k-th softmax's output, so that a gradient with respect to it is the gradient with respect
    to those probabilities (Chefer et al.'s `attn.register_hook`).

    Args:
      fn: a function of arrays (pytrees).
      taps: arrays added to the softmaxes' outputs, in order (fewer than the softmaxes: the
        rest take none).
    Returns:
      A function with `fn`'s signature returning `(fn's output, [softmax outputs])`.
    """

    def run(*args):
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        collected = []
        outs = _eval(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(args), None, {},
                     [], softmax=(collected, list(taps)))
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), outs), collected

    return run


def _inner_taps(eqn, subs, taps) -> dict:
    """Taps on the outputs of a jit / remat call, moved onto the inner values they are computed
    as (so that the rest of the call, e.g. the logits computed in the same jit, sees them)."""
    if not subs or eqn.primitive.name not in _CALLS or eqn.primitive.name == "custom_jvp_call":
        return {}
    j = subs[0][0]
    return {j.outvars[k]: taps[v] for k, v in enumerate(eqn.outvars)
            if v in taps and isinstance(j.outvars[k], jax.extend.core.Var)
            and j.outvars[k] not in j.invars}


def _eval(jaxpr, consts, args, rule, taps, found, out_kinds=None, softmax=None):
    env = {}
    divs = _softmax_divs(jaxpr) if softmax is not None else ()
    read = lambda v: v.val if isinstance(v, jax.extend.core.Literal) else env[v]  # noqa: E731
    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    relus = _activations(jaxpr, consts, out_kinds) if rule is not None else {}
    contexts = _call_out_kinds(jaxpr, out_kinds) if rule is not None else None
    for i, eqn in enumerate(jaxpr.eqns):
        invals = [read(v) for v in eqn.invars]
        name, pushed = eqn.primitive.name, ()
        x = relus.get(i)
        subs = list(_sub_jaxprs(eqn.params))
        if softmax is not None and subs and name in _CALLS and any(
                count_softmaxes(j) for j, _ in subs[:1]):
            has_relu = True  # evaluate the call inline: its softmaxes are collected
        elif rule is None or x is not None or not subs:
            has_relu = False
        elif name in _CALLS:
            has_relu = count_relus(subs[0][0], subs[0][1], contexts[i]) > 0
        else:
            has_relu = any(count_relus(j, c) for j, c in subs)
        if x is not None:
            found.append(name)
            out = rule(jnp.broadcast_to(read(x), eqn.outvars[0].aval.shape))
            outs = [out.astype(eqn.outvars[0].aval.dtype)]
        elif (has_relu or _inner_taps(eqn, subs, taps)) and name in _CALLS:
            (j, c), = subs[:1]
            inner = _inner_taps(eqn, subs, taps)
            outs = _eval(j, c, invals[len(invals) - len(j.invars):], rule, {**taps, **inner},
                         found, None if contexts is None else contexts[i], softmax)
            pushed = {v for k, v in enumerate(eqn.outvars) if j.outvars[k] in inner}
        elif has_relu:
            raise UnsupportedReLU(
                f"a ReLU inside `{name}` cannot be given a backward rule (the rewrite handles "
                "ReLUs in plain code, jit, remat and custom_jvp functions; not in loops, "
                "branches or custom_vjp functions): write that part without it, or pass a "
                "function whose ReLUs are outside")
        else:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        if i in divs:  # a softmax: collected, with its tap
            collected, given = softmax
            k = len(collected)
            outs = [outs[0] + given[k] if k < len(given) else outs[0]]
            collected.append(outs[0])
        for v, o in zip(eqn.outvars, outs):
            env[v] = o + taps[v] if v in taps and v not in pushed else o
    return [read(v) for v in jaxpr.outvars]


def rewrite(fn, rule=None, tap_outputs=None):
    """`fn` evaluated through its jaxpr with every ReLU replaced by `rule` and taps added.

    Recognised ReLUs: `max(x, 0)` or `max(0, x)` with a zero literal or a broadcast zero
    (`jax.nn.relu`, `flax.linen.relu`, `nnx.relu`, `jnp.maximum(x, 0)`,
    `jnp.maximum(x, jnp.zeros_like(x))`; also the `max` inside `jax.nn.relu6`), in plain code
    and inside `jit`, `remat` and `custom_jvp` functions. A `max(x, 0)` whose result is only
    used to normalise (every use, through reshapes and affine steps, ends in `sqrt`, `rsqrt`,
    `log`, `pow` or a division's denominator) is a variance clamp, not an activation, and keeps
    its gradient: LayerNorm, GroupNorm, RMSNorm, BatchNorm and `jax.nn.standardize` never
    change their gradient under a rule. `count_relus` tells how many ReLUs a rule replaces. A ReLU inside a loop, a
    branch or a `custom_vjp` function raises `UnsupportedReLU`, as does a function with none:
    the rule would otherwise silently give the plain gradient.

    Args:
      fn: a function of arrays (pytrees) returning a pytree.
      rule: a ReLU with another backward rule (a value of `RULES`), or None to keep the ReLUs.
      tap_outputs: optional `(select, taps)`: `select(out)` picks leaves of `fn`'s output
        (a dict `name -> array`) and `taps` is a dict `name -> array` added to the
        intermediate value that leaf was computed as, so that later computation sees it
        (a gradient with respect to a tap is the gradient with respect to that intermediate).
    Returns:
      A function with `fn`'s signature and output structure.
    """

    def rewritten(*args):
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        taps = {}
        if tap_outputs is not None:
            select, given = tap_outputs
            out_vars = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape),
                                                    closed.jaxpr.outvars)
            for name, tap in given.items():
                v = select(out_vars)[name]
                if not isinstance(v, jax.extend.core.Var) or v in closed.jaxpr.invars:
                    raise ValueError(f"layer {name!r} is an input or constant of the function; "
                                     "it cannot take a tap")
                taps[v] = tap
        found = []
        outs = _eval(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(args), rule, taps,
                     found)
        if rule is not None and not found:
            raise UnsupportedReLU(
                f"no ReLU found for the {getattr(rule, '__name__', 'ReLU')} rule: the model has "
                "none written as max(x, 0) (jax.nn.relu, nn.relu, jnp.maximum(x, 0)); the "
                "result would be the plain gradient")
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), outs)

    return rewritten
