"""Integrated gradients and occlusion: methods that evaluate the model many times."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.attribution import incremental as inc
from jaxinterp.attribution.core import (input_gradient, is_vgg, keeps_sharding, loop_ready,
                                        prepare)
from jaxinterp.checks import check_batch_size, check_count, check_real
from jaxinterp.chunking import chunked_map, chunked_sum

IG_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
              "riemann_trapezoid", "trapezoid")


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points `alpha` in [0, 1] and weights (float64) of Captum's IG approximation methods."""
    if method not in IG_METHODS:
        raise ValueError(f"method must be one of {IG_METHODS}, got {method!r}")
    steps = check_count(steps, "steps", 1 if method == "gausslegendre" else 2)
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (x + 1), 0.5 * w
    n = steps
    w = np.full(n, 1.0 / n)
    if method == "trapezoid":  # the exact trapezoid rule on n points: spacing 1 / (n - 1)
        w = np.full(n, 1.0 / (n - 1))
        w[0] /= 2
        w[-1] /= 2
        a = np.linspace(0, 1, n)
    elif method == "riemann_trapezoid":  # Captum's: spacing 1 / n, so weights sum to (n - 1) / n
        w[0] /= 2
        w[-1] /= 2
        a = np.linspace(0, 1, n)
    else:
        a = {"riemann_left": np.linspace(0, 1 - 1 / n, n),
             "riemann_right": np.linspace(1 / n, 1, n),
             "riemann_middle": np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)}[method]
    return a, w


@tuned_jit(static_argnames=("batch_size", "return_delta"))
def _ig(m, x, t, baseline, alphas, weights, batch_size, return_delta):
    # The first layer (preprocessing + convolution) is affine, so along the straight path its
    # output is h(base) + alpha * (h(x) - h(base)), and the sum of the path gradients passes
    # back through it once: sum_k w_k dF/dz(z_k) = h'^T (sum_k w_k dF/dh(h_k)).
    base = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
    if not is_vgg(m):  # a wrapped model: gradients at the path points themselves
        ml = loop_ready(m, batch_size)

        def path_grad(aw):
            return aw[1] * input_gradient(ml, t, base + aw[0] * (x - base))

        attr = (x - base) * chunked_sum(path_grad, (alphas, weights), batch_size)
        return _with_delta(m, t, x, base, attr) if return_delta else attr
    first = lambda z: m.module.apply(m.variables, m.meta.preprocess(z), stop=1)[0]  # noqa: E731
    h0, back = jax.vjp(first, base)
    dh, name, ml = first(x) - h0, m.layers[0], loop_ready(m, batch_size)

    def weighted_grad(aw):
        score = lambda h: t(*ml.resume(h, 1, {name: h})).sum()  # noqa: E731
        return aw[1] * jax.grad(score)(h0 + aw[0] * dh)

    attr = (x - base) * back(chunked_sum(weighted_grad, (alphas, weights), batch_size))[0]
    return _with_delta(m, t, x, base, attr) if return_delta else attr


def _with_delta(m, t, x, base, attr):
    f = lambda z: t(*m(z, check=False))  # noqa: E731
    return attr, attr.sum((1, 2, 3)) - (f(x) - f(base))


@keeps_sharding
def integrated_gradients(m, x, target, baseline=0.0, steps: int = 50,
                         method: str = "gausslegendre", batch_size: int | None = None,
                         return_delta: bool = False):
    """Integrated gradients (Sundararajan et al. 2017), Captum's quadrature rules.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable.
      baseline: scalar or array broadcastable to `x` (black by default).
      steps: points on the path.
      method: "gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
        "riemann_trapezoid" (Captum's rules, numerically identical to Captum), or "trapezoid".
        Captum's "riemann_trapezoid" places n points with spacing 1/(n-1) but weights them by
        1/n, so its attributions are scaled by (n-1)/n; "trapezoid" is the exact rule.
      batch_size: path points evaluated at a time (memory bound); None: all at once.
      return_delta: also return the completeness error per example,
        `sum(attr) - (f(x) - f(baseline))` (Captum's convergence delta).
    Returns:
      `[N, H, W, 3]` attributions (and `[N]` deltas).
    """
    alphas, weights = quadrature(method, steps)
    batch_size = check_batch_size(batch_size)
    x, t = prepare(m, x, target)
    baseline = check_baseline(baseline, x)
    return _ig(m, x, t, baseline, jnp.asarray(alphas, x.dtype), jnp.asarray(weights, x.dtype), batch_size,
               return_delta)


def check_baseline(baseline, x) -> jax.Array:
    """`baseline` as a finite array of `x`'s dtype that broadcasts to `x`; else a clear error."""
    baseline = check_real(baseline, "baseline")
    try:
        jnp.broadcast_shapes(baseline.shape, x.shape)
    except ValueError:
        raise ValueError(f"baseline of shape {baseline.shape} does not broadcast to x "
                         f"{x.shape}") from None
    return baseline.astype(x.dtype)


def _pair(value, name) -> tuple[int, int]:
    """`window` / `stride`: an int or a pair (h, w) of positive ints."""
    values = np.ravel(np.asarray(value, dtype=object))
    if values.size not in (1, 2):
        raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
    return tuple(check_count(v, name) for v in np.broadcast_to(values, 2))


def window_corners(size, window, stride) -> np.ndarray:
    """`[P, 2]` top-left corners `(y, x)` of every sliding-window position (Captum's order)."""
    (h, w), (wh, ww), (sh, sw) = size, window, stride
    return np.array([(y, x) for y in range(0, h - wh + 1, sh) for x in range(0, w - ww + 1, sw)],
                    np.int32)


@tuned_jit(static_argnames=("window", "batch_size", "incremental"))
def _occlusion(m, x, t, baseline, corners, window, batch_size, incremental):
    base = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
    clean_logits, clean_feats = m(x, check=False)
    clean = t(clean_logits, clean_feats)
    if incremental:
        inputs, steps = m.meta.preprocess(x), inc.plan(m.specs, x.shape[1:3], window)

    def drop(at):
        crop = jax.lax.dynamic_slice(base, (0, at[0], at[1], 0), (x.shape[0], *window, 3))
        if incremental:
            return clean - t(*inc.perturbed_forward(m, steps, inputs, clean_feats,
                                                    m.meta.preprocess(crop), tuple(at)))
        return clean - t(*m(jax.lax.dynamic_update_slice(x, crop, (0, at[0], at[1], 0)),
                            check=False))

    diffs = chunked_map(drop, corners, batch_size)  # [P, N]
    masks = jax.vmap(lambda at: jax.lax.dynamic_update_slice(
        jnp.zeros(x.shape[1:3], x.dtype), jnp.ones(window, x.dtype), tuple(at)))(corners)
    return jnp.einsum("pn,phw->nhw", diffs, masks) / jnp.maximum(masks.sum(0), 1)


@keeps_sharding
def occlusion(m, x, target, window=(16, 16), stride=(8, 8), baseline=0.0,
              batch_size: int | None = None, incremental: bool = True) -> jax.Array:
    """Occlusion sensitivity with Captum's definition.

    Each pixel gets the mean, over the windows covering it, of score(x) − score(x with the
    window set to `baseline`) (all channels occluded together). Pixels no window covers get 0.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable.
      window: (height, width) of the occluding patch.
      stride: (dy, dx) between window positions.
      baseline: value of the occluded pixels: scalar or array broadcastable to `x`.
      batch_size: window positions evaluated at a time (memory bound); None: all at once.
      incremental: recompute each layer only on the box the window can change, until the box
        covers the map (`attribution.incremental`); same scores up to float rounding, several
        times less work on VGG16. False runs the whole network on every occluded image (always
        so on a wrapped model).
    Returns:
      `[N, H, W]` maps.
    """
    batch_size = check_batch_size(batch_size)
    x, t = prepare(m, x, target)
    window, stride = _pair(window, "window"), _pair(stride, "stride")
    if window[0] > x.shape[1] or window[1] > x.shape[2]:
        raise ValueError(f"window {window} is larger than the image {x.shape[1:3]}")
    corners = window_corners(x.shape[1:3], window, stride)
    return _occlusion(m, x, t, check_baseline(baseline, x), jnp.asarray(corners), window,
                      batch_size, bool(incremental) and is_vgg(m))
