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


_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # LPS axes x, y, z: (negative end, positive end)


def axis_letter(vector) -> str:
    """The patient direction (R/L, A/P, I/S in LPS) a direction vector mostly points to; two letters for an
    oblique axis whose second component is at least half the first (e.g. "LP")."""
    v = np.asarray(vector, np.float64)
    order = np.argsort(-np.abs(v))
    letters = [_LETTERS[a][int(v[a] > 0)] for a in order[:2] if abs(v[a]) > 0]
    if len(letters) == 2 and abs(v[order[1]]) < 0.5 * abs(v[order[0]]):
        letters = letters[:1]
    return "".join(letters)


def orientation_labels(direction: np.ndarray) -> dict[str, str]:
    """Letters for the four edges of an image shown with columns (axis i) left to right and rows (axis j) top to
    bottom. direction: 3x3, columns the LPS unit vectors of the i, j (and k) axes (Volume.direction)."""
    d = np.asarray(direction, np.float64)
    return {"left": axis_letter(-d[:, 0]), "right": axis_letter(d[:, 0]),
            "top": axis_letter(-d[:, 1]), "bottom": axis_letter(d[:, 1])}


def scale_bar_mm(width_mm: float) -> float:
    """A round scale-bar length (1, 2, 5 x 10^n mm) of about a fifth of `width_mm`."""
    target = max(float(width_mm) / 5.0, 1e-3)
    base = 10.0 ** np.floor(np.log10(target))
    return float(max(m * base for m in (1, 2, 5) if m * base <= target))
