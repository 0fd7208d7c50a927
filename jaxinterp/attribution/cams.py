"""The pytorch-grad-cam (1.5.x) family of class activation maps, compiled and batched.

Grad-CAM++, XGrad-CAM, Layer-CAM, HiRes-CAM, Grad-CAM element-wise, Eigen-CAM, Eigen-Grad-CAM,
Score-CAM, Ablation-CAM and FullGrad, each equal to pytorch-grad-cam's class of the same name on
identical weights (`tests/test_cams.py`). Every function is one compiled program for the whole
batch: the masked (Score-CAM) and ablated (Ablation-CAM) forward passes are `vmap`ped over
channels, in chunks of `batch_size` channels when given.

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
* Several layers: `layer` may be a list or tuple of layers (pytorch-grad-cam's
  `target_layers`); each layer's map is computed as above (one backward pass gives every
  layer's gradient). `postprocess="pytorch_grad_cam"` aggregates them as pytorch-grad-cam does:
  per layer ReLU, min-max scaling and the resize to the input; then ReLU, the mean over layers
  and min-max scaling again. `postprocess="jaxinterp"` returns the mean over layers of the maps
  as one layer would give them (ReLU unless `relu=False`, upsampled): the maps stay in their
  units, so a layer with larger values weighs more (pytorch-grad-cam's per-layer scaling weighs
  them equally). `upsample=False` takes layers of one resolution only.
* `aug_smooth=True` is pytorch-grad-cam's test-time augmentation (ttach's
  `HorizontalFlip() x Multiply([0.9, 1, 1.1])`): the whole method (post-processing included)
  runs on the 6 augmented batches, each map is flipped back where the input was flipped, and
  the 6 maps are averaged. Multiply scales the images in [0, 1] that jaxinterp's models take
  (so values up to 1.1 reach the model; no range check is made on them), not the normalized
  tensor: that is what pytorch-grad-cam does on a torch model that normalizes inside (the
  parity reference here), and it keeps one meaning of "the input" across the module (Score-CAM
  masks and FullGrad's input term act on the same [0, 1] images). pytorch-grad-cam fed
  normalized tensors (its `preprocess_image`) scales the normalized tensor instead, a contrast
  change about the mean: different maps. The target is the same for the 6 batches
  (pytorch-grad-cam with `targets` given; without, it takes each batch's own top class). The 6
  batches run as one `vmap`: 6x the memory of one call.
* FullGrad (`full_grad`) takes no layer: it sums maps of the input and of every biased layer
  (`full_grad_biases`); its options follow the conventions above.

The principal component's sign is the SVD's, as in pytorch-grad-cam; it is arbitrary and
depends on the LAPACK build, not only on the algorithm (`gesdd` in NumPy and in JAX on CPU):
NumPy's and SciPy's OpenBLAS builds (JAX on CPU calls SciPy's) were seen to give opposite signs
for some maps (Layer-CAM at VGG11's `features.9`), so pytorch-grad-cam's own output has no
fixed sign across installations. `sign_correction=True` flips each map so that its largest
magnitude is positive (pytorch-grad-cam's `get_2d_projection_with_sign_correction`), a
convention that does not depend on the backend.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.attribution.cam import _layer, _resize, token_grid
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
      layer: a resolved layer name, or a tuple of them (one backward pass for all).
    Returns:
      `(a, g)`, both `[N, h, w, C]` (examples are independent: `g[i]` is example i's own; a
      token layer's as its patch grid, `token_grid`); for
      a tuple of layers, a tuple of activations and a tuple of gradients, in its order.
    """
    layers = layer if isinstance(layer, tuple) else (layer,)
    shapes = jax.eval_shape(lambda x: m(x, check=False)[1], x)
    zeros = {k: jnp.zeros(shapes[k].shape, shapes[k].dtype) for k in layers}

    def score(d):
        logits, feats = m(x, check=False, taps=d)
        return t(logits, feats).sum(), {k: feats[k] for k in layers}

    g, a = jax.grad(score, has_aux=True)(zeros)
    a = {k: token_grid(v, x.shape[1:3]) for k, v in a.items()}
    g = {k: token_grid(v, x.shape[1:3]) for k, v in g.items()}
    if not isinstance(layer, tuple):
        return a[layer], g[layer]
    return tuple(a[k] for k in layers), tuple(g[k] for k in layers)


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
    not 0 (pytorch-grad-cam's AblationLayer). A token layer's channel is ablated in every token,
    the class token included (pytorch-grad-cam's `AblationLayerVit`)."""
    a = feats[layer]
    lo = a.min(tuple(range(1, a.ndim)))
    value = jnp.where(lo == 0, 0, lo - ABLATION_VALUE).reshape((-1,) + (1,) * (a.ndim - 2))
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
    """pytorch-grad-cam's `scale_cam_image` scaling of each `[N, h, w, ...]` map over `h, w`."""
    cam = cam - cam.min((1, 2), keepdims=True)
    return cam / (SCALE_EPS + cam.max((1, 2), keepdims=True))


def _cv2_resize(cam, size):
    """`cv2.resize(..., INTER_LINEAR)` of `[N, h, w, ...]` maps: half-pixel bilinear, no
    antialiasing (identity at the same size)."""
    if cam.shape[1:3] == tuple(size):
        return cam
    return jax.image.resize(cam, (cam.shape[0], *size, *cam.shape[3:]), "linear",
                            antialias=False)


def _finish(cams, size, relu, upsample, interpolation, postprocess):
    """The final map from each layer's raw map (`[N, h, w]`, one per layer, or one array)."""
    cams = [cams] if not isinstance(cams, (list, tuple)) else list(cams)
    if len(cams) > 1 and not upsample and len({c.shape for c in cams}) > 1:
        raise ValueError("upsample=False needs layers of one resolution; got maps of shapes "
                         f"{sorted({c.shape[1:] for c in cams})}")
    if postprocess == "pytorch_grad_cam":  # compute_cam_per_layer + aggregate_multi_layers
        per_layer = [_minmax(jnp.maximum(c, 0)) for c in cams]
        if upsample:
            per_layer = [_cv2_resize(c, size) for c in per_layer]
        return _minmax(jnp.maximum(jnp.stack(per_layer), 0).mean(0))
    per_layer = [jnp.maximum(c, 0) if relu else c for c in cams]
    if upsample:
        per_layer = [_resize(c, size, interpolation) for c in per_layer]
    return per_layer[0] if len(per_layer) == 1 else jnp.stack(per_layer).mean(0)


AUG_FLIPS = (False, True)  # ttach.HorizontalFlip
AUG_FACTORS = (0.9, 1.0, 1.1)  # ttach.Multiply(factors=[0.9, 1, 1.1]), pytorch-grad-cam's default


def _augmented(fn, x):
    """pytorch-grad-cam's `forward_augmentation_smoothing`: the mean over ttach's 6 augmentations
    (flip x factor) of `fn(flip(x) * factor)` flipped back; one `vmap` over the 6."""
    flips = jnp.asarray([f for f in AUG_FLIPS for _ in AUG_FACTORS])
    factors = jnp.asarray([s for _ in AUG_FLIPS for s in AUG_FACTORS], x.dtype)

    def one(flip, factor):
        cam = fn(jnp.where(flip, jnp.flip(x, 2), x) * factor)
        return jnp.where(flip, jnp.flip(cam, 2), cam)

    return jax.vmap(one)(flips, factors).mean(0)


# --- the one program -----------------------------------------------------------------------------

GRADIENT_METHODS = ("grad_cam_plus_plus", "xgrad_cam", "layer_cam", "hires_cam",
                    "grad_cam_elementwise", "eigen_grad_cam")


def _raw_maps(m, x, t, method, layers, eigen_smooth, sign_correction, batch_size):
    """Each layer's raw map `[N, h, w]` (pytorch-grad-cam's `get_cam_image`), in order."""
    if method in GRADIENT_METHODS:
        acts, grads = activations_and_gradients(m, x, t, layers)
        return [_gradient_cam(method, a, g, eigen_smooth, sign_correction)
                for a, g in zip(acts, grads)]
    logits, feats = m(x, check=False)
    cams = []
    for layer in layers:
        a = token_grid(feats[layer], x.shape[1:3])
        if method == "eigen_cam":
            cams.append(project(a, sign_correction))
            continue
        if method == "score_cam":
            w = _score_weights(m, x, t, a, batch_size)
        else:
            w = _ablation_weights(m, x, t, layer, a, feats, t(logits, feats), batch_size)
        weighted = a * w[:, None, None, :].astype(a.dtype)
        cams.append(project(weighted, sign_correction) if eigen_smooth else weighted.sum(-1))
    return cams


@tuned_jit(static_argnames=("method", "layer", "relu", "upsample", "interpolation",
                            "postprocess", "eigen_smooth", "sign_correction", "batch_size",
                            "aug_smooth"))
def _cams(m, x, t, method, layer, relu, upsample, interpolation, postprocess, eigen_smooth,
          sign_correction, batch_size, aug_smooth=False):
    layers = layer if isinstance(layer, tuple) else (layer,)

    def run(x):
        cams = _raw_maps(m, x, t, method, layers, eigen_smooth, sign_correction, batch_size)
        return _finish(cams, x.shape[1:3], relu, upsample, interpolation, postprocess)

    return _augmented(run, x) if aug_smooth else run(x)


def _layers(m, layer):
    """The resolved layer name, or a tuple of them for a list or tuple of layers."""
    if isinstance(layer, (list, tuple)):
        if not layer:
            raise ValueError("layer: an empty list of layers")
        return tuple(_layer(m, k) for k in layer)
    return _layer(m, layer)


def _check_options(relu, interpolation, postprocess):
    if postprocess not in POSTPROCESS:
        raise ValueError(f"postprocess must be one of {POSTPROCESS}, got {postprocess!r}")
    if postprocess == "pytorch_grad_cam" and not relu:
        raise ValueError("postprocess='pytorch_grad_cam' includes pytorch-grad-cam's ReLU; "
                         "relu=False needs postprocess='jaxinterp'")
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")


def _run(method, m, x, target, layer, relu, upsample, interpolation, postprocess,
         eigen_smooth=False, sign_correction=False, batch_size=None, aug_smooth=False):
    _check_options(relu, interpolation, postprocess)
    batch_size = check_batch_size(batch_size)
    if method == "eigen_cam":  # gradient-free and target-free
        x, t = check_images(x, min_size=m.min_size), None
    else:
        x, t = prepare(m, x, target)
    return _cams(m, x, t, method, _layers(m, layer), bool(relu), bool(upsample), interpolation,
                 postprocess, bool(eigen_smooth), bool(sign_correction), batch_size,
                 bool(aug_smooth))


# --- public functions ------------------------------------------------------------------------

@keeps_sharding
def grad_cam_plus_plus(m, x, target, layer: str | Sequence[str] | None = None, *,
                       relu: bool = True, upsample: bool = True, interpolation: str = "bilinear",
                       postprocess: str = "jaxinterp", eigen_smooth: bool = False,
                       sign_correction: bool = False, aug_smooth: bool = False) -> jax.Array:
    """Grad-CAM++ (Chattopadhyay et al. 2018), as pytorch-grad-cam's `GradCAMPlusPlus`.

    Channel weights `sum_ij relu(g) * alpha`, `alpha = g^2 / (2 g^2 + (sum_ij A) g^3 + 1e-6)`
    (0 where `g = 0`): the paper's eq. 19 with the exponential's derivatives replaced by powers
    of the gradient `g` of the score itself.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias), or a list of them (the mean of their maps,
        see the module docstring); default: last conv block output.
      relu: keep positive evidence only (False: the signed map; not with pytorch_grad_cam).
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" (ReLU, upsample, the map's units) or "pytorch_grad_cam"
        (ReLU, per-image min-max scaling, cv2-style bilinear resize, scaling again).
      eigen_smooth: the first principal component of the weighted activations instead of
        their channel sum.
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
      aug_smooth: the mean over pytorch-grad-cam's 6 test-time augmentations (horizontal
        flip x images scaled by 0.9, 1, 1.1; see the module docstring).
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("grad_cam_plus_plus", m, x, target, layer, relu, upsample, interpolation,
                postprocess, eigen_smooth, sign_correction, aug_smooth=aug_smooth)


@keeps_sharding
def xgrad_cam(m, x, target, layer: str | Sequence[str] | None = None, *, relu: bool = True,
              upsample: bool = True, interpolation: str = "bilinear",
              postprocess: str = "jaxinterp", eigen_smooth: bool = False,
              sign_correction: bool = False, aug_smooth: bool = False) -> jax.Array:
    """XGrad-CAM (Fu et al. 2020), as pytorch-grad-cam's `XGradCAM`.

    Channel weights `sum_ij g A / (sum_ij A + 1e-7)`: the gradient averaged with the
    activations' own spatial distribution.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias), or a list of them (the mean of their maps,
        see the module docstring); default: last conv block output.
      relu: keep positive evidence only (False: the signed map; not with pytorch_grad_cam).
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      eigen_smooth: the first principal component of the weighted activations.
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
      aug_smooth: the mean over pytorch-grad-cam's 6 test-time augmentations (horizontal
        flip x images scaled by 0.9, 1, 1.1; see the module docstring).
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("xgrad_cam", m, x, target, layer, relu, upsample, interpolation, postprocess,
                eigen_smooth, sign_correction, aug_smooth=aug_smooth)


@keeps_sharding
def layer_cam(m, x, target, layer: str | Sequence[str] | None = None, *, relu: bool = True,
              upsample: bool = True, interpolation: str = "bilinear",
              postprocess: str = "jaxinterp", eigen_smooth: bool = False,
              sign_correction: bool = False, aug_smooth: bool = False) -> jax.Array:
    """Layer-CAM (Jiang et al. 2021), as pytorch-grad-cam's `LayerCAM`: `sum_c relu(g) A`.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias), or a list of them (the mean of their maps,
        see the module docstring); default: last conv block output.
      relu: keep positive evidence only (False: the signed map; not with pytorch_grad_cam).
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      eigen_smooth: the first principal component of `relu(g) A`.
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
      aug_smooth: the mean over pytorch-grad-cam's 6 test-time augmentations (horizontal
        flip x images scaled by 0.9, 1, 1.1; see the module docstring).
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("layer_cam", m, x, target, layer, relu, upsample, interpolation, postprocess,
                eigen_smooth, sign_correction, aug_smooth=aug_smooth)


@keeps_sharding
def hires_cam(m, x, target, layer: str | Sequence[str] | None = None, *, relu: bool = True,
              upsample: bool = True, interpolation: str = "bilinear",
              postprocess: str = "jaxinterp", eigen_smooth: bool = False,
              sign_correction: bool = False, aug_smooth: bool = False) -> jax.Array:
    """HiResCAM (Draelos & Carin 2020), as pytorch-grad-cam's `HiResCAM`: `sum_c g A`.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias), or a list of them (the mean of their maps,
        see the module docstring); default: last conv block output.
      relu: keep positive evidence only (False: the signed map; not with pytorch_grad_cam).
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      eigen_smooth: the first principal component of `g A` (HiResCAM's faithfulness, the map
        summing to the score's linear term, then no longer holds).
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
      aug_smooth: the mean over pytorch-grad-cam's 6 test-time augmentations (horizontal
        flip x images scaled by 0.9, 1, 1.1; see the module docstring).
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("hires_cam", m, x, target, layer, relu, upsample, interpolation, postprocess,
                eigen_smooth, sign_correction, aug_smooth=aug_smooth)


@keeps_sharding
def grad_cam_elementwise(m, x, target, layer: str | Sequence[str] | None = None, *,
                         relu: bool = True, upsample: bool = True, interpolation: str = "bilinear",
                         postprocess: str = "jaxinterp", eigen_smooth: bool = False,
                         sign_correction: bool = False, aug_smooth: bool = False) -> jax.Array:
    """Element-wise Grad-CAM, as pytorch-grad-cam's `GradCAMElementWise`: `sum_c relu(g A)`.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias), or a list of them (the mean of their maps,
        see the module docstring); default: last conv block output.
      relu: apply the final ReLU (a no-op without eigen_smooth: the map is non-negative).
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      eigen_smooth: the first principal component of `relu(g A)`.
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
      aug_smooth: the mean over pytorch-grad-cam's 6 test-time augmentations (horizontal
        flip x images scaled by 0.9, 1, 1.1; see the module docstring).
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("grad_cam_elementwise", m, x, target, layer, relu, upsample, interpolation,
                postprocess, eigen_smooth, sign_correction, aug_smooth=aug_smooth)


@keeps_sharding
def eigen_cam(m, x, target=None, layer: str | Sequence[str] | None = None, *, relu: bool = True,
              upsample: bool = True, interpolation: str = "bilinear",
              postprocess: str = "jaxinterp", sign_correction: bool = False,
              aug_smooth: bool = False) -> jax.Array:
    """Eigen-CAM (Muhammad & Yeasin 2020), as pytorch-grad-cam's `EigenCAM`: the layer's
    activations projected on their first principal component (no gradient, no class).

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: ignored (Eigen-CAM is class-agnostic); kept so that every CAM is called alike.
      layer: a spatial layer (name or alias), or a list of them (the mean of their maps,
        see the module docstring); default: last conv block output.
      relu: keep the positive side of the projection (False: the signed map; not with
        pytorch_grad_cam).
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      sign_correction: make each map's largest magnitude positive (default: the SVD's sign,
        as pytorch-grad-cam).
      aug_smooth: the mean over pytorch-grad-cam's 6 test-time augmentations (horizontal
        flip x images scaled by 0.9, 1, 1.1; see the module docstring).
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("eigen_cam", m, x, target, layer, relu, upsample, interpolation, postprocess,
                False, sign_correction, aug_smooth=aug_smooth)


@keeps_sharding
def eigen_grad_cam(m, x, target, layer: str | Sequence[str] | None = None, *, relu: bool = True,
                   upsample: bool = True, interpolation: str = "bilinear",
                   postprocess: str = "jaxinterp", sign_correction: bool = False,
                   aug_smooth: bool = False) -> jax.Array:
    """Eigen-Grad-CAM, as pytorch-grad-cam's `EigenGradCAM`: `g A` projected on its first
    principal component.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias), or a list of them (the mean of their maps,
        see the module docstring); default: last conv block output.
      relu: keep the positive side of the projection (False: the signed map; not with
        pytorch_grad_cam).
      upsample: resize to the input size; False returns the layer's resolution `[N, h, w]`.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      sign_correction: make each map's largest magnitude positive (default: the SVD's sign).
      aug_smooth: the mean over pytorch-grad-cam's 6 test-time augmentations (horizontal
        flip x images scaled by 0.9, 1, 1.1; see the module docstring).
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("eigen_grad_cam", m, x, target, layer, relu, upsample, interpolation,
                postprocess, False, sign_correction, aug_smooth=aug_smooth)


@keeps_sharding
def score_cam(m, x, target, layer: str | Sequence[str] | None = None, *,
              batch_size: int | None = 16, relu: bool = True, upsample: bool = True,
              interpolation: str = "bilinear", postprocess: str = "jaxinterp",
              eigen_smooth: bool = False, sign_correction: bool = False,
              aug_smooth: bool = False) -> jax.Array:
    """Score-CAM (Wang et al. 2020), as pytorch-grad-cam's `ScoreCAM`.

    Each channel's map is upsampled to the input (bilinear with aligned corners, torch's
    `UpsamplingBilinear2d`), min-max scaled to [0, 1] (`/ (max - min + 1e-8)`) and multiplies
    the image; the channel weights are the softmax over channels of the target scores of those
    masked images. One forward pass per channel and image, `vmap`ped.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      layer: a spatial layer (name or alias), or a list of them (the mean of their maps,
        see the module docstring); default: last conv block output.
      batch_size: channels masked at a time (each a batch of N images): memory bound;
        None: all at once. pytorch-grad-cam's default is 16 images.
      relu: keep positive evidence only (False: the signed map; not with pytorch_grad_cam).
      upsample: resize the map to the input size; False returns the layer's resolution.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      eigen_smooth: the first principal component of the weighted activations.
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
      aug_smooth: the mean over pytorch-grad-cam's 6 test-time augmentations (horizontal
        flip x images scaled by 0.9, 1, 1.1; see the module docstring).
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("score_cam", m, x, target, layer, relu, upsample, interpolation, postprocess,
                eigen_smooth, sign_correction, batch_size, aug_smooth=aug_smooth)


@keeps_sharding
def ablation_cam(m, x, target, layer: str | Sequence[str] | None = None, *,
                 batch_size: int | None = 32, relu: bool = True, upsample: bool = True,
                 interpolation: str = "bilinear", postprocess: str = "jaxinterp",
                 eigen_smooth: bool = False, sign_correction: bool = False,
                 aug_smooth: bool = False) -> jax.Array:
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
      layer: a spatial layer (name or alias), or a list of them (the mean of their maps,
        see the module docstring); default: last conv block output.
      batch_size: channels ablated at a time (each a batch of N): memory bound; None: all at
        once (on a wrapped model, the layers before `layer` then run once, not per chunk).
      relu: keep positive evidence only (False: the signed map; not with pytorch_grad_cam).
      upsample: resize the map to the input size; False returns the layer's resolution.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" or "pytorch_grad_cam" (see the module docstring).
      eigen_smooth: the first principal component of the weighted activations.
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
      aug_smooth: the mean over pytorch-grad-cam's 6 test-time augmentations (horizontal
        flip x images scaled by 0.9, 1, 1.1; see the module docstring).
    Returns:
      `[N, H, W]` maps (`[N, h, w]` without upsampling).
    """
    return _run("ablation_cam", m, x, target, layer, relu, upsample, interpolation, postprocess,
                eigen_smooth, sign_correction, batch_size, aug_smooth=aug_smooth)


# --- FullGrad ------------------------------------------------------------------------------------

BN_EPS = 1e-5  # the BatchNorm epsilon of jaxinterp's VGG and ResNets (torch's default)
EIGEN_DOWNSCALE = 8  # FullGrad's eigen_smooth projects the maps at 1/8 of the input size


def _bn_bias(params, stats):
    """A BatchNorm's effective bias in inference: `bias - mean * scale / sqrt(var + eps)`."""
    return params["bias"] - stats["mean"] * params["scale"] / jnp.sqrt(stats["var"] + BN_EPS)


def _is_resnet(m) -> bool:
    from jaxinterp.models.resnet import ResNet

    return isinstance(getattr(getattr(m, "apply", None), "module", None), ResNet)


def full_grad_biases(m) -> dict:
    """The layers FullGrad takes on jaxinterp's models, and their biases, as pytorch-grad-cam.

    pytorch-grad-cam's `FullGrad` takes every `Conv2d` and `BatchNorm2d` module that has a bias,
    with a BatchNorm's effective bias `bias - running_mean * weight / sqrt(running_var + eps)`
    (what the BatchNorm adds in inference: `y = x * weight / sqrt(var + eps) + that`). On
    jaxinterp's VGG that is every convolution (its output `features.k`, before the BatchNorm or
    ReLU) and every BatchNorm (`_bn` variants, vgg-mini); on jaxinterp's ResNets every BatchNorm,
    the downsampling ones included (their convolutions have no bias). Dense layers are not taken
    (nor by pytorch-grad-cam).

    Args:
      m: jaxinterp's VGG `Model` or a ResNet (`init_model` / `import_weights`); any other
        wrapped model raises (pass `biases=` to `full_grad`).
    Returns:
      `{layer: bias [C]}`, the layers in the order they run.
    """
    if is_vgg(m):
        out = {}
        for s in m.specs:
            name = s.name.replace(".", "_")  # the parameter collection's name (features_3)
            if s.kind == "conv":
                out[s.name] = m.params[name]["bias"]
            elif s.kind == "bn":
                out[s.name] = _bn_bias(m.params[name], m.variables["batch_stats"][name])
        return out
    if _is_resnet(m):
        out = {}
        for name in m.layers:  # call order: a block's downsample after its bn2, as torchvision
            params, stats = m.variables["params"], m.variables["batch_stats"]
            for part in name.split("/"):
                params, stats = params.get(part, {}), stats.get(part, {})
            if "mean" in stats:
                out[name] = _bn_bias(params, stats)
        return out
    raise ValueError(f"full_grad knows the biased layers of jaxinterp's VGG and ResNets, not of "
                     f"{m.arch}: pass biases={{layer: bias [C]}}, each layer's output being where "
                     "its bias is added (a convolution's, a BatchNorm's effective bias)")


def _check_biases(m, biases):
    if biases is None:
        return full_grad_biases(m)
    if not isinstance(biases, dict) or not biases:
        raise ValueError("biases must be a non-empty dict {layer: bias [C]}")
    return {m.resolve(k): jnp.asarray(v) for k, v in biases.items()}


def _full_grad_terms(m, x, t, biases):
    """`x * dS/dx` and `{layer: b * dS/dz}` (S the summed target score, z the layer's output)."""
    shapes = jax.eval_shape(lambda x: m(x, check=False)[1], x)
    for k, b in biases.items():
        s = shapes[k].shape
        if len(s) != 4 or b.shape != (s[-1],):
            raise ValueError(f"full_grad: layer {k!r} gives {s}; FullGrad needs a spatial layer "
                             f"([N, h, w, C]) and a bias [C], got a bias of shape {b.shape}")
    zeros = {k: jnp.zeros(shapes[k].shape, shapes[k].dtype) for k in biases}

    def score(x, taps):
        logits, feats = m(x, check=False, taps=taps)
        return t(logits, feats).sum()

    gx, gz = jax.grad(score, argnums=(0, 1))(x, zeros)
    return x * gx, {k: biases[k].astype(gz[k].dtype) * gz[k] for k in biases}


@tuned_jit()
def _full_grad_terms_program(m, x, t, biases):
    return _full_grad_terms(m, x, t, biases)


def _full_grad_map(inp, terms, size, relu, interpolation, postprocess, eigen_smooth,
                   sign_correction):
    """FullGrad's map from its terms: `|x dS/dx|` per colour plus, per layer, the channel sum
    of `|b dS/dz|`, resized to the input, summed (post-processed as described in `full_grad`)."""
    pgc = postprocess == "pytorch_grad_cam"
    inp = jnp.abs(inp)
    if pgc:  # scale_accross_batch_and_channels: each colour's map scaled on its own
        inp = _minmax(inp)
    maps = [inp[..., c] for c in range(inp.shape[-1])]
    for b in terms.values():
        b = jnp.abs(b)
        if pgc:  # each channel scaled, resized (linear: the channel sum first is the same), summed
            maps.append(_cv2_resize(_minmax(b).sum(-1), size))
        else:
            maps.append(_resize(b.sum(-1), size, interpolation))
    if not eigen_smooth:
        total = sum(maps[1:], maps[0])
        return _minmax(total) if pgc else total
    small = (size[0] // EIGEN_DOWNSCALE, size[1] // EIGEN_DOWNSCALE)
    if min(small) < 1:
        raise ValueError(f"full_grad's eigen_smooth projects the maps at 1/{EIGEN_DOWNSCALE} of "
                         f"the input size; {tuple(size)} is too small")
    stack = jnp.stack(maps, -1)  # [N, H, W, 3 + layers]
    if pgc:  # scale, cv2 resize down, project, scale, resize up, scale (aggregate_multi_layers)
        p = project(_cv2_resize(_minmax(stack), small), sign_correction)
        return _minmax(_cv2_resize(_minmax(p), size))
    small_stack = jax.image.resize(stack, (stack.shape[0], *small, stack.shape[-1]), "linear")
    p = project(small_stack, sign_correction)
    return _resize(jnp.maximum(p, 0) if relu else p, size, interpolation)


@tuned_jit(static_argnames=("relu", "interpolation", "postprocess", "eigen_smooth",
                            "sign_correction", "aug_smooth"))
def _full_grad(m, x, t, biases, relu, interpolation, postprocess, eigen_smooth, sign_correction,
               aug_smooth):
    def run(x):
        inp, terms = _full_grad_terms(m, x, t, biases)
        return _full_grad_map(inp, terms, x.shape[1:3], relu, interpolation, postprocess,
                              eigen_smooth, sign_correction)

    return _augmented(run, x) if aug_smooth else run(x)


@keeps_sharding
def full_grad_terms(m, x, target, *, biases: dict | None = None):
    """FullGrad's decomposition of the target score (Srinivas & Fleuret 2019), signed.

    For a network of ReLUs, max pooling and affine layers (BatchNorm in inference) the score is
    `S = sum(x * dS/dx) + sum_l sum(b_l * dS/dz_l)` over every bias `b_l` (added at layer output
    `z_l`): the full-gradient completeness. These are the terms FullGrad maps (in absolute
    value). The input is the images in [0, 1] (jaxinterp's models normalize inside, like the
    torch models of the parity tests), so the preprocessing's offset (`-mean / std`) is one more
    bias, and the dense layers' biases are others; pytorch-grad-cam takes neither (nor this):
    the terms returned sum to `S` minus those.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      biases: `{layer: bias [C]}`, the biased layers to take; default `full_grad_biases(m)`
        (needed for a wrapped model other than jaxinterp's ResNets).
    Returns:
      `(input_term, layer_terms)`: `x * dS/dx` `[N, H, W, 3]`, and `{layer: b * dS/dz}`
      `[N, h, w, C]` in the order of `biases`.
    """
    x, t = prepare(m, x, target)
    biases = _check_biases(m, biases)
    inp, terms = _full_grad_terms_program(m, x, t, biases)
    return inp, {k: terms[k] for k in biases}


@keeps_sharding
def full_grad(m, x, target, *, biases: dict | None = None, relu: bool = True,
              interpolation: str = "bilinear", postprocess: str = "jaxinterp",
              eigen_smooth: bool = False, sign_correction: bool = False,
              aug_smooth: bool = False) -> jax.Array:
    """FullGrad (Srinivas & Fleuret 2019), as pytorch-grad-cam's `FullGrad`.

    The map of `|x * dS/dx|` (summed over colours) plus, for every biased layer
    (`full_grad_biases`), `|b * dS/dz|` summed over channels and resized to the input: the
    absolute terms of `full_grad_terms`. One backward pass gives them all.

    `postprocess="pytorch_grad_cam"` is pytorch-grad-cam's chain: each colour's input map and
    each channel's `|b dS/dz|` min-max scaled on its own (`scale_accross_batch_and_channels`),
    the channels resized (cv2 `INTER_LINEAR`) and summed per layer, all maps summed, min-max
    scaled. With `eigen_smooth` the maps (3 colours and one per layer) are scaled again, resized
    to 1/8 of the input, projected on their first principal component, scaled, resized back
    and scaled. `postprocess="jaxinterp"` keeps the terms' units (a share of the score, per
    position of each layer): the sum of the unscaled maps, each layer's bilinearly upsampled;
    with `eigen_smooth` the projection of the unscaled maps at 1/8 of the input size
    (antialiased), ReLU (unless `relu=False`) and upsampled.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]`, or callable `(logits, feats) -> [N]`.
      biases: `{layer: bias [C]}`, the biased layers to take; default `full_grad_biases(m)`
        (needed for a wrapped model other than jaxinterp's ResNets).
      relu: with eigen_smooth and postprocess="jaxinterp", keep the projection's positive
        side (False: signed; not with pytorch_grad_cam); without eigen_smooth every term is
        non-negative already.
      interpolation: "bilinear" or "nearest" (postprocess="jaxinterp").
      postprocess: "jaxinterp" (the terms' units) or "pytorch_grad_cam" (its scalings).
      eigen_smooth: the first principal component of the maps of the input and the layers.
      sign_correction: with eigen_smooth, make each map's largest magnitude positive.
      aug_smooth: the mean over pytorch-grad-cam's 6 test-time augmentations (horizontal
        flip x images scaled by 0.9, 1, 1.1; see the module docstring).
    Returns:
      `[N, H, W]` maps.
    """
    if postprocess == "pytorch_grad_cam" and not relu:
        raise ValueError("relu=False needs postprocess='jaxinterp' (pytorch-grad-cam's FullGrad "
                         "chain is fixed)")
    _check_options(True, interpolation, postprocess)
    x, t = prepare(m, x, target)
    return _full_grad(m, x, t, _check_biases(m, biases), bool(relu), interpolation, postprocess,
                      bool(eigen_smooth), bool(sign_correction), bool(aug_smooth))
