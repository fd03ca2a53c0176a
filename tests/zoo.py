"""A zoo of small models for the tests: every way a ReLU or max-pool can be called."""
import torch
from torch import nn

from conftest import randomize_batchnorm
from references import TorchOps


class ReusedReLU(nn.Module):
    """One ReLU module called three times, residual sum, as torchvision's BasicBlock does."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3 * 8 * 8, 5)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)) + x)
        return self.fc(self.relu(y - 0.1).flatten(1))


class InplaceReLU(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 64, 5))


class FunctionalReLU(nn.Module):
    """F.relu, F.relu(inplace=True), torch.relu, torch.relu_, Tensor.relu inside forward."""

    def __init__(self):
        super().__init__()
        self.ops = TorchOps()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 64, 5)

    def forward(self, x):
        y = self.ops.relu(self.conv1(x))
        y = self.ops.relu(self.conv2(y) - 0.05, inplace=True)
        y = self.ops.torch_relu(self.conv2(y) + 0.05)
        y = self.ops.relu_(self.conv2(y) - 0.02)
        return self.fc(self.ops.tensor_relu(self.conv2(y) + 0.1).flatten(1))


class Pools(nn.Module):
    """ReLU then max-pool with padding, stride != kernel, dilation, ceil_mode; module and functional."""

    def __init__(self):
        super().__init__()
        self.ops = TorchOps()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)  # 13 -> 7
        self.pool2 = nn.MaxPool2d(2, stride=1, dilation=2)  # 7 -> 5
        self.pool3 = nn.MaxPool2d(2, stride=2, ceil_mode=True)  # 5 -> 3
        self.fc = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        y = self.pool1(self.relu(self.conv1(x)))
        y = self.pool2(self.relu(self.conv2(y)))
        y = self.pool3(y)
        y = self.ops.max_pool2d(y, 3, 2, 1, ceil_mode=True)  # 3 -> 2
        return self.fc(y.flatten(1))


ZOO = {"reused": (ReusedReLU, 8), "inplace": (InplaceReLU, 8), "functional": (FunctionalReLU, 8), "pools": (Pools, 13)}


def make_zoo(name, dtype=torch.float64):
    """A model of the zoo with random batch-norm statistics, in eval mode, and an input batch (3, 3, size, size)."""
    torch.manual_seed(1)
    cls, size = ZOO[name]
    model = randomize_batchnorm(cls()).to(dtype).eval()
    return model, torch.randn(3, 3, size, size, dtype=dtype)


class TinyImageNet(nn.Module):
    """Conv, ReLU, max-pool, linear: 1000 logits on 32x32 images, so paper_targets works."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4))
        self.fc = nn.Linear(4 * 8 * 8, 1000)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))
