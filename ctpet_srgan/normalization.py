"""Maps physical units (CT in HU, PET in SUVbw) to the network's numeric range and back.

The models work in normalised units; the serving signature and generate.py work in HU and SUV, so
the same constants must travel with a data set (manifest.json) and an export (metadata.json).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Normalization:
    """norm = (value - offset) / scale, after clipping to [clip_min, clip_max] (physical units)."""

    ct_offset_hu: float = -1000.0  # air maps to 0
    ct_scale_hu: float = 2000.0  # water 0.5, dense bone ~1
    ct_clip_min_hu: float = -1024.0
    ct_clip_max_hu: float = 3071.0
    pet_scale_suv: float = 10.0  # SUV 10 maps to 1; no upper clip (hot lesions must survive)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalization":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: float(v) for k, v in d.items() if k in names})

    # The functions below work on NumPy arrays and TensorFlow tensors alike (only +, -, *, /, clip).
    def ct_to_norm(self, hu, clip_fn=None):
        """HU -> normalised CT. `clip_fn(x, lo, hi)` defaults to NumPy's clip."""
        if clip_fn is None:
            import numpy as np

            clip_fn = np.clip
        return (clip_fn(hu, self.ct_clip_min_hu, self.ct_clip_max_hu) - self.ct_offset_hu) / self.ct_scale_hu

    def ct_from_norm(self, x):
        """Normalised CT -> HU."""
        return x * self.ct_scale_hu + self.ct_offset_hu

    def pet_to_norm(self, suv):
        """SUVbw -> normalised PET."""
        return suv / self.pet_scale_suv

    def pet_from_norm(self, x):
        """Normalised PET -> SUVbw."""
        return x * self.pet_scale_suv


DEFAULT = Normalization()
