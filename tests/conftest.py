
import pytest
import torch
import torchvision
from torch import nn

from utils.data.imagenette import data_root_from_env


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random statistics and affine parameters, so BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=g))
            m.bias.data.copy_(0.2 * torch.randn(c, generator=g))
    return model


@pytest.fixture(scope="session")
def paper_architectures():
    """Randomly initialised resnet50, vgg11_bn, densenet121 with random BN statistics, eval mode."""
    torch.manual_seed(0)
    return {name: randomize_batchnorm(torchvision.models.get_model(name, weights=None)).eval()
            for name in ("resnet50", "vgg11_bn", "densenet121")}


@pytest.fixture
def one_thread():
    """One intra-op thread: small batches gain nothing from two, and lose much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data_root():
    root = data_root_from_env()
    if root is None or not (root / "val").is_dir():
        pytest.skip("no Imagenette data: set IMAGENETTE_ROOT to a folder with train/ and val/ "
                    "(CI uses ../shared/data/imagenette2-224)")
    return root


def snapshot(model: nn.Module):
    """Everything soft_backward promises to leave untouched."""
    modules = [(name, id(m), type(m)) for name, m in model.named_modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())
    return modules, state, hooks, "forward" in model.__dict__, set(model.__dict__)


def assert_restored(model: nn.Module, before) -> None:
    modules, state, hooks, had_forward, keys = snapshot(model)
    assert modules == before[0]
    assert state.keys() == before[1].keys()
    assert all(torch.equal(state[k], before[1][k]) for k in state)
    assert hooks == before[2] == 0
    assert had_forward == before[3] is False
    assert keys == before[4]
