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


def count_relus(jaxpr, consts=()) -> int:
    """ReLUs (`max(x, 0)`) in `jaxpr` and every jaxpr nested in it."""
    zeros = _zero_vars(jaxpr, consts)
    n = sum(_relu_operand(e, zeros) is not None for e in jaxpr.eqns)
    return n + sum(count_relus(j, c) for e in jaxpr.eqns for j, c in _sub_jaxprs(e.params))


def _eval(jaxpr, consts, args, rule, taps, found):
    env = {}
    read = lambda v: v.val if isinstance(v, jax.extend.core.Literal) else env[v]  # noqa: E731
    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    zeros = _zero_vars(jaxpr, consts)
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        x = _relu_operand(eqn, zeros) if rule is not None else None
        subs = list(_sub_jaxprs(eqn.params))
        has_relu = rule is not None and any(count_relus(j, c) for j, c in subs)
        if x is not None:
            found.append(name)
            out = rule(jnp.broadcast_to(read(x), eqn.outvars[0].aval.shape))
            outs = [out.astype(eqn.outvars[0].aval.dtype)]
        elif has_relu and name in _CALLS:
            (j, c), = subs[:1]
            outs = _eval(j, c, invals[len(invals) - len(j.invars):], rule, taps, found)
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
        for v, o in zip(eqn.outvars, outs):
            env[v] = o + taps[v] if v in taps else o
    return [read(v) for v in jaxpr.outvars]


def rewrite(fn, rule=None, tap_outputs=None):
    """`fn` evaluated through its jaxpr with every ReLU replaced by `rule` and taps added.

    Recognised ReLUs: `max(x, 0)` or `max(0, x)` with a zero literal or a broadcast zero
    (`jax.nn.relu`, `flax.linen.relu`, `jnp.maximum(x, 0)`, `jnp.maximum(x, jnp.zeros_like(x))`),
    in plain code and inside `jit`, `remat` and `custom_jvp` functions. A ReLU inside a loop, a
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
