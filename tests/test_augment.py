"""Augmentation: identity when off, never a mirror, reproducible with a generator, batched on the tensor."""

from __future__ import annotations

import pytest
import torch

from cxrmodels.data.augment import AugmentConfig, affine_matrices, augment_batch, to_float


def lateralised_batch(n: int = 64, size: int = 32) -> torch.Tensor:
    """A bright blob on the left of every image (the heart's side on a PA film, so to speak)."""
    x = torch.full((n, size, size), 20, dtype=torch.uint8)
    x[:, 12:20, 3:10] = 250
    return x


def column_centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    w = images[:, 0] - images[:, 0].amin(dim=(1, 2), keepdim=True)
    cols = torch.arange(images.shape[-1], dtype=w.dtype)
    return (w.sum(1) * cols).sum(1) / w.sum((1, 2))


def test_to_float_shapes_and_range() -> None:
    x = torch.tensor([[[0, 255], [128, 64]]], dtype=torch.uint8)
    out = to_float(x)
    assert out.shape == (1, 1, 2, 2) and out.dtype == torch.float32
    assert out.min() == 0.0 and out.max() == 1.0
    with pytest.raises(ValueError, match="grayscale"):
        to_float(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))


@pytest.mark.parametrize("cfg", [AugmentConfig(enabled=False), AugmentConfig(shift=0, zoom=0, rotate_deg=0)])
def test_identity_when_disabled(cfg: AugmentConfig) -> None:
    x = lateralised_batch(4)
    assert torch.equal(augment_batch(x, cfg), to_float(x))


def test_never_mirrors_a_lateralised_image() -> None:
    """Across many draws with strong settings the blob stays on the left; a flip would put it on the right."""
    cfg = AugmentConfig(shift=0.1, zoom=0.1, rotate_deg=10)
    g = torch.Generator().manual_seed(0)
    x = lateralised_batch(64)
    centre = x.shape[-1] / 2
    for _ in range(10):
        out = augment_batch(x, cfg, generator=g)
        assert out.shape == (64, 1, 32, 32) and out.dtype == torch.float32
        assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
        assert bool((column_centre_of_mass(out) < centre - 4).all())


def test_affine_matrices_have_positive_determinant_and_bounded_parameters() -> None:
    cfg = AugmentConfig(shift=0.1, zoom=0.1, rotate_deg=10)
    theta = affine_matrices(10_000, cfg, torch.Generator().manual_seed(1))
    det = torch.linalg.det(theta[:, :, :2])
    assert bool((det > 0).all())
    scale = det.sqrt()
    assert float(scale.min()) >= 0.9 - 1e-6 and float(scale.max()) <= 1.1 + 1e-6
    assert float(theta[:, :, 2].abs().max()) <= 0.2 + 1e-6  # 10% of the size = 0.2 in [-1, 1] coordinates
    angle = torch.atan2(theta[:, 1, 0], theta[:, 0, 0]).rad2deg()
    assert float(angle.abs().max()) <= 10 + 1e-4


def test_augmentation_changes_images_and_is_reproducible() -> None:
    cfg = AugmentConfig()
    x = lateralised_batch(8)
    a = augment_batch(x, cfg, generator=torch.Generator().manual_seed(3))
    b = augment_batch(x, cfg, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.allclose(a, to_float(x))


def test_invalid_config_is_refused() -> None:
    with pytest.raises(ValueError, match="shift"):
        AugmentConfig(shift=0.7)


def test_intensity_augmentation_changes_each_image_within_range_reproducibly() -> None:
    from cxrmodels.data.augment import intensity_batch

    x = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(intensity_batch(x, 0.0), x)  # off
    a = intensity_batch(x, 1.0, torch.Generator().manual_seed(1))
    b = intensity_batch(x, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    changed = (a - x).abs().flatten(1).mean(1)
    assert (changed > 1e-3).all()  # every image changed
    weak = (intensity_batch(x, 0.1, torch.Generator().manual_seed(1)) - x).abs().flatten(1).mean(1)
    assert (weak < changed).all()  # the strength scales the change


def test_augment_batch_applies_intensity_only_when_asked() -> None:
    x = (torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    plain = AugmentConfig(0.0, 0.0, 0.0)
    assert plain.is_identity and torch.equal(augment_batch(x, plain), x.float().unsqueeze(1) / 255)
    strong = AugmentConfig(0.0, 0.0, 0.0, intensity=0.8)
    assert not strong.is_identity
    assert not torch.allclose(augment_batch(x, strong, torch.Generator().manual_seed(2)), x.float().unsqueeze(1) / 255)
    with pytest.raises(ValueError, match="intensity"):
        AugmentConfig(intensity=1.5)


def test_test_time_views_are_fixed_small_shifts_and_zooms_identity_first() -> None:
    from cxrmodels.data.augment import TTA_VIEWS, tta_view

    x = torch.zeros(1, 1, 50, 50)
    x[..., 20:30, 20:30] = 1.0
    assert torch.equal(tta_view(x, 0), x)
    right = tta_view(x, 1)  # samples 4% to the right: the square moves left by 2 px
    assert torch.allclose(right[..., 20:30, 18:28], torch.ones(10, 10), atol=1e-5)
    for view in range(1, len(TTA_VIEWS)):
        moved = tta_view(x, view)
        assert not torch.equal(moved, x) and 80 <= float(moved.sum()) <= 125  # still the whole square, in view
    with pytest.raises(ValueError, match="views"):
        tta_view(x, len(TTA_VIEWS))


def test_occlusion_blanks_borders_and_erases_a_rectangle_per_image() -> None:
    import torch

    from cxrmodels.data.augment import AugmentConfig, augment_batch, occlude_batch

    g = torch.Generator().manual_seed(0)
    images = torch.rand(16, 1, 40, 40, generator=g)
    assert torch.equal(occlude_batch(images, 0.0, 0.0, g), images)  # off: identity
    masked = occlude_batch(images, 0.2, 0.0, g)
    changed = (masked != images)[:, 0]
    centre = changed[:, 8:32, 8:32]  # never inside 20% of any edge
    assert not centre.any() and changed.any(dim=(1, 2)).float().mean() > 0.9
    means = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    assert torch.allclose(masked[masked != images], means[masked != images])  # blanked to the image's own mean
    erased = occlude_batch(images, 0.0, 1.0, g)
    share = (erased != images)[:, 0].float().mean(dim=(1, 2))
    assert (share > 0.01).all() and (share < 0.3).all()  # one rectangle of 2-20% of the image each
    cfg = AugmentConfig(shift=0, zoom=0, rotate_deg=0, border_mask=0.1, erase=0.5)
    assert not cfg.is_identity and augment_batch((images[:, 0] * 255).to(torch.uint8), cfg, g).shape == images.shape
