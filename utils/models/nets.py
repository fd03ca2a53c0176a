"""The architectures trained here on Imagenette (:data:`ARCHITECTURES`): two small ones written here and the
paper's torchvision ResNet50 and DenseNet121.

The bundled classifier, :class:`PoolResNet`, is a small residual ReLU network that downsamples by max-pooling,
built from torchvision's building blocks only (Conv2d, BatchNorm2d, ReLU, MaxPool2d, residual
sums), so excitation pullbacks exercise the same surrogates as on the paper's models. It
downsamples with 2x2 max-pools instead of strided convolutions: strided convolutions leave
checkerboard patterns in input gradients, max-pools do not.
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn

WIDTHS = (32, 64, 128, 256, 512)
BLOCKS = (1, 1, 2, 1)


def conv_bn(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout))


class ResidualBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``; one ReLU module used twice, as torchvision does."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = conv_bn(cin, cout)
        self.conv2 = conv_bn(cout, cout)
        self.shortcut = nn.Identity() if cin == cout else conv_bn(cin, cout, kernel=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.relu(self.conv1(x)))
        return self.relu(y + self.shortcut(x))


class _PooledClassifier(nn.Module):
    """``fc(global average pool(features(x)))``: the head both networks share."""

    def head(self, channels: int, num_classes: int) -> None:
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class PoolResNet(_PooledClassifier):
    """Residual ReLU classifier for images in [-1, 1], shape (N, 3, H, W) -> logits (N, num_classes).

    Any H, W divisible by 32 works (global average pooling at the end); trained at 224x224.
    """

    def __init__(self, num_classes: int = 10, widths=WIDTHS, blocks=BLOCKS):
        super().__init__()
        layers = [conv_bn(3, widths[0]), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                  conv_bn(widths[0], widths[1]), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        channels = widths[1]
        for stage, (width, count) in enumerate(zip(widths[1:], blocks)):
            if stage > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(count):
                layers.append(ResidualBlock(channels, width))
                channels = width
        self.features = nn.Sequential(*layers)
        self.head(channels, num_classes)


PLAIN_LAYOUT = (32, "M", 64, "M", 128, "M", 128, 256, "M", 256, 512, "M", 512)


class PlainNet(_PooledClassifier):
    """VGG-style ReLU classifier with no residual connections, for images in [-1, 1].

    ``(N, 3, H, W) -> (N, num_classes)``: 3x3 conv + batch norm + ReLU layers and 2x2 max-pools as
    listed in ``layout`` ("M" = pool), then global average pooling and one linear layer. A second
    architecture family next to :class:`PoolResNet`, for cross-model comparisons.
    """

    def __init__(self, num_classes: int = 10, layout=PLAIN_LAYOUT):
        super().__init__()
        layers, channels = [], 3
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [*conv_bn(channels, item), nn.ReLU(inplace=True)]
                channels = item
        self.features = nn.Sequential(*layers)
        self.head(channels, num_classes)


def resnet50(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet50 with ``num_classes`` logits; the last BatchNorm of each residual branch starts at
    zero (``zero_init_residual``: each block starts as the identity, as in the recipe of the committed weights)."""
    return torchvision.models.resnet50(num_classes=num_classes, zero_init_residual=True)


def densenet121(num_classes: int = 10) -> nn.Module:
    """torchvision's DenseNet121 with ``num_classes`` logits."""
    return torchvision.models.densenet121(num_classes=num_classes)


# name -> constructor(num_classes); the paper's torchvision architectures take images in [-1, 1] as they are
# when trained here (no mean/std), like the two networks above.
ARCHITECTURES = {"poolresnet": PoolResNet, "plain": PlainNet, "resnet50": resnet50, "densenet121": densenet121}
