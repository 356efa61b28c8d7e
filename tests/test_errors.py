"""errors.InputError: the one exception for bad input names the file and the problem, survives pickling (worker
processes send it back to the driver) and is a ValueError (callers that catch ValueError keep working)."""

import pickle

from ctpet_srgan.errors import InputError


def test_message_is_path_colon_problem():
    e = InputError("/data/pet/IM1.dcm", "RescaleSlope is not a number")
    assert str(e) == "/data/pet/IM1.dcm: RescaleSlope is not a number"
    assert e.path == "/data/pet/IM1.dcm" and e.problem == "RescaleSlope is not a number"
    assert isinstance(e, ValueError)


def test_without_a_path_the_message_is_the_problem_alone():
    assert str(InputError(None, "no PET series found")) == "no PET series found"


def test_pickle_round_trip_keeps_path_and_problem():
    for e in (InputError("a/b.nii.gz", "zero-length axis"), InputError(None, "empty")):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is InputError and str(back) == str(e) and back.path == e.path
