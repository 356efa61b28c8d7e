"""ctpet_srgan.evaluation.data: the interpolation baselines and which CT a method is given."""

import numpy as np
import pytest

from ctpet_srgan import evaluation


def _slices(n=2, lr=8, scale=2):
    rng = np.random.default_rng(0)
    return [dict(lr_pet=rng.random((lr, lr)).astype(np.float32), lr_ct=np.full((lr, lr), 40.0, np.float32),
                 hr_ct=np.full((lr * scale, lr * scale), 40.0, np.float32)) for _ in range(n)]


class CtEcho:
    """Fake predictor: returns its CT input (HU) as the PET, so the test sees which CT it was given."""

    def __init__(self, ct_input):
        self.ct_input, self.seen = ct_input, []

    def predict(self, lr_pet, ct_hu=None, *, batch_size=8):
        self.seen.append(ct_hu)
        return {"sr_pet": np.zeros((len(lr_pet), 16, 16)) if ct_hu is None else ct_hu}


def test_baselines_upsample_by_the_scale_and_keep_a_constant_image():
    flat = np.full((3, 8, 8), 2.5, np.float32)
    for flag in evaluation.BASELINES.values():
        up = evaluation.upsample(flat, 2, flag)
        assert up.shape == (3, 16, 16) and np.allclose(up, 2.5)
    out = evaluation.run_method("INTER_CUBIC", _slices(), 2, 8)
    assert out["sr_pet"].shape == (2, 16, 16) and np.allclose(out["sr_ct"], 40.0)  # baselines upsample the LR CT


def test_a_model_gets_the_hr_ct_or_the_one_given_and_a_pet_only_model_none():
    sl = _slices()
    m = CtEcho("hr")
    assert np.all(evaluation.run_method(m, sl, 2, 8)["sr_pet"] == 40.0)  # the slices' own HR CT
    water = np.zeros((2, 16, 16), np.float32)
    assert np.all(evaluation.run_method(m, sl, 2, 8, ct_hu=water)["sr_pet"] == 0.0)  # the CT passed in
    p = CtEcho(None)
    evaluation.run_method(p, sl, 2, 8, ct_hu=water)
    assert p.seen == [None]
    assert evaluation.run_method(p, sl, 2, 8)["sr_ct"] is None
    with pytest.raises(AttributeError):
        evaluation.upsample(np.zeros((1, 4, 4), np.float32), 2, "INTER_NOPE")
