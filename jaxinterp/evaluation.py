"""Checking attributions against ground truth: pointing game, mass in the mask, randomization."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit


def heatmap(attr) -> jax.Array:
    """One non-negative map per image: sum of |a| over channels for `[N, H, W, 3]` attributions,
    the positive part for `[N, H, W]` maps (CAMs, occlusion: evidence for the target)."""
    attr = jnp.asarray(attr)
    return jnp.abs(attr).sum(-1) if attr.ndim == 4 else jnp.maximum(attr, 0)


def pointing_game(attr, mask) -> np.ndarray:
    """Per image: is the maximum of the heat map inside the object mask? (Zhang et al. 2016)."""
    h = np.asarray(heatmap(attr)).reshape(len(mask), -1)
    return np.asarray(mask).reshape(len(mask), -1)[np.arange(len(mask)), h.argmax(1)]


def mass_inside(attr, mask) -> np.ndarray:
    """Per image: fraction of the heat map's total inside the object mask (0 for empty maps)."""
    h = np.asarray(heatmap(attr), np.float64)
    total = h.sum((1, 2))
    inside = (h * np.asarray(mask)).sum((1, 2))
    return np.where(total > 0, inside / np.maximum(total, 1e-30), 0.0)


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as in Spearman's definition."""
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0) - 1)[inverse]


def spearman(a, b) -> np.ndarray:
    """Per image Spearman rank correlation between two heat maps (of `heatmap` form)."""
    a = np.asarray(a).reshape(len(a), -1)
    b = np.asarray(b).reshape(len(b), -1)
    out = []
    for u, v in zip(a, b):
        ru, rv = _ranks(u), _ranks(v)
        su, sv = ru.std(), rv.std()
        out.append(0.0 if su == 0 or sv == 0 else float(((ru - ru.mean()) * (rv - rv.mean())).mean() / (su * sv)))
    return np.array(out)


def cascading_randomization(m, key: jax.Array, depth: int):
    """The model with its top `depth` weight layers re-initialized (Adebayo et al. 2018).

    Layers are counted from the output: the last dense layer, then convolutions downwards. A
    randomized convolution's BatchNorm is reset to the identity (scale 1, shift 0, statistics 0/1).
    On jaxinterp's ViT: the head (with the final LayerNorm), then blocks downwards, then the
    patch embedding (`randomization_layers` names them).

    Args:
      m: the model.
      key: PRNG key of the fresh weights.
      depth: how many weight layers, from the top, to randomize.
    Returns:
      A `Model` with the same architecture and metadata.
    """
    from jaxinterp import model as model_lib
    from jaxinterp.models.vgg import param_name

    def fresh_model():  # the same architecture and config, new weights
        return model_lib.init_model(m.arch, key, num_classes=m.num_classes,
                                    **{k: v for k, v in m.meta.config if k != "num_classes"})

    groups = _vit_groups(m)
    if groups is not None:
        if not 0 <= depth <= len(groups):
            raise ValueError(f"depth must be in 0..{len(groups)} for {m.arch}, got {depth}")
        fresh = fresh_model()
        params = jax.tree_util.tree_map(lambda a: a, m.variables["params"])
        for _, paths in groups[:depth]:
            for path in paths:
                src, dst = fresh.variables["params"], params
                for k in path[:-1]:
                    src, dst = src[k], dst[k]
                dst[path[-1]] = src[path[-1]]
        return m.with_variables({**m.variables, "params": params})
    if not hasattr(m, "specs"):
        raise ValueError(f"cascading randomization follows jaxinterp VGG's layer list; {m.arch} "
                         "has none: re-initialize its top layers with your own init and "
                         "m.with_variables(...)")
    fresh = fresh_model()
    weighted = [s for s in m.specs if s.kind in ("conv", "dense")][::-1][:depth]
    variables = {c: dict(d) for c, d in m.variables.items()}  # replace layers, share the rest
    names = [s.name for s in m.specs]
    for s in weighted:
        variables["params"][param_name(s.name)] = fresh.variables["params"][param_name(s.name)]
        nxt = names[names.index(s.name) + 1] if names.index(s.name) + 1 < len(names) else None
        spec = next((t for t in m.specs if t.name == nxt), None)
        if spec is not None and spec.kind == "bn":
            p = param_name(spec.name)
            variables["params"][p] = fresh.variables["params"][p]
            variables["batch_stats"][p] = fresh.variables["batch_stats"][p]
    return m.with_variables(variables)


def _vit_groups(m):
    """A ViT's weight layers from the top, `[(name, [param paths])]`: the head (with the final
    LayerNorm), each block from the last, the patch embedding (with the class token and the
    position embedding); None for other models."""
    from jaxinterp.attribution.transformers import _vit_module

    module = _vit_module(m)
    if module is None:
        return None
    blocks = [(f"encoder_layer_{i}", [("encoder", "layers", f"encoder_layer_{i}")])
              for i in reversed(range(module.num_layers))]
    return [("head", [("heads",), ("encoder", "ln")]), *blocks,
            ("conv_proj", [("conv_proj",), ("class_token",), ("encoder", "pos_embedding")])]


def randomization_layers(m) -> list[str]:
    """Names of the weight layers `cascading_randomization` re-initializes, from the top."""
    groups = _vit_groups(m)
    if groups is not None:
        return [name for name, _ in groups]
    if not hasattr(m, "specs"):
        raise ValueError(f"cascading randomization needs jaxinterp's VGG or ViT; {m.arch} is "
                         "neither")
    return [s.alias or s.name for s in m.specs if s.kind in ("conv", "dense")][::-1]


# --------------------------------------------------------------------------- faithfulness
# Deletion and insertion (Petsiuk et al. 2018, RISE): pixels move, most important first, from a
# start image to a finish image; the target's probability is read after each step. A faithful
# map makes it fall fast when deleting (low AUC) and rise fast when inserting (high AUC).
# RISE's code (eclique/RISE `evaluation.py`, `Evaluation.ipynb`) ranks the raw map, inserts into
# `conv2d(x, gkern(11, 5), padding=5)` and integrates with the trapezoid rule; see
# `deletion_insertion` for what differs here.

CURVES = ("deletion", "insertion")


def ranking_map(attr) -> jax.Array:
    """The map deletion and insertion rank pixels by, `[N, H, W]`.

    `[N, H, W]` maps (CAMs, occlusion, RISE) as they are, signed: RISE ranks the raw map, so
    negative evidence is moved last (`heatmap`'s positive part would tie it with zero evidence).
    `[N, H, W, 3]` attributions: the sum of |a| over channels (as `heatmap`; a gradient's sign
    per channel says nothing about a pixel's importance).
    """
    attr = jnp.asarray(attr)
    return jnp.abs(attr).sum(-1) if attr.ndim == 4 else attr


def pixel_ranks(heat: jax.Array) -> jax.Array:
    """Rank of each pixel of `[N, H, W]` maps, 0 = largest value (ties: row-major order)."""
    n = heat.shape[0]
    flat = heat.reshape(n, -1)
    order = jnp.argsort(-flat, axis=1, stable=True)
    ranks = jnp.zeros_like(order).at[jnp.arange(n)[:, None], order].set(
        jnp.arange(flat.shape[1])[None])
    return ranks.reshape(heat.shape)


def _reflect(i: int, n: int) -> int:
    """scipy.ndimage's 'reflect' boundary (d c b a | a b c d | d c b a) for any index."""
    i %= 2 * n
    return i if i < n else 2 * n - 1 - i


def rise_kernel(size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """RISE's blur kernel `gkern(klen=size, nsig=sigma)`, `[size, size]` (NumPy, float64).

    RISE builds it as scipy's `gaussian_filter` of a centred delta on a size × size grid: per axis
    a Gaussian of sd `sigma` truncated at int(4σ + 0.5) taps each side and normalized over them,
    whose tails beyond the grid fold back in ('reflect' boundary). So it is not a truncated,
    renormalized Gaussian: at size 11, σ 5 it is flatter. Separable, sums to 1.
    """
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"blur_size must be an odd positive int, got {size!r}")
    if not sigma > 0:
        raise ValueError(f"blur must be > 0 (the Gaussian's sd in pixels), got {sigma!r}")
    size = int(size)
    r = int(4.0 * sigma + 0.5)
    t = np.arange(-r, r + 1)
    w = np.exp(-0.5 * (t / sigma) ** 2)
    w /= w.sum()
    c = size // 2
    k = np.array([sum(wj for tj, wj in zip(t, w) if _reflect(i + tj, size) == c)
                  for i in range(size)])
    return np.outer(k, k)


def network_zero(m) -> np.ndarray:
    """The [0, 1] RGB colour the model's preprocessing maps to 0, `[3]` (RISE's blur pads and
    deletes with zeros of the *normalized* input): mean / scale for a `Preprocess` (in RGB
    order), 0 for no preprocessing or a custom function (which cannot be inverted here)."""
    from jaxinterp.model import Preprocess

    p = getattr(m, "preprocess", None)
    if not isinstance(p, Preprocess):
        return np.zeros(3)
    v = np.asarray(p.mean, np.float64) / p.scale
    return v[::-1] if p.channel_order == "BGR" else v


def rise_blur(x: jax.Array, kernel, fill=0.0) -> jax.Array:
    """`[N, H, W, C]` images convolved per channel with `kernel` `[k, k]`, padded by k // 2 with
    `fill` (a number or `[C]`): `fill + conv(x − fill, kernel, zero padding)`. With `fill =
    network_zero(m)` this is RISE's `conv2d(x, kern, padding=klen // 2)` on the normalized image,
    mapped back to [0, 1] units."""
    kernel = jnp.asarray(kernel, x.dtype)
    c = x.shape[-1]
    fill = jnp.broadcast_to(jnp.asarray(fill, x.dtype), (c,))
    k = kernel.shape[0]
    w = jnp.broadcast_to(kernel[:, :, None, None], (k, k, 1, c))
    y = jax.lax.conv_general_dilated(x - fill, w, (1, 1), [(k // 2, k // 2)] * 2,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=c,
                                     precision=jax.lax.Precision.HIGHEST)
    return y + fill


def _probability(m, t, x):
    logits, feats = m(x, check=False)
    if t.fn is not None:
        return t(logits, feats)
    return jnp.take_along_axis(jax.nn.softmax(logits), t.index[:, None], axis=1)[:, 0]


def _curve(m, t, ranks, start, finish, steps, batch_size):
    from jaxinterp.chunking import chunked_map

    pixels = ranks.shape[1] * ranks.shape[2]

    def at(k):
        moved = (ranks < jnp.round(k * pixels / steps))[..., None]
        return _probability(m, t, jnp.where(moved, finish, start))

    return chunked_map(at, jnp.arange(steps + 1, dtype=jnp.float32), batch_size).T  # [N, S+1]


@tuned_jit(static_argnames=("steps", "batch_size"))
def _faithfulness(m, x, t, heat, kernel, fill, steps, batch_size):
    ranks = pixel_ranks(heat)
    deletion = _curve(m, t, ranks, x, jnp.zeros_like(x), steps, batch_size)
    insertion = _curve(m, t, ranks, rise_blur(x, kernel, fill), x, steps, batch_size)
    return deletion, insertion


def auc(curve) -> np.ndarray:
    """RISE's normalized area under curves `[..., S + 1]` sampled at equal steps over [0, 1]:
    the trapezoid rule, `(Σ c − c₀ / 2 − c_S / 2) / S`."""
    curve = np.asarray(curve)
    return (curve.sum(-1) - curve[..., 0] / 2 - curve[..., -1] / 2) / (curve.shape[-1] - 1)


_auc = auc


def deletion_insertion(m, x, target, attr, *, steps: int = 16, batch_size: int | None = None,
                       blur: float = 5.0, blur_size: int = 11) -> dict:
    """Deletion and insertion curves and their areas (Petsiuk et al. 2018), one compiled call.

    Pixels are ranked by `ranking_map(attr)` (a `[N, H, W]` map raw and signed, as RISE ranks
    it). Deletion sets them to black, largest first, so its curve runs from p(x) to p(black);
    insertion starts from the blurred image and puts them back, from p(blurred x) to p(x). After
    each of `steps` equal steps the target class's softmax probability (a callable target's
    score) is read. AUC: RISE's trapezoid rule over the fraction moved, [0, 1] (`auc`).

    The blur is RISE's: `gkern(11, 5)` (`rise_kernel`) applied per channel with padding 5 of
    the normalized input's zero (`rise_blur`, `network_zero`) — identical to RISE's blur of the
    normalized tensor for any mean/std preprocessing. What differs from RISE's code: deletion
    goes to black in [0, 1] units, where RISE's `torch.zeros_like` of the normalized tensor is
    the normalization mean (a grey; the paper's text says "removing" pixels); RISE moves a fixed
    number of pixels per step (224 in its notebook), here `steps` equal fractions; RISE reads
    the predicted class, here `target`; ties in the map keep row-major order here.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1].
      target: class index, int array `[N]` or callable.
      attr: attributions `[N, H, W, 3]` or maps `[N, H, W]` for `x` (any method's output).
      steps: steps from 0 to all pixels (the curves have `steps + 1` points).
      batch_size: steps evaluated at a time (memory bound); None: all at once.
      blur: sd in pixels of insertion's blur (RISE: 5).
      blur_size: side of the blur kernel, odd (RISE: 11).
    Returns:
      `{"deletion": [N, steps + 1], "insertion": [N, steps + 1], "deletion_auc": [N],
      "insertion_auc": [N]}` (numpy).
    """
    from jaxinterp.attribution.core import prepare
    from jaxinterp.checks import check_batch_size, check_count

    steps = check_count(steps, "steps", 1)
    batch_size = check_batch_size(batch_size)
    kernel = rise_kernel(blur_size, float(blur))
    x, t = prepare(m, x, target)
    heat = ranking_map(attr)
    if heat.shape != x.shape[:3]:
        raise ValueError(f"attr of shape {jnp.shape(attr)} does not match images {x.shape}")
    deletion, insertion = _faithfulness(m, x, t, heat.astype(x.dtype), kernel.astype(np.float32),
                                        network_zero(m).astype(np.float32), steps, batch_size)
    deletion, insertion = np.asarray(deletion), np.asarray(insertion)
    return {"deletion": deletion, "insertion": insertion,
            "deletion_auc": auc(deletion), "insertion_auc": auc(insertion)}
