"""Backbone registry, the study B CNN, heads, grayscale handling, pretrained weights and freezing."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from cxrmodels.models import freeze
from cxrmodels.models.registry import (
    PretrainedWeightsError,
    count_parameters,
    create_model,
    list_backbones,
)

EXPECTED = {
    "custom_cnn", "resnet18", "resnet50", "densenet121", "vgg16", "resnetv2_50", "resnetv2_152",
    "mobilenetv3_small_100", "mobilenetv3_large_100", "efficientnet_b0", "resnet10t", "mobilenetv3_small_050",
    "test_resnet", "test_efficientnet",
}  # fmt: skip


def test_registry_lists_the_study_backbones() -> None:
    assert EXPECTED <= set(list_backbones())


HEAVY = {"resnet50", "densenet121", "vgg16", "resnetv2_50", "resnetv2_152"}  # seconds each to initialise on 2 cores


BACKBONE_PARAMS = [pytest.param(n, marks=[pytest.mark.slow] if n in HEAVY else []) for n in sorted(EXPECTED)]


@pytest.mark.parametrize("name", BACKBONE_PARAMS)
def test_every_backbone_builds_and_runs_forward(name: str) -> None:
    size = 64 if name == "custom_cnn" else 32
    model = create_model(name, 3, image_size=size, head_hidden=16).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, size, size))
    assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_unknown_backbone_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="resnet18.*valid|valid.*resnet18"):
        create_model("resnet19", 1)


def test_any_timm_model_by_prefix() -> None:
    model = create_model("timm/test_convnext", 1, image_size=32, head_hidden=8).eval()
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 1)


def test_custom_cnn_is_study_b_network_1_exactly() -> None:
    """Rescaling -> 4 x [Conv(32, 3x3, valid) -> MaxPool] -> Flatten -> Dense(128) -> Dense(1): 291,041 at 160x160x3."""
    model = create_model("custom_cnn", 1, in_chans=3, image_size=160)
    assert count_parameters(model) == 291_041
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [(32, (3, 3), (0, 0))] * 4
    linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(8 * 8 * 32, 128), (128, 1)]
    # mean 0 / std 1 on [0, 1] inputs: the Keras Rescaling(1/255) of the uint8 image
    assert model.norm.mean.flatten().tolist() == [0.0] * 3 and model.norm.std.flatten().tolist() == [1.0] * 3


def test_custom_cnn_too_small_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="image_size 32 is too small"):
        create_model("custom_cnn", 1, image_size=32)


def test_gap_head_is_study_a() -> None:
    model = create_model("test_resnet", 3, image_size=32, dropout=0.7)
    kinds = [type(m).__name__ for m in model.head]
    assert kinds == ["Sequential", "Linear", "ReLU", "Dropout", "Linear"]
    assert model.head[1].out_features == 1024 and model.head[3].p == 0.7 and model.head[4].out_features == 3


def test_dropout_applies_in_training_only() -> None:
    model = create_model("custom_cnn", 1, image_size=64, dropout=0.9)
    x = torch.rand(4, 1, 64, 64)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_grayscale_three_channel_and_pretrained_normalisation() -> None:
    one = create_model("resnet10t", 1, in_chans=1, image_size=32)
    three = create_model("resnet10t", 1, in_chans=3, image_size=32)
    assert one.backbone.conv1[0].in_channels == 1 and three.backbone.conv1[0].in_channels == 3
    assert one.norm.mean.flatten().tolist() == pytest.approx([sum((0.485, 0.456, 0.406)) / 3])
    assert three.norm.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    assert three.eval()(torch.rand(2, 1, 32, 32)).shape == (2, 1)  # gray replicated to 3 channels


def test_pretrained_offline_raises_a_helpful_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    with pytest.raises(PretrainedWeightsError, match="not available.*pretrained_path") as info:
        create_model("test_resnet", 1, pretrained=True, image_size=32)
    assert "HF_HUB_OFFLINE" in str(info.value) and "random" in str(info.value)


def test_custom_cnn_has_no_published_weights() -> None:
    with pytest.raises(PretrainedWeightsError, match="no published pretrained weights"):
        create_model("custom_cnn", 1, pretrained=True, image_size=64)


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "folder"])
def test_pretrained_from_a_local_file(tmp_path: Path, fmt: str) -> None:
    """Weights saved from a fresh 3-channel timm model load into a 1-channel backbone (first conv adapted)."""
    source = timm.create_model("test_resnet", pretrained=False)
    state = source.state_dict()
    if fmt == "pth":
        path = tmp_path / "w.pth"
        torch.save(state, path)
    else:
        folder = tmp_path / "weights"
        folder.mkdir()
        save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
        path = folder if fmt == "folder" else folder / "model.safetensors"
    model = create_model("test_resnet", 1, pretrained=True, pretrained_path=str(path), image_size=32)
    loaded = model.backbone.state_dict()
    for key in ("layer4.0.conv1.weight", "bn1.running_mean"):
        assert torch.equal(loaded[key], state[key]), key
    first = next(k for k in loaded if k.endswith("weight") and loaded[k].ndim == 4)
    assert torch.allclose(loaded[first], state[first].sum(1, keepdim=True))  # timm sums RGB into one channel


def test_pretrained_path_missing_or_malicious(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        create_model("test_resnet", 1, pretrained=True, pretrained_path=str(tmp_path / "nope.pth"), image_size=32)
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Evil()}, evil)
    with pytest.raises(PretrainedWeightsError):
        create_model("test_resnet", 1, pretrained=True, pretrained_path=str(evil), image_size=32)


class Evil:
    def __reduce__(self):  # noqa: ANN204 - a pickle that would run code when loaded unsafely
        return (print, ("pwned",))


def test_freeze_leaves_exactly_the_head_trainable() -> None:
    model = create_model("resnet10t", 1, image_size=32, head_hidden=8)
    counts = freeze.freeze_backbone(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"head.{n}" for n, _ in model.head.named_parameters()}
    assert counts["trainable_params"] == count_parameters(model.head)
    model.train()
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)  # frozen BatchNorm keeps its running statistics
    assert model.head.training


def test_unfreeze_last_blocks_generic_rule() -> None:
    model = create_model("resnet10t", 1, image_size=32, head_hidden=8)
    freeze.set_trainable(model, 1)
    trainable_backbone = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad and "backbone" in n}
    assert trainable_backbone == {"layer4"}
    freeze.set_trainable(model, 2)
    trainable_backbone = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad and "backbone" in n}
    assert trainable_backbone == {"layer3", "layer4"}
    freeze.set_trainable(model, -1)
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    assert all(m.training for m in model.modules())


def test_unfreeze_includes_the_final_norm_after_the_last_stage() -> None:
    model = create_model("timm/resnetv2_50", 1, image_size=32, head_hidden=8)
    freeze.set_trainable(model, 1)
    names = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert "norm.weight" in names and any(n.startswith("stages.3") for n in names)
    assert not any(n.startswith("stages.2") for n in names)


def test_per_image_standardisation_makes_the_model_blind_to_exposure_and_contrast() -> None:
    torch.manual_seed(0)
    model = create_model("test_resnet", 3, image_size=32, standardize=True).eval()
    x = torch.rand(2, 1, 32, 32) * 0.5 + 0.2
    with torch.no_grad():
        assert torch.allclose(model(x), model(0.6 * x + 0.3), atol=1e-4)  # another exposure and contrast
        plain = create_model("test_resnet", 3, image_size=32).eval()
        assert not torch.allclose(plain(x), plain(0.6 * x + 0.3), atol=1e-4)
