"""ctpet_srgan.evaluation.lesions: the manifest's lesions on a study's slices."""

import math

import pytest
from _evaluation_sets import LESION, NSL, phantom_slice

from ctpet_srgan import evaluation


def test_lesion_is_placed_on_the_slice_through_its_centre():
    slices = [dict(hr_affine=phantom_slice(k, False)["hr_affine"]) for k in range(NSL)]
    dz, rc = evaluation.lesion_on_slice([4.0, -6.0, 2.0], slices[1]["hr_affine"])
    assert dz == pytest.approx(0.0)
    assert rc == pytest.approx((23.5 - 3.0, 23.5 + 2.0))  # y -6 mm = 3 rows up, x +4 mm = 2 cols right
    lesions = [LESION, dict(LESION, center_mm=[0, 0, 50.0]), dict(LESION, uptake_ratio=0.5)]
    per_slice, missing = evaluation.place_lesions(lesions, slices)
    assert missing == 1  # the lesion at z = 50 mm crosses no slice; the cold one is not a hot lesion
    assert [[les["scored"] for les in ls] for ls in per_slice] == [[False], [True], [False]]
    assert per_slice[1][0]["radius_mm"] == pytest.approx(6.0)
    assert per_slice[0][0]["radius_mm"] == pytest.approx(math.sqrt(36 - 4))
