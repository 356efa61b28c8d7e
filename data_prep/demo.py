"""Small synthetic demo data set: phantom DICOM studies converted into a ready training set.

`train_keras.py --prepare_demo_data` calls `ensure_demo_data(DIR, ...)`: if DIR/manifest.json is missing it writes
phantom studies under DIR/phantom_dicom (resumable) and converts them into DIR (resumable); otherwise it does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ctpet_srgan.manifest import MANIFEST, Manifest


def ensure_demo_data(data_dir: str, *, cases: int = 8, seed: int = 0, scale: int = 2, workers: int = 1,
                     log: Callable[[str], None] = print) -> None:
    """Makes sure DATA_DIR holds a complete prepared phantom set (`cases` studies, HR/LR `scale`)."""
    from data_prep.convert import ConvertConfig, convert, discover_studies
    from data_prep.phantom import PhantomConfig, write_phantom_studies

    out = Path(data_dir)
    if (out / MANIFEST).exists():
        m = Manifest.load(out)
        if m.scale != int(scale):
            raise ValueError(f"{out}: holds a scale-{m.scale} set, scale {scale} was asked for;"
                             " use another directory")
        return
    dicom = out / "phantom_dicom"
    log(f"writing {cases} phantom studies under {dicom}")
    write_phantom_studies(dicom, cases, seed, cfg=PhantomConfig())
    specs = discover_studies(dicom, log=log)
    convert(specs, out, ConvertConfig(scale=scale, seed=seed), workers=workers, log=log)
