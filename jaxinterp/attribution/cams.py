"""The pytorch-grad-cam (1.5.x) family of class activation maps, compiled and batched.

Grad-CAM++, XGrad-CAM, Layer-CAM, HiRes-CAM, Grad-CAM element-wise, Eigen-CAM, Eigen-Grad-CAM,
Score-CAM and Ablation-CAM, each equal to pytorch-grad-cam's class of the same name on identical
weights (`tests/test_cams.py`). Every function is one compiled program for the whole batch: the
masked (Score-CAM) and ablated (Ablation-CAM) forward passes are `vmap`ped over channels, in
chunks of `batch_size` channels when given.

Conventions shared by all of them (as `grad_cam`):

* `layer` is a spatial layer (name or alias); the default is the last conv block's output.
  pytorch-grad-cam hooks a module's output: `model.features[k]` is jaxinterp's `features.k`,
  a ResNet's `model.layer4` / `model.layer4[-1]` is `layer4` / `layer4/1`.
* Post-processing. pytorch-grad-cam always returns
  `minmax(resize(minmax(relu(cam))))` with `minmax(c) = (c - min c) / (1e-7 + max(c - min c))`
  per image and OpenCV's `INTER_LINEAR` resize; `postprocess="pytorch_grad_cam"` gives exactly
  that (the resize is half-pixel bilinear without antialiasing, as `cv2.resize`). The default,
  `postprocess="jaxinterp"`, keeps the map's units (as `grad_cam`): ReLU (`relu=True`) and a
  bilinear upsampling, no scaling, so maps of different images and methods stay comparable.
  `upsample=False` returns the layer-resolution map; with `relu=False` too it is
  pytorch-grad-cam's raw `get_cam_image` output.
* `eigen_smooth=True` replaces the channel sum of the weighted activations by their projection
  on its first principal component (pytorch-grad-cam's `get_2d_projection`), where
  pytorch-grad-cam has that option.

The principal component's sign is the SVD's (as pytorch-grad-cam, whose NumPy SVD and JAX's on
CPU are both LAPACK's `gesdd`); `sign_correction=True` flips each map so that its largest
magnitude is positive (pytorch-grad-cam's `get_2d_projection_with_sign_correction`), a
convention that does not depend on the backend.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.attribution.cam import _layer, _resize
from jaxinterp.attribution.core import is_vgg, keeps_sharding, prepare
from jaxinterp.checks import check_batch_size, check_images
from jaxinterp.chunking import chunked_map

POSTPROCESS = ("jaxinterp", "pytorch_grad_cam")
GRADIENT_EPS = {"grad_cam_plus_plus": 1e-6, "xgrad_cam": 1e-7}  # pytorch-grad-cam's epsilons
SCORE_CAM_EPS = 1e-8  # Score-CAM's mask min-max scaling
SCALE_EPS = 1e-7  # pytorch-grad-cam's scale_cam_image
ABLATION_VALUE = 1e7  # pytorch-grad-cam's AblationLayer: min - 1e7 where a layer can be negative


# --- the layer's activations and gradients --------------------------------------------------

def activations_and_gradients(m, x, t, layer):
    """A layer's output and the gradient of the summed target score with respect to it.

    Args:
      m: the model.
      x: checked images `[N, H, W, 3]`.
      t: a `Target`.
      layer: a resolved layer name.
    Returns:
      `(a, g)`, both `[N, h, w, C]` (examples are independent: `g[i]` is example i's own).
    """
    a_shape = jax.eval_shape(lambda x: m(x, check=False)[1][layer], x)
    zeros = jnp.zeros(a_shape.shape, a_shape.dtype)

    def score(d):
        logits, feats = m(x, check=False, taps={layer: d})
        return t(logits, feats).sum(), feats[layer]

    g, a = jax.grad(score, has_aux=True)(zeros)
    return a, g


def project(a, sign_correction: bool = False):
    """Each example's `[h, w, C]` map projected on its first principal component.

    pytorch-grad-cam's `get_2d_projection`: NaNs set to 0, the `[h*w, C]` matrix centred per
    channel, projected on the first right singular vector.

    Args:
      a: `[N, h, w, C]`.
      sign_correction: flip a map whose most negative value is larger in magnitude than its
        largest (else the sign is the SVD's).
    Returns:
      `[N, h, w]`.
    """
    n, h, w, c = a.shape
    r = jnp.where(jnp.isnan(a), 0, a).reshape(n, h * w, c)
    r = r - r.mean(1, keepdims=True)
    vt = jnp.linalg.svd(r, full_matrices=False)[2]
    p = jnp.einsum("npc,nc->np", r, vt[:, 0]).reshape(n, h, w)
    if sign_correction:
        flip = jnp.abs(p.min((1, 2))) > jnp.abs(p.max((1, 2)))
        p = jnp.where(flip[:, None, None], -p, p)
    return p


# --- weights and maps of each method ----------------------------------------------------------

def _gradient_cam(method, a, g, eigen_smooth, sign_correction):
    """The map of a gradient-based method from activations `a` and gradients `g`."""
    if method == "grad_cam_plus_plus":
        g2 = g * g
        alpha = g2 / (2 * g2 + a.sum((1, 2), keepdims=True) * g2 * g + GRADIENT_EPS[method])
        alpha = jnp.where(g != 0, alpha, 0)
        weighted = a * (jnp.maximum(g, 0) * alpha).sum((1, 2), keepdims=True)
    elif method == "xgrad_cam":
        w = (g * a / (a.sum((1, 2), keepdims=True) + GRADIENT_EPS[method])).sum((1, 2),
                                                                             keepdims=True)
        weighted = a * w
    elif method == "layer_cam":
        weighted = jnp.maximum(g, 0) * a
    elif method == "hires_cam":
        weighted = g * a
    elif method == "grad_cam_elementwise":
        weighted = jnp.maximum(g * a, 0)
    elif method == "eigen_grad_cam":
        return project(g * a, sign_correction)
    else:
        raise ValueError(f"unknown method {method!r}")
    return project(weighted, sign_correction) if eigen_smooth else weighted.sum(-1)


def _align_corners_matrix(n_out, n_in, dtype):
    """`[n_out, n_in]` linear interpolation with aligned corners (torch's UpsamplingBilinear2d)."""
    src = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    mat = np.zeros((n_out, n_in))
    np.add.at(mat, (np.arange(n_out), lo), 1 - frac)
    np.add.at(mat, (np.arange(n_out), hi), frac)
    return jnp.asarray(mat, dtype)


def _score_weights(m, x, t, a, batch_size):
    """Score-CAM's channel weights `[N, C]`: softmax over channels of the target scores of the
    input masked by each channel's upsampled (aligned corners), min-max scaled map."""
    ry = _align_corners_matrix(x.shape[1], a.shape[1], a.dtype)
    rx = _align_corners_matrix(x.shape[2], a.shape[2], a.dtype)

    def masked_score(ak):  # one channel's map [N, h, w] -> the target scores [N]
        up = jnp.einsum("Hh,nhw,Ww->nHW", ry, ak, rx)
        lo, hi = up.min((1, 2), keepdims=True), up.max((1, 2), keepdims=True)
        mask = (up - lo) / (hi - lo + SCORE_CAM_EPS)
        return t(*m(x * mask[..., None].astype(x.dtype), check=False))

    scores = chunked_map(masked_score, jnp.moveaxis(a, -1, 0), batch_size)  # [C, N]
    return jax.nn.softmax(scores.T, axis=-1)


def _ablation_weights(m, x, t, layer, a, feats, clean, batch_size):
    """Ablation-CAM's channel weights `[N, C]`: `(s - s_k) / s`, with `s_k` the target score when
    channel k of the layer is set to 0, or to `min - 1e7` in an example whose layer minimum is
    not 0 (pytorch-grad-cam's AblationLayer)."""
    lo = a.min((1, 2, 3))
    value = jnp.where(lo == 0, 0, lo - ABLATION_VALUE)[:, None, None]  # [N, 1, 1]
    channels = jnp.arange(a.shape[-1])
    if is_vgg(m):  # run only the layers after `layer`
        names = [s.name for s in m.specs]
        start = names.index(layer) + 1
        earlier = {k: feats[k] for k in names[:start]}

        def ablated_score(k):
            ak = jnp.where(channels == k, value[..., None], a)
            return t(*m.resume(ak, start, earlier))
    else:  # the ablated map through a tap: what precedes the layer is not batched over k
        def ablated_score(k):
            tap = jnp.where(channels == k, value[..., None] - a, 0)
            return t(*m(x, check=False, taps={layer: tap}))

    ablated = chunked_map(ablated_score, channels, batch_size)  # [C, N]
    return (clean[:, None] - ablated.T) / clean[:, None]


# --- post-processing ----------------------------------------------------------------------------

def _minmax(cam):
    cam = cam - cam.min((1, 2), keepdims=True)
    return cam / (SCALE_EPS + cam.max((1, 2), keepdims=True))


def _finish(cam, size, relu, upsample, interpolation, postprocess):
    if postprocess == "pytorch_grad_cam":  # relu, scale, cv2.resize (INTER_LINEAR), scale
        cam = _minmax(jnp.maximum(cam, 0))
        if upsample and cam.shape[1:] != tuple(size):
            cam = jax.image.resize(cam, (cam.shape[0], *size), "linear", antialias=False)
        return _minmax(jnp.maximum(cam, 0))
    cam = jnp.maximum(cam, 0) if relu else cam
    return _resize(cam, size, interpolation) if upsample else cam


# --- the one program -----------------------------------------------------------------------------

GRADIENT_METHODS = ("grad_cam_plus_plus", "xgrad_cam", "layer_cam", "hires_cam",
                    "grad_cam_elementwise", "eigen_grad_cam")


@tuned_jit(static_argnames=("method", "layer", "relu", "upsample", "interpolation",
                            "postprocess", "eigen_smooth", "sign_correction", "batch_size"))
def _cams(m, x, t, method, layer, relu, upsample, interpolation, postprocess, eigen_smooth,
          sign_correction, batch_size):
    if method in GRADIENT_METHODS:
        a, g = activations_and_gradients(m, x, t, layer)
        cam = _gradient_cam(method, a, g, eigen_smooth, sign_correction)
    else:
        logits, feats = m(x, check=False)
        a = feats[layer]
        if method == "eigen_cam":
            cam = project(a, sign_correction)
        else:
            if method == "score_cam":
                w = _score_weights(m, x, t, a, batch_size)
            else:
                w = _ablation_weights(m, x, t, layer, a, feats, t(logits, feats), batch_size)
            weighted = a * w[:, None, None, :].astype(a.dtype)
            cam = project(weighted, sign_correction) if eigen_smooth else weighted.sum(-1)
    return _finish(cam, x.shape[1:3], relu, upsample, interpolation, postprocess)


def _run(method, m, x, target, layer, relu, upsample, interpolation, postprocess,
         eigen_smooth=False, sign_correction=False, batch_size=None):
    if postprocess not in POSTPROCESS:
        raise ValueError(f"postprocess must be one of {POSTPROCESS}, got {postprocess!r}")
    if postprocess == "pytorch_grad_cam" and not relu:
        raise ValueError("postprocess='pytorch_grad_cam' includes pytorch-grad-cam's ReLU; "
                         "relu=False needs postprocess='jaxinterp'")
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    batch_size = check_batch_size(batch_size)
    if method == "eigen_cam":  # gradient-free and target-free
        x, t = check_images(x, min_size=m.min_size), None
    else:
        x, t = prepare(m, x, target)
    return _cams(m, x, t, method, _layer(m, layer), bool(relu), bool(upsample), interpolation,
                 postprocess, bool(eigen_smooth), bool(sign_correction), batch_size)


# --- public functions ------------------------------------------------------------------------

@keeps_sharding
def grad_cam_plus_plus(m, x, target, layer: str | None = None, *, relu: bool = True,
                       upsample: bool = True, interpolation: str = "bilinear",
                       postprocess: str = "jaxinterp", eigen_smooth: bool = False,
                       sign_correction: bool = False) -> jax.Array:
    """Grad-CAM++ (Chattopadhyay et al. 2018), as pytorch-grad-cam's `GradCAMPlusPlus`.

    Channel weights `sum_ij relu(g) * alpha`, `alpha = g^2 / (2 g^2 + (sum_ij A) g^3 + 1e-6)`
    (0 where `g = 0`): the paper's eq. 19 with the exponential's derivatives replaced by powers
    of the gradient `g` of the score itself.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias); default: last conv block output.
      relu: keep positive evidence only (False: the signed map; not with pytorch_grad_cam).
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" (ReLU, upsample, the map's units) or "pytorch_grad_cam"
        (ReLU, per-image min-max scaling, cv2-style bilinear resize, scaling again).
      eigen_smooth: the first principal component of the weighted activations instead of
        their channel sum.
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("grad_cam_plus_plus", m, x, target, layer, relu, upsample, interpolation,
                postprocess, eigen_smooth, sign_correction)


@keeps_sharding
def xgrad_cam(m, x, target, layer: str | None = None, *, relu: bool = True,
              upsample: bool = True, interpolation: str = "bilinear",
              postprocess: str = "jaxinterp", eigen_smooth: bool = False,
              sign_correction: bool = False) -> jax.Array:
    """XGrad-CAM (Fu et al. 2020), as pytorch-grad-cam's `XGradCAM`.

    Channel weights `sum_ij g A / (sum_ij A + 1e-7)`: the gradient averaged with the
    activations' own spatial distribution.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias); default: last conv block output.
      relu: keep positive evidence only (False: the signed map; not with pytorch_grad_cam).
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      eigen_smooth: the first principal component of the weighted activations.
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("xgrad_cam", m, x, target, layer, relu, upsample, interpolation, postprocess,
                eigen_smooth, sign_correction)


@keeps_sharding
def layer_cam(m, x, target, layer: str | None = None, *, relu: bool = True,
              upsample: bool = True, interpolation: str = "bilinear",
              postprocess: str = "jaxinterp", eigen_smooth: bool = False,
              sign_correction: bool = False) -> jax.Array:
    """Layer-CAM (Jiang et al. 2021), as pytorch-grad-cam's `LayerCAM`: `sum_c relu(g) A`.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias); default: last conv block output.
      relu: keep positive evidence only (False: the signed map; not with pytorch_grad_cam).
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      eigen_smooth: the first principal component of `relu(g) A`.
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("layer_cam", m, x, target, layer, relu, upsample, interpolation, postprocess,
                eigen_smooth, sign_correction)


@keeps_sharding
def hires_cam(m, x, target, layer: str | None = None, *, relu: bool = True,
              upsample: bool = True, interpolation: str = "bilinear",
              postprocess: str = "jaxinterp", eigen_smooth: bool = False,
              sign_correction: bool = False) -> jax.Array:
    """HiResCAM (Draelos & Carin 2020), as pytorch-grad-cam's `HiResCAM`: `sum_c g A`.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias); default: last conv block output.
      relu: keep positive evidence only (False: the signed map; not with pytorch_grad_cam).
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      eigen_smooth: the first principal component of `g A` (HiResCAM's faithfulness, the map
        summing to the score's linear term, then no longer holds).
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("hires_cam", m, x, target, layer, relu, upsample, interpolation, postprocess,
                eigen_smooth, sign_correction)


@keeps_sharding
def grad_cam_elementwise(m, x, target, layer: str | None = None, *, relu: bool = True,
                         upsample: bool = True, interpolation: str = "bilinear",
                         postprocess: str = "jaxinterp", eigen_smooth: bool = False,
                         sign_correction: bool = False) -> jax.Array:
    """Element-wise Grad-CAM, as pytorch-grad-cam's `GradCAMElementWise`: `sum_c relu(g A)`.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias); default: last conv block output.
      relu: apply the final ReLU (a no-op without eigen_smooth: the map is non-negative).
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      eigen_smooth: the first principal component of `relu(g A)`.
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("grad_cam_elementwise", m, x, target, layer, relu, upsample, interpolation,
                postprocess, eigen_smooth, sign_correction)


@keeps_sharding
def eigen_cam(m, x, target=None, layer: str | None = None, *, relu: bool = True,
              upsample: bool = True, interpolation: str = "bilinear",
              postprocess: str = "jaxinterp", sign_correction: bool = False) -> jax.Array:
    """Eigen-CAM (Muhammad & Yeasin 2020), as pytorch-grad-cam's `EigenCAM`: the layer's
    activations projected on their first principal component (no gradient, no class).

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: ignored (Eigen-CAM is class-agnostic); kept so that every CAM is called alike.
      layer: a spatial layer (name or alias); default: last conv block output.
      relu: keep the positive side of the projection (False: the signed map; not with
        pytorch_grad_cam).
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      sign_correction: make each map's largest magnitude positive (default: the SVD's sign,
        as pytorch-grad-cam).
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("eigen_cam", m, x, target, layer, relu, upsample, interpolation, postprocess,
                False, sign_correction)


@keeps_sharding
def eigen_grad_cam(m, x, target, layer: str | None = None, *, relu: bool = True,
                   upsample: bool = True, interpolation: str = "bilinear",
                   postprocess: str = "jaxinterp", sign_correction: bool = False) -> jax.Array:
    """Eigen-Grad-CAM, as pytorch-grad-cam's `EigenGradCAM`: `g A` projected on its first
    principal component.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias); default: last conv block output.
      relu: keep the positive side of the projection (False: the signed map; not with
        pytorch_grad_cam).
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      sign_correction: make each map's largest magnitude positive (default: the SVD's sign).
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("eigen_grad_cam", m, x, target, layer, relu, upsample, interpolation,
                postprocess, False, sign_correction)


@keeps_sharding
def score_cam(m, x, target, layer: str | None = None, *, batch_size: int | None = 16,
              relu: bool = True, upsample: bool = True, interpolation: str = "bilinear",
              postprocess: str = "jaxinterp", eigen_smooth: bool = False,
              sign_correction: bool = False) -> jax.Array:
    """Score-CAM (Wang et al. 2020), as pytorch-grad-cam's `ScoreCAM`.

    Each channel's map is upsampled to the input (bilinear with aligned corners, torch's
    `UpsamplingBilinear2d`), min-max scaled to [0, 1] (`/ (max - min + 1e-8)`) and multiplies
    the image; the channel weights are the softmax over channels of the target scores of those
    masked images. One forward pass per channel and image, `vmap`ped.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias); default: last conv block output.
      batch_size: channels masked at a time (each a batch of N images): memory bound;
        None: all at once. pytorch-grad-cam's default is 16 images.
      relu: keep positive evidence only (False: the signed map; not with pytorch_grad_cam).
      upsample: resize the map to the input size; False returns the layer's resolution.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      eigen_smooth: the first principal component of the weighted activations.
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("score_cam", m, x, target, layer, relu, upsample, interpolation, postprocess,
                eigen_smooth, sign_correction, batch_size)


@keeps_sharding
def ablation_cam(m, x, target, layer: str | None = None, *, batch_size: int | None = 32,
                 relu: bool = True, upsample: bool = True, interpolation: str = "bilinear",
                 postprocess: str = "jaxinterp", eigen_smooth: bool = False,
                 sign_correction: bool = False) -> jax.Array:
    """Ablation-CAM (Desai & Ramaswamy 2020), as pytorch-grad-cam's `AblationCAM`.

    Channel weights `(s - s_k) / s`, `s` the target score and `s_k` the score with channel k
    of the layer ablated: set to 0, or, in an example whose layer minimum is not exactly 0 (a
    layer that can be negative), to that minimum - 1e7 (pytorch-grad-cam's `AblationLayer`).
    One forward pass per channel, `vmap`ped; on jaxinterp's VGG only the layers after `layer`
    run again. Differences: pytorch-grad-cam ablates all channels only
    (`ratio_channels_to_ablate=1`, its default, is what this is); with a layer minimum other
    than 0 and `batch_size > 1` its AblationLayer lowers the value by another 1e7 for each
    copy in a batch (it re-reads the minimum after each edit), which this does not copy.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias); default: last conv block output.
      batch_size: channels ablated at a time (each a batch of N): memory bound; None: all at
        once (on a wrapped model, the layers before `layer` then run once, not per chunk).
      relu: keep positive evidence only (False: the signed map; not with pytorch_grad_cam).
      upsample: resize the map to the input size; False returns the layer's resolution.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      eigen_smooth: the first principal component of the weighted activations.
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("ablation_cam", m, x, target, layer, relu, upsample, interpolation, postprocess,
                eigen_smooth, sign_correction, batch_size)
