"""Today's architectures: forward bit-identical, pullback equal to the independent reference of tests/references.py."""

import pytest
import torch
import torchvision
from torch import nn

from conftest import randomize_batchnorm
from references import reference_gradient
from utils import excitation_pullback, soft_backward

ARCHITECTURES = {  # name: (builder keywords, input size): small inputs where the architecture allows
    "efficientnet_b0": ({}, 32),
    "mobilenet_v3_small": ({}, 32),
    "convnext_tiny": ({}, 32),
    "regnet_y_400mf": ({}, 32),
    "vit_b_16": ({"image_size": 32}, 32),
    "swin_t": ({}, 32),
    "resnet50": ({}, 32),
    "vgg11_bn": ({}, 32),
    "densenet121": ({}, 32),
}


def build(name):
    """Random init, random batch-norm statistics, random read-out (ViT's head starts at zero), float64, eval."""
    torch.manual_seed(0)
    kwargs, size = ARCHITECTURES[name]
    model = randomize_batchnorm(torchvision.models.get_model(name, weights=None, **kwargs))
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.out_features == 1000:
            nn.init.normal_(m.weight, std=0.05)
    return model.double().eval(), torch.randn(1, 3, size, size, dtype=torch.float64)


def check_model(model, x, target=3):
    plain = model(x.clone().requires_grad_())  # the same kernels as the patched forward (grad mode)
    with soft_backward(model):
        inside = model(x.clone().requires_grad_())
    assert torch.equal(inside, plain)
    assert "forward" not in model.__dict__
    pullback = excitation_pullback(model, x, target)
    reference = reference_gradient(model, x, target)
    scale = reference.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(pullback, reference, rtol=1e-7, atol=1e-9 * scale)
    return pullback


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_architecture_forward_exact_and_pullback_equals_reference(name):
    model, x = build(name)
    check_model(model, x)


def test_pvt_v2_b1_the_follow_up_papers_architecture():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("pvt_v2_b1", pretrained=False, num_classes=10).double().eval()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    check_model(model, x)
