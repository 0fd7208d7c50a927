"""A plain-torch VGG with torchvision's module layout (no torchvision): the parity reference."""

import torch
from torch import nn

import jaxinterp as ji
from jaxinterp.models.vgg import CFGS


class TorchVGG(nn.Module):
    """torchvision.models.VGG's layout: `features`, `avgpool`, `classifier` (or a GAP head)."""

    def __init__(self, arch, num_classes=1000, batch_norm=False, hidden=4096):
        super().__init__()
        layers, c = [], 3
        for v in CFGS[arch]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(c, v, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=False))
            c = v
        self.features = nn.Sequential(*layers)
        self.gap = arch == "vgg-mini"
        if self.gap:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.classifier = nn.Sequential(nn.Linear(c, num_classes))
        else:
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(c * 49, hidden), nn.ReLU(False), nn.Dropout(),
                nn.Linear(hidden, hidden), nn.ReLU(False), nn.Dropout(),
                nn.Linear(hidden, num_classes))

    def forward(self, x):
        """Returns logits and every layer's output, named as in torchvision."""
        feats = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            feats[f"features.{i}"] = x
        x = self.avgpool(x)
        feats["avgpool"] = x.flatten(1) if self.gap else x
        x = torch.flatten(x, 1)
        for i, layer in enumerate(self.classifier):
            x = layer(x)
            feats[f"classifier.{i}"] = x
        return x, feats


def randomize_bn(model, seed=0):
    """Gives BatchNorm layers non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def seeded_vgg(arch, seed, dense_std=0.01, bias_std=0.05, **kw):
    """A `TorchVGG` in eval mode with torchvision's init (convs kaiming fan_out, dense N(0, std)),
    non-zero biases so that biases are tested, and random BatchNorm statistics."""
    torch.manual_seed(seed)
    net = TorchVGG(arch, **kw)
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            nn.init.normal_(mod.bias, 0, bias_std)
        elif isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, 0, dense_std)
            nn.init.normal_(mod.bias, 0, bias_std)
    return randomize_bn(net, seed).eval()


class Normalized(nn.Module):
    """A torch net on images in [0, 1] (preprocessing inside, as in jaxinterp); logits only
    (`TorchVGG` returns `(logits, feats)`, other nets logits)."""

    def __init__(self, net, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        out = self.net((x - self.mean) / self.std)
        return out[0] if isinstance(out, tuple) else out


def make_pair(arch, tmp_path_factory, **kw):
    """A seeded torch VGG, its weights through .safetensors into jaxinterp, and both models."""
    from safetensors import torch as safetensors_torch

    net = seeded_vgg(arch, 0, dense_std=0.05, bias_std=0.1, **kw)
    f = tmp_path_factory.mktemp(arch) / "w.safetensors"
    safetensors_torch.save_file(net.state_dict(), str(f))
    jm = ji.import_weights(f, arch=arch)
    tm = Normalized(net, jm.preprocess.mean, jm.preprocess.std).eval()
    return jm, tm, net


def export_pair(net, arch, tmp_path_factory):
    """Like `make_pair`, for a given torch VGG (e.g. one with edited weights): exports its weights
    through .safetensors into jaxinterp; returns (jm, tm, net)."""
    from safetensors import torch as safetensors_torch

    f = tmp_path_factory.mktemp(arch) / "w.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(f))
    jm = ji.import_weights(f, arch=arch)
    tm = Normalized(net, jm.preprocess.mean, jm.preprocess.std).eval()
    return jm, tm, net


class Copy(nn.Module):
    """`x.clone()`: the same function as `nn.Identity`, but a new tensor (`nn.Identity` returns
    its input tensor itself, which leaves Captum's DeepLift hooks as they were; see
    `identity_before_maxpool`)."""

    def forward(self, x):
        return x.clone()


def identity_before_maxpool(net):
    """A copy of a `TorchVGG` (same weights) with an identity module (`Copy`) before every
    MaxPool in `features`, for Captum's DeepLift. Captum hooks each nonlinearity's input and
    output *tensors*; when a ReLU module's output tensor is a MaxPool module's input, the ReLU's
    hook records the plain (pre-rule) gradient, so the MaxPool rule is lost. A module that
    returns a new tensor in between restores it (a plain `nn.Identity` does not: it returns the
    same tensor). Only the `features.N` numbering changes."""
    import copy

    twin = copy.deepcopy(net)
    layers = []
    for layer in twin.features:
        if isinstance(layer, nn.MaxPool2d):
            layers.append(Copy())
        layers.append(layer)
    twin.features = nn.Sequential(*layers)
    return twin.eval()


class Logits(nn.Module):
    """A torch net's logits alone (`TorchVGG` returns `(logits, feats)`; zennit's attributor
    and Captum need the logits)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        out = self.net(x)
        return out[0] if isinstance(out, tuple) else out
