"""Class activation maps: Grad-CAM, Guided Grad-CAM, CAM."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxinterp._xla import tuned_jit
from jaxinterp.attribution.core import (default_layer, is_vgg, keeps_sharding, prepare, rule_gradient,
                                        total_score)

INTERPOLATIONS = ("bilinear", "nearest")


def _resize(cam, size, interpolation):
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    return jax.image.resize(cam, (cam.shape[0], *size), interpolation)


def grid_layout(tokens: int, image_hw) -> tuple[int, int, int] | None:
    """How `tokens` tokens of an image of size `image_hw` lie on a patch grid: `(skip, gh,
    gw)` with the first `skip` tokens (a class token) left out, or None if they do not.

    A class token first is tried before none; the grid has the image's aspect ratio.
    """
    h, w = image_hw
    for skip in (1, 0):
        p = tokens - skip
        if p <= 0:
            continue
        gh = max(1, int(round(math.sqrt(p * h / w))))
        if p % gh == 0 and gh * w == (p // gh) * h:
            return skip, gh, p // gh
    return None


def token_grid(a, image_hw):
    """A token layer's output `[N, T, D]` as its patch grid `[N, gh, gw, D]` (the class token
    dropped), what pytorch-grad-cam's ViT `reshape_transform` does; maps pass unchanged."""
    if a.ndim != 3:
        return a
    layout = grid_layout(a.shape[1], image_hw)
    if layout is None:
        raise ValueError(f"a layer of {a.shape[1]} tokens does not fill a patch grid of a "
                         f"{image_hw[0]}x{image_hw[1]} image (with or without a class token)")
    skip, gh, gw = layout
    return a[:, skip:].reshape(a.shape[0], gh, gw, a.shape[2])


def _layer(m, layer):
    name = m.resolve(layer) if layer is not None else default_layer(m)
    if not is_vgg(m):
        shape = m.output_shape(name)
        size = m.info.input_size or (224, 224)
        if len(shape) == 3 and grid_layout(shape[1], size) is None or len(shape) not in (3, 4):
            raise ValueError(f"Grad-CAM needs a spatial layer ([N, h, w, C] output, or tokens "
                             f"[N, T, D] on a patch grid); {name!r} gives {shape}")
    elif name.startswith("classifier") or name == "avgpool" and m.module.head == "gap":
        raise ValueError(f"Grad-CAM needs a spatial layer (features.* or avgpool), got {layer!r}")
    return name


@tuned_jit(static_argnames=("layer", "relu", "upsample", "interpolation", "weighting"))
def _grad_cam(m, x, t, layer, relu, upsample, interpolation, weighting):
    a_shape = jax.eval_shape(lambda x: m(x, check=False)[1][layer], x)
    zeros = jnp.zeros(a_shape.shape, a_shape.dtype)
    g, feats = jax.grad(lambda d: total_score(m, t, x, {layer: d}), has_aux=True)(zeros)
    a, g = token_grid(feats[layer], x.shape[1:3]), token_grid(g, x.shape[1:3])
    if weighting == "gradient":
        cam = (a * g.mean((1, 2), keepdims=True)).sum(-1)
    else:  # the seed's first approach: the plain average of the feature maps
        cam = a.mean(-1)
    cam = jnp.maximum(cam, 0) if relu else cam
    return _resize(cam, x.shape[1:3], interpolation) if upsample else cam


@keeps_sharding
def grad_cam(m, x, target, layer: str | None = None, relu: bool = True, upsample: bool = True,
             *, interpolation: str = "bilinear", weighting: str = "gradient") -> jax.Array:
    """Grad-CAM (Selvaraju et al. 2017): feature maps weighted by their mean gradient.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias); default: last conv block output (`default_layer`;
        a ViT: its last block's `ln_1`). A token layer `[N, T, D]` (a transformer's) is read
        as its patch grid, the class token dropped (`token_grid`): no reshape function to
        write.
      relu: keep positive evidence only (the paper); False gives Captum's raw `LayerGradCam`.
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" (paper, pytorch-grad-cam) or "nearest".
      weighting: "gradient" (Grad-CAM) or "mean" (plain average of the feature maps).
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    if weighting not in ("gradient", "mean"):
        raise ValueError(f"weighting must be 'gradient' or 'mean', got {weighting!r}")
    x, t = prepare(m, x, target)
    return _grad_cam(m, x, t, _layer(m, layer), relu, upsample, interpolation, weighting)


@tuned_jit(static_argnames=("layer", "interpolation"))
def _guided_grad_cam(m, x, t, layer, interpolation):
    cam = _grad_cam(m, x, t, layer, True, True, interpolation, "gradient")
    return rule_gradient(m, x, t, rule="guided") * cam[..., None]


@keeps_sharding
def guided_grad_cam(m, x, target, layer: str | None = None, *,
                    interpolation: str = "bilinear") -> jax.Array:
    """Guided Grad-CAM: guided backprop times the upsampled, rectified Grad-CAM map.

    Both passes are compiled into one program (XLA shares their common forward computation).
    Args as `grad_cam`; Captum's `GuidedGradCam` upsamples with "nearest" by default.
    Returns:
      `[N, H, W, 3]`.
    """
    x, t = prepare(m, x, target)
    return _guided_grad_cam(m, x, t, _layer(m, layer), interpolation)


def _cam_layer(m):
    if not is_vgg(m):
        raise ValueError("CAM reads the dense weights after jaxinterp VGG's global-average-pool "
                         "head; for a wrapped model use grad_cam (on a GAP + linear head, CAM "
                         "is Grad-CAM without the ReLU, times h*w)")
    names = [s.name for s in m.specs]
    if m.module.head != "gap":
        raise ValueError(f"CAM needs a global-average-pool head (vgg-mini); {m.arch} has "
                         "torchvision's classifier: use grad_cam")
    return names[names.index("avgpool") - 1]


@tuned_jit(static_argnames=("layer", "upsample", "interpolation"))
def _cam(m, x, t, layer, upsample, interpolation):
    logits, feats = m(x, check=False)
    w = m.params["classifier_0"]["kernel"]  # [C, K]
    cam = jnp.einsum("nhwc,nc->nhw", feats[layer], w.T[t.index])
    return _resize(cam, x.shape[1:3], interpolation) if upsample else cam


@keeps_sharding
def cam(m, x, target, *, upsample: bool = True, interpolation: str = "bilinear") -> jax.Array:
    """Class activation map (Zhou et al. 2016) of a GAP-head model: `sum_c w[c, k] A_c`.

    Args:
      m: a model with a global-average-pool head (vgg-mini).
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index or int array `[N]`.
      upsample: resize to the input size.
      interpolation: "bilinear" or "nearest".
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    layer = _cam_layer(m)
    x, t = prepare(m, x, target)  # ints, int arrays and class-index Targets (as metrics pass)
    if t.fn is not None:
        raise ValueError("CAM is defined for class targets only (an int or int array)")
    return _cam(m, x, t, layer, upsample, interpolation)
