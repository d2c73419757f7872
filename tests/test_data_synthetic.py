"""The synthetic source: deterministic, varied like real images, grouped by patient, learnable but not trivial."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_predict

from cxrmodels.data.preprocess import PreprocessConfig, preprocess
from cxrmodels.data.records import CLASSES
from cxrmodels.data.synthetic import synthetic_image, synthetic_records


def test_deterministic_by_seed() -> None:
    a, b, c = synthetic_records(8, 0), synthetic_records(8, 0), synthetic_records(8, 1)
    assert [r.path for r in a] == [f"synthetic://0/{i}" for i in range(8)]
    for x, y in zip(a, b, strict=True):
        assert (x.label, x.patient) == (y.label, y.patient)
        np.testing.assert_array_equal(synthetic_image(x), synthetic_image(y))
    assert any(not np.array_equal(synthetic_image(x), synthetic_image(z)) for x, z in zip(a, c, strict=True))
    # a set is the first records of any larger set with its seed, and any image renders without the ones before
    assert [(r.path, r.label, r.patient) for r in synthetic_records(20, 0)[:8]] == [
        (r.path, r.label, r.patient) for r in a
    ]
    np.testing.assert_array_equal(synthetic_image(synthetic_records(20, 0)[7]), synthetic_image(a[7]))


def test_varied_sizes_classes_and_patients() -> None:
    records = synthetic_records(120, 2)
    images = [synthetic_image(r) for r in records]
    shapes = np.array([image.shape for image in images])
    assert shapes.min() >= 96 and shapes.max() <= 320
    aspects = shapes[:, 1] / shapes[:, 0]
    assert aspects.min() < 0.9 and aspects.max() > 1.25
    assert set(Counter(r.label for r in records)) == set(CLASSES)
    per_patient = Counter(r.patient for r in records)
    assert max(per_patient.values()) > 1 and len(per_patient) < len(records)
    assert all(image.dtype == np.uint8 and image.ndim == 2 for image in images)
    # geometry carries no class signal: median aspect per class within a few percent
    medians = [np.median(aspects[[r.label == c for r in records]]) for c in CLASSES]
    assert max(medians) / min(medians) < 1.15


def test_learnable_but_not_trivial() -> None:
    """A linear model on 32 px pixels is above chance (there is a signal) but far from perfect (it is subtle)."""
    records = synthetic_records(240, 8)
    cfg = PreprocessConfig(size=32, clahe=False, blur=False)
    x = np.stack([preprocess(synthetic_image(r), cfg) for r in records]).reshape(len(records), -1) / 255.0
    y = np.array([CLASSES.index(r.label) for r in records])
    groups = [r.patient for r in records]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter; the accuracy is what is tested
        pred = cross_val_predict(LogisticRegression(C=1.0, max_iter=300), x, y, cv=GroupKFold(3), groups=groups)
    accuracy = float((pred == y).mean())
    assert 0.45 < accuracy < 0.9, accuracy  # chance is ~0.33
