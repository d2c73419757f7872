"""One epoch at a time: pure ``train_one_epoch`` / ``evaluate`` functions and the :class:`Trainer` that a Tune
trainable (or the CLI) drives, with transfer-learning phases, LR plateau, early stopping and exact resume.

The whole uint8 image array goes to the training device once; batches are indexed there, then augmented and
normalised there (the model owns its mean/std, see ``cxrmodels.models.heads.InputNorm``). On CUDA the forward pass
runs under bf16 autocast with channels_last; on CPU it is plain fp32.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrmodels.data.augment import TTA_VIEWS, AugmentConfig, augment_batch, to_float, tta_view
from cxrmodels.evaluate.binary import pneumonia_probability, roc_auc
from cxrmodels.io import plain
from cxrmodels.models.freeze import set_trainable
from cxrmodels.models.registry import CXRClassifier
from cxrmodels.train.checkpoint import ModelCheckpoint, preprocess_of
from cxrmodels.train.config import TrialConfig, metric_mode
from cxrmodels.train.metrics import classification_metrics
from cxrmodels.train.network import build_model

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NONFINITE_CHECK_EVERY = 16  # batches between loss checks: a per-batch .item() would stall the GPU every step
TRAINER_STATE_FORMAT = "cxrmodels.checkpoint/1"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: the trial has diverged and should end cleanly, flagged, not crash a search."""

    def __init__(self, epoch: int, batch: int | None, value: float, where: str = "training") -> None:
        at = f"batch {batch}" if batch is not None else "the whole set"
        super().__init__(f"non-finite {where} loss ({value}) at epoch {epoch}, {at}; lower the learning rate?")
        self.epoch, self.batch, self.value, self.where = epoch, batch, value, where


@dataclass
class TrainData:
    """The arrays of one trial: uint8 images (n, S, S) and int64 targets (n,), plus what is needed to use a model."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    class_names: tuple[str, ...]
    preprocess: dict = field(default_factory=dict)
    #: More sets scored every epoch by AUROC only (``<name>_auc``): name -> (uint8 images, 0/1 targets, 1 =
    #: pneumonia), such as a second site (``site``) or stress validation (``stress``); never trained on.
    scored: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.class_names = tuple(self.class_names)
        k = len(self.class_names)
        sets = {"train": (self.train_x, self.train_y, k), "val": (self.val_x, self.val_y, k)}
        sets.update({name: (x, y, 2) for name, (x, y) in self.scored.items()})
        for split, (x, y, classes) in sets.items():
            if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1] != x.shape[2]:
                raise ValueError(f"{split}_x must be uint8 (n, S, S), got {x.dtype} {x.shape}")
            if y.shape != (len(x),):
                raise ValueError(f"{split}_y must have shape ({len(x)},), got {y.shape}")
            if len(y) and (y.min() < 0 or y.max() >= classes):
                raise ValueError(f"{split}_y has labels outside 0..{classes - 1}")


# ----------------------------------------------------------------------------------------------- building blocks


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_device_once(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """The whole array on the device when it fits comfortably (a quarter of free GPU memory), else on the host
    (pinned on CUDA machines, so batches copy asynchronously)."""
    if not isinstance(x, np.ndarray | torch.Tensor):
        # a lazy reader (cxrmodels.data.shards.ImageRows): batches are read as needed, so the set never has to fit
        # in memory; shards in object storage are copied to this node's disk first, once per node
        return x.localize()
    t = torch.as_tensor(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if device.type != "cuda":
        return t.to(device)
    free, _ = torch.cuda.mem_get_info(device)
    if t.numel() * t.element_size() < free // 4:
        return t.to(device)
    logger.info("training images (%.1f GB) stay in host memory", t.numel() * t.element_size() / 1e9)
    return t.pin_memory()


def build_model_on(cfg: TrialConfig, device: torch.device) -> CXRClassifier:
    """:func:`build_model` on ``device``; on a GPU in channels_last, the layout :func:`to_model_layout` gives the
    batches there."""
    model = build_model(cfg).to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def balanced_class_weights(y: np.ndarray, num_classes: int) -> torch.Tensor:
    """scikit-learn's "balanced" weights n / (k * count), so rarer classes weigh more (study A); 0 for absent ones."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def build_loss(task: str, class_weights: torch.Tensor | None = None) -> LossFn:
    """BCE-with-logits (one logit) or cross-entropy; class weights scale each sample's loss like Keras'
    ``class_weight`` (the batch mean of weighted losses)."""

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if task == "binary":
            per_sample = F.binary_cross_entropy_with_logits(logits.squeeze(1), y.float(), reduction="none")
        else:
            per_sample = F.cross_entropy(logits, y, reduction="none")
        if class_weights is not None:
            per_sample = per_sample * class_weights.to(per_sample.device)[y]
        return per_sample.mean()

    return loss_fn


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(n, k) class probabilities; one binary logit becomes the two columns [NORMAL, PNEUMONIA]."""
    logits = logits.float()
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)


def trainable_param_groups(model: CXRClassifier, weight_decay: float) -> list[dict[str, Any]]:
    """Head params with weight decay (study A's L2 on the dense layers), trainable backbone params without."""
    head = [p for p in model.head.parameters() if p.requires_grad]
    body = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"params": head, "weight_decay": weight_decay, "name": "head"}]
    if body:
        groups.append({"params": body, "weight_decay": 0.0, "name": "backbone"})
    return groups


def build_optimizer(name: str, param_groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """Study B's optimizer grid: sgd, sgd_momentum (0.9), adam, adamw, rmsprop."""
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr)
    if name == "sgd_momentum":
        return torch.optim.SGD(param_groups, lr=lr, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(param_groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; valid: sgd, sgd_momentum, adam, adamw, rmsprop")


def autocast(device: torch.device):
    """The training and evaluation precision: bf16 autocast on a GPU, plain fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def prepare_batch(x: torch.Tensor | Any, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The images at ``idx`` of a data set held on the device once (or read from a lazy reader), as an (n, 1, S, S)
    batch."""
    if not isinstance(x, torch.Tensor):
        batch = torch.from_numpy(x[idx.cpu().numpy()]).to(device, non_blocking=True)
    else:
        batch = x[idx.to(x.device)].to(device, non_blocking=True)
    return batch.unsqueeze(1) if batch.ndim == 3 else batch


def to_model_layout(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """channels_last on a GPU (faster convolutions under bf16), unchanged elsewhere."""
    return images.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else images


def _raise_if_nonfinite(losses: list[torch.Tensor], first_batch: int, epoch: int) -> None:
    if not losses:
        return
    finite = torch.isfinite(torch.stack(losses))
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0])
        raise NonFiniteLossError(epoch, first_batch + bad, float(losses[bad]))


# ----------------------------------------------------------------------------------------------- pure epoch functions


def train_one_epoch(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    batch_size: int,
    device: str | torch.device,
    augment: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
    epoch: int = 0,
    limit: int | None = None,
) -> dict[str, float]:
    """One pass over shuffled uint8 images (already on ``device`` ideally; or ``limit`` of them, drawn afresh each
    call) -> {loss, accuracy, images, time_s, images_per_s}. Raises :class:`NonFiniteLossError` naming the epoch and
    batch when the loss diverges.

    A trailing batch of a single image is skipped: BatchNorm cannot train on one sample.
    """
    device = torch.device(device)
    x = torch.as_tensor(x) if isinstance(x, np.ndarray) else x
    y = torch.as_tensor(y).to(device)
    augment = augment or AugmentConfig(enabled=False)
    model.train()
    start = time.perf_counter()
    order = torch.randperm(len(x), generator=generator)[:limit]
    losses: list[torch.Tensor] = []
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, checked = 0, 0
    for b, lo in enumerate(range(0, len(order), batch_size)):
        idx = order[lo : lo + batch_size]
        if len(idx) < 2 and lo > 0:
            break
        images = to_model_layout(augment_batch(prepare_batch(x, idx, device), augment, generator), device)
        targets = y[idx.to(device)]
        with autocast(device):
            logits = model(images)
        loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        total_loss += loss.detach() * len(idx)
        correct += (predicted_classes(logits.detach()) == targets).sum()
        seen += len(idx)
        if len(losses) >= NONFINITE_CHECK_EVERY:
            _raise_if_nonfinite(losses, checked, epoch)
            checked, losses = b + 1, []
    _raise_if_nonfinite(losses, checked, epoch)
    elapsed = time.perf_counter() - start
    return {
        "loss": float(total_loss) / max(seen, 1),
        "accuracy": float(correct) / max(seen, 1),
        "images": seen,
        "time_s": elapsed,
        "images_per_s": seen / elapsed if elapsed > 0 else float("nan"),
    }


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: np.ndarray | torch.Tensor, *, batch_size: int, device: str | torch.device, view: int = 0
) -> torch.Tensor:
    """Logits (n, outputs) on the CPU, float32, for uint8 images (n, S, S); no augmentation, or the fixed
    test-time view ``view`` (see ``cxrmodels.data.augment.TTA_VIEWS``; 0 is the image itself)."""
    device = torch.device(device)
    x = torch.as_tensor(x) if isinstance(x, np.ndarray) else x
    model.eval()
    chunks = []
    for lo in range(0, len(x), batch_size):
        idx = torch.arange(lo, min(lo + batch_size, len(x)))
        images = to_model_layout(tta_view(to_float(prepare_batch(x, idx, device)), view), device)
        with autocast(device):
            chunks.append(model(images).float().cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, 1)


def predict_proba(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    tta: int = 1,
) -> np.ndarray:
    """Class probabilities (n, k) for analysis (threshold studies, confusion matrices); binary gives 2 columns.
    ``tta`` > 1 averages the probabilities of the first ``tta`` test-time views (the image itself first)."""
    if not 1 <= tta <= len(TTA_VIEWS):
        raise ValueError(f"tta must be 1 (off) to {len(TTA_VIEWS)} views, got {tta}")
    views = [probabilities(predict_logits(model, x, batch_size=batch_size, device=device, view=v)) for v in range(tta)]
    return torch.stack(views).mean(0).numpy()


def evaluate(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    batch_size: int,
    device: str | torch.device,
    class_names: Sequence[str],
    loss_fn: LossFn | None = None,
) -> dict[str, float | bool]:
    """Unweighted loss (what early stopping and the plateau watch) and :func:`classification_metrics`."""
    logits = predict_logits(model, x, batch_size=batch_size, device=device)
    y_cpu = torch.as_tensor(y).cpu().long()
    task = "binary" if logits.shape[1] == 1 else "multiclass"
    loss = float((loss_fn or build_loss(task))(logits, y_cpu)) if len(y_cpu) else float("nan")
    return {"loss": loss, **classification_metrics(y_cpu.numpy(), probabilities(logits).numpy(), class_names)}


# ----------------------------------------------------------------------------------------------- the trainer


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


class Trainer:
    """Build a model from a :class:`TrialConfig` and train it one epoch per :meth:`run_epoch` call.

    Phases: with ``freeze_epochs > 0`` the first epochs train only the head ("frozen"), then the last
    ``finetune_blocks`` backbone stages are unfrozen at ``lr * finetune_lr_ratio`` with a fresh optimizer and plateau
    scheduler ("finetune"); the early-stopping counter restarts there (the studies ran it as a second ``fit``) while
    the best weights are tracked across both phases. Without freezing the phase is "full" (or "finetune" when
    ``finetune_blocks`` limits the trainable stages). The best epoch is the one with the best ``cfg.best_metric``
    (the search's objective); with ``keep_weights="best"`` its weights are restored when training is done, with
    ``"last"`` the last epoch's stay.
    """

    def __init__(self, cfg: TrialConfig, data: TrainData, device: str | None = None) -> None:
        if len(data.class_names) != (2 if cfg.task == "binary" else 3):
            raise ValueError(f"task {cfg.task!r} does not match class names {data.class_names}")
        self.cfg, self.data = cfg, data
        self.device = resolve_device(device or cfg.device)
        torch.manual_seed(cfg.seed)  # model init and dropout
        self.generator = torch.Generator().manual_seed(cfg.seed)  # shuffling and augmentation draws
        self.model = build_model_on(cfg, self.device)
        self.train_x, self.val_x = to_device_once(data.train_x, self.device), to_device_once(data.val_x, self.device)
        self.train_y = torch.as_tensor(data.train_y, dtype=torch.long).to(self.device)
        self.val_y = torch.as_tensor(data.val_y, dtype=torch.long)
        self.scored = {name: (to_device_once(x, self.device), np.asarray(y)) for name, (x, y) in data.scored.items()}
        weights = balanced_class_weights(data.train_y, len(data.class_names)) if cfg.class_weights else None
        self.loss_fn = build_loss(cfg.task, weights)
        self.augment = AugmentConfig(
            cfg.shift,
            cfg.zoom,
            cfg.rotate_deg,
            enabled=cfg.augment,
            intensity=cfg.intensity_aug,
            border_mask=cfg.border_mask,
            erase=cfg.random_erase,
        )
        self.epoch = 0
        self.better = metric_mode(cfg.best_metric)
        self.best_value = math.inf if self.better == "min" else -math.inf
        self.best_epoch = 0
        self.best_collapsed = True  # no epoch yet: any finite value improves on it
        self.bad_epochs = 0
        self.stopped_early = False
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, Any]] = []
        self.phase = ""
        self.trainable: dict[str, int] = {}
        self._enter_phase(self.phase_for(0))

    # -- phases

    def phase_for(self, epoch: int) -> str:
        if epoch < self.cfg.freeze_epochs:
            return "frozen"
        if self.cfg.freeze_epochs > 0 or self.cfg.finetune_blocks != -1:
            return "finetune"
        return "full"

    def _phase_lr(self, phase: str) -> float:
        return (
            self.cfg.lr * self.cfg.finetune_lr_ratio if phase == "finetune" and self.cfg.freeze_epochs else self.cfg.lr
        )

    def _enter_phase(self, phase: str) -> None:
        """(Un)freeze, then a new optimizer and plateau scheduler over exactly the trainable parameters."""
        self.trainable = set_trainable(self.model, 0 if phase == "frozen" else self.cfg.finetune_blocks)
        lr = self._phase_lr(phase)
        self.optimizer = build_optimizer(
            self.cfg.optimizer, trainable_param_groups(self.model, self.cfg.weight_decay), lr
        )
        self.scheduler = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer,
                factor=self.cfg.plateau_factor,
                patience=self.cfg.plateau_patience - 1,  # Keras reduces after `patience` bad epochs, torch after +1
                min_lr=self.cfg.min_lr,
            )
            if self.cfg.plateau
            else None
        )
        if self.phase:
            self.bad_epochs = 0
        logger.info("phase %s: lr %.3g, %s trainable parameters", phase, lr, f"{self.trainable['trainable_params']:,}")
        self.phase = phase

    # -- the epoch

    @property
    def done(self) -> bool:
        return self.stopped_early or self.epoch >= self.cfg.epochs

    @property
    def lr(self) -> float:
        return max(group["lr"] for group in self.optimizer.param_groups)

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch, validate, step the plateau scheduler and early stopping; one flat metrics dict."""
        if self.done:
            raise RuntimeError(
                f"training is done (epoch {self.epoch} of {self.cfg.epochs}, early stop: {self.stopped_early})"
            )
        if self.phase_for(self.epoch) != self.phase:
            self._enter_phase(self.phase_for(self.epoch))
        lr, number = self.lr, self.epoch + 1
        train = train_one_epoch(
            self.model,
            self.train_x,
            self.train_y,
            optimizer=self.optimizer,
            loss_fn=self.loss_fn,
            batch_size=self.cfg.batch_size,
            device=self.device,
            augment=self.augment,
            generator=self.generator,
            epoch=number,
            limit=self.cfg.epoch_images,
        )
        val = evaluate(
            self.model,
            self.val_x,
            self.val_y,
            batch_size=max(self.cfg.batch_size, 64),
            device=self.device,
            class_names=self.data.class_names,
        )
        if not math.isfinite(val["loss"]) and len(self.val_y):
            raise NonFiniteLossError(number, None, val["loss"], where="validation")
        metrics = self._epoch_metrics(lr, train, val)
        metrics.update(self._scored_metrics(val["binary_auc"]))
        is_best = self._update_best(metrics.get(self.cfg.best_metric), bool(metrics.get("val_collapsed")))
        self.epoch = metrics["epoch"] = number
        if self.scheduler is not None:
            self.scheduler.step(val["loss"])
        if self.rolled_back:
            self.model.load_state_dict(self.best_state)
        metrics.update(
            best_epoch=self.best_epoch,
            best_value=self.best_value,
            is_best=is_best,
            should_stop=self.stopped_early,
            done=self.done,
        )
        self.history.append(metrics)
        return metrics

    @property
    def rolled_back(self) -> bool:
        """Training is done, the kept weights are the best epoch's, and that was not the last epoch."""
        return (
            self.done
            and self.cfg.keep_weights == "best"
            and self.best_state is not None
            and self.best_epoch != self.epoch
        )

    def _improves(self, value: Any, collapsed: bool) -> bool:
        """The search's rule (``search.results.best_epoch_row``): the best value among the non-collapsed epochs,
        among all epochs only while every epoch so far has collapsed."""
        if value is None or not math.isfinite(float(value)) or (collapsed and not self.best_collapsed):
            return False
        if self.best_collapsed and not collapsed:
            return True
        return float(value) < self.best_value if self.better == "min" else float(value) > self.best_value

    def _update_best(self, value: Any, collapsed: bool) -> bool:
        """The best epoch by ``cfg.best_metric`` (its weights kept on the CPU) and the early-stopping count; returns
        whether this epoch is the best so far."""
        if self._improves(value, collapsed):
            self.best_value, self.best_epoch, self.bad_epochs = float(value), self.epoch + 1, 0
            self.best_collapsed = collapsed
            if self.cfg.keep_weights == "best":
                self.best_state = _cpu_copy(self.model.state_dict())
            return True
        self.bad_epochs += 1
        patience = self.cfg.early_stopping_patience
        self.stopped_early = patience > 0 and self.bad_epochs >= patience
        return False

    def _scored_metrics(self, val_binary_auc: float) -> dict[str, float]:
        """``<name>_auc`` of every scored set (NORMAL vs pneumonia), and ``worst_auc``: the lowest of them and the
        validation split's own (``val_binary_auc``), the DomainBed-style "worst domain" selection signal."""
        if not self.scored:
            return {}
        out = {}
        for name, (x, y) in self.scored.items():
            logits = predict_logits(self.model, x, batch_size=max(self.cfg.batch_size, 64), device=self.device)
            out[f"{name}_auc"] = roc_auc(y, pneumonia_probability(probabilities(logits).numpy(), self.data.class_names))
        values = [val_binary_auc, *out.values()]
        out["worst_auc"] = float(min(values)) if all(math.isfinite(v) for v in values) else math.nan
        return out

    def _epoch_metrics(self, lr: float, train: dict, val: dict) -> dict[str, Any]:
        metrics: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "phase": self.phase,
            "lr": lr,
            "train_loss": train["loss"],
            "train_accuracy": train["accuracy"],
        }
        metrics.update({f"val_{k}": v for k, v in val.items()})
        metrics.update(
            best_metric=self.cfg.best_metric,
            epoch_time_s=train["time_s"],
            images_per_s=train["images_per_s"],
            trainable_params=self.trainable["trainable_params"],
        )
        return metrics

    # -- checkpoint and resume

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this left off (tensors and plain containers only)."""
        rng = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": TRAINER_STATE_FORMAT,
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "phase": self.phase,
            "model": _cpu_copy(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "early_stopping": {
                "best_value": self.best_value,
                "best_collapsed": self.best_collapsed,
                "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs,
                "stopped_early": self.stopped_early,
            },
            "best_state": self.best_state or {},
            "history": plain(self.history),
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: same phase (so the optimizer's parameter groups line up), then every piece of state."""
        if state.get("format") != TRAINER_STATE_FORMAT:
            raise ValueError(f"not a trainer state ({state.get('format')!r}); expected {TRAINER_STATE_FORMAT}")
        if state["phase"] != self.phase:
            self._enter_phase(state["phase"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        es = state["early_stopping"]
        fallback = math.inf if self.better == "min" else -math.inf  # a state saved before best_metric existed
        self.best_value, self.best_epoch = float(es.get("best_value", fallback)), int(es["best_epoch"])
        self.bad_epochs, self.stopped_early = int(es["bad_epochs"]), bool(es["stopped_early"])
        self.best_collapsed = bool(es.get("best_collapsed", self.best_epoch == 0))
        self.best_state = dict(state["best_state"]) or None
        self.history = copy.deepcopy(list(state["history"]))
        self.epoch = int(state["epoch"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    def checkpoint(self, current: bool = False, **info: Any) -> ModelCheckpoint:
        """What a user of the model needs: the kept weights (the best epoch's by ``cfg.best_metric``, or the last
        epoch's with ``keep_weights="last"``; ``current``: this epoch's), config, class names, preprocessing,
        history; ``info`` adds provenance."""
        best = self.best_state is not None and not current and self.cfg.keep_weights == "best"
        weights = self.best_state if best else _cpu_copy(self.model.state_dict())
        kept = self.best_epoch if best else self.epoch
        return ModelCheckpoint(
            config=self.cfg,
            class_names=tuple(self.data.class_names),
            weights=weights,
            preprocess=preprocess_of(self.data.preprocess, self.cfg),
            history=tuple(plain(self.history)),
            info={
                "best_epoch": self.best_epoch,
                "best_metric": self.cfg.best_metric,
                "best_value": self.best_value,
                "kept_epoch": kept,
                "epoch": self.epoch,
                **info,
            },
        )
