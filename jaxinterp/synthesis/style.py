"""Gram-matrix texture synthesis and neural style transfer (Gatys et al. 2015, 2016).

Presets over `ji.optimize`: the image is the parameter (clipped to [0, 1] after each update,
as the PyTorch tutorial clamps it), the loss is a weighted sum of Gram-matrix (style) and
feature (content) distances, and `optax.lbfgs` (with its zoom line search) or Adam runs inside
the compiled loop. Each (content, style) pair is optimized on its own (`vmap`, its own L-BFGS
memory and line search). With Adam a batch equals its examples run one by one to rounding; with
L-BFGS rounding differences between batched and single convolutions can flip a line-search
choice, so the images may differ (4e-3 after 8 steps on some CPUs; final losses within 2 %).

Two normalizations (the weights of one do not transfer to the other):

- "paper" (Gatys et al.; DeepTextures): G = F Fᵀ / (H·W); a layer's style loss is
  Σ (G − Ĝ)² / (4 C²); content loss ½ Σ (F − P)²; layer weights 1 / (number of layers).
- "tutorial" (the PyTorch tutorial, jcjohnson/neural-style): G = F Fᵀ / (C·H·W); a layer's style
  loss is the mean of (G − Ĝ)² over the C² entries; content loss the mean of (F − P)²; layer
  weights 1.

Total loss: `style_weight · Σ_l w_l E_l + content_weight · L_content + tv_weight · TV`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import as_key, check_count, check_images, check_real
from jaxinterp.model import layer_output
from jaxinterp.optvis.hooks import Clip
from jaxinterp.optvis.optimize import features, optimize
from jaxinterp.optvis.resume import fingerprint, run_in_chunks
from jaxinterp.models.convs import loop_conv

NORMALIZATIONS = ("paper", "tutorial")
OPTIMIZERS = ("lbfgs", "lbfgs-fixed", "adam")


def gram(feats: jax.Array, normalization: str = "paper") -> jax.Array:
    """Gram matrices of feature maps: `[N, H, W, C]` -> `[N, C, C]`.

    Args:
      feats: feature maps, channels last.
      normalization: "paper" divides F Fᵀ by H·W (Gatys et al.), "tutorial" by C·H·W (the
        PyTorch tutorial's `gram_matrix` for one image), "none" not at all.
    Returns:
      The Gram matrices.
    """
    n, h, w, c = feats.shape
    f = feats.reshape(n, h * w, c)
    g = jnp.einsum("npc,npd->ncd", f, f)
    scale = {"paper": h * w, "tutorial": c * h * w, "none": 1}
    if normalization not in scale:
        raise ValueError(f"normalization must be one of paper, tutorial, none; got "
                         f"{normalization!r}")
    return g / scale[normalization]


def style_layer_loss(g: jax.Array, target: jax.Array, normalization: str = "paper") -> jax.Array:
    """One layer's style loss per image between Gram matrices `[N, C, C]` (see the module doc)."""
    c = g.shape[-1]
    d = ((g - target) ** 2).sum((-2, -1))
    return d / (4 * c * c) if normalization == "paper" else d / (c * c)


def content_loss(f: jax.Array, target: jax.Array, normalization: str = "paper") -> jax.Array:
    """The content loss per image between feature maps: ½ Σ (paper) or the mean (tutorial)."""
    d = ((f - target) ** 2).reshape(f.shape[0], -1)
    return 0.5 * d.sum(1) if normalization == "paper" else d.mean(1)


def _tv(x):
    dy = ((x[:, 1:] - x[:, :-1]) ** 2).reshape(x.shape[0], -1).sum(1)
    dx = ((x[:, :, 1:] - x[:, :, :-1]) ** 2).reshape(x.shape[0], -1).sum(1)
    return dy + dx


def _need_specs(m, what):
    if not hasattr(m, "specs"):
        raise ValueError(f"the default {what} are chosen from jaxinterp VGG's layer list; for "
                         f"{m.arch}, pass {what}= (names from m.layers)")


def texture_layers(m) -> list[str]:
    """Gatys et al.'s texture layers: the first ReLU and up to four pooling layers (relu1_1,
    pool1 … pool4 on VGG).

    DeepTextures names them conv1_1, pool1 … pool4, but its Caffe VGG runs each ReLU in place,
    so the blob `conv1_1` it reads holds the rectified map: our relu1_1, not conv1_1.
    """
    _need_specs(m, "layers")
    first = next(s for s in m.specs if s.kind == "relu")
    pools = [s for s in m.specs if s.kind == "pool"][:4]
    return [s.alias or s.name for s in [first, *pools]]


def _relus_by_block(m) -> list[list[str]]:
    _need_specs(m, "style_layers and content_layer")
    blocks, current = [], []
    for s in m.specs:
        if s.kind == "relu" and s.name.startswith("features"):
            current.append(s.alias or s.name)
        elif s.kind == "pool" and current:
            blocks.append(current)
            current = []
    return blocks + ([current] if current else [])


def style_layers(m) -> list[str]:
    """Gatys et al.'s style layers: the first ReLU of each block (relu1_1 … relu5_1 on VGG)."""
    return [b[0] for b in _relus_by_block(m)]


def content_layer(m) -> str:
    """Gatys et al.'s content layer relu4_2 (on a net with fewer than 5 blocks: the second ReLU
    of the next-to-last block, relu3_2 on vgg-mini)."""
    blocks = _relus_by_block(m)
    block = blocks[3] if len(blocks) >= 5 else blocks[-2]
    return block[min(1, len(block) - 1)]


_default_style_layers, _default_content_layer = style_layers, content_layer  # (shadowed below)


class Stylized(NamedTuple):
    """What `texture` and `style_transfer` return.

    Attributes:
      images: the results `[N, H, W, 3]` in [0, 1].
      losses: the total loss per iteration and image `[steps, N]` (before each update).
      style_loss: the final weighted style term per image `[N]`.
      content_loss: the final weighted content term per image `[N]` (zeros for textures).
    """

    images: jax.Array
    losses: jax.Array
    style_loss: jax.Array
    content_loss: jax.Array


@dataclasses.dataclass(frozen=True)
class _Config:
    style_layers: tuple
    content_layer: str | None
    normalization: str
    optimizer: str
    lr: float


def _optimizer(cfg: _Config) -> optax.GradientTransformation:
    if cfg.optimizer == "lbfgs":
        return optax.lbfgs()
    if cfg.optimizer == "lbfgs-fixed":  # torch.optim.LBFGS's defaults: step 1, no line search,
        return optax.lbfgs(learning_rate=1.0, linesearch=None, memory_size=100)  # history 100
    return optax.adam(cfg.lr)


def _terms(m, x, targets, weights, cfg):
    """(total, style term, content term) per image of `x` `[N, H, W, 3]`."""
    feats = features(m, x)
    style = sum(w * style_layer_loss(gram(feats[name], cfg.normalization), g, cfg.normalization)
                for name, g, w in zip(cfg.style_layers, targets["grams"], weights["layers"]))
    style = weights["style"] * style
    content = jnp.zeros_like(style)
    if cfg.content_layer is not None:
        content = weights["content"] * content_loss(feats[cfg.content_layer], targets["content"],
                                                    cfg.normalization)
    return style + content + weights["tv"] * _tv(x), style, content


def _one(m, image, targets, weights, start, state, steps, cfg):
    """`steps` iterations for one image `[H, W, 3]` with its targets (no batch axis)."""
    add = lambda t: jax.tree_util.tree_map(lambda a: a[None], t)  # noqa: E731

    def loss(x, k):
        total, _, _ = _terms(m, x, add(targets), weights, cfg)
        return total, None

    # the clip after each update moves the image off the point where L-BFGS's line search left
    # its value and gradient, so they are recomputed (reuse_linesearch=False: two evaluations
    # of the network per iteration, where the tutorial's line-search-free LBFGS makes one)
    out = optimize(loss, image[None], steps=steps, optimizer=_optimizer(cfg), hook=Clip(0.0, 1.0),
                   start=start, state=state)
    return out.params[0], out.state, out.values[:, 0]


@tuned_jit(static_argnames=("steps", "cfg"))
def _chunk(m, images, states, targets, weights, start, steps, cfg):
    m = m.with_conv(loop_conv())
    return jax.vmap(lambda x, s, t: _one(m, x, t, weights, start, s, steps, cfg))(
        images, states, targets)


@tuned_jit(static_argnames=("cfg",))
def _init_states(images, cfg):
    return jax.vmap(lambda x: _optimizer(cfg).init(x[None]))(images)


@tuned_jit(static_argnames=("cfg",))
def _final_terms(m, images, targets, weights, cfg):
    return _terms(m, images, targets, weights, cfg)


@tuned_jit(static_argnames=("names", "normalization"))
def _style_targets(m, style, names, normalization):
    feats = features(m, style)
    return tuple(gram(feats[n], normalization) for n in names)


def _style_grams(m, style, n, names, normalization):
    """Per-example Gram targets `[n, C, C]` from one style image, a batch, or a list of sizes."""
    if isinstance(style, (list, tuple)):
        if len(style) != n:
            raise ValueError(f"style lists {len(style)} images for {n} content images")
        grams = [_style_grams(m, s, 1, names, normalization) for s in style]
        return tuple(jnp.concatenate([g[i] for g in grams]) for i in range(len(names)))
    style = check_images(style if np.ndim(style) == 4 else style[None], "style", m.min_size)
    if style.shape[0] not in (1, n):
        raise ValueError(f"style has {style.shape[0]} images for {n} content images; give one "
                         f"style image or one per content image")
    _check_deep_enough(m, style.shape[1:3], names)
    grams = _style_targets(m, style, tuple(names), normalization)
    return tuple(jnp.broadcast_to(g, (n, *g.shape[1:])) for g in grams)


def _check_deep_enough(m, size, names):
    probe = jax.eval_shape(lambda m, x: features(m, x), m,
                           jax.ShapeDtypeStruct((1, *size, 3), jnp.float32))
    for name in names:
        shape = probe[name].shape
        if len(shape) != 4 or shape[1] < 1 or shape[2] < 1:
            raise ValueError(f"layer {name!r} needs a spatial map: style images of "
                             f"{size[0]}x{size[1]} give {tuple(shape[1:])} there; use larger "
                             f"style images or shallower layers")


def _resolve_layers(m, layers, default, what):
    if layers is None:
        layers = default(m)
    if isinstance(layers, str):
        layers = [layers]
    if isinstance(layers, dict):
        names, weights = list(layers), [float(w) for w in layers.values()]
    else:
        names, weights = list(layers), None
    if not names:
        raise ValueError(f"{what} must name at least one layer")
    for n in names:
        m.resolve(n)
        if m.resolve(n).startswith("classifier") or n in ("logits", "gap", "avgpool"):
            raise ValueError(f"{what}: {n!r} has no spatial map; use a conv, ReLU or pool layer")
    return tuple(m.resolve(n) for n in names), weights


def _run(m, start_images, targets, weights, steps, cfg, key, checkpoint_dir, checkpoint_every,
         progress, digest_parts) -> Stylized:
    states = _init_states(start_images, cfg)
    every = check_count(checkpoint_every, "checkpoint_every", 1) if checkpoint_every else steps
    losses = []

    def chunk(carry, start, n):
        images, states = carry
        images, states, values = _chunk(m, images, states, targets, weights,
                                        jnp.int32(start), n, cfg)
        losses.append(values)
        return images, states

    digest = fingerprint(m.variables, start_images, targets, weights, steps, repr(cfg),
                         *digest_parts)
    images, _ = run_in_chunks(chunk, (start_images, states), steps, every=every,
                              checkpoint_dir=checkpoint_dir, digest=digest, progress=progress)
    _, style, content = _final_terms(m, images, targets, weights, cfg)
    values = jnp.concatenate(losses, axis=1).T if losses else jnp.zeros((0, images.shape[0]))
    return Stylized(images, values, style, content)


def _common_checks(m, steps, optimizer, normalization, lr):
    check_count(steps, "steps", 1)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got "
                         f"{normalization!r}")
    check_real(lr, "lr", 0.0)


def _weights(names, layer_weights, normalization, style_weight, content_weight, tv_weight):
    for v, n in ((style_weight, "style_weight"), (content_weight, "content_weight"),
                 (tv_weight, "tv_weight")):
        check_real(v, n, 0.0)
    if layer_weights is None:
        layer_weights = [1.0 / len(names) if normalization == "paper" else 1.0] * len(names)
    check_real(np.asarray(layer_weights, np.float32), "style layer weights", 0.0)
    return {"layers": jnp.asarray(layer_weights, jnp.float32),
            "style": jnp.float32(style_weight), "content": jnp.float32(content_weight),
            "tv": jnp.float32(tv_weight)}


def texture(m, style, *, layers: Sequence[str] | dict | None = None,
            size: int | tuple[int, int] | None = None, n: int | None = None, steps: int = 200,
            optimizer: str = "lbfgs", normalization: str = "paper", lr: float = 0.02,
            tv_weight: float = 0.0, key: jax.Array | int | None = None,
            checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int | None = None,
            progress: Callable | None = None) -> Stylized:
    """Synthesizes textures whose Gram matrices match the style images' (Gatys et al. 2015).

    Args:
      m: the model (`m.with_pool("avg")` for Gatys' average pooling).
      style: style images `[N, h, w, 3]` (or one `[h, w, 3]`) in [0, 1], or a list of images of
        different sizes; one texture per style image.
      layers: layer names, or `{layer: weight}`; default `texture_layers(m)` (relu1_1,
        pool1 … pool4 on VGG; relu1_1, pool1 … pool3 on vgg-mini: Gatys' Caffe conv1_1 is
        rectified in place).
      size: texture side or (H, W) (default: the style images' size).
      n: textures per style image when one style image is given (default 1).
      steps: optimizer iterations (L-BFGS: each with its line search).
      optimizer: "lbfgs" (`optax.lbfgs()`, memory 10, zoom line search: 2–4 network
        evaluations per iteration), "lbfgs-fixed" (`optax.lbfgs(learning_rate=1,
        linesearch=None, memory_size=100)`: one evaluation per iteration, the defaults of the
        PyTorch tutorial's `torch.optim.LBFGS`; no safeguard against a bad step) or "adam"
        (`optax.adam(lr)`: β1 0.9, β2 0.999, ε 1e-8, so the step does not depend on the loss's
        scale; the TensorFlow tutorial's ε 0.1 barely moves at these losses' scale).
      normalization: "paper" or "tutorial" (module doc).
      lr: Adam's learning rate (traced).
      tv_weight: weight of a squared total-variation term (traced).
      key: PRNG key or int seed of the uniform-noise start (default 0).
      checkpoint_dir: save the images and optimizer state there every `checkpoint_every` steps
        (orbax) and resume from it when called again with the same inputs.
      checkpoint_every: steps per compiled chunk (and checkpoint); default: all at once.
      progress: `progress(done, steps, (images, state))` after each chunk.
    Returns:
      `Stylized(images, losses, style_loss, content_loss)`.
    """
    _common_checks(m, steps, optimizer, normalization, lr)
    names, layer_weights = _resolve_layers(m, layers, texture_layers, "layers")
    count = (len(style) if isinstance(style, (list, tuple)) else
             (1 if np.ndim(style) == 3 else np.shape(style)[0]))
    if n is not None:
        check_count(n, "n", 1)
        if count != 1:
            raise ValueError("n= repeats one style image; give one style image or leave n out")
        count = n
    grams = _style_grams(m, style, count, names, normalization)
    if size is None:
        first = style[0] if isinstance(style, (list, tuple)) else style
        size = tuple(np.shape(first)[-3:-1])
    size = (size, size) if isinstance(size, int) else tuple(size)
    if min(size) < m.min_size:
        raise ValueError(f"size {size} is smaller than {m.arch}'s {m.min_size}x{m.min_size}")
    cfg = _Config(names, None, normalization, optimizer, float(lr))
    weights = _weights(names, layer_weights, normalization, 1.0, 0.0, tv_weight)
    start = jax.random.uniform(as_key(key), (count, *size, 3), jnp.float32)
    targets = {"grams": grams, "content": jnp.zeros((count, 1), jnp.float32)}
    return _run(m, start, targets, weights, steps, cfg, key, checkpoint_dir, checkpoint_every,
                progress, ("texture",))


def style_transfer(m, content, style, *, content_layer: str | None = None,
                   style_layers: Sequence[str] | dict | None = None,
                   content_weight: float = 1.0, style_weight: float = 1e6,
                   tv_weight: float = 0.0, steps: int = 200, optimizer: str = "lbfgs",
                   init: str = "content", normalization: str = "tutorial", lr: float = 0.02,
                   key: jax.Array | int | None = None,
                   checkpoint_dir: str | os.PathLike | None = None,
                   checkpoint_every: int | None = None,
                   progress: Callable | None = None) -> Stylized:
    """Renders the content images in the style images' style (Gatys et al. 2016).

    Args:
      m: the model.
      content: content images `[N, H, W, 3]` in [0, 1].
      style: one style image, one per content image `[N, h, w, 3]` (any size), or a list.
      content_layer: default `content_layer(m)` (relu4_2 on VGG, relu3_2 on vgg-mini).
      style_layers: names or `{layer: weight}`; default `style_layers(m)` (relu1_1 … relu5_1).
      content_weight, style_weight, tv_weight: the loss weights (traced); the defaults are the
        PyTorch tutorial's (1 and 1e6) for its normalization.
      steps: optimizer iterations.
      optimizer: "lbfgs", "lbfgs-fixed" or "adam" (as `texture`).
      init: "content" (start from the content image) or "noise" (uniform noise).
      normalization: "tutorial" (default) or "paper" (module doc).
      lr: Adam's learning rate.
      key: PRNG key or int seed for init="noise".
      checkpoint_dir, checkpoint_every, progress: as `texture`.
    Returns:
      `Stylized(images, losses, style_loss, content_loss)`.
    """
    _common_checks(m, steps, optimizer, normalization, lr)
    content = check_images(content, "content", m.min_size)
    count = content.shape[0]
    names, layer_weights = _resolve_layers(m, style_layers, _default_style_layers, "style_layers")
    (cname,), _ = _resolve_layers(m, content_layer, _default_content_layer,
                                  "content_layer")
    if init not in ("content", "noise"):
        raise ValueError(f"init must be 'content' or 'noise', got {init!r}")
    grams = _style_grams(m, style, count, names, normalization)
    cfg = _Config(names, cname, normalization, optimizer, float(lr))
    weights = _weights(names, layer_weights, normalization, style_weight, content_weight,
                       tv_weight)
    targets = {"grams": grams, "content": layer_output(m, content, cname)}
    start = content if init == "content" else jax.random.uniform(as_key(key), content.shape)
    return _run(m, start, targets, weights, steps, cfg, key, checkpoint_dir, checkpoint_every,
                progress, ("style", init))
