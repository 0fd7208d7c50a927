"""ReLUs with other backward rules (custom_vjp), swapped into a model with `Model.with_act`.

Forward passes are all `max(x, 0)`; only the gradient each passes back differs:

* `guided_relu` (guided backprop, Springenberg et al. 2015): `g * [x > 0] * [g > 0]`.
* `deconv_relu` (DeconvNet, Zeiler & Fergus 2014): `g * [g > 0]`, ignoring the forward sign.
"""

import jax
import jax.numpy as jnp


@jax.custom_vjp
def guided_relu(x):
    """ReLU whose gradient passes only where the input and the incoming gradient are positive."""
    return jnp.maximum(x, 0)


def _guided_fwd(x):
    return jnp.maximum(x, 0), x


def _guided_bwd(x, g):
    return (jnp.where(x > 0, jnp.maximum(g, 0), 0).astype(g.dtype),)


guided_relu.defvjp(_guided_fwd, _guided_bwd)


@jax.custom_vjp
def deconv_relu(x):
    """ReLU whose gradient is the rectified incoming gradient, whatever the forward sign."""
    return jnp.maximum(x, 0)


def _deconv_fwd(x):
    return jnp.maximum(x, 0), None


def _deconv_bwd(_, g):
    return (jnp.maximum(g, 0),)


deconv_relu.defvjp(_deconv_fwd, _deconv_bwd)

RULES = {"guided": guided_relu, "deconv": deconv_relu}
