"""Objectives to maximize (Lucid's `objectives`): `obj(feats) -> [B]`, one score per image.

`feats` is the model's feature dict (torchvision names, aliases, "logits") plus "input", the
images before transforms. Objectives compose with `+`, `-`, `*` (by a number or another
objective), `/` (by a number) and unary `-`, and print as the expression that built them:

    >>> channel("features.21", 7) - 1e-3 * total_variation()
    channel('features.21', 7) - 0.001 * total_variation()

Objectives are pytrees whose leaves are the unit indices and vectors, so `stack` turns a list of
objectives of one kind (say every channel of a layer) into one objective that `vmap` renders in
one compiled call. Scores are per image; the render loop maximizes their sum over the batch.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class Objective:
    """Base of all objectives: the arithmetic and the checks."""

    def __call__(self, feats: dict) -> jax.Array:
        raise NotImplementedError

    def leaves(self):
        """The leaf objectives (`Unit`s) this objective is built from."""
        raise NotImplementedError

    def check(self, m) -> None:
        """Raises a clear error if a layer is unknown to model `m` or a unit index out of range."""
        for leaf in self.leaves():
            leaf.check(m)

    # arithmetic -------------------------------------------------------------------------
    def __add__(self, other):
        if isinstance(other, (int, float)) and other == 0:
            return self
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum._of([(1.0, self), (1.0, other)])

    __radd__ = __add__  # so that sum([...]) works

    def __neg__(self):
        return Sum._of([(-1.0, self)])

    def __sub__(self, other):
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __mul__(self, other):
        if isinstance(other, Objective):
            return Product(self, other)
        if isinstance(other, (int, float)):
            return Sum._of([(float(other), self)])
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other):
        if isinstance(other, (int, float)):
            return self * (1.0 / other)
        return NotImplemented


def _fmt(v) -> str:
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, jax.core.Tracer):
        return "<traced>"
    a = np.asarray(v)
    if a.ndim == 0:
        return f"{a.item():g}" if a.dtype.kind == "f" else str(a.item())
    return f"<{a.dtype.name} {list(a.shape)}>"


@jax.tree_util.register_pytree_node_class
class Unit(Objective):
    """A leaf objective: `fn(feats, layer, *args, **static)` with dynamic `args` (pytree leaves).

    Attributes:
      name: the constructor's name (for the repr).
      fn: the score function.
      layer: the layer it reads ("input" for image regularizers; None: the whole feats dict).
      args: dynamic arguments: unit indices, positions, vectors (traced under jit / vmap).
      static: hashable keyword options, as a tuple of (name, value) pairs.
      index: position in `args` of a channel / class index to range-check, or None.
    """

    def __init__(self, name: str, fn: Callable, layer: str, args: tuple = (), static: tuple = (),
                 index: int | None = None):
        self.name, self.fn, self.layer, self.args = name, fn, layer, tuple(args)
        self.static, self.index = tuple(static), index

    def tree_flatten(self):
        return (self.args,), (self.name, self.fn, self.layer, self.static, self.index)

    @classmethod
    def tree_unflatten(cls, aux, children):
        name, fn, layer, static, index = aux
        return cls(name, fn, layer, children[0], static, index)

    def __call__(self, feats):
        if self.layer is None:
            return self.fn(feats, *self.args, **dict(self.static))
        if self.layer not in feats:
            raise ValueError(f"objective {self!r} reads unknown layer {self.layer!r}; "
                             f"valid: {', '.join(sorted(feats))}")
        return self.fn(feats[self.layer], *self.args, **dict(self.static))

    def leaves(self):
        return [self]

    def check(self, m):
        if self.layer in (None, "input"):
            return
        m.resolve(self.layer)
        n = m.channels(self.layer)
        if self.index is not None:
            i = self.args[self.index]
            if not isinstance(i, jax.core.Tracer):
                i = np.asarray(i)
                if not np.issubdtype(i.dtype, np.integer):
                    raise TypeError(f"{self.name}: index must be an int, got {i.dtype}")
                if i.size and (i.min() < 0 or i.max() >= n):
                    raise ValueError(f"{self.name}: index {i.tolist()} out of range; layer "
                                     f"{self.layer!r} of {m.arch} has {n} channels (0 … {n - 1})")
        vectors = [a for a in self.args if np.ndim(a) >= 1 and jnp.issubdtype(a.dtype, jnp.floating)]
        for v in vectors:  # per-channel vectors (direction): one entry per channel
            if np.shape(v)[-1] != n:
                raise ValueError(f"{self.name}: vector has {np.shape(v)[-1]} entries; layer "
                                 f"{self.layer!r} of {m.arch} has {n} channels")

    def __repr__(self):
        parts = [] if self.layer in (None, "input", "logits") else [_fmt(self.layer)]
        parts += [_fmt(a) for a in self.args if a is not None]
        parts += [f"{k}={_fmt(v)}" for k, v in self.static]
        return f"{self.name}({', '.join(parts)})"


@jax.tree_util.register_pytree_node_class
class Sum(Objective):
    """A weighted sum of objectives (weights are plain numbers, part of the structure)."""

    def __init__(self, weights: tuple, parts: tuple):
        self.weights, self.parts = tuple(weights), tuple(parts)

    @classmethod
    def _of(cls, terms):
        flat = []
        for w, o in terms:  # flatten nested sums so the repr reads as one expression
            if isinstance(o, Sum):
                flat += [(w * wi, oi) for wi, oi in zip(o.weights, o.parts)]
            else:
                flat.append((w, o))
        return cls(tuple(w for w, _ in flat), tuple(o for _, o in flat))

    def tree_flatten(self):
        return (self.parts,), self.weights

    @classmethod
    def tree_unflatten(cls, weights, children):
        return cls(weights, children[0])

    def __call__(self, feats):
        return sum(w * o(feats) for w, o in zip(self.weights, self.parts))

    def leaves(self):
        return [leaf for o in self.parts for leaf in o.leaves()]

    def __repr__(self):
        out = ""
        for i, (w, o) in enumerate(zip(self.weights, self.parts)):
            text = f"({o!r})" if isinstance(o, Sum) else repr(o)
            mag = abs(w)
            term = text if mag == 1 else f"{mag:g} * {text}"
            if i == 0:
                out = ("-" if w < 0 else "") + term
            else:
                out += (" - " if w < 0 else " + ") + term
        return out


@jax.tree_util.register_pytree_node_class
class Product(Objective):
    """The product of two objectives' scores."""

    def __init__(self, a: Objective, b: Objective):
        self.a, self.b = a, b

    def tree_flatten(self):
        return (self.a, self.b), None

    @classmethod
    def tree_unflatten(cls, _, children):
        return cls(*children)

    def __call__(self, feats):
        return self.a(feats) * self.b(feats)

    def leaves(self):
        return self.a.leaves() + self.b.leaves()

    def __repr__(self):
        wrap = lambda o: f"({o!r})" if isinstance(o, Sum) else repr(o)
        return f"{wrap(self.a)} * {wrap(self.b)}"


def as_objective(obj: Any) -> Objective:
    """Checks that `obj` is an objective (or wraps a callable `feats -> [B]`)."""
    if isinstance(obj, Objective):
        return obj
    if callable(obj):
        return Unit(getattr(obj, "__name__", "custom"), obj, None)
    raise TypeError(f"objective must be a jaxinterp objective (ji.objectives.channel(...), ...) "
                    f"or a callable feats -> [B] scores, got {type(obj).__name__}")


def stack(objectives: Sequence[Objective]) -> Objective:
    """Stacks objectives of one structure (same kinds, layers and options) along a new axis.

    Args:
      objectives: e.g. `[channel("features.21", c) for c in range(128)]`.
    Returns:
      One objective whose leaves have a leading axis of size `len(objectives)`, for `vmap`.
    """
    objectives = [as_objective(o) for o in objectives]
    if not objectives:
        raise ValueError("stack needs at least one objective")
    defs = {jax.tree_util.tree_structure(o) for o in objectives}
    if len(defs) > 1:
        raise ValueError("objectives to render together must have one structure (same kinds, "
                         f"layers and options, only indices differing); got {objectives[:3]}")
    return jax.tree_util.tree_map(lambda *a: jnp.stack([jnp.asarray(v) for v in a]), *objectives)


# ------------------------------------------------------------------------------------------
# score functions (module level, so equal objectives share one structure and one compilation)

def _neuron(a, n, y=None, x=None):
    if a.ndim == 2:
        return a[:, n]
    if a.ndim == 3:  # tokens [N, T, D]: the middle token (neuron(token=...) picks another)
        if y is not None:
            raise ValueError("neuron: this layer holds tokens [N, T, D]; pick one with token=, "
                             "not y, x")
        return a[:, a.shape[1] // 2, n]
    y = a.shape[1] // 2 if y is None else y
    x = a.shape[2] // 2 if x is None else x
    return a[:, y, x, n]


def _token_neuron(a, n, t):
    if a.ndim != 3:
        raise ValueError(f"neuron(token=...) reads a token layer [N, T, D]; this layer is "
                         f"{list(a.shape)}: use y, x")
    return a[:, t, n]


def _channel(a, n):
    a = a[..., n]  # the mean over positions: pixels [N, H, W] or tokens [N, T]
    return a if a.ndim == 1 else a.reshape(a.shape[0], -1).mean(1)


def _deepdream(a):
    return (a.reshape(a.shape[0], -1) ** 2).mean(1)


def _prob(a, n):
    return jax.nn.softmax(a, axis=-1)[:, n]


def _direction(a, vec, cossim_pow=0.0, eps=1e-6):
    a = a.reshape(a.shape[0], -1, a.shape[-1])
    dot = a @ vec.astype(a.dtype)  # [B, positions]
    if cossim_pow:
        cos = dot / (eps + jnp.linalg.norm(a, axis=-1)) / (eps + jnp.linalg.norm(vec))
        dot = dot * jnp.maximum(0.1, cos) ** cossim_pow
    return dot.mean(1)


def _diversity(a):
    f = a.reshape(a.shape[0], -1, a.shape[-1])
    grams = jnp.einsum("bpc,bpd->bcd", f, f)
    grams = grams / jnp.sqrt(jnp.maximum((grams ** 2).sum((1, 2), keepdims=True), 1e-20))
    sims = jnp.einsum("bcd,ecd->be", grams, grams)
    return -(sims.sum(1) - jnp.diagonal(sims)) / a.shape[0]


def _l1(a, constant=0.5):
    return jnp.abs(a - constant).reshape(a.shape[0], -1).sum(1)


def _l2(a, constant=0.5, epsilon=1e-6):
    return jnp.sqrt(epsilon + ((a - constant) ** 2).reshape(a.shape[0], -1).sum(1))


def _total_variation(a):
    dy = jnp.abs(a[:, 1:] - a[:, :-1]).reshape(a.shape[0], -1).sum(1)
    dx = jnp.abs(a[:, :, 1:] - a[:, :, :-1]).reshape(a.shape[0], -1).sum(1)
    return dy + dx


# ------------------------------------------------------------------------------------------
# constructors

def neuron(layer: str, channel: int, y: int | None = None, x: int | None = None, *,
           token: int | None = None) -> Unit:
    """One neuron: channel `channel` at position (y, x) of `layer` (the centre by default).

    Args:
      layer: layer name or alias.
      channel: the channel (or dense unit).
      y, x: the position; None picks the centre `(H // 2, W // 2)` of the map (on a token
        layer `[N, T, D]`, a ViT block: the token `T // 2`).
      token: on a token layer, the token (0: a ViT's class token); instead of y, x.
    Returns:
      An objective: the neuron's activation.
    """
    if (y is None) != (x is None):
        raise ValueError("neuron: give both y and x, or neither (the centre)")
    if token is not None:
        if y is not None:
            raise ValueError("neuron: give token (a token layer) or y, x (a map), not both")
        return Unit("neuron", _token_neuron, layer, (channel, token), index=0)
    args = (channel,) if y is None else (channel, y, x)
    return Unit("neuron", _neuron, layer, args, index=0)


def channel(layer: str, n: int) -> Unit:
    """The spatial mean of channel `n` of `layer` (a dense layer: unit `n`; a token layer
    `[N, T, D]`: the mean over tokens).

    Args:
      layer: layer name or alias.
      n: the channel.
    Returns:
      An objective.
    """
    return Unit("channel", _channel, layer, (n,), index=0)


def deepdream(layer: str) -> Unit:
    """The mean squared activation of a whole layer (DeepDream's objective).

    Args:
      layer: layer name or alias.
    Returns:
      An objective.
    """
    return Unit("deepdream", _deepdream, layer)


layer = deepdream


def logit(n: int) -> Unit:
    """The pre-softmax score of class `n`.

    Args:
      n: class index.
    Returns:
      An objective.
    """
    return Unit("logit", _channel, "logits", (n,), index=0)


def prob(n: int) -> Unit:
    """The softmax probability of class `n`.

    Args:
      n: class index.
    Returns:
      An objective.
    """
    return Unit("prob", _prob, "logits", (n,), index=0)


class_logit, class_probability = logit, prob


def direction(layer: str, vector: Any, cossim_pow: float = 0.0) -> Unit:
    """The dot product of every position's activation vector with `vector`, averaged.

    Args:
      layer: layer name or alias.
      vector: `[C]`, one weight per channel.
      cossim_pow: if > 0, each dot product is multiplied by max(0.1, cosine) ** cossim_pow
        (Lucid's `direction` with `cossim_pow`), favouring activations that point along it.
    Returns:
      An objective.
    """
    vector = jnp.asarray(vector, jnp.float32)
    if vector.ndim != 1:
        raise ValueError(f"direction: vector must be 1-D [channels], got shape {vector.shape}")
    static = (("cossim_pow", float(cossim_pow)),) if cossim_pow else ()
    return Unit("direction", _direction, layer, (vector,), static)


def random_direction(m, layer: str, key: jax.Array, cossim_pow: float = 0.0) -> Unit:
    """A direction objective along a random unit vector in `layer`'s channel space.

    Args:
      m: the model (for the channel count).
      layer: layer name or alias.
      key: PRNG key.
      cossim_pow: see `direction`.
    Returns:
      An objective.
    """
    v = jax.random.normal(key, (m.channels(layer),))
    return direction(layer, v / jnp.linalg.norm(v), cossim_pow)


def negative(obj: Objective) -> Objective:
    """The negative of an objective (minimize what `obj` measures)."""
    return -as_objective(obj)


def diversity(layer: str) -> Unit:
    """Dissimilarity of each image's Gram matrix at `layer` from the rest of the batch.

    Image i scores `-sum_{j != i} <G_i, G_j> / B` with L2-normalized Gram matrices; the scores sum
    to Lucid's batch diversity. Add it to an objective with batch > 1 (e.g. `... + 100 *
    diversity(layer)`).

    Args:
      layer: layer name or alias.
    Returns:
      An objective.
    """
    return Unit("diversity", _diversity, layer)


def l1(constant: float = 0.5, layer: str = "input") -> Unit:
    """Sum of |x - constant| over an image (subtract it to penalize)."""
    return Unit("l1", _l1, layer, static=(("constant", float(constant)),) if constant != 0.5 else ())


def l2(constant: float = 0.5, layer: str = "input") -> Unit:
    """sqrt(sum (x - constant)^2) over an image (subtract it to penalize)."""
    return Unit("l2", _l2, layer, static=(("constant", float(constant)),) if constant != 0.5 else ())


def total_variation(layer: str = "input") -> Unit:
    """Sum of absolute differences between neighbouring pixels (subtract it to penalize)."""
    return Unit("total_variation", _total_variation, layer)


L1, L2 = l1, l2


def _match(a, target, eps=1e-12):
    t = target.astype(a.dtype)
    err = ((a - t) ** 2).reshape(a.shape[0], -1).sum(1)
    return -err / jnp.maximum((t ** 2).reshape(t.shape[0], -1).sum(1), eps)


def match(layer: str, target: Any) -> Unit:
    """Minus the relative squared distance of `layer` to `target`: -‖A - T‖² / ‖T‖², per image.

    Feature inversion's data term (Mahendran & Vedaldi 2015). `target` is a pytree leaf, so
    inverting other images reuses the compilation.

    Args:
      layer: layer name or alias.
      target: the features to match, `[B, ...]` as the layer's output (or broadcastable to it).
    Returns:
      An objective (0 at a perfect match, negative otherwise).
    """
    return Unit("match", _match, layer, (jnp.asarray(target),))


def _tv_beta(a, beta=2.0):
    # deep-goggle's `tv` (core/invert_nn.m): d1 = x(:, [2:end end]) − x, d2 = x([2:end end], :)
    # − x (the last column / row repeated: its difference there is 0), per channel
    dx = jnp.concatenate([a[:, :, 1:] - a[:, :, :-1], jnp.zeros_like(a[:, :, :1])], 2)
    dy = jnp.concatenate([a[:, 1:] - a[:, :-1], jnp.zeros_like(a[:, :1])], 1)
    s = dx ** 2 + dy ** 2
    if beta != 2.0:  # s^(β/2) with a finite gradient where s = 0 (always at the last pixel)
        s = jnp.where(s > 0, jnp.where(s > 0, s, 1.0) ** (beta / 2), 0.0)
    return s.reshape(a.shape[0], -1).mean(1)


def tv_beta(beta: float = 2.0, layer: str = "input") -> Unit:
    """Mahendran & Vedaldi's total variation: mean over pixels and channels of (dx² + dy²)^(β/2),
    per image.

    The isotropic form of deep-goggle's `tv` (per channel; the difference past the last column
    or row is 0), divided by H·W·C; β = 2 (the paper's default) penalizes large jumps, β = 1
    allows edges. Subtract it to penalize.
    """
    return Unit("tv_beta", _tv_beta, layer, static=(("beta", float(beta)),))


def _alpha_norm(a, alpha=6.0):
    return (jnp.abs(2.0 * a - 1.0) ** alpha).reshape(a.shape[0], -1).mean(1)


def alpha_norm(alpha: float = 6.0, layer: str = "input") -> Unit:
    """Mean of |2x - 1|^α over an image in [0, 1] (Mahendran & Vedaldi's α-norm on [-1, 1] pixels).

    A large α (the paper's 6) leaves mid-range pixels alone and pushes back on saturated ones.
    Subtract it to penalize.
    """
    return Unit("alpha_norm", _alpha_norm, layer, static=(("alpha", float(alpha)),))
