"""DeepDream (Mordvintsev et al. 2015, google/deepdream `dream.ipynb`), a preset over `optimize`.

Octaves run smallest first; each is one compiled call per image shape (cached across calls), and
the detail the dream added is carried up to the next octave. Defaults are the original's,
converted from its 0–255 pixels on 224-px images to our [0, 1] images (see `deepdream`).
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import as_key, check_count, check_images, check_real
from jaxinterp.optvis import objectives as obj_lib
from jaxinterp.optvis.hooks import Clip
from jaxinterp.optvis.optimize import features, optimize
from jaxinterp.models.convs import loop_conv

STEP_SIZE = 1.5 / 255  # the original's 1.5 (0–255 pixels) per unit of mean-normalized gradient
JITTER = 32 / 224  # the original's 32-pixel roll on 224-px images, as a fraction of the side


class Octave(NamedTuple):
    """One finished octave of a dream.

    Attributes:
      index: the octave's position, 0 = smallest.
      images: the dreamed images at this octave's size `[N, h, w, 3]` in [0, 1].
      scores: the objective before each step `[steps, N]`, and after the last step `[N]`
        appended as the final row (`[steps + 1, N]`).
    """

    index: int
    images: jax.Array
    scores: jax.Array


def octave_sizes(size: tuple[int, int], octaves: int, scale: float) -> list[tuple[int, int]]:
    """Image sizes of the pyramid, smallest first (each `round(previous / scale)`, as scipy's zoom)."""
    sizes = [tuple(size)]
    for _ in range(octaves - 1):
        sizes.append(tuple(int(round(s / scale)) for s in sizes[-1]))
    return sizes[::-1]


def zoom(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Linear resize of `[N, H, W, C]` with corners aligned (scipy `ndimage.zoom(order=1)`)."""
    for axis, n in ((1, size[0]), (2, size[1])):
        m = x.shape[axis]
        pos = jnp.linspace(0.0, m - 1, n) if n > 1 else jnp.zeros((1,))
        lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, max(m - 2, 0))
        frac = (pos - lo).astype(x.dtype)
        shape = [1] * x.ndim
        shape[axis] = n
        frac = frac.reshape(shape)
        a = jnp.take(x, lo, axis=axis)
        b = jnp.take(x, jnp.minimum(lo + 1, m - 1), axis=axis)
        x = a * (1 - frac) + b * frac
    return x


def _scale_by_mean_abs(eps: float = 1e-8) -> optax.GradientTransformation:
    """Divides each example's update by its mean absolute value (the notebook's normalization)."""

    def update(updates, state, params=None):
        scale = jnp.abs(updates).reshape(updates.shape[0], -1).mean(1) + eps
        return updates / scale.reshape((-1,) + (1,) * (updates.ndim - 1)), state

    return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


@tuned_jit(static_argnames=("steps", "jitter"))
def _octave(m, objective, image, key, step_size, steps, jitter):
    m = m.with_conv(loop_conv())  # reverse mode only, fast inside the loop

    def loss(x, k):
        shifts = jax.random.randint(k, (x.shape[0], 2), -jitter, jitter + 1)
        rolled = jax.vmap(lambda im, s: jnp.roll(im, (s[0], s[1]), axis=(0, 1)))(x, shifts)
        return -objective(features(m, rolled)), None

    opt = optax.chain(_scale_by_mean_abs(), optax.scale(-step_size))
    out = optimize(loss, image, steps=steps, optimizer=opt, key=key, hook=Clip(0.0, 1.0))
    final = objective(features(m, out.params))
    return out.params, jnp.concatenate([-out.values, final[None]])


def dream(m, x: jax.Array, layer, *, octaves: int = 4, octave_scale: float = 1.4,
          steps: int = 10, step_size: float = STEP_SIZE, jitter: int | None = None,
          key: jax.Array | int | None = None) -> Iterator[Octave]:
    """DeepDream octave by octave, as a generator (for progress between compiled calls).

    Takes the options of `deepdream`; yields an `Octave` after each octave, smallest first. The
    last one's images are `deepdream`'s result.
    """
    x = check_images(x, min_size=1)
    if isinstance(layer, str):
        objective = obj_lib.deepdream(layer)
    else:
        objective = obj_lib.as_objective(layer)
    objective.check(m)
    check_count(octaves, "octaves", 1)
    check_count(steps, "steps", 1)
    check_real(octave_scale, "octave_scale", 1.0)
    check_real(step_size, "step_size", 0.0)
    size = tuple(x.shape[1:3])
    if jitter is None:
        jitter = max(1, int(round(JITTER * min(size))))
    check_count(jitter, "jitter", 0)
    sizes = octave_sizes(size, octaves, octave_scale)
    if min(sizes[0]) < m.min_size:
        raise ValueError(
            f"octaves={octaves} with octave_scale={octave_scale} shrinks the {size[0]}x{size[1]} "
            f"images to {sizes[0][0]}x{sizes[0][1]}; {m.arch} needs at least "
            f"{m.min_size}x{m.min_size}: use fewer octaves, a smaller octave_scale or larger images")
    key = as_key(key)
    bases = [x]
    for s in sizes[-2::-1]:
        bases.append(zoom(bases[-1], s))
    bases = bases[::-1]
    detail = jnp.zeros_like(bases[0])
    for i, base in enumerate(bases):
        if i:
            detail = zoom(detail, base.shape[1:3])
        image, scores = _octave(m, objective, jnp.clip(base + detail, 0.0, 1.0),
                                jax.random.fold_in(key, i), jnp.float32(step_size), steps=steps,
                                jitter=min(jitter, min(base.shape[1:3]) - 1))
        detail = image - base
        yield Octave(i, image, scores)


def deepdream(m, x: jax.Array, layer, *, octaves: int = 4, octave_scale: float = 1.4,
              steps: int = 10, step_size: float = STEP_SIZE, jitter: int | None = None,
              key: jax.Array | int | None = None) -> jax.Array:
    """Amplifies what `layer` sees in the images (DeepDream with octaves and detail carry-over).

    Each step rolls every image by a random offset in ±`jitter` pixels, takes the gradient of the
    objective, and moves by `step_size / mean|g| * g` (per image), clipping to [0, 1]. Octaves
    run from the smallest (the images zoomed by `1 / octave_scale ** (octaves - 1)`) to full
    size; the change made at one octave is zoomed up and added to the next octave's image.

    Args:
      m: the model.
      x: images `[N, H, W, 3]` in [0, 1]; the batch runs in one call per octave.
      layer: a layer name or alias (objective: the mean squared activation, whose normalized
        gradient is the original's ½‖A‖²), or any `ji.objectives` objective.
      octaves: number of pyramid levels (the original's 4).
      octave_scale: size ratio between levels (1.4).
      steps: steps per octave (10).
      step_size: step per unit of mean-normalized gradient, in [0, 1] pixel units; default
        1.5 / 255, the original's 1.5 in 0–255 pixels.
      jitter: largest roll in pixels (same at every octave, as in the original); default
        `round(32 / 224 * min(H, W))`, the original's 32 px scaled to the image size.
      key: PRNG key or int seed for the rolls (default 0); the same key gives the same dream.
    Returns:
      The dreamed images `[N, H, W, 3]` in [0, 1].
    """
    *_, last = dream(m, x, layer, octaves=octaves, octave_scale=octave_scale, steps=steps,
                     step_size=step_size, jitter=jitter, key=key)
    return last.images
