"""The fused PET/CT view: a PET colour map blended over grey-scale CT, as viewers show it."""

from __future__ import annotations

import numpy as np


def window(ct_hu: np.ndarray, center_hu: float, width_hu: float) -> np.ndarray:
    """CT window (centre/width in HU) -> grey values in [0, 1]."""
    lo = center_hu - width_hu / 2.0
    return np.clip((np.asarray(ct_hu, np.float32) - lo) / width_hu, 0.0, 1.0)


def fuse_rgb(
    ct_hu: np.ndarray,
    pet_suv: np.ndarray,
    *,
    ct_window: tuple[float, float] = (40.0, 400.0),
    suv_max: float | None = None,
    alpha: float = 0.6,
    cmap: str = "hot",
) -> np.ndarray:
    """Blends PET (SUV, colour map from 0 to `suv_max`) over windowed CT (centre, width in HU).

    Both images must be on the same grid [H, W]. `suv_max` defaults to the PET's 99.5th percentile
    (at least 1 SUV). The PET opacity grows with uptake (alpha * normalised SUV) so cold areas show
    the CT. Returns uint8 RGB [H, W, 3].
    """
    import matplotlib

    ct = np.asarray(ct_hu, np.float32)
    pet = np.asarray(pet_suv, np.float32)
    if ct.shape != pet.shape or ct.ndim != 2:
        raise ValueError(f"fuse_rgb needs two 2-D images on one grid, got CT {ct.shape} and PET {pet.shape}")
    if suv_max is None:
        suv_max = max(float(np.percentile(pet, 99.5)), 1.0)
    grey = window(ct, *ct_window)[..., None].repeat(3, axis=-1)
    p = np.clip(pet / suv_max, 0.0, 1.0)
    colour = matplotlib.colormaps[cmap](p)[..., :3]
    a = (alpha * p)[..., None]
    rgb = (1.0 - a) * grey + a * colour
    return np.round(rgb * 255.0).astype(np.uint8)
