"""A plain-torch ResNet with torchvision's module layout and state-dict names (no torchvision):
the parity reference. Each ReLU is its own module (torchvision shares one `self.relu` per
block), so that Captum's hook-based rules see every use."""

import torch
from torch import nn

from jaxinterp.models.resnet import LAYERS


class Downsample(nn.Sequential):
    def __init__(self, c_in, c_out, stride):
        super().__init__(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class Basic(nn.Module):
    expansion = 1

    def __init__(self, c_in, planes, stride, down):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.downsample = Downsample(c_in, planes, stride) if down else None

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in, planes, stride, down):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.downsample = Downsample(c_in, planes * 4, stride) if down else None

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + (self.downsample(x) if self.downsample is not None else x))


class TorchResNet(nn.Module):
    def __init__(self, arch, num_classes=1000):
        super().__init__()
        kind, layers = LAYERS[arch]
        block = Basic if kind == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                down = j == 0 and (stride != 1 or c != planes * block.expansion)
                blocks.append(block(c, planes, stride if j == 0 else 1, down))
                c = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def seeded_resnet(arch, seed, num_classes=10):
    """A `TorchResNet` in eval mode: kaiming convs, random BatchNorm statistics and affine
    parameters (so that every BatchNorm term is tested), a random fc."""
    torch.manual_seed(seed)
    net = TorchResNet(arch, num_classes)
    g = torch.Generator().manual_seed(seed)
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(mod, nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            mod.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
        elif isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, 0, 0.05)
            nn.init.normal_(mod.bias, 0, 0.1)
    return net.eval()



def identity_before_maxpool(net):
    """A copy of a `TorchResNet` (same weights) with an identity module that returns a new tensor
    (`torch_vgg.Copy`) between the stem's ReLU and MaxPool (`maxpool` becomes
    `Sequential(Copy, MaxPool2d)`): Captum's DeepLift hooks lose the MaxPool rule when a ReLU
    module's output tensor is a MaxPool module's input (see `torch_vgg.identity_before_maxpool`)."""
    import copy

    from torch_vgg import Copy

    twin = copy.deepcopy(net)
    twin.maxpool = nn.Sequential(Copy(), twin.maxpool)
    return twin.eval()
