"""`Model`: a Flax module, its variables and its metadata, callable as `logits, feats = m(x)`.

A `Model` is a pytree (variables are leaves; module and metadata are static), so it can be passed
through `jax.jit`, `vmap` and `grad` like any array. Every method in jaxinterp takes one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from importlib import resources
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._xla import tuned_jit
from jaxinterp.checks import check_images
from jaxinterp.models import resnet as resnet_lib
from jaxinterp.models import vgg as vgg_lib
from jaxinterp.models import vit as vit_lib


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How images in [0, 1] RGB become network input: `(x[..., order] * scale - mean) / std`.

    `mean` and `std` are given in the network's channel order (after the optional RGB->BGR flip).
    """

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    scale: float = 1.0
    channel_order: str = "RGB"

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        mean = jnp.asarray(self.mean, x.dtype)
        std = jnp.asarray(self.std, x.dtype)
        return (x * self.scale - mean) / std

    @classmethod
    def from_dict(cls, d: Any) -> "Preprocess":
        """Reads and validates the `preprocess` entry of checkpoint metadata."""
        if not isinstance(d, dict):
            raise ValueError(f"preprocess must be an object with mean, std, scale, channel_order; "
                             f"got {type(d).__name__}")
        order = d.get("channel_order", "RGB")
        if order not in ("RGB", "BGR"):
            raise ValueError(f"preprocess.channel_order must be 'RGB' or 'BGR', got {order!r}")
        out = {}
        for field in ("mean", "std"):
            v = d.get(field)
            if (not isinstance(v, (list, tuple)) or len(v) != 3
                    or not all(isinstance(c, (int, float)) and np.isfinite(c) for c in v)):
                raise ValueError(f"preprocess.{field} must be 3 finite numbers, got {v!r}")
            out[field] = tuple(float(c) for c in v)
        if min(abs(c) for c in out["std"]) == 0:
            raise ValueError(f"preprocess.std must be non-zero, got {out['std']}")
        scale = d.get("scale", 1.0)
        if not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale == 0:
            raise ValueError(f"preprocess.scale must be a finite non-zero number, got {scale!r}")
        return cls(out["mean"], out["std"], float(scale), order)


TORCHVISION = Preprocess()
CAFFE = Preprocess(mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), scale=255.0,
                   channel_order="BGR")
SHAPES = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@dataclasses.dataclass(frozen=True)
class Meta:
    """Static description of a model: architecture config, classes, input size, preprocessing."""

    arch: str
    config: tuple  # sorted (field, value) pairs of the VGG module besides cfg/act
    classes: tuple
    input_size: tuple
    preprocess: Preprocess
    extra_json: str = "{}"  # anything else (training record, source file), as JSON

    @property
    def extra(self) -> dict:
        return json.loads(self.extra_json)

    def to_dict(self) -> dict:
        return {"arch": self.arch, "config": dict(self.config), "classes": list(self.classes),
                "input_size": list(self.input_size),
                "preprocess": dataclasses.asdict(self.preprocess), "extra": self.extra}

    @classmethod
    def from_dict(cls, d: Any) -> "Meta":
        """Reads and validates checkpoint metadata; a clear `ValueError` names what is wrong."""
        if not isinstance(d, dict):
            raise ValueError(f"metadata must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("arch", "classes", "input_size", "preprocess") if k not in d]
        if missing:
            raise ValueError(f"metadata lacks {', '.join(missing)}")
        config = d.get("config", {})
        if not isinstance(d["arch"], str) or not isinstance(config, dict):
            raise ValueError("metadata arch must be a string and config an object")
        classes = d["classes"]
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ValueError("metadata classes must be a list of class names")
        size = d["input_size"]
        if (not isinstance(size, list) or len(size) != 2
                or not all(isinstance(v, int) and v > 0 for v in size)):
            raise ValueError(f"metadata input_size must be [height, width], got {size!r}")
        extra = d.get("extra", {})
        if not isinstance(extra, dict):
            raise ValueError("metadata extra must be an object")
        try:
            module = _module(d["arch"], config)
        except (TypeError, ValueError) as e:
            raise ValueError(f"metadata arch/config do not describe a model: {e}") from None
        if len(classes) != module.num_classes:
            raise ValueError(f"metadata has {len(classes)} class names for a model with "
                             f"{module.num_classes} outputs")
        return cls(d["arch"], tuple(sorted(config.items())), tuple(classes),
                   tuple(size), Preprocess.from_dict(d["preprocess"]),
                   json.dumps(extra, sort_keys=True))


class _Described:
    """Holds a model's description (classes, input size, records) in its pytree structure
    without making it part of JIT cache keys: every `_Described` equals every other.

    Two checkpoints of one architecture and preprocessing thus share compiled programs. The
    cost: a `Model` *returned* from a jitted function carries the description of the model
    that function was first traced with (see `Model`).
    """

    def __init__(self, meta):
        self.meta = meta

    def __eq__(self, other):
        return isinstance(other, _Described)

    def __hash__(self):
        return 0


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names in the standard index order (first WordNet lemma)."""
    text = resources.files("jaxinterp.data").joinpath("imagenet_classes.txt").read_text()
    return text.strip().split("\n")


ARCHS = vgg_lib.ARCHS + resnet_lib.ARCHS + vit_lib.ARCHS
SHAPES_ARCHS = ("vgg-mini", "vit-mini")  # trained on `shapes`: its classes, size, preprocessing


def _module(arch: str, config: dict):
    if arch in resnet_lib.ARCHS:
        return resnet_lib.resnet(arch, **config)
    if arch in vit_lib.ARCHS:
        return vit_lib.vit(arch, **config)
    return vgg_lib.vgg(arch, **config)


def build_module(meta: Meta):
    """The Flax module described by `meta` (a `VGG`, `ResNet` or `VisionTransformer`)."""
    return _module(meta.arch, dict(meta.config))


def assemble(module, variables, meta: Meta):
    """The model object for a built-in architecture: a VGG `Model`, or a ResNet / ViT as a
    wrapped linen module (`ji.wrap`) carrying `meta`."""
    if isinstance(module, vgg_lib.VGG):
        return Model(module, variables, meta)
    from jaxinterp.wrapped import wrap

    cam_layer = (vit_lib.default_cam_layer(module)
                 if isinstance(module, vit_lib.VisionTransformer) else None)
    return wrap(module, variables, input_size=meta.input_size, preprocess=meta.preprocess,
                classes=meta.classes, min_size=module_min_size(module), name=meta.arch,
                meta=meta, cam_layer=cam_layer)


def module_min_size(module) -> int:
    """Smallest image side the module runs on (VGG: 2**pools; ResNet: 32; ViT: its size)."""
    if isinstance(module, vgg_lib.VGG):
        return 2 ** sum(1 for v in module.cfg if v == "M")
    if isinstance(module, vit_lib.VisionTransformer):
        return module.image_size
    return 32


@tuned_jit(static_argnames=("module", "preprocess"))
def _forward(module, preprocess, variables, x, taps):
    return module.apply(variables, preprocess(x), taps=taps)


@jax.tree_util.register_pytree_node_class
class Model:
    """A VGG module with its variables and metadata.

    Call it on images in [0, 1]: `logits, feats = m(x)` with `x` float `[N, H, W, 3]` RGB; `feats`
    holds every layer's output under its torchvision name and its aliases (NHWC for maps).

    A pytree: the variables are leaves; the module and the preprocessing are static. Class
    names, input size and the source record are carried along but are not part of JIT cache
    keys, so two checkpoints of one architecture (say two imported VGG16 files) share one
    compilation. A `Model` returned *out of* a jitted function therefore carries the class
    names of the model the function was first traced with; take the returned variables with
    `m.with_variables(out.variables)` when that matters.
    """

    def __init__(self, module: vgg_lib.VGG, variables: Any, meta: Meta):
        self.module = module
        self.variables = variables
        self.meta = meta

    # pytree protocol: variables are children; static: only what changes the program (the
    # module and the preprocessing). Class names, input size and records ride along unhashed.
    def tree_flatten(self):
        return (self.variables,), (self.module, self.meta.preprocess, _Described(self.meta))

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(aux[0], children[0], aux[2].meta)

    def __call__(self, x, *, check: bool = True, taps: dict | None = None):
        """Runs the network: images `[N, H, W, 3]` in [0, 1] -> `(logits, feats)`.

        Args:
          x: float images `[N, H, W, 3]`, RGB in [0, 1].
          check: validate `x` (shape, dtype, range when concrete).
          taps: optional `{layer: array}` added to those layers' outputs (names or aliases).
        """
        if check:
            x = check_images(x, min_size=self.min_size)
        taps = {self.resolve(k): v for k, v in (taps or {}).items()}
        logits, feats = _forward(self.module, self.meta.preprocess, self.variables, x, taps)
        for alias, name in self.aliases.items():
            feats[alias] = feats[name]
        return logits, feats

    def resume(self, h, start: int, earlier: dict | None = None):
        """Runs layers `specs[start:]` on `h`, the output of layer `start - 1`.

        Args:
          h: the map (or vector) that layer `start` takes as input; no preprocessing applies.
          start: index of the first layer to run.
          earlier: maps of layers before `start` to return with the rest (by torchvision name).
        Returns:
          `(logits, feats)` as `__call__`, `feats` holding `earlier` and every layer run, with
          the aliases of those names.
        """
        logits, feats = self.module.apply(self.variables, h, start=start)
        feats = {**(earlier or {}), **feats}
        for alias, name in self.aliases.items():
            if name in feats:
                feats[alias] = feats[name]
        return logits, feats

    def with_act(self, act: Callable) -> "Model":
        """The same model and variables with every ReLU replaced by `act` (e.g. a custom_vjp rule)."""
        return Model(self.module.clone(act=act), self.variables, self.meta)

    def with_conv(self, conv: str) -> "Model":
        """The same model with convolutions of kind `conv` ("xla" or "explicit", see `VGG`;
        "dot" is accepted and is "xla" here: VGG has no 1x1 convolution)."""
        return Model(self.module.clone(conv=conv), self.variables, self.meta)

    def with_pool(self, pool: str) -> "Model":
        """The same weights with "max" or "avg" pooling (Gatys et al. use average pooling);
        "max_window" is max pooling as one `reduce_window_max` (what relevance rules recognise;
        same values, its gradient XLA:CPU runs slower)."""
        if pool not in ("max", "max_window", "avg"):
            raise ValueError(f"pool must be 'max', 'max_window' or 'avg', got {pool!r}")
        config = {**dict(self.meta.config), "pool": pool}
        meta = dataclasses.replace(self.meta, config=tuple(sorted(config.items())))
        return Model(self.module.clone(pool=pool), self.variables, meta)

    def with_variables(self, variables: Any) -> "Model":
        """The same architecture and metadata with other variables."""
        return Model(self.module, variables, self.meta)

    @property
    def params(self):
        return self.variables["params"]

    @property
    def arch(self) -> str:
        return self.meta.arch

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def num_classes(self) -> int:
        return len(self.meta.classes)

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.meta.input_size)

    @property
    def preprocess(self) -> Preprocess:
        return self.meta.preprocess

    @property
    def metadata(self) -> dict:
        return self.meta.to_dict()

    @functools.cached_property
    def specs(self) -> tuple[vgg_lib.LayerSpec, ...]:
        return self.module.specs()

    @property
    def layers(self) -> list[str]:
        """Ordered torchvision layer names, `features.0` … `classifier.6`."""
        return [s.name for s in self.specs]

    @functools.cached_property
    def aliases(self) -> dict[str, str]:
        """Alias -> torchvision name (`conv5_3` -> `features.28`, `logits` -> last layer)."""
        out = {s.alias: s.name for s in self.specs if s.alias}
        out["logits"] = self.specs[-1].name
        return out

    @property
    def min_size(self) -> int:
        return 2 ** sum(1 for s in self.specs if s.kind == "pool")

    def resolve(self, layer: str) -> str:
        """The torchvision name of `layer` (a torchvision name or an alias); unknown names raise."""
        if layer in self.aliases:
            return self.aliases[layer]
        if layer in self.layers:
            return layer
        names = ", ".join(f"{n} ({a})" if a else n
                          for n, a in ((s.name, s.alias) for s in self.specs))
        raise ValueError(f"unknown layer {layer!r} for {self.arch}; valid layers: {names}, logits")

    def channels(self, layer: str) -> int:
        """Channels of a map layer (units of a dense layer) at `layer` (name or alias)."""
        name, n = self.resolve(layer), 0
        for s in self.specs:
            n = s.features or n
            if s.name == name:
                return n
        raise AssertionError(name)

    def __repr__(self) -> str:
        n = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(self.variables))
        return (f"Model({self.arch}, {self.num_classes} classes, input {self.input_size}, "
                f"{n:,} parameters)")


@tuned_jit(static_argnames=("name",))
def layer_output(m: Model, x: jax.Array, name: str) -> jax.Array:
    """Layer `name`'s output (a torchvision name) for images `x`, unchecked; one compiled program
    per layer and shape."""
    return m(x, check=False)[1][name]


def model_meta(arch: str, num_classes: int | None = None, **config) -> Meta:
    """Default metadata for an architecture: ImageNet for VGG11-19, ResNets and ViTs, `shapes`
    for vgg-mini and vit-mini."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    if arch in SHAPES_ARCHS:
        from jaxinterp.data import shapes_dataset as shapes
        classes = list(shapes.CLASSES)
        size, pre = (shapes.SIZE, shapes.SIZE), SHAPES
    else:
        classes = imagenet_classes()
        size, pre = (224, 224), TORCHVISION
    if arch in vit_lib.ARCHS and "image_size" in config:
        size = (int(config["image_size"]),) * 2
    if num_classes is not None and num_classes != len(classes):
        classes = [f"class_{i}" for i in range(num_classes)]
    config = {"num_classes": len(classes), **config}
    _module(arch, config)  # validates arch and config
    return Meta(arch, tuple(sorted(config.items())), tuple(classes), size, pre)


def abstract_variables(module) -> Any:
    """Shapes and dtypes of the module's variables (`jax.ShapeDtypeStruct`s), without allocating."""
    n = module_min_size(module)
    x = jax.ShapeDtypeStruct((1, n, n, 3), jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), x)


@functools.cache
def _jitted_init(module):
    """One compiled initializer per architecture (cascading randomization calls it often)."""
    return jax.jit(module.init)


def init_model(arch: str, key: jax.Array | None = None, num_classes: int | None = None,
               **config):
    """A model with freshly initialized weights (torchvision's initialization of convolutions).

    Args:
      arch: `vgg11`, `vgg13`, `vgg16`, `vgg19` (optionally `_bn`), `vgg-mini`,
        `resnet18|34|50|101|152`, or `vit_b_16|vit_b_32|vit_l_16|vit_l_32|vit_h_14|vit-mini`
        (ResNets and ViTs are returned as wrapped models, `ji.wrap`).
      key: PRNG key; `jax.random.key(0)` if omitted.
      num_classes: outputs of the last layer (default 1000, or 8 for vgg-mini).
      **config: other `VGG` fields (pool="avg", hidden=...).
    Returns:
      A `Model`.
    """
    meta = model_meta(arch, num_classes, **config)
    module = build_module(meta)
    n = module_min_size(module)
    key = jax.random.key(0) if key is None else key
    variables = _jitted_init(module)(key, jnp.zeros((1, n, n, 3), jnp.float32))
    return assemble(module, variables, meta)
