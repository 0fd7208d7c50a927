"""ReLUs with other backward rules (custom_vjp), swapped into a model with `Model.with_act`.

Forward passes are all `max(x, 0)`; only the gradient each passes back differs:

* `guided_relu` (guided backprop, Springenberg et al. 2015): `g * [x > 0] * [g > 0]`.
* `deconv_relu` (DeconvNet, Zeiler & Fergus 2014): `g * [g > 0]`, ignoring the forward sign.
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

RULES = {"guided": guided_relu, "deconv": deconv_relu}
