"""Grad-CAM on a hand-set model whose answer is known, and on the project's own backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cxrmodels.explain import class_score, find_last_conv, grad_cam, grad_cam_images, overlay


class BrightnessNet(nn.Module):
    """conv(ones) -> ReLU -> global mean -> one logit: it responds to bright pixels and to nothing else.

    A decoy conv earlier in ``__init__`` but later in ``forward`` order checks that the target layer is the last
    conv *called*, not the last one registered.
    """

    def __init__(self, num_outputs: int = 1) -> None:
        super().__init__()
        self.late = nn.Conv2d(1, 1, 3, padding=1, bias=False)  # registered first, called last
        self.early = nn.Conv2d(1, 1, 1, bias=False)
        self.fc = nn.Linear(1, num_outputs, bias=False)
        with torch.no_grad():
            self.early.weight.fill_(1.0)
            self.late.weight.fill_(1.0 / 9)
            self.fc.weight.copy_(
                torch.linspace(1.0, -1.0, num_outputs).reshape(num_outputs, 1) if num_outputs > 1 else torch.ones(1, 1)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.late(torch.relu(self.early(x))))
        return self.fc(a.mean(dim=(2, 3)))


def _square_image(size: int = 32, top: int = 4, left: int = 20, side: int = 8) -> torch.Tensor:
    x = torch.zeros(1, 1, size, size)
    x[..., top : top + side, left : left + side] = 1.0
    return x


def test_find_last_conv_uses_forward_order():
    model = BrightnessNet()
    assert find_last_conv(model, _square_image()) is model.late


def test_gradcam_concentrates_on_the_bright_square():
    model = BrightnessNet()
    heat = grad_cam(model, _square_image(), target=1)
    assert heat.shape == (32, 32) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    inside = heat[4:12, 20:28].mean()
    outside = np.delete(heat.reshape(-1), np.ravel_multi_index(np.mgrid[2:14, 18:30].reshape(2, -1), (32, 32)))
    assert inside > 0.8 and outside.max() < 0.05
    r, c = np.unravel_index(heat.argmax(), heat.shape)
    assert 4 <= r < 12 and 20 <= c < 28


def test_gradcam_binary_normal_target_flips_the_sign():
    # For NORMAL the evidence is -logit: brightness argues against NORMAL, so nothing is positive and the map is 0.
    heat = grad_cam(BrightnessNet(), _square_image(), target=0)
    assert heat.shape == (32, 32) and np.all(heat == 0.0)
    logits = torch.tensor([[2.0]])
    assert class_score(logits, 0)[0].item() == -2.0 and class_score(logits, None)[1] == 1


def test_gradcam_multiclass_target_index_and_named_layer():
    model = BrightnessNet(num_outputs=3)  # class 0 weight +1, class 2 weight -1
    x = _square_image()
    assert grad_cam(model, x, target=0, layer="late").max() == pytest.approx(1.0)
    assert np.all(grad_cam(model, x, target=2) == 0.0)
    with pytest.raises(ValueError, match="no layer named"):
        grad_cam(model, x, layer="nope")
    with pytest.raises(ValueError, match="out of range"):
        grad_cam(model, x, target=3)


def test_gradcam_keeps_training_mode_and_works_under_no_grad():
    model = BrightnessNet().train()
    for p in model.parameters():
        p.requires_grad_(False)  # a frozen backbone
    with torch.no_grad():
        heat = grad_cam(model, _square_image()[0])
    assert heat.max() == pytest.approx(1.0)
    assert model.training


@pytest.mark.parametrize("backbone", ["custom_cnn", "resnet10t"])
@pytest.mark.parametrize("num_outputs", [1, 3])
def test_gradcam_on_project_models(backbone: str, num_outputs: int):
    registry = pytest.importorskip("cxrmodels.models.registry", reason="models registry not there yet")
    torch.manual_seed(0)
    model = registry.create_model(backbone, num_outputs, image_size=48, pretrained=False)
    x = torch.rand(1, 1, 48, 48)
    layer = find_last_conv(model, x)
    assert isinstance(layer, nn.Conv2d)
    heat = grad_cam(model, x, target=num_outputs - 1 if num_outputs > 1 else 1)
    assert heat.shape == (48, 48) and np.isfinite(heat).all()
    assert heat.min() >= 0.0 and heat.max() <= 1.0


def test_overlay_is_rgb_uint8_at_image_size():
    gray = np.full((40, 30), 100, np.uint8)
    heat = np.zeros((20, 20), np.float32)
    heat[:10] = 1.0
    out = overlay(gray, heat, alpha=0.5)
    assert out.shape == (40, 30, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[0, 0], out[-1, -1])  # hot top, cold bottom
    assert out[0, 0, 0] > out[0, 0, 2]  # JET hot is red (RGB order), not blue
    with pytest.raises(ValueError):
        overlay(gray.astype(np.float32), heat)


def test_gradcam_images_on_uint8_batch():
    model = BrightnessNet()
    images = np.zeros((2, 32, 32), np.uint8)
    images[0, 4:12, 20:28] = 255
    images[1, 20:28, 2:10] = 255
    maps = grad_cam_images(model, images, [1, 1])
    assert maps.shape == (2, 32, 32) and maps.dtype == np.float32
    assert np.unravel_index(maps[0].argmax(), (32, 32))[1] >= 20  # each map follows its own square
    assert np.unravel_index(maps[1].argmax(), (32, 32))[1] < 10
    with pytest.raises(ValueError, match="targets for"):
        grad_cam_images(model, images, [1])
    with pytest.raises(ValueError, match="uint8"):
        grad_cam_images(model, images.astype(np.float32))
