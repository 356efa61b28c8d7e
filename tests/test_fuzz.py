"""tools/fuzz.py: a few hundred mutated DICOM files, NIfTI and series read without a crash, and the harness itself
notices crashes and insane volumes (the full run is `python tools/fuzz.py --n 10000 --series 1000`)."""

import numpy as np
import pytest

import tools.fuzz as fuzz
from ctpet_srgan.errors import InputError
from ctpet_srgan.geometry import Volume

pytestmark = pytest.mark.filterwarnings("ignore")  # pydicom warns about every invalid value it is fed


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    return fuzz.Fuzzer(seed=1, workdir=tmp_path_factory.mktemp("fuzz"))


def test_300_mutated_inputs_never_crash(fuzzer):
    for i in range(250):
        fuzzer.file_case(i)
    for i in range(50):
        fuzzer.series_case(i)
    assert fuzzer.crashes == [], "\n".join(fuzzer.crashes[:5])
    c = fuzzer.counts
    assert sum(c["file"].values()) + sum(c["nifti"].values()) == 250 and sum(c["series"].values()) == 50
    # the mutations are neither all harmless nor all fatal: both outcomes occur for each kind
    for kind in ("file", "nifti", "series"):
        assert c[kind]["ok"] > 0 and c[kind]["error"] > 0, (kind, c[kind])


def test_seeds_include_real_files(fuzzer):
    labels = [label for label, _ in fuzzer.files]
    assert "pydicom CT_small.dcm" in labels and any("phantom PET" in x for x in labels)
    if fuzz.REAL_PET.is_file():
        assert "real PET slice" in labels


def test_harness_counts_a_crash_and_an_insane_volume():
    def boom():
        raise TypeError("int() argument must be a string, not 'MultiValue'")

    assert fuzz.run_one(boom)[0] == "crash"
    assert fuzz.run_one(lambda: (_ for _ in ()).throw(InputError("/x.dcm", "bad"))) == ("error", "/x.dcm: bad")
    eye = np.eye(4)
    ok = Volume(np.zeros((1, 2, 2), np.float32), eye, "CT", "HU")
    assert fuzz.run_one(lambda: ok) == ("ok", "")
    zero = eye.copy()
    zero[2, 2] = 0.0
    assert "spacing" in fuzz.run_one(lambda: Volume(np.zeros((1, 2, 2), np.float32), zero, "CT", "HU"))[1]
    nan = Volume(np.full((1, 2, 2), np.nan, np.float32), eye, "CT", "HU")
    assert fuzz.run_one(lambda: nan) == ("crash", "returned volume with non-finite values")
    assert fuzz.run_one(lambda: (_ for _ in ()).throw(InputError("/x", "two\nlines")))[0] == "crash"


def test_cases_replay_identically(tmp_path):
    a = fuzz.Fuzzer(seed=3, workdir=tmp_path)
    rng1, rng2 = a._rng("file", 17), a._rng("file", 17)
    label = a.files[rng1.randrange(len(a.files))][0]
    assert label == a.files[rng2.randrange(len(a.files))][0]
    d1 = fuzz.mutate_dicom(a.files[0][1], a._rng("x", 5))
    d2 = fuzz.mutate_dicom(a.files[0][1], a._rng("x", 5))
    assert d1 == d2 and d1[0] != a.files[0][1]


def test_command_line_exit_code(capsys):
    assert fuzz.main(["--n", "20", "--series", "3", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "crash 0" in out and "series       3 cases" in out
