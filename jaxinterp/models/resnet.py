"""ResNet-18/34/50/101/152 in Flax with torchvision's module layout and parameter names.

Submodules carry torchvision's names (`conv1`, `bn1`, `layer4/1/conv2`, `layer1/0/downsample/0`,
`fc`), so a torchvision state dict maps 1:1 (`layer4.1.conv2.weight` -> params
`layer4/1/conv2/kernel`, OIHW -> HWIO) and `ji.wrap` lists the same names as layers. ReLUs are
functional (`nn.relu`), as in torchvision's shared `self.relu`: guided backprop and DeconvNet
reach them by rewriting the traced function. BatchNorm runs on its running statistics.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.models.convs import CONVS, check_conv

LAYERS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
          "resnet50": ("bottleneck", (3, 4, 6, 3)), "resnet101": ("bottleneck", (3, 4, 23, 3)),
          "resnet152": ("bottleneck", (3, 8, 36, 3))}
ARCHS = tuple(LAYERS)


def _conv_init(key, shape, dtype=jnp.float32):
    """kaiming_normal_(mode="fan_out", nonlinearity="relu"), torchvision's ResNet conv init."""
    return jax.random.normal(key, shape, dtype) * np.sqrt(2.0 / (shape[0] * shape[1] * shape[3]))


def _conv(features, size, stride=1, name=None, conv="dot"):
    pad = (size - 1) // 2
    return nn.Conv(features, (size, size), (stride, stride), ((pad, pad), (pad, pad)),
                   use_bias=False, kernel_init=_conv_init, conv_general_dilated=CONVS[conv],
                   name=name)


def _window_max(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                 ((0, 0), (1, 1), (1, 1), (0, 0)))


@jax.custom_jvp
def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """torchvision's `MaxPool2d(3, 2, padding=1)` (one `reduce_window_max`, which the relevance
    rules recognise) whose derivative is each window's first maximum (row-major: PyTorch's
    ties; a NaN window's first NaN), written as nine strided taps.

    Same values and gradient as `nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))`, whose
    gradient (`select_and_scatter`) XLA:CPU ran 7x slower in isolation (31 against 4.2 ms on
    two ResNet-50 images; 6 % of a whole saliency call). A `custom_jvp`: every AD mode works.
    """
    return _window_max(x)


@max_pool_3x3_s2.defjvp
def _max_pool_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = _window_max(x)
    ho, wo = y.shape[1:3]
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    xp, dxp = jnp.pad(x, pad, constant_values=-jnp.inf), jnp.pad(dx, pad)
    parts, taken = [], jnp.zeros(y.shape, bool)
    for i in range(3):
        for j in range(3):
            tap = (slice(None), slice(i, i + 2 * ho - 1, 2), slice(j, j + 2 * wo - 1, 2))
            t = xp[tap]
            first = ((t == y) | (jnp.isnan(t) & jnp.isnan(y))) & ~taken
            taken = taken | first
            parts.append(jnp.where(first, dxp[tap], 0))
    return y, sum(parts)  # one tap per window: a sum of disjoint selections


POOLS = ("max", "max_window")


def _bn(name):
    return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5, name=name)


class Downsample(nn.Module):
    """torchvision's `downsample`: a strided 1x1 convolution (`0`) and BatchNorm (`1`)."""

    features: int
    stride: int
    conv: str = "dot"

    @nn.compact
    def __call__(self, x):
        return _bn("1")(_conv(self.features, 1, self.stride, "0", self.conv)(x))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and the identity (ResNet-18/34)."""

    planes: int
    stride: int = 1
    downsample: bool = False
    conv: str = "dot"
    expansion = 1

    @nn.compact
    def __call__(self, x):
        out = nn.relu(_bn("bn1")(_conv(self.planes, 3, self.stride, "conv1", self.conv)(x)))
        out = _bn("bn2")(_conv(self.planes, 3, 1, "conv2", self.conv)(out))
        identity = Downsample(self.planes, self.stride, self.conv, name="downsample")(x) \
            if self.downsample else x
        return nn.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1, 3x3 (strided, torchvision's "v1.5") and 1x1 convolutions (ResNet-50/101/152)."""

    planes: int
    stride: int = 1
    downsample: bool = False
    conv: str = "dot"
    expansion = 4

    @nn.compact
    def __call__(self, x):
        out = nn.relu(_bn("bn1")(_conv(self.planes, 1, 1, "conv1", self.conv)(x)))
        out = nn.relu(_bn("bn2")(_conv(self.planes, 3, self.stride, "conv2", self.conv)(out)))
        out = _bn("bn3")(_conv(self.planes * 4, 1, 1, "conv3", self.conv)(out))
        identity = Downsample(self.planes * 4, self.stride, self.conv, name="downsample")(x) \
            if self.downsample else x
        return nn.relu(out + identity)


class Stage(nn.Module):
    """torchvision's `layer1` … `layer4`: blocks named `0`, `1`, …"""

    block: str
    planes: int
    blocks: int
    stride: int
    in_planes: int
    conv: str = "dot"

    @nn.compact
    def __call__(self, x):
        cls = BasicBlock if self.block == "basic" else Bottleneck
        down = self.stride != 1 or self.in_planes != self.planes * cls.expansion
        for i in range(self.blocks):
            x = cls(self.planes, self.stride if i == 0 else 1, down and i == 0, self.conv,
                    name=str(i))(x)
        return x


class ResNet(nn.Module):
    """A torchvision ResNet: `conv1, bn1, relu, maxpool, layer1..4, avgpool, fc`; returns logits.

    Attributes:
      block: "basic" or "bottleneck".
      layers: blocks per stage.
      num_classes: outputs of `fc`.
      conv: "dot" (1x1 convolutions as matmuls, `convs.pointwise_conv`: about 2x XLA:CPU's
        1x1 convolution, forward and backward; every AD mode), "xla" (every convolution as
        `lax.conv_general_dilated`: what the relevance rules take) or "explicit"
        (`convs.explicit_conv`: input gradients written as stride-1 convolutions, about 2x
        faster inside loops on the CPU; reverse mode only; methods that loop pick it).
        Same values (to float rounding).
      pool: "max" (`max_pool_3x3_s2`: its derivative as nine taps, a fast gradient) or
        "max_window" (flax's `nn.max_pool`); same values and gradient.
    """

    block: str = "basic"
    layers: Sequence[int] = (2, 2, 2, 2)
    num_classes: int = 1000
    conv: str = "dot"
    pool: str = "max"

    @nn.compact
    def __call__(self, x):
        check_conv(self.conv)
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        x = nn.relu(_bn("bn1")(_conv(64, 7, 2, "conv1", self.conv)(x)))
        x = max_pool_3x3_s2(x) if self.pool == "max" else \
            nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
        expansion = 1 if self.block == "basic" else 4
        in_planes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), self.layers)):
            x = Stage(self.block, planes, n, 1 if i == 0 else 2, in_planes, self.conv,
                      name=f"layer{i + 1}")(x)
            in_planes = planes * expansion
        x = x.mean((1, 2))  # AdaptiveAvgPool2d((1, 1)) + flatten
        return nn.Dense(self.num_classes, name="fc")(x)


def resnet(arch: str, num_classes: int = 1000) -> ResNet:
    """Builds `resnet18|34|50|101|152`."""
    if arch not in LAYERS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    block, layers = LAYERS[arch]
    return ResNet(block, tuple(layers), num_classes)


def convert_torch(state: dict, module: ResNet) -> dict:
    """torchvision ResNet state dict -> Flax variables (keys not in the architecture are kept,
    under their torch names, for the mismatch report)."""
    want = jax.eval_shape(module.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    variables, used = {"params": {}, "batch_stats": {}}, set()

    def put(collection, path, leaf, key):
        used.add(key)
        if key not in state:
            return
        w = np.asarray(state[key])
        if leaf == "kernel":  # conv OIHW -> HWIO, dense (out, in) -> (in, out)
            w = w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T
        d = variables[collection]
        for p in path:
            d = d.setdefault(p, {})
        d[leaf] = w

    names = {("params", "kernel"): "weight", ("params", "scale"): "weight",
             ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
             ("batch_stats", "var"): "running_var"}
    for path, _ in jax.tree_util.tree_flatten_with_path(want)[0]:
        keys = [str(getattr(k, "key", k)) for k in path]
        collection, mods, leaf = keys[0], keys[1:-1], keys[-1]
        put(collection, mods, leaf, ".".join(mods + [names[collection, leaf]]))
        if collection == "batch_stats" and leaf == "mean":
            used.add(".".join(mods + ["num_batches_tracked"]))
    for k in state:
        if k not in used:
            variables["params"][k] = state[k]
    return variables
