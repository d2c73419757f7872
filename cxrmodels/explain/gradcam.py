"""Grad-CAM (Selvaraju et al. 2017) on the last convolutional layer, for the project's CNNs, on any device.

Study A showed one Grad-CAM map per class to check that the model looks at the lungs and not at a marker or a
grid line. The target layer is found by running the model once and taking the last ``nn.Conv2d`` that actually
fires (forward order; ``named_modules`` order is registration order, which need not be the call order), or it is
named. The map is ReLU(sum_k w_k A_k) with w_k the spatially averaged gradient of the class score, upsampled to
the input size and scaled to [0, 1].

Class score: a binary model has one logit z for PNEUMONIA, so the score is z for PNEUMONIA (index 1) and -z for
NORMAL (index 0). A multiclass model uses the logit of the class index (default: the predicted class).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def find_last_conv(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The last ``nn.Conv2d`` called during a forward pass of ``example`` (a batch the model accepts)."""
    called: list[nn.Module] = []
    handles = [
        m.register_forward_hook(lambda mod, _i, _o: called.append(mod))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    if not called:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d on its forward path: name a target layer")
    return called[-1]


def _resolve_layer(model: nn.Module, layer: nn.Module | str | None, example: torch.Tensor) -> nn.Module:
    if isinstance(layer, nn.Module):
        return layer
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer not in modules:
            convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
            raise ValueError(f"no layer named {layer!r}; convolutional layers: {', '.join(convs[-5:])} ...")
        return modules[layer]
    return find_last_conv(model, example)


@contextmanager
def _eval_mode(model: nn.Module):
    """Dropout off and batch-norm statistics frozen for the explanation, the caller's mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def class_score(logits: torch.Tensor, target: int | None) -> tuple[torch.Tensor, int]:
    """The scalar to differentiate and the class it stands for (see the module docstring for the binary sign)."""
    logits = logits.reshape(logits.shape[0], -1)[0]
    if logits.numel() == 1:
        cls = int(logits.item() >= 0) if target is None else int(target)
        if cls not in (0, 1):
            raise ValueError(f"binary model: target must be 0 (NORMAL) or 1 (PNEUMONIA), got {target}")
        return (logits[0] if cls == 1 else -logits[0]), cls
    cls = int(logits.argmax()) if target is None else int(target)
    if not 0 <= cls < logits.numel():
        raise ValueError(f"target {cls} out of range for {logits.numel()} classes")
    return logits[cls], cls


def grad_cam(
    model: nn.Module, x: torch.Tensor, target: int | None = None, layer: nn.Module | str | None = None
) -> np.ndarray:
    """Grad-CAM heat map (H, W) float32 in [0, 1] at the input size, for one image.

    ``x`` is what the model's ``forward`` takes, one image: (C, H, W) or (1, C, H, W), on the model's device.
    ``target`` is a class index (None: the predicted class). Works with frozen backbones: the input is made to
    require grad, so the activations do even where the weights do not. A map that is all zero (no positive
    evidence for the class) is returned as zeros, not divided by zero.
    """
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"grad_cam explains one image: expected (C, H, W) or (1, C, H, W), got {tuple(x.shape)}")
    with _eval_mode(model):
        module = _resolve_layer(model, layer, x)
        store: dict[str, torch.Tensor] = {}
        handle = module.register_forward_hook(lambda _m, _i, out: store.__setitem__("act", out))
        try:
            with torch.enable_grad():
                inp = x.detach().float().requires_grad_(True)
                logits = model(inp)
                score, _ = class_score(logits, target)
                act = store["act"]
                (grads,) = torch.autograd.grad(score, act)
        finally:
            handle.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    cam = torch.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)
    top = float(cam.max())
    heat = (cam / top) if top > 0 else torch.zeros_like(cam)
    return heat.clamp_(0.0, 1.0).cpu().numpy().astype(np.float32)


def grad_cam_images(
    model: nn.Module,
    images: np.ndarray,
    targets: Sequence[int | None] | None = None,
    layer: nn.Module | str | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Grad-CAM maps (n, S, S) for preprocessed uint8 images (n, S, S), the arrays the data pipeline caches.

    Images are scaled to [0, 1] exactly as the training loop's evaluation path does (the model normalises them
    itself), so the map explains the prediction the model really makes. ``targets[i]`` as in :func:`grad_cam`.
    One image at a time: Grad-CAM needs one backward pass per image and class anyway.
    """
    from cxrmodels.data.augment import to_float

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"expected uint8 images (n, S, S), got {images.dtype} {images.shape}")
    targets = [None] * len(images) if targets is None else list(targets)
    if len(targets) != len(images):
        raise ValueError(f"{len(targets)} targets for {len(images)} images")
    maps = np.zeros(images.shape, dtype=np.float32)
    for i, target in enumerate(targets):
        x = to_float(torch.from_numpy(images[i : i + 1])).to(device)
        maps[i] = grad_cam(model, x, target=target, layer=layer)
    return maps


def overlay(gray_uint8: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The X-ray with the heat map blended on top, RGB uint8 (H, W, 3) at the X-ray's size (JET colour map).

    The heat map is resized to the image when they differ, so a map at the model's input size can be laid over
    the preprocessed image or the original.
    """
    gray = np.asarray(gray_uint8)
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"overlay needs a (H, W) uint8 gray image, got {gray.dtype} {gray.shape}")
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got {heat.shape}")
    if heat.shape != gray.shape:
        heat = cv2.resize(heat, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat_u8 = np.uint8(np.clip(np.nan_to_num(heat), 0.0, 1.0) * 255)
    colour = cv2.cvtColor(cv2.applyColorMap(heat_u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(colour, float(alpha), base, 1.0 - float(alpha), 0.0)
