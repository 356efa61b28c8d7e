"""Small synthetic demo data set: phantom DICOM studies converted into a ready training set.

`train_keras.py --prepare_demo_data` calls `ensure_demo_data(DIR, ...)`: if DIR/manifest.json is missing it writes
phantom studies under DIR/phantom_dicom (resumable) and converts them into DIR (resumable); otherwise it does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ctpet_srgan.manifest import MANIFEST, Manifest


def ensure_demo_data(data_dir: str, *, cases: int = 8, seed: int = 0, scale: int = 2, world: str = "default",
                     workers: int = 1, log: Callable[[str], None] = print) -> None:
    """Makes sure DATA_DIR holds a complete prepared phantom set.

    Args:
        data_dir: the prepared set's folder (phantom DICOM under DATA_DIR/phantom_dicom).
        cases: phantom studies to write. seed: their random seed. scale: the HR/LR factor (2 or 4).
        world: the phantom world, "default" (every CT edge a PET edge) or "guided" (CT guidance can be right or
            wrong: data_prep/phantom.py).
        workers: conversion processes. log: progress lines.

    Raises:
        ValueError: DATA_DIR already holds a set of another scale or world.
    """
    from data_prep.convert import ConvertConfig, convert, discover_studies
    from data_prep.phantom import PhantomConfig, write_phantom_studies

    out = Path(data_dir)
    if (out / MANIFEST).exists():
        m = Manifest.load(out)
        if m.scale != int(scale):
            raise ValueError(f"{out}: holds a scale-{m.scale} set, scale {scale} was asked for;"
                             " use another directory")
        held = "guided" if m.is_guided else "default"
        if held != world:
            raise ValueError(f"{out}: holds a {held}-world phantom set, the {world} world was asked for;"
                             " delete it (and the run trained on it) or use another directory")
        return
    dicom = out / "phantom_dicom"
    log(f"writing {cases} {world}-world phantom studies under {dicom}")
    write_phantom_studies(dicom, cases, seed, cfg=PhantomConfig(world=world))
    specs = discover_studies(dicom, log=log)
    convert(specs, out, ConvertConfig(scale=scale, seed=seed), workers=workers, log=log)
