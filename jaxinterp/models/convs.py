"""Convolutions whose input gradient is written out as ordinary stride-1 convolutions.

JAX's transpose rule for `lax.conv_general_dilated` emits a convolution with swapped kernel
dimensions (and, for strided convolutions, a dilated input), which XLA:CPU runs on a slow
generic path, worst inside loop bodies (`lax.map`, `lax.scan`): measured 3-4x slower per step
on VGG's 3x3 convolutions and 2x for ResNet-50's SmoothGrad in chunks of 10. `explicit_conv`
has the same values and writes the input gradient in the forward pass's canonical NHWC/HWIO
form: a flipped, in/out-swapped kernel for stride 1; for stride `s`, one stride-1 convolution
per output phase (the `s × s` sub-kernels of taps congruent to that phase) interleaved back; a
matmul for 1x1 kernels. Reverse-mode AD only (`jvp`, `jacfwd`, `hessian` need `conv="xla"`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

DIMS = ("NHWC", "HWIO", "NHWC")


def _conv(x, k, stride, padding):
    if k.shape[:2] == (1, 1) and tuple(map(tuple, padding)) == ((0, 0), (0, 0)):
        return pointwise_conv(x, k, stride)
    return jax.lax.conv_general_dilated(x, k, stride, padding, dimension_numbers=DIMS)


def pointwise_conv(x: jax.Array, k: jax.Array, stride=(1, 1)) -> jax.Array:
    """A 1x1, unpadded NHWC/HWIO convolution as a matmul over channels (of the strided pixels).

    XLA:CPU runs it, and its transpose, near its matmul rate: about 2x its 1x1 convolution
    (ResNet-50's 1x1 layers at 56² / 28² / 7², forward and input gradient). Every AD mode.
    """
    return jnp.einsum("nhwc,co->nhwo", x[:, ::stride[0], ::stride[1]], k[0, 0])


def _phase(n_in: int, n_out: int, size: int, stride: int, pad: int, a: int):
    """Along one axis: the kernel taps that reach input positions `a, a + s, …`, and the
    (low, high) padding of the cotangent that makes their stride-1 correlation land there.

    Forward: `y[o] = Σ_t x[o s + t − p] k[t]`, so `dx[m s + a] = Σ_j g[m + c − j] k[r + s j]`
    with `r = (a + p) mod s` and `c = (a + p − r) / s`: a correlation of `g` with the reversed
    sub-kernel `k[r::s]`, padded `J − 1 − c` below.
    """
    r = (a + pad) % stride
    taps = list(range(r, size, stride))
    c = (a + pad - r) // stride
    m = -(-(n_in - a) // stride)  # input positions of this phase
    lo = len(taps) - 1 - c
    return taps, (lo, m - n_out + c)


def _input_grad(g, k, x_shape, stride, padding):
    kh, kw = k.shape[:2]
    (h, w), (ho, wo) = x_shape[1:3], g.shape[1:3]
    sh, sw = stride
    if (kh, kw) == (1, 1) and tuple(padding) == ((0, 0), (0, 0)):
        d = jnp.einsum("nhwo,io->nhwi", g, k[0, 0])
        if (sh, sw) == (1, 1):
            return d
        return jnp.zeros(x_shape, g.dtype).at[:, ::sh, ::sw].set(d)
    if (sh, sw) == (1, 1):
        lo_h, lo_w = kh - 1 - padding[0][0], kw - 1 - padding[1][0]
        return _conv(g, jnp.flip(k, (0, 1)).swapaxes(2, 3), (1, 1),
                     ((lo_h, h - ho + kh - 1 - lo_h), (lo_w, w - wo + kw - 1 - lo_w)))
    mh, mw = -(-h // sh), -(-w // sw)
    rows = []
    for a in range(sh):
        taps_h, pad_h = _phase(h, ho, kh, sh, padding[0][0], a)
        cols = []
        for b in range(sw):
            taps_w, pad_w = _phase(w, wo, kw, sw, padding[1][0], b)
            if not taps_h or not taps_w:  # a phase no tap reaches (kernel smaller than stride)
                cols.append(jnp.zeros((g.shape[0], mh, mw, k.shape[2]), g.dtype))
                continue
            sub = jnp.flip(k[np.array(taps_h)][:, np.array(taps_w)], (0, 1)).swapaxes(2, 3)
            d = _conv(g, sub, (1, 1), (pad_h, pad_w))
            cols.append(jnp.pad(d, ((0, 0), (0, mh - d.shape[1]), (0, mw - d.shape[2]), (0, 0))))
        rows.append(jnp.stack(cols, 3))
    dx = jnp.stack(rows, 2)  # [N, mh, sh, mw, sw, C]: phase (a, b) of cell (i, j) at i s + a
    return dx.reshape(g.shape[0], mh * sh, mw * sw, -1)[:, :h, :w]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def explicit_conv(x: jax.Array, k: jax.Array, stride=(1, 1), padding=((0, 0), (0, 0))):
    """An NHWC/HWIO convolution (no dilation, one group) whose input gradient is written out.

    Args:
      x: images `[N, H, W, C]`.
      k: kernel `[kh, kw, C, O]`.
      stride: `(sh, sw)`.
      padding: `((low, high), (low, high))` in pixels.

    Returns:
      The values of `lax.conv_general_dilated` (unpadded 1x1 kernels as `pointwise_conv`: a
      matmul, equal to rounding); its gradient with respect to `x` runs as stride-1
      convolutions in canonical form (reverse-mode AD only).
    """
    return _conv(x, k, stride, padding)


def _fwd(x, k, stride, padding):
    return _conv(x, k, stride, padding), (x, k)


def _bwd(stride, padding, res, g):
    x, k = res
    dk = jax.vjp(lambda k: _conv(x, k, stride, padding), k)[1](g)[0]
    return _input_grad(g, k, x.shape, stride, padding), dk


explicit_conv.defvjp(_fwd, _bwd)


def explicit_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                  rhs_dilation=None, dimension_numbers=None,
                                  feature_group_count=1, precision=None):
    """`lax.conv_general_dilated` for flax's `nn.Conv(conv_general_dilated=...)`, routed to
    `explicit_conv`; grouped, dilated or string-padded convolutions run as XLA's own (same
    values, JAX's gradient)."""
    if not _plain(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                  dimension_numbers, feature_group_count):
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                            rhs_dilation, dimension_numbers,
                                            feature_group_count, precision=precision)
    return explicit_conv(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding))


def _plain(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
           feature_group_count) -> bool:
    """Whether a flax convolution is one `explicit_conv` / `pointwise_conv` take: NHWC/HWIO,
    explicit padding, one group, no dilation."""
    return (feature_group_count == 1 and not isinstance(padding, str) and lhs.ndim == 4
            and all(d is None or all(v == 1 for v in np.atleast_1d(d))
                    for d in (lhs_dilation, rhs_dilation))
            and dimension_numbers in (None, DIMS, jax.lax.ConvDimensionNumbers(
                (0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))))


def dot_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                             rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                             precision=None):
    """`lax.conv_general_dilated` for flax's `nn.Conv` with unpadded 1x1 convolutions as
    `pointwise_conv` (a matmul; every AD mode); anything else as XLA's convolution."""
    if (rhs.shape[:2] == (1, 1) and _plain(lhs, rhs, window_strides, padding, lhs_dilation,
                                           rhs_dilation, dimension_numbers, feature_group_count)
            and [tuple(p) for p in padding] == [(0, 0), (0, 0)]):
        return pointwise_conv(lhs, rhs, tuple(window_strides))
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                        rhs_dilation, dimension_numbers, feature_group_count,
                                        precision=precision)


# "xla": every convolution as `lax.conv_general_dilated` (what the relevance rules take);
# "dot": unpadded 1x1 ones as matmuls; "explicit": `explicit_conv` (reverse mode only)
CONVS = {"xla": None, "dot": dot_conv_general_dilated,
         "explicit": explicit_conv_general_dilated}


def loop_conv() -> str:
    """The convolution kind for gradients inside loops on the default backend: "explicit" on
    the CPU (XLA:CPU's slow path above), "xla" elsewhere (GPU / TPU run JAX's own gradient
    through their convolution libraries)."""
    return "explicit" if jax.default_backend() == "cpu" else "xla"


def check_conv(conv: str) -> None:
    """Raises a ValueError naming the valid kinds when `conv` is not one."""
    if conv not in CONVS:
        raise ValueError(f"conv must be one of {', '.join(CONVS)}, got {conv!r}")
