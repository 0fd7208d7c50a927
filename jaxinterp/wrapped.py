"""`ji.wrap`: a user's own model — a Flax linen module, an NNX module or a plain function — made
into something every jaxinterp method accepts, like the built-in VGG `Model`.

Layer names come from the module tree: the output of every submodule's `__call__`, under its
path (`layer4/1/conv2`; `layer4.1.conv2` is accepted too). A plain function names its layers by
returning `(logits, {name: array})`. Guided backprop, DeconvNet and Lucid's redirected ReLU
reach every ReLU by rewriting the traced function (`rules.rewrite`), not by hooks.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import rules
from jaxinterp._xla import tuned_jit
from jaxinterp.checks import check_images

_RECORDER = threading.local()


def _record(path: str, out):
    """Called with every submodule output while a wrapped model runs: stores it, adds taps."""
    rec = getattr(_RECORDER, "current", None)
    if rec is None or not path or not isinstance(out, jax.Array) and not hasattr(out, "aval"):
        return out
    feats, taps, seen = rec
    n = seen.get(path, 0)
    seen[path] = n + 1
    name = path if n == 0 else f"{path}:{n}"  # a module called again: path:1, path:2, ...
    if name in taps:
        out = out + taps[name]
    feats[name] = out
    return out


class _Recording:
    def __init__(self, taps):
        self.feats, self.taps, self.seen = {}, taps, {}

    def __enter__(self):
        self.previous = getattr(_RECORDER, "current", None)
        _RECORDER.current = (self.feats, self.taps, self.seen)
        return self.feats

    def __exit__(self, *exc):
        _RECORDER.current = self.previous


@dataclasses.dataclass(frozen=True)
class LinenApply:
    """`module.apply(variables, x, **kwargs)` with every submodule output recorded."""

    module: Any
    kwargs: tuple = ()

    def __call__(self, variables, x):
        import flax.linen as nn

        def intercept(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name != "__call__":
                return out
            return _record("/".join(context.module.scope.path), out)

        with nn.intercept_methods(intercept):
            return self.module.apply(variables, x, **dict(self.kwargs))


@functools.lru_cache(maxsize=None)
def _recording_class(cls):
    """A subclass of NNX module class `cls` whose `__call__` output is recorded by path."""

    def __call__(self, *args, **kwargs):
        return _record(self._jaxinterp_path, super(sub, self).__call__(*args, **kwargs))

    sub = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__})
    return sub


@dataclasses.dataclass(frozen=True)
class NNXApply:
    """`nnx.merge(graphdef, state)(x)` with every submodule output recorded."""

    graphdef: Any

    def __call__(self, state, x):
        from flax import nnx

        model = nnx.merge(self.graphdef, state)
        for path, sub in nnx.iter_graph(model):
            if path and isinstance(sub, nnx.Module):
                object.__setattr__(sub, "_jaxinterp_path", "/".join(str(p) for p in path))
                object.__setattr__(sub, "__class__", _recording_class(type(sub)))
        return model(x)


@dataclasses.dataclass(frozen=True)
class FunctionApply:
    """A plain `fn(params, x) -> logits` or `-> (logits, {name: array})`."""

    fn: Callable

    def __call__(self, params, x):
        out = self.fn(params, x)
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict):
            return out
        return out, {}


@dataclasses.dataclass(frozen=True)
class Info:
    """What a wrapped model says of itself: class names, input size, minimum image side."""

    classes: tuple | None
    input_size: tuple | None
    min_size: int
    name: str
    meta: Any = None  # a built-in architecture's `Meta` (what `save_model` writes)
    cam_layer: str | None = None  # the layer CAMs take by default
    cache: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)


class _Unhashed:
    """Carries `Info` in the pytree structure without entering JIT cache keys (see `Model`)."""

    def __init__(self, info):
        self.info = info

    def __eq__(self, other):
        return isinstance(other, _Unhashed)

    def __hash__(self):
        return 0


def _forward_fn(apply, preprocess, act):
    """`(variables, x, taps) -> (logits, feats)` for an apply object, rule and preprocessing."""

    def run(variables, x, taps):
        inputs = preprocess(x) if preprocess is not None else x
        if isinstance(apply, FunctionApply):
            return apply(variables, inputs)
        with _Recording(taps) as feats:
            logits = apply(variables, inputs)
        return logits, dict(feats)

    if isinstance(apply, FunctionApply):  # its layers take taps through the jaxpr
        def tapped(variables, x, taps):
            if not taps and act is None:
                return run(variables, x, taps)
            return rules.rewrite(run, act, (lambda out: out[1], taps))(variables, x, taps)
        return tapped
    if act is None:
        return run
    return lambda variables, x, taps: rules.rewrite(run, act)(variables, x, taps)


@tuned_jit(static_argnames=("apply", "preprocess", "act"))
def _forward(apply, preprocess, act, variables, x, taps):
    return _forward_fn(apply, preprocess, act)(variables, x, taps)


@jax.tree_util.register_pytree_node_class
class Wrapped:
    """A user's model as jaxinterp methods take it: `logits, feats = m(x)` on images in [0, 1].

    A pytree: the variables are leaves; the apply function, preprocessing and ReLU rule are
    static; class names and input size ride along outside JIT cache keys.
    """

    def __init__(self, apply, variables, preprocess=None, act=None, info: Info | None = None):
        self.apply, self.variables, self.preprocess_fn, self.act = apply, variables, preprocess, act
        self.info = info or Info(None, None, 1, "model")

    def tree_flatten(self):
        return (self.variables,), (self.apply, self.preprocess_fn, self.act, _Unhashed(self.info))

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(aux[0], children[0], aux[1], aux[2], aux[3].info)

    def __call__(self, x, *, check: bool = True, taps: dict | None = None):
        """Runs the model: images `[N, H, W, 3]` in [0, 1] -> `(logits, feats)`.

        Args:
          x: float images `[N, H, W, C]` in [0, 1].
          check: validate `x` (shape, dtype, range when concrete).
          taps: optional `{layer: array}` added to those layers' outputs.
        """
        if check:
            x = check_images(x, min_size=self.min_size)
        taps = {self.resolve(k): v for k, v in (taps or {}).items()}
        logits, feats = _forward(self.apply, self.preprocess_fn, self.act, self.variables, x,
                                 taps)
        return logits, {**feats, "logits": logits}

    def with_act(self, act: Callable) -> "Wrapped":
        """The same model with every ReLU given `act`'s backward rule (`rules.rewrite`)."""
        return Wrapped(self.apply, self.variables, self.preprocess_fn, act, self.info)

    @property
    def resnet(self):
        """The module when it is jaxinterp's ResNet (its conv / pool variants), else None."""
        from jaxinterp.models.resnet import ResNet

        module = getattr(self.apply, "module", None)
        return module if isinstance(module, ResNet) else None

    def _with_module(self, **changes) -> "Wrapped":
        module = self.resnet
        if all(getattr(module, k) == v for k, v in changes.items()):
            return self
        apply = dataclasses.replace(self.apply, module=module.clone(**changes))
        return Wrapped(apply, self.variables, self.preprocess_fn, self.act, self.info)

    def with_conv(self, conv: str) -> "Wrapped":
        """The same model with convolutions of kind `conv` ("xla", "dot" or "explicit", see
        `ResNet`) where the module is jaxinterp's ResNet; any other model is returned as it is."""
        from jaxinterp.models.convs import check_conv

        check_conv(conv)
        return self if self.resnet is None else self._with_module(conv=conv)

    def with_variables(self, variables: Any) -> "Wrapped":
        return Wrapped(self.apply, variables, self.preprocess_fn, self.act, self.info)

    def with_pool(self, pool: str) -> "Wrapped":
        """jaxinterp's ResNet with its max pooling as "max" (nine taps) or "max_window" (one
        `reduce_window_max`); other wrapped models run as written."""
        from jaxinterp.models.resnet import POOLS

        if self.resnet is None:
            raise ValueError("with_pool swaps the pooling of jaxinterp's VGG and ResNet; a "
                             "wrapped model runs as written")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
        return self._with_module(pool=pool)

    # -- description -------------------------------------------------------------------
    @property
    def arch(self) -> str:
        return self.info.name

    @property
    def meta(self):
        """The checkpoint metadata of a built-in architecture (ResNet); user models have none."""
        if self.info.meta is None:
            raise ValueError(f"{self.arch} is a user's model: save_model writes jaxinterp's own "
                             "architectures; save its variables with orbax directly")
        return self.info.meta

    @property
    def min_size(self) -> int:
        return self.info.min_size

    @property
    def input_size(self) -> tuple[int, int]:
        if self.info.input_size is None:
            raise ValueError(f"{self.arch} has no input size: pass input_size= to ji.wrap")
        return tuple(self.info.input_size)

    @property
    def preprocess(self):
        return self.preprocess_fn

    @property
    def _probe(self):
        """Shapes of the logits and of every layer at the input size (224² if none given)."""
        if "probe" not in self.info.cache:
            self.info.cache["probe"] = self._shapes()
        return self.info.cache["probe"]

    def _shapes(self):
        size = self.info.input_size or (224, 224)
        x = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
        order = []

        def run(v, x):
            logits, feats = _forward_fn(self.apply, self.preprocess_fn, None)(v, x, {})
            order.extend(feats)  # call order (the returned dict comes back key-sorted)
            return logits, feats

        try:
            logits, feats = jax.eval_shape(run, self.variables, x)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"could not run {self.arch} on a {size[0]}x{size[1]} image to list "
                             f"its layers ({type(e).__name__}: {e}); pass input_size= to "
                             "ji.wrap") from e
        return logits, {name: feats[name] for name in order}

    @property
    def classes(self) -> list[str]:
        if self.info.classes is not None:
            return list(self.info.classes)
        return [f"class_{i}" for i in range(self._probe[0].shape[-1])]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def layers(self) -> list[str]:
        """Layer names in the order their outputs are computed (a module after its children)."""
        return list(self._probe[1])

    def resolve(self, layer: str) -> str:
        """The name of `layer` (`a/b/c`, `a.b.c` or "logits"); unknown names raise."""
        if layer == "logits" or layer in self.layers:
            return layer
        if isinstance(layer, str) and layer.replace(".", "/") in self.layers:
            return layer.replace(".", "/")
        raise ValueError(f"unknown layer {layer!r} for {self.arch}; valid layers: "
                         f"{', '.join(self.layers)}, logits")

    def output_shape(self, layer: str) -> tuple:
        """Shape of `layer`'s output for one image at the input size (224² if none given)."""
        name = self.resolve(layer)
        return tuple((self._probe[0] if name == "logits" else self._probe[1][name]).shape)

    def channels(self, layer: str) -> int:
        """Channels (last axis) of `layer`'s output."""
        return int(self.output_shape(layer)[-1])

    def default_layer(self) -> str:
        """The layer CAMs take by default: `cam_layer` given to `wrap` (a ViT: the last
        block's `ln_1`), else the last layer whose output is a spatial map `[N, h, w, C]`."""
        if self.info.cam_layer is not None:
            return self.resolve(self.info.cam_layer)
        maps = [n for n, s in self._probe[1].items() if len(s.shape) == 4]
        if not maps:
            raise ValueError(f"{self.arch} records no spatial layer (no [N, h, w, C] output); "
                             "pass layer=")
        return maps[-1]

    def __repr__(self) -> str:
        n = sum(int(np.prod(np.shape(v))) for v in jax.tree_util.tree_leaves(self.variables))
        return f"Wrapped({self.arch}, {len(self.layers)} layers, {n:,} parameters)"


def wrap(model, variables=None, *, input_size=None, preprocess=None, classes=None,
         min_size: int = 1, kwargs: dict | None = None, name: str | None = None,
         meta=None, cam_layer: str | None = None) -> Wrapped:
    """Makes a user's model usable by every jaxinterp method.

    Args:
      model: a Flax linen module (with `variables`), an NNX module (its state is read now), or
        a function `fn(params, x) -> logits` or `-> (logits, {layer: array})` (with `variables`
        as `params`).
      variables: the linen variables / the function's params; None for an NNX module.
      input_size: `(height, width)` the model expects (needed by inversion and the CLI; also
        the size at which layers are listed, 224² if omitted).
      preprocess: function from images in [0, 1] to the model's input (e.g. a
        `ji.Preprocess`); None passes images as they are. Hashable (a module-level function or
        a frozen dataclass) so that compiled programs are reused.
      classes: class names; `class_i` if omitted.
      min_size: smallest image side the model accepts (a clear error below it).
      kwargs: keyword arguments for a linen module's `apply` (e.g. `{"train": False}`).
      name: what messages call the model (default: its class or function name).
      meta: for jaxinterp's own architectures (ResNet, ViT): the checkpoint metadata.
      cam_layer: the layer Grad-CAM and the CAM family take when none is given (default: the
        last layer with a spatial `[N, h, w, C]` output). A token layer `[N, T, D]` is turned
        into its patch grid by the CAMs (see `ji.grad_cam`).
    Returns:
      A `Wrapped` model.
    """
    import flax.linen as nn

    if isinstance(model, nn.Module):
        if variables is None:
            raise ValueError("a linen module needs its variables: ji.wrap(module, variables)")
        apply = LinenApply(model, tuple(sorted((kwargs or {}).items())))
        default_name = type(model).__name__
    elif _is_nnx(model):
        from flax import nnx

        if variables is not None:
            raise ValueError("an NNX module carries its own state; call ji.wrap(module)")
        graphdef, variables = nnx.split(model)
        apply, default_name = NNXApply(graphdef), type(model).__name__
    elif callable(model):
        if variables is None:
            raise ValueError("a function needs its params: ji.wrap(fn, params)")
        apply, default_name = FunctionApply(model), getattr(model, "__name__", "function")
    else:
        raise TypeError(f"cannot wrap a {type(model).__name__}: pass a linen module, an NNX "
                        "module or a function (params, x) -> logits")
    if kwargs and not isinstance(apply, LinenApply):
        raise ValueError("kwargs= applies to linen modules only")
    if input_size is not None:
        if (len(tuple(input_size)) != 2
                or not all(isinstance(v, (int, np.integer)) and v > 0 for v in input_size)):
            raise ValueError(f"input_size must be (height, width), got {input_size!r}")
        input_size = tuple(int(v) for v in input_size)
    if preprocess is not None:
        try:
            hash(preprocess)
        except TypeError:
            raise TypeError("preprocess must be hashable (a function or a frozen dataclass), so "
                            "that compiled programs can be reused") from None
    info = Info(tuple(classes) if classes is not None else None, input_size, int(min_size),
                name or default_name, meta=meta, cam_layer=cam_layer)
    m = Wrapped(apply, variables, preprocess, None, info)
    if classes is not None and len(classes) != m._probe[0].shape[-1]:
        raise ValueError(f"classes has {len(classes)} names for a model with "
                         f"{m._probe[0].shape[-1]} outputs")
    return m


def _is_nnx(model) -> bool:
    try:
        from flax import nnx
    except ImportError:
        return False
    return isinstance(model, nnx.Module)
