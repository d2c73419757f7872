"""Procedural chest-X-ray-like images, so the whole system runs (and is tested) with no X-rays at hand.

Three classes drawn on one simple thorax model (body, two lungs, heart, spine, ribs):

- NORMAL: clear lungs (a faint texture and, rarely, a tiny opacity, so the classes overlap);
- BACTERIAL: one dense lobar consolidation, in one lung zone chosen per patient;
- VIRAL: bilateral diffuse interstitial texture with a perihilar haze.

The class signal is deliberately small next to the nuisances real images have: size 96-320 px with aspect
0.75-1.4 (independent of class, so geometry is no shortcut), thorax rotation/offset, lung size, exposure,
contrast and gamma, a heel-effect gradient, anti-scatter grid lines, a bright metal marker and noise. Each
synthetic patient has 1-4 images sharing anatomy and disease site, so patient grouping matters as it does on
Kermany. Everything is a pure function of ``(n, seed)``; bump :data:`GENERATOR_VERSION` whenever the pictures
change, because cache keys include it.

Records carry no pixels: each patient and each image has its own random stream (seeded by the set's seed and its
number), so :func:`synthetic_image` renders image ``i`` anywhere (a cache-building worker on any node) without the
images before it, and listing 200,000 synthetic X-rays costs seconds and no image memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cxrmodels.data.records import BACTERIAL, CLASSES, NORMAL, VIRAL, Record

log = logging.getLogger(__name__)

GENERATOR_VERSION = 4  # 4: per-patient and per-image random streams (records carry no pixels)
SYNTHETIC_SCHEME = "synthetic://"


@dataclass(frozen=True)
class SyntheticPatient:
    """What stays the same across one patient's images: anatomy and where the disease is."""

    patient: str
    label: str
    lung_scale: float
    heart_scale: float
    lesion_side: float  # -1 (image left) or +1
    lesion_level: float  # vertical position of the consolidation in lung units
    severity: float  # 0..1, scales the class signal


def synthetic_path(seed: int, index: int) -> str:
    """The stable pseudo-path of a synthetic image; caches and manifests key on it."""
    return f"{SYNTHETIC_SCHEME}{seed}/{index}"


def _draw_patient(rng: np.random.Generator, number: int) -> SyntheticPatient:
    label = CLASSES[int(rng.integers(len(CLASSES)))]
    return SyntheticPatient(
        patient=f"synth{number:05d}",
        label=label,
        lung_scale=float(rng.uniform(0.8, 1.15)),
        heart_scale=float(rng.uniform(0.85, 1.2)),
        lesion_side=float(rng.choice([-1.0, 1.0])),
        lesion_level=float(rng.uniform(-0.35, 0.4)),
        severity=float(rng.uniform(0.4, 1.0)),
    )


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float, edge: float) -> np.ndarray:
    """A soft-edged ellipse mask in [0, 1] (soft edges avoid aliasing that a CNN could key on)."""
    r = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
    return 1.0 / (1.0 + np.exp(np.minimum((r - 1.0) / edge, 50.0)))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean unit-variance noise blurred to a feature size of ``sigma`` pixels."""
    field = cv2.GaussianBlur(rng.standard_normal(shape, dtype=np.float32), (0, 0), sigmaX=max(sigma, 0.5))
    return field / (field.std() + 1e-6)


def _thorax(p: SyntheticPatient, rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ...]:
    """Density of the body, heart, spine and ribs, and the soft lung mask."""
    ls, hs = p.lung_scale, p.heart_scale
    body = _ellipse(u, v, 0.0, 0.1, 0.88, 1.25, 0.04)
    lungs = _ellipse(u, v, -0.36 * ls, -0.05, 0.24 * ls, 0.52 * ls, 0.06) + _ellipse(
        u, v, 0.36 * ls, -0.05, 0.24 * ls, 0.52 * ls, 0.06
    )
    heart = _ellipse(u, v, 0.1, 0.25, 0.2 * hs, 0.26 * hs, 0.08)
    spine = np.exp(-((u / 0.07) ** 2)) * body
    ribs = 0.5 + 0.5 * np.sin(v * np.pi * rng.uniform(6.0, 9.0) + 2.0 * u**2)
    density = 0.5 * body - 0.3 * lungs + 0.14 * heart + 0.12 * spine + 0.04 * ribs * lungs
    return density, lungs


def _disease(
    p: SyntheticPatient, rng: np.random.Generator, u: np.ndarray, v: np.ndarray, lungs: np.ndarray, size: int
) -> np.ndarray:
    """Added density of the class signal (and of the normal look-alikes that make classes overlap)."""
    ls = p.lung_scale
    if p.label == BACTERIAL:
        cu = p.lesion_side * 0.36 * ls + float(rng.normal(0, 0.03))
        cv = p.lesion_level * ls + float(rng.normal(0, 0.03))
        sigma = float(rng.uniform(0.08, 0.15)) * ls
        blob = np.exp(-(((u - cu) ** 2) + ((v - cv) / 1.3) ** 2) / (2 * sigma**2))
        return p.severity * rng.uniform(0.2, 0.32) * blob * lungs
    texture = _smooth_noise(rng, u.shape, 0.02 * size)
    perihilar = np.exp(-((np.abs(u) - 0.2) ** 2 + (v - 0.05) ** 2) / 0.15)
    if p.label == VIRAL:
        amplitude = p.severity * rng.uniform(0.09, 0.15)
        return (amplitude * np.abs(texture) + p.severity * 0.1 * perihilar) * lungs
    extra = 0.02 * rng.uniform() * np.abs(texture) * lungs  # normal lungs are not perfectly clear
    if rng.uniform() < 0.15:  # a small benign opacity: a normal image that looks a little bacterial
        cu, cv = float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.4, 0.4))
        extra = extra + 0.06 * np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * 0.05**2)) * lungs
    return extra


def _nuisances(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Exposure, contrast, gamma, heel effect, grid lines, a metal marker and noise, all class-independent."""
    h, w = img.shape
    xx, yy = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    img = img + rng.uniform(0.0, 0.12) * (xx / w if rng.uniform() < 0.5 else yy / h)
    if rng.uniform() < 0.5:
        period = rng.uniform(2.5, 6.0)
        lines = np.cos((xx if rng.uniform() < 0.5 else yy) * np.float32(2 * np.pi / period))
        img = img + np.float32(rng.uniform(0.02, 0.06)) * lines
    img = np.clip(img * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1), 0.0, 1.0) ** rng.uniform(0.6, 1.6)
    if rng.uniform() < 0.7:
        mh, mw = int(h * rng.uniform(0.05, 0.12)), int(w * rng.uniform(0.05, 0.12))
        y0 = int(rng.uniform(0.02, 0.3) * h) if rng.uniform() < 0.5 else int(rng.uniform(0.6, 0.9) * h)
        x0 = int(rng.uniform(0.02, 0.85) * w)
        img[y0 : y0 + mh, x0 : x0 + mw] = 1.0
    img = img + rng.uniform(0.01, 0.06) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def render_image(p: SyntheticPatient, rng: np.random.Generator) -> np.ndarray:
    """One (H, W) uint8 image of patient ``p``; ``rng`` drives the per-image nuisances.

    The anatomy and disease are smooth, so they are drawn at half resolution and enlarged (4x less work); the
    nuisances that live at pixel scale (grid lines, noise, marker edges) are drawn at full resolution.
    """
    h = int(rng.integers(96, 321))
    w = int(np.clip(round(h * rng.uniform(0.75, 1.4)), 96, 320))
    hh, hw = (h + 1) // 2, (w + 1) // 2
    angle = float(np.deg2rad(rng.uniform(-7.0, 7.0)))
    du, dv = (float(d) for d in rng.uniform(-0.08, 0.08, size=2))
    u0 = (np.arange(hw, dtype=np.float32)[None, :] - hw / 2) / (hw / 2) - du
    v0 = (np.arange(hh, dtype=np.float32)[:, None] - hh / 2) / (hh / 2) - dv
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    u, v = cos * u0 - sin * v0, sin * u0 + cos * v0
    density, lungs = _thorax(p, rng, u, v)
    density = density + _disease(p, rng, u, v, lungs, min(hh, hw)) + 0.1
    return _nuisances(rng, cv2.resize(density.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR))


def _patient(seed: int, number: int) -> SyntheticPatient:
    """Patient ``number`` of the set ``seed``, from its own random stream."""
    return _draw_patient(np.random.default_rng([seed, GENERATOR_VERSION, 1, number]), number)


def synthetic_records(n: int, seed: int = 0) -> list[Record]:
    """``n`` records of patients with 1-4 images each, without pixels (:func:`synthetic_image` renders one); the
    first ``n`` records of a larger set are this set."""
    plan = np.random.default_rng([seed, GENERATOR_VERSION])
    records: list[Record] = []
    number = 0
    while len(records) < n:
        patient = _patient(seed, number)
        number += 1
        for _ in range(int(plan.integers(1, 5))):
            if len(records) == n:
                break
            records.append(
                Record(path=synthetic_path(seed, len(records)), label=patient.label, patient=patient.patient)
            )
    return records


def synthetic_image(record: Record) -> np.ndarray:
    """The (H, W) uint8 pixels of a synthetic record, rendered from its path and patient alone."""
    seed, _, index = record.path.removeprefix(SYNTHETIC_SCHEME).partition("/")
    patient = _patient(int(seed), int(record.patient.removeprefix("synth")))
    return render_image(patient, np.random.default_rng([int(seed), GENERATOR_VERSION, 2, int(index)]))


def pixels_in_memory(record: Record) -> np.ndarray | None:
    """The raw pixels of a record with no file behind it (held in memory, or rendered by the generator); None for a
    file, which is decoded."""
    if record.image is not None:
        return record.image
    return synthetic_image(record) if record.path.startswith(SYNTHETIC_SCHEME) else None


def _kaggle_name(record: Record, index: int) -> tuple[str, str]:
    """Folder and Kermany-style file name (so the written set exercises the Kaggle parser)."""
    number = int(record.patient.removeprefix("synth"))
    if record.label == NORMAL:
        prefix = "NORMAL2-IM" if number % 2 else "IM"
        return NORMAL, f"{prefix}-{number:04d}-{index:04d}"
    kind = "bacteria" if record.label == BACTERIAL else "virus"
    return "PNEUMONIA", f"person{number}_{kind}_{index}"


def write_synthetic_folder(root: str | Path, n: int, seed: int = 0, *, jpeg_every: int = 3) -> Path:
    """Write the synthetic set as real files in the Kaggle layout ``<root>/train/{NORMAL,PNEUMONIA}/``.

    Every ``jpeg_every``-th image is a JPEG, the rest PNG, so demos and tests see both decoders.
    """
    root = Path(root)
    for folder in (NORMAL, "PNEUMONIA"):
        (root / "train" / folder).mkdir(parents=True, exist_ok=True)
    for i, record in enumerate(synthetic_records(n, seed)):
        folder, stem = _kaggle_name(record, i)
        ext = ".jpeg" if jpeg_every and i % jpeg_every == 0 else ".png"
        if not cv2.imwrite(str(root / "train" / folder / f"{stem}{ext}"), synthetic_image(record)):
            raise OSError(f"could not write {root / 'train' / folder / (stem + ext)}")
    log.info("wrote %d synthetic images to %s", n, root)
    return root
