"""Shared test set-up: quiet TensorFlow, a few small fixtures, and the path to ../shared/."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
REAL_PET_SLICE = SHARED / "data" / "real" / "acrin_flt_breast_pet_slice.dcm"


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    """The evaluation tests' tiny prepared phantom set (tests/_evaluation_sets.py), written once per module."""
    from _evaluation_sets import write_phantom_set

    d = tmp_path_factory.mktemp("phantom")
    write_phantom_set(d)
    return d
