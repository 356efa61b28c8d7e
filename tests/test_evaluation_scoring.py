"""ctpet_srgan.evaluation.scoring: one method on one study (image accumulators, NEMA rows, detections)."""

import numpy as np
import pytest
from _evaluation_sets import LESION, NSL, phantom_slice

from ctpet_srgan import evaluation

CFG = evaluation.scoring_config(10.0, (-1024.0, 3071.0), 2.5, 1.0, 5.0)


def _study(lesion):
    slices = [phantom_slice(k, lesion) for k in range(NSL)]
    for s in slices:
        s["bicubic_pet"] = s["hr_pet"]
    return slices


def test_a_study_scores_its_lesion_and_the_detector_hits_it():
    slices = _study(True)
    per_slice, missing = evaluation.place_lesions([LESION], slices)
    pred = {"sr_pet": np.stack([s["hr_pet"] for s in slices]) + 0.1, "sr_ct": None}
    sc = evaluation.score_study(pred, slices, per_slice, CFG, with_truth=True, lesion_free=False)
    assert missing == 0 and len(sc["lesions"]) == 1  # scored once, on the slice through its centre
    assert sc["lesions"][0]["crc"] == pytest.approx((4.1 / 1.1 - 1) / 3)
    assert sc["det"]["n_slices"] == NSL and sc["det"]["diameters"] == [12.0]
    assert sc["det"]["lesion_scores"] == [pytest.approx(4.1)] and sc["det"]["n_free"] == 0
    assert sc["acc"]["n_slices"] == NSL and sc["acc"]["ct_n"] == 0 and len(sc["acc"]["fusion"]) == NSL
    img = evaluation.score_image_only(pred, slices, CFG)
    assert img["acc"]["pet_se"] == pytest.approx(sc["acc"]["pet_se"]) and img["lesions"] == []


def test_a_spot_where_the_truth_is_cold_is_a_hallucination_on_a_lesion_free_study():
    slices = _study(False)
    pred = np.stack([s["hr_pet"] for s in slices])
    pred[:, 8:10, 23:25] = 5.0  # inside the body, the truth is 1 SUV there
    sc = evaluation.score_study({"sr_pet": pred}, slices, [[] for _ in slices], CFG, with_truth=True,
                                lesion_free=True)
    hot = CFG["det_threshold_suv"]  # candidates go down to the FROC floor (the 1 SUV plateau); counted from 2.5 SUV
    assert sc["det"]["n_free"] == NSL and [x for x in sc["det"]["halluc"] if x >= hot] == [5.0] * NSL
    assert [x for x in sc["det"]["fp_scores"] if x >= hot] == [5.0] * NSL
    assert min(sc["det"]["fp_scores"]) >= CFG["froc_min_suv"]
    untrue = evaluation.score_study({"sr_pet": pred}, slices, [[] for _ in slices], CFG, with_truth=False,
                                    lesion_free=False)
    assert untrue["det"]["n_slices"] == 0 and untrue["lesions"] == []  # no true HR PET: no lesion scoring
