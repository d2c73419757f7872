"""The training loop: learning, early stopping with restore, divergence, phases, determinism and exact resume."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch

from cxrmodels.train import loop
from cxrmodels.train.config import TrialConfig
from cxrmodels.train.loop import NonFiniteLossError, TrainData, Trainer, evaluate, predict_proba, train_one_epoch

BINARY = ("NORMAL", "PNEUMONIA")
TIMING_KEYS = {"epoch_time_s", "images_per_s"}


def structured_arrays(n: int, size: int = 64, seed: int = 0, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Noise images where class k has a bright patch at a class-specific place: learnable in a couple of epochs."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    rng.shuffle(y)
    x = rng.integers(0, 80, size=(n, size, size), dtype=np.uint8)
    q = size // 4
    for k in range(1, classes):
        x[y == k, q : 2 * q, (k - 1) * q + 4 : k * q + 4] += 150
    return x, y.astype(np.int64)


def tiny_data(n_train: int = 64, n_val: int = 32, size: int = 48, classes: int = 2) -> TrainData:
    tx, ty = structured_arrays(n_train, size, seed=0, classes=classes)
    vx, vy = structured_arrays(n_val, size, seed=1, classes=classes)
    names = BINARY if classes == 2 else ("NORMAL", "BACTERIAL", "VIRAL")
    return TrainData(tx, ty, vx, vy, names, preprocess={"size": size, "clahe": True})


def tiny_cfg(**changes: object) -> TrialConfig:
    base = {"backbone": "custom_cnn", "image_size": 48, "batch_size": 32, "epochs": 2, "lr": 2e-3, "seed": 0}
    return TrialConfig.from_dict({**base, **changes})


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def assert_same_metrics(a: dict, b: dict) -> None:
    a, b = without_timing(a), without_timing(b)
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], float) and math.isnan(a[key]):
            assert math.isnan(b[key]), key
        else:
            assert a[key] == b[key], key


def test_two_epochs_lower_the_training_loss() -> None:
    data = tiny_data()
    trainer = Trainer(tiny_cfg(epochs=2, augment=False, batch_size=8), data)
    before = evaluate(trainer.model, data.train_x, data.train_y, batch_size=64, device="cpu", class_names=BINARY)
    history = [trainer.run_epoch(), trainer.run_epoch()]
    after = evaluate(trainer.model, data.train_x, data.train_y, batch_size=64, device="cpu", class_names=BINARY)
    assert after["loss"] < before["loss"] - 0.05
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert trainer.done and trainer.epoch == 2


def test_run_epoch_returns_the_documented_flat_metrics() -> None:
    trainer = Trainer(tiny_cfg(epochs=1), tiny_data())
    m = trainer.run_epoch()
    for key in (
        "epoch",
        "phase",
        "lr",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "val_balanced_accuracy",
        "val_macro_f1",
        "val_auc",
        "val_recall_NORMAL",
        "val_recall_PNEUMONIA",
        "val_collapsed",
        "best_epoch",
        "is_best",
        "should_stop",
        "done",
        "epoch_time_s",
        "images_per_s",
        "trainable_params",
    ):
        assert key in m, key
    assert all(isinstance(v, int | float | bool | str) for v in m.values())
    assert m["epoch"] == 1 and m["phase"] == "full" and m["is_best"] and m["best_epoch"] == 1 and m["done"]
    with pytest.raises(RuntimeError, match="done"):
        trainer.run_epoch()


def _scripted(monkeypatch: pytest.MonkeyPatch, values: list[tuple[float, float, bool]]) -> None:
    """Validation figures (auc, loss, collapsed) per epoch, in place of the real ones."""
    scripted = iter(values)
    real_evaluate = loop.evaluate

    def fake_evaluate(*args: object, **kwargs: object) -> dict:
        auc, loss, collapsed = next(scripted)
        return {**real_evaluate(*args, **kwargs), "auc": auc, "loss": loss, "collapsed": collapsed}

    monkeypatch.setattr(loop, "evaluate", fake_evaluate)


def _run(trainer: Trainer) -> tuple[dict, dict[int, dict]]:
    snapshots = {}
    while not trainer.done:
        m = trainer.run_epoch()
        if not trainer.done:
            snapshots[m["epoch"]] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    return m, snapshots


def test_early_stopping_restores_the_best_epoch_by_the_objective(monkeypatch: pytest.MonkeyPatch) -> None:
    """Best validation AUROC (the search's objective) at epoch 2, patience 2 -> stops after epoch 4 with epoch 2's
    weights, although epoch 3 has the lowest validation loss."""
    _scripted(monkeypatch, [(0.70, 0.50, False), (0.90, 0.45, False), (0.80, 0.30, False), (0.75, 0.60, False)])
    trainer = Trainer(tiny_cfg(epochs=10, early_stopping_patience=2, plateau=False), tiny_data(32, 16))
    m, snapshots = _run(trainer)
    assert m["epoch"] == 4 and m["should_stop"] and m["best_epoch"] == 2 and not m["is_best"]
    final = trainer.model.state_dict()
    assert all(torch.equal(final[k], snapshots[2][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[3][k]) for k in final)
    ckpt = trainer.checkpoint()
    assert ckpt.info["best_epoch"] == 2 and ckpt.info["kept_epoch"] == 2 and ckpt.info["best_metric"] == "val_auc"
    assert all(torch.equal(ckpt.weights[k], snapshots[2][k]) for k in final)


def test_best_metric_val_loss_is_an_explicit_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted(monkeypatch, [(0.70, 0.50, False), (0.90, 0.45, False), (0.80, 0.30, False)])
    trainer = Trainer(tiny_cfg(epochs=3, best_metric="val_loss", plateau=False), tiny_data(32, 16))
    m, snapshots = _run(trainer)
    assert m["best_epoch"] == 3 and trainer.checkpoint().info["kept_epoch"] == 3


def test_run_to_its_end_keeps_the_last_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """keep_weights="last" (study B's grid, no early stopping): the last epoch's weights, never rolled back."""
    _scripted(monkeypatch, [(0.70, 0.5, False), (0.90, 0.4, False), (0.60, 0.6, False)])
    trainer = Trainer(
        tiny_cfg(epochs=3, early_stopping_patience=0, keep_weights="last", plateau=False), tiny_data(32, 16)
    )
    m, _ = _run(trainer)
    last = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    ckpt = trainer.checkpoint()
    assert m["best_epoch"] == 2 and not trainer.rolled_back and ckpt.info["kept_epoch"] == 3
    assert all(torch.equal(ckpt.weights[k], last[k]) for k in last)


@pytest.mark.parametrize("seed", range(6))
def test_best_epoch_rule_is_the_searchs(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """The Trainer (retraining, cxrmodels.train) and the search's results table pick the same best epoch from the
    same history, collapsed epochs included."""
    from search.results import best_epoch_row

    rng = np.random.default_rng(seed)
    values = [(float(rng.uniform(0.4, 1.0)), float(rng.uniform(0.2, 1)), bool(rng.random() < 0.4)) for _ in range(6)]
    _scripted(monkeypatch, values)
    trainer = Trainer(tiny_cfg(epochs=6, early_stopping_patience=0, plateau=False), tiny_data(32, 16))
    _run(trainer)
    row, _ = best_epoch_row(pd.DataFrame(trainer.history), "val_auc", "max")
    assert trainer.best_epoch == row["epoch"], values


def test_non_finite_loss_raises_with_epoch_and_batch() -> None:
    trainer = Trainer(tiny_cfg(), tiny_data(64, 16))
    trainer.loss_fn = lambda logits, y: logits.float().mean() * float("inf")
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 0") as info:
        trainer.run_epoch()
    assert info.value.epoch == 1 and info.value.batch == 0


def test_divergent_learning_rate_raises_non_finite() -> None:
    trainer = Trainer(tiny_cfg(optimizer="sgd", lr=1e12, epochs=3, class_weights=False), tiny_data(64, 16))
    with pytest.raises(NonFiniteLossError):
        while not trainer.done:
            trainer.run_epoch()


def test_same_config_twice_gives_the_same_metrics() -> None:
    data = tiny_data(48, 16)
    runs = []
    for _ in range(2):
        trainer = Trainer(tiny_cfg(epochs=2, dropout=0.5), data)
        runs.append([trainer.run_epoch(), trainer.run_epoch()])
    for a, b in zip(*runs, strict=True):
        assert_same_metrics(a, b)


def test_resume_from_state_dict_matches_an_uninterrupted_run() -> None:
    """Phase switch, augmentation, dropout, plateau and early-stopping state all survive a weights_only round trip."""
    data = tiny_data(48, 24, size=32, classes=3)
    cfg = tiny_cfg(
        task="multiclass",
        backbone="test_resnet",
        image_size=32,
        epochs=2,
        freeze_epochs=1,
        finetune_blocks=1,
        head_hidden=16,
        batch_size=16,
    )
    straight = Trainer(cfg, data)
    first = straight.run_epoch()
    buffer = io.BytesIO()
    torch.save(straight.state_dict(), buffer)
    expected = straight.run_epoch()

    buffer.seek(0)
    resumed = Trainer(cfg, data)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.epoch == 1 and resumed.history[0]["val_loss"] == first["val_loss"]
    got = resumed.run_epoch()
    assert_same_metrics(expected, got)
    assert (first["phase"], got["phase"]) == ("frozen", "finetune") and got["done"]
    final = resumed.model.state_dict()
    assert all(torch.equal(v, straight.model.state_dict()[k]) for k, v in final.items())


def test_transfer_learning_phases_freeze_then_unfreeze_at_a_lower_lr() -> None:
    cfg = tiny_cfg(
        backbone="test_resnet",
        image_size=32,
        epochs=2,
        freeze_epochs=1,
        finetune_blocks=1,
        lr=1e-3,
        finetune_lr_ratio=0.1,
        head_hidden=16,
    )
    trainer = Trainer(cfg, tiny_data(32, 16, size=32))
    head = sum(p.numel() for p in trainer.model.head.parameters())
    m1 = trainer.run_epoch()
    assert m1["phase"] == "frozen" and m1["lr"] == pytest.approx(1e-3) and m1["trainable_params"] == head
    m2 = trainer.run_epoch()
    assert m2["phase"] == "finetune" and m2["lr"] == pytest.approx(1e-4) and m2["trainable_params"] > head
    trainable = {n.split(".")[1] for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable <= {"layer4", "0", "1", "2", "3", "4"}  # last backbone stage + head indices


def test_plateau_reduces_the_learning_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    losses = iter([0.5, 0.6, 0.7, 0.8])
    real_evaluate = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: {**real_evaluate(*a, **k), "loss": next(losses)})
    trainer = Trainer(tiny_cfg(epochs=4, plateau_patience=1, early_stopping_patience=0, lr=1e-3), tiny_data(32, 16))
    lrs = [trainer.run_epoch()["lr"] for _ in range(4)]
    assert lrs == pytest.approx([1e-3, 1e-3, 2e-4, 4e-5])


def test_pure_functions_and_predict_proba() -> None:
    data = tiny_data(32, 16)
    model = loop.build_model(tiny_cfg())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = train_one_epoch(
        model,
        data.train_x,
        data.train_y,
        optimizer=opt,
        loss_fn=loop.build_loss("binary"),
        batch_size=8,
        device="cpu",
        generator=torch.Generator().manual_seed(0),
    )
    assert out["images"] == 32 and 0 <= out["accuracy"] <= 1 and out["loss"] > 0
    probs = predict_proba(model, data.val_x, batch_size=5)
    assert probs.shape == (16, 2) and np.allclose(probs.sum(1), 1, atol=1e-6)


def test_class_weights_balanced() -> None:
    w = loop.balanced_class_weights(np.array([0, 0, 0, 1]), 2)
    assert w.tolist() == pytest.approx([4 / 6, 2.0])


@pytest.mark.parametrize("task,classes", [("binary", 2), ("multiclass", 3)])
def test_gpu_fast_path_dtypes_hold_under_bf16_autocast_and_channels_last(
    monkeypatch: pytest.MonkeyPatch, task: str, classes: int
) -> None:
    """CI has no GPU: run the CUDA path's bf16 autocast and channels_last layout on the CPU, so its dtype handling
    (bf16 logits into the fp32 loss, metrics and probabilities) is exercised on every commit."""
    monkeypatch.setattr(loop, "autocast", lambda device: torch.autocast("cpu", dtype=torch.bfloat16))
    monkeypatch.setattr(
        loop, "to_model_layout", lambda images, device: images.contiguous(memory_format=torch.channels_last)
    )
    trainer = Trainer(tiny_cfg(task=task).replace(epochs=2), tiny_data(classes=classes))
    trainer.model = trainer.model.to(memory_format=torch.channels_last)
    first, second = trainer.run_epoch(), trainer.run_epoch()
    for metrics in (first, second):
        assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])
        assert 0.0 <= metrics["val_accuracy"] <= 1.0
    probs = predict_proba(trainer.model, tiny_data(classes=classes).val_x)
    assert probs.dtype == np.float32 and probs.shape[1] == classes
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_cxrmodels_imports_neither_ray_nor_optuna() -> None:
    """The library must stay usable without the drivers' dependencies: import every module, in a fresh process."""
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, sys, cxrmodels\n"
        "for m in pkgutil.walk_packages(cxrmodels.__path__, 'cxrmodels.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('ray', 'optuna'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_predict_proba_averages_the_test_time_views() -> None:
    from cxrmodels.train.loop import build_model, predict_logits, probabilities

    torch.manual_seed(0)
    model = build_model(TrialConfig(backbone="test_resnet", image_size=32, task="multiclass"))
    x = (np.random.default_rng(0).random((6, 32, 32)) * 255).astype(np.uint8)
    plain = predict_proba(model, x)
    assert np.allclose(plain, predict_proba(model, x, tta=1))
    views = [probabilities(predict_logits(model, x, batch_size=4, device="cpu", view=v)).numpy() for v in range(3)]
    assert np.allclose(predict_proba(model, x, batch_size=4, tta=3), np.mean(views, axis=0), atol=1e-6)
    assert not np.allclose(views[0], views[1])
    with pytest.raises(ValueError, match="tta"):
        predict_proba(model, x, tta=0)


def test_epoch_images_draws_a_fresh_sample_of_that_many_images_each_epoch(monkeypatch) -> None:
    trainer = Trainer(tiny_cfg(epochs=2, batch_size=8, epoch_images=20), tiny_data())
    seen, orders, real, perm = [], [], loop.train_one_epoch, torch.randperm
    monkeypatch.setattr(
        loop,
        "train_one_epoch",
        lambda *a, **k: (
            seen.append(real(*a, **k)["images"])
            or {"loss": 0.5, "accuracy": 0.5, "images": seen[-1], "time_s": 1.0, "images_per_s": 1.0}
        ),
    )
    monkeypatch.setattr(torch, "randperm", lambda *a, **k: orders.append(perm(*a, **k)) or orders[-1])
    trainer.run_epoch()
    trainer.run_epoch()
    assert seen == [20, 20] and len(trainer.data.train_x) > 20
    assert not torch.equal(orders[0][:20], orders[-1][:20])  # another sample each epoch
    with pytest.raises(ValueError, match="epoch_images"):
        tiny_cfg(epoch_images=1)
