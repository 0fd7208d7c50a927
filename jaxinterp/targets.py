"""What a score is: a class per example, or any function of `(logits, feats)`."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_pytree_node_class
class Target:
    """A score per example: `logits[i, index[i]]`, or `fn(logits, feats)` -> `[N]`.

    A pytree: class indices are traced (new indices do not recompile), the function is static.
    """

    def __init__(self, index: Any = None, fn: Callable | None = None):
        self.index, self.fn = index, fn

    def tree_flatten(self):
        return (self.index,), self.fn

    @classmethod
    def tree_unflatten(cls, fn, children):
        return cls(children[0], fn)

    def __call__(self, logits, feats):
        if self.fn is not None:
            return self.fn(logits, feats)
        return jnp.take_along_axis(logits, self.index[:, None], axis=1)[:, 0]


def as_target(m, target: Any, n: int) -> Target:
    """Checks a user target (int, int array [N], callable or `Target`) against model `m`."""
    if isinstance(target, Target):
        return target
    if callable(target):
        return Target(fn=target)
    if target is None:
        raise ValueError("target is required: a class index, an int array [N], or a callable "
                         "(logits, feats) -> [N] scores")
    traced = isinstance(target, jax.core.Tracer)
    t = target if traced else np.asarray(target)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(f"target must be an int class index or int array, got dtype {t.dtype}")
    if t.ndim == 0:
        t = jnp.broadcast_to(t, (n,)) if traced else np.broadcast_to(t, (n,))
    if t.shape != (n,):
        raise ValueError(f"target must be an int or an int array of shape ({n},), got {t.shape}")
    if traced:
        return Target(index=t.astype(jnp.int32))
    bad = t[(t < 0) | (t >= m.num_classes)]
    if bad.size:
        raise ValueError(f"target {bad.tolist()} out of range: {m.arch} has {m.num_classes} "
                         f"classes (0 … {m.num_classes - 1})")
    return Target(index=jnp.asarray(t.astype(np.int32)))


@dataclasses.dataclass(frozen=True)
class unit:  # noqa: N801 — used like a function: ji.targets.unit("conv5_3", 9)
    """A target reading one unit: a channel's spatial mean, or the neuron at `(y, x)`.

    Equal units compare equal, so reusing `unit(...)` targets never recompiles.

    Attributes:
      layer: layer name or alias (`features.28`, `conv5_3`, `fc7`).
      channel: channel of a map (or unit of a dense layer).
      y, x: a spatial position; None averages over the map.
    """

    layer: str
    channel: int
    y: int | None = None
    x: int | None = None

    def __call__(self, logits, feats):
        if self.layer not in feats:
            raise ValueError(f"unknown layer {self.layer!r}; valid: {', '.join(sorted(feats))}")
        a = feats[self.layer][..., self.channel]
        if a.ndim == 1:
            return a
        return a.mean((1, 2)) if self.y is None else a[:, self.y, self.x]
