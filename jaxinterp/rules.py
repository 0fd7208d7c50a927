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
import jax.numpy as jnp


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
