"""VGG in Flax with torchvision's module layout and layer names.

A `VGG` returns `(logits, feats)`: `feats` maps every torchvision layer name (`features.0`, …,
`avgpool`, `classifier.0`, …) to its output, NHWC for maps. Parameters live under the same names
with `.` replaced by `_` (`features_28`, `classifier_6`) so a torchvision state dict maps 1:1.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np

from jaxinterp.models.convs import CONVS, check_conv

CFGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
    # vgg-mini: VGG 3x3 blocks at 64x64, global-average-pool head (CAM-ready).
    "vgg-mini": (16, "M", 32, 32, "M", 64, 64, "M", 128, 128),
}


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One torchvision layer: name, kind (conv|bn|relu|pool|avgpool|dense|dropout), alias."""

    name: str
    kind: str
    alias: str | None = None
    features: int | None = None  # output channels / units for conv, bn, dense


def layer_specs(cfg: Sequence[Any], batch_norm: bool = False, head: str = "classifier",
                hidden: int = 4096, num_classes: int = 1000) -> tuple[LayerSpec, ...]:
    """Lists the layers of a VGG in torchvision order with their aliases.

    Args:
      cfg: channels per conv, "M" for a pooling layer.
      batch_norm: torchvision's `vgg*_bn` layout (conv, bn, relu).
      head: "classifier" (torchvision: avgpool 7x7, fc6, fc7, fc8) or "gap" (global average, one dense).
      hidden: width of fc6/fc7.
      num_classes: width of the last dense layer.
    Returns:
      A tuple of `LayerSpec`.
    """
    specs, i, block, conv = [], 0, 1, 0
    for v in cfg:
        if v == "M":
            specs.append(LayerSpec(f"features.{i}", "pool", f"pool{block}"))
            i, block, conv = i + 1, block + 1, 0
            continue
        conv += 1
        tag = f"{block}_{conv}"
        specs.append(LayerSpec(f"features.{i}", "conv", f"conv{tag}", int(v)))
        i += 1
        if batch_norm:
            specs.append(LayerSpec(f"features.{i}", "bn", f"bn{tag}", int(v)))
            i += 1
        specs.append(LayerSpec(f"features.{i}", "relu", f"relu{tag}"))
        i += 1
    if head == "classifier":
        specs += [
            LayerSpec("avgpool", "avgpool", None),
            LayerSpec("classifier.0", "dense", "fc6", hidden),
            LayerSpec("classifier.1", "relu", "relu6"),
            LayerSpec("classifier.2", "dropout", "drop6"),
            LayerSpec("classifier.3", "dense", "fc7", hidden),
            LayerSpec("classifier.4", "relu", "relu7"),
            LayerSpec("classifier.5", "dropout", "drop7"),
            LayerSpec("classifier.6", "dense", "fc8", num_classes),
        ]
    elif head == "gap":
        specs += [LayerSpec("avgpool", "gap", "gap"),
                  LayerSpec("classifier.0", "dense", "fc", num_classes)]
    else:
        raise ValueError(f"head must be 'classifier' or 'gap', got {head!r}")
    return tuple(specs)


def param_name(layer: str) -> str:
    """Flax parameter-collection name of a torchvision layer name (`features.0` -> `features_0`)."""
    return layer.replace(".", "_")


def adaptive_avg_pool(x: jax.Array, out: tuple[int, int]) -> jax.Array:
    """PyTorch's AdaptiveAvgPool2d on NHWC: bin i averages rows floor(iH/o) .. ceil((i+1)H/o)-1."""

    def matrix(n, o):
        m = np.zeros((o, n), np.float32)
        for i in range(o):
            lo, hi = (i * n) // o, -((-(i + 1) * n) // o)
            m[i, lo:hi] = 1.0 / (hi - lo)
        return m

    h, w = x.shape[1:3]
    if (h, w) == tuple(out):
        return x
    ph, pw = jnp.asarray(matrix(h, out[0]), x.dtype), jnp.asarray(matrix(w, out[1]), x.dtype)
    return jnp.einsum("ih,nhwc,jw->nijc", ph, x, pw)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2, stride-2 max pooling (floor mode) whose gradient goes to each window's first maximum.

    Same values and gradient as PyTorch's `MaxPool2d(2, 2)` (ties: first in row-major order, NaN
    propagates). Written as a reshape plus elementwise selection rather than `reduce_window`,
    whose gradient (`select_and_scatter`) XLA:CPU runs about 2x slower. No custom rule: every
    AD mode works.
    """
    n, h, w, c = x.shape
    win = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
    top = jax.lax.stop_gradient(win.max((2, 4)))
    eq = win == top[:, :, None, :, None]
    e = [eq[:, :, i, :, j] for i in (0, 1) for j in (0, 1)]  # row-major window order
    first = [e[0], e[1] & ~e[0], e[2] & ~(e[0] | e[1]), e[3] & ~(e[0] | e[1] | e[2])]
    d = [win[:, :, i, :, j] - jax.lax.stop_gradient(win[:, :, i, :, j])
         for i in (0, 1) for j in (0, 1)]  # zero, carrying each position's gradient
    return top + sum(jnp.where(f, di, 0) for f, di in zip(first, d))


def torch_conv_init(key, shape, dtype=jnp.float32):
    """kaiming_normal_(mode="fan_out", nonlinearity="relu"), torchvision's VGG conv init (HWIO)."""
    fan_out = shape[0] * shape[1] * shape[3]
    return jax.random.normal(key, shape, dtype) * np.sqrt(2.0 / fan_out)


class VGG(nn.Module):
    """A VGG network: conv blocks (`cfg`), then a torchvision classifier or a GAP + dense head.

    Attributes:
      cfg: channels per conv, "M" for pooling.
      num_classes: outputs of the last layer.
      head: "classifier" (AdaptiveAvgPool2d((7, 7)), fc6, fc7, fc8) or "gap".
      pool: "max" or "avg" (Gatys et al. use average pooling for texture synthesis).
      batch_norm: torchvision's `_bn` layout; BatchNorm runs on its running statistics unless
        `train=True`.
      hidden: width of fc6/fc7.
      act: the ReLU; swap in a custom_vjp rule (guided, deconv) with `module.clone(act=...)`.
      conv: "xla" (`lax.conv_general_dilated`, every AD mode) or "explicit" (`convs.explicit_conv`:
        same values, a gradient XLA:CPU runs fast inside loops, reverse mode only).
    """

    cfg: tuple = CFGS["vgg16"]
    num_classes: int = 1000
    head: str = "classifier"
    pool: str = "max"
    batch_norm: bool = False
    hidden: int = 4096
    act: Callable = nn.relu
    conv: str = "xla"

    def specs(self) -> tuple[LayerSpec, ...]:
        return layer_specs(self.cfg, self.batch_norm, self.head, self.hidden, self.num_classes)

    @nn.compact
    def __call__(self, x, train: bool = False, taps: dict | None = None, start: int = 0,
                 stop: int | None = None):
        """Returns `(logits, feats)`; `taps` maps layer names to arrays added to their outputs.

        Adding a zero tap and differentiating with respect to it gives the gradient of any
        score with respect to that layer's output (Grad-CAM, layer attribution). `start` and
        `stop` run only the layers `specs()[start:stop]`, with `x` the input of layer `start`;
        the first return value is then the output of the last layer run.
        """
        feats, taps = {}, taps or {}
        check_conv(self.conv)
        for s in self.specs()[start:stop]:
            if s.kind == "conv":
                x = nn.Conv(s.features, (3, 3), padding=1, kernel_init=torch_conv_init,
                            conv_general_dilated=CONVS[self.conv], name=param_name(s.name))(x)
            elif s.kind == "bn":
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                 name=param_name(s.name))(x)
            elif s.kind == "relu":
                x = self.act(x)
            elif s.kind == "pool":
                if self.pool == "max":
                    x = max_pool_2x2(x)
                elif self.pool == "max_window":  # one reduce_window_max: relevance rules see it
                    x = nn.max_pool(x, (2, 2), (2, 2))
                elif self.pool == "avg":
                    x = nn.avg_pool(x, (2, 2), (2, 2))
                else:
                    raise ValueError(f"pool must be 'max', 'max_window' or 'avg', got {self.pool!r}")
            elif s.kind == "avgpool":
                x = adaptive_avg_pool(x, (7, 7))
            elif s.kind == "gap":
                x = x.mean(axis=(1, 2))
            elif s.kind == "dense":
                init = nn.initializers.normal(0.01)
                if x.ndim > 2:  # NHWC flatten after avgpool; importers permute torch's CHW rows
                    x = x.reshape(x.shape[0], -1)
                x = nn.Dense(s.features, kernel_init=init, name=param_name(s.name))(x)
            elif s.kind == "dropout":
                pass  # inference: identity (kept so torchvision indices line up)
            if s.name in taps:
                x = x + taps[s.name]
            feats[s.name] = x
        return x, feats


ARCHS = tuple(sorted(CFGS) + sorted(a + "_bn" for a in CFGS if a != "vgg-mini"))


def vgg(arch: str, num_classes: int = 1000, **kw) -> VGG:
    """Builds `vgg11|13|16|19` (optionally with a `_bn` suffix) or `vgg-mini`.

    Args:
      arch: architecture name.
      num_classes: outputs of the last layer.
      **kw: any other `VGG` field (pool, act, hidden, head).
    Returns:
      A `VGG` module.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    base, bn = (arch[:-3], True) if arch.endswith("_bn") else (arch, False)
    if base == "vgg-mini":
        kw.setdefault("head", "gap")
        bn = kw.pop("batch_norm", True) or bn
    return VGG(cfg=CFGS[base], num_classes=num_classes, batch_norm=bn, **kw)
