"""What a score is: a class per example, or any function of `(logits, feats)`."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.checks import guarded, is_traced


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
    traced = is_traced(target)
    t = jnp.asarray(target) if traced else np.asarray(target)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(f"target must be an int class index or int array, got dtype {t.dtype}")
    if t.ndim == 0:
        t = jnp.broadcast_to(t, (n,)) if traced else np.broadcast_to(t, (n,))
    if t.shape != (n,):
        raise ValueError(f"target must be an int or an int array of shape ({n},), got {t.shape}")
    k = m.num_classes

    def problem(lo, hi):
        lo, hi = int(np.min(lo)), int(np.max(hi))
        if lo < 0 or hi >= k:
            bad = lo if lo < 0 else hi
            return (f"target {bad} out of range: {m.arch} has {k} classes (0 … {k - 1})")
        return None

    if traced:  # checked when the program runs (checks.guarded)
        t = t.astype(jnp.int32)
        return Target(index=guarded(t, problem, t.min(), t.max()))
    bad = t[(t < 0) | (t >= k)]
    if bad.size:
        raise ValueError(f"target {bad.tolist()} out of range: {m.arch} has {k} "
                         f"classes (0 … {k - 1})")
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

    def __post_init__(self):
        for field in ("channel", "y", "x"):
            v = getattr(self, field)
            if v is not None and (not isinstance(v, numbers.Integral) or isinstance(v, bool)
                                  or v < 0):
                raise ValueError(f"unit {field} must be a non-negative int, got {v!r}")
        if (self.y is None) != (self.x is None):
            raise ValueError("unit needs both y and x (a neuron) or neither (a channel mean)")

    def __call__(self, logits, feats):
        if self.layer not in feats:
            raise ValueError(f"unknown layer {self.layer!r}; valid: {', '.join(sorted(feats))}")
        a = feats[self.layer]
        if self.channel >= a.shape[-1]:
            raise ValueError(f"unit channel {self.channel} out of range: {self.layer} has "
                             f"{a.shape[-1]} channels (0 … {a.shape[-1] - 1})")
        a = a[..., self.channel]
        if a.ndim == 1:
            if self.y is not None:
                raise ValueError(f"{self.layer} has no spatial positions; omit y and x")
            return a
        if self.y is None:
            return a.mean((1, 2))
        if self.y >= a.shape[1] or self.x >= a.shape[2]:
            raise ValueError(f"unit position ({self.y}, {self.x}) out of range: {self.layer} is "
                             f"{a.shape[1]}x{a.shape[2]}")
        return a[:, self.y, self.x]
