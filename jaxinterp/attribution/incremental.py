"""Incremental inference for patch perturbations (Nakandala et al. 2019, "Krypton").

Changing a `wh x ww` window of the input changes only a growing box of every later feature
map: a 3x3 convolution widens it by one pixel per side, a 2x2 pool halves it. Each layer is
recomputed on that box alone (with the clean activations around it), until the box covers the
whole map; from there the rest of the network runs as usual. The scores equal a full forward
pass of the perturbed image up to float rounding, at a fraction of the work for the early layers.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxinterp.models.vgg import param_name


@dataclasses.dataclass(frozen=True)
class Step:
    """One layer run on a box: its index, kind, map size (H, W) and box size (h, w) after it."""

    index: int
    kind: str
    size: tuple[int, int]
    box: tuple[int, int]


def plan(specs, image_size, window) -> tuple[Step, ...]:
    """The layers to run on boxes, for a `window` perturbation of an `image_size` input.

    Stops before the first layer whose output box would cover the whole map (or that is not
    local: the head, a pool over an odd size); that layer and all later ones run in full.
    """
    size, box, steps = tuple(image_size), tuple(window), []
    for i, s in enumerate(specs):
        if s.kind == "conv":
            box = tuple(min(b + 2, n) for b, n in zip(box, size))
        elif s.kind == "pool":
            if size[0] % 2 or size[1] % 2:
                break
            size = (size[0] // 2, size[1] // 2)
            box = tuple(min(b // 2 + 1, n) for b, n in zip(box, size))
        elif s.kind not in ("bn", "relu", "dropout"):
            break
        if box == size:
            break
        steps.append(Step(i, s.kind, size, box))
    return tuple(steps)


def _conv_valid(x, p):
    x = x.astype(jnp.result_type(x, p["kernel"]))  # as flax's Conv promotes (bf16 images)
    y = jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"]


def _paste(base, crop, at):
    return jax.lax.dynamic_update_slice(base, crop, (0, *at, 0))


def _slice(base, at, size):
    return jax.lax.dynamic_slice(base, (0, *at, 0), (base.shape[0], *size, base.shape[3]))


def perturbed_forward(m, steps, inputs, feats, crop, at):
    """`(logits, feats)` of the input `inputs` with the box at `at` replaced by `crop`.

    Args:
      m: the model.
      steps: `plan(...)` for `crop`'s size.
      inputs: the preprocessed clean input `[N, H, W, C]`.
      feats: the clean pass's features by torchvision name (each step's input map).
      crop: preprocessed replacement values `[N, h, w, C]`.
      at: int `(y, x)` of the box's top-left corner (traced).
    Returns:
      The logits and the perturbed features of every layer (clean maps with boxes pasted in).
    """
    specs, names = m.specs, m.layers
    params = m.variables["params"]
    prev, out = inputs, {}
    for st in steps:
        if st.kind == "conv":
            lo = tuple(jnp.clip(a - 1, 0, n - b) for a, n, b in zip(at, st.size, st.box))
            window = _slice(jnp.pad(prev, ((0, 0), (1, 1), (1, 1), (0, 0))), lo,
                            (st.box[0] + 2, st.box[1] + 2))
            window = _paste(window, crop, (at[0] - lo[0] + 1, at[1] - lo[1] + 1))
            crop = _conv_valid(window, params[param_name(specs[st.index].name)])
        elif st.kind == "pool":
            lo = tuple(jnp.clip(a // 2, 0, n - b) for a, n, b in zip(at, st.size, st.box))
            window = _slice(prev, (2 * lo[0], 2 * lo[1]), (2 * st.box[0], 2 * st.box[1]))
            crop = m.module.apply(m.variables, _paste(window, crop, (at[0] - 2 * lo[0],
                                                                     at[1] - 2 * lo[1])),
                                  start=st.index, stop=st.index + 1)[0]
        else:
            lo = at
            crop = m.module.apply(m.variables, crop, start=st.index, stop=st.index + 1)[0]
        at, prev = lo, feats[names[st.index]]
        out[names[st.index]] = _paste(prev, crop, at)  # dropped by XLA unless a target reads it
    return m.resume(_paste(prev, crop, at), steps[-1].index + 1 if steps else 0, out)
