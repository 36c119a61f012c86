"""CNN backbones: torchvision-compatible ResNets in plain torch, and a small fast CNN.

The ResNets reproduce torchvision's module names (``conv1``, ``bn1``, ``layer1.0.conv1``, …,
``layer4.x.downsample.0/1``, ``fc``) so its state dicts load without renaming, while torchvision
itself stays out of the dependencies (its only release for torch 2.13 is a CUDA build that fails
to import against the CPU torch). Every backbone maps ``(B, C, H, W)`` to pooled features
``(B, num_features)``; ``fc`` exists only when ``num_classes`` is given.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from pimc.core.errors import ConfigError

__all__ = [
    "BACKBONES",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "SmallCNN",
    "build_backbone",
    "resnet18",
    "resnet34",
    "resnet50",
]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convs with identity shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, inplanes, H, W)`` to ``(B, planes, H/stride, W/stride)``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 → 1×1 block (ResNet-50); stride sits on the 3×3 conv as in torchvision (V1.5)."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, inplanes, H, W)`` to ``(B, 4·planes, H/stride, W/stride)``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet returning global-average-pooled features.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: Blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        in_channels: Input bands C; only ``conv1.weight``'s shape depends on it.
        num_classes: When given, adds ``fc`` and returns logits ``(B, num_classes)``.
        small_input: Run ``conv1`` with stride 1 and skip the max-pool. The 7×7 kernel is kept so
            state dicts stay interchangeable, but a 9×9 patch is no longer reduced to a single
            pixel before ``layer1`` (total stride 8 instead of 32).

    Shapes:
        ``(B, C, H, W)`` → ``(B, num_features)`` (or ``(B, num_classes)`` with ``fc``).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        in_channels: int = 3,
        num_classes: int | None = None,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        self.small_input = small_input
        self.inplanes = 64
        stride = 1 if small_input else 2
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=stride, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 512 * block.expansion
        if num_classes is not None:
            self.fc = nn.Linear(self.num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, C, H, W)`` to ``(B, num_features)``, or logits if ``fc`` exists."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x) if hasattr(self, "fc") else x


def resnet18(in_channels: int = 3, **kw) -> ResNet:
    """ResNet-18 (512 features)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, **kw)


def resnet34(in_channels: int = 3, **kw) -> ResNet:
    """ResNet-34 (512 features)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), in_channels, **kw)


def resnet50(in_channels: int = 3, **kw) -> ResNet:
    """ResNet-50 (2048 features)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, **kw)


class SmallCNN(nn.Module):
    """A fast CNN for CPU runs: ``depth`` conv3×3(stride 2)-BN-ReLU blocks, then global pooling.

    Channels double per block (``width``, ``2·width``, …), so ``num_features = width·2^(depth-1)``.
    Padding 1 keeps even a 9×9 patch at ≥ 1 pixel after any depth.

    Args:
        in_channels: Input bands C.
        width: Channels of the first block.
        depth: Number of blocks.

    Shapes:
        ``(B, C, H, W)`` → ``(B, num_features)``.
    """

    def __init__(self, in_channels: int, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width), ("depth", depth)):
            if value < 1:
                raise ConfigError(f"SmallCNN {name} must be >= 1, got {value}")
        self.in_channels = in_channels
        blocks: list[nn.Module] = []
        channels = in_channels
        for i in range(depth):
            out = width * 2**i
            blocks += [
                _conv3x3(channels, out, stride=2),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*blocks)
        self.num_features = channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, C, H, W)`` to ``(B, num_features)``."""
        return self.features(x).mean(dim=(2, 3))


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "small_cnn": SmallCNN,
}


def build_backbone(name: str, in_channels: int, **kw) -> nn.Module:
    """Build a backbone by name; the result has ``.num_features``.

    Args:
        name: One of ``BACKBONES`` ("resnet18", "resnet34", "resnet50", "small_cnn").
        in_channels: Input bands C.
        **kw: Passed to the constructor (``small_input``/``num_classes`` for ResNets,
            ``width``/``depth`` for ``small_cnn``).

    Raises:
        ConfigError: Unknown name or a keyword the chosen backbone does not take.
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    factory = BACKBONES[name]
    target = ResNet if factory in (resnet18, resnet34, resnet50) else factory
    accepted = set(inspect.signature(target).parameters) - {"block", "layers", "in_channels"}
    unknown = sorted(set(kw) - accepted)
    if unknown:
        raise ConfigError(
            f"backbone {name!r} does not take {unknown}; accepted: {sorted(accepted)}"
        )
    return factory(in_channels=in_channels, **kw)
