"""ctpet_srgan.evaluation.aggregate: per-study numbers from the accumulators, the paired bootstrap and target rows."""

import math

import numpy as np
import pytest

from ctpet_srgan import evaluation

CFG = evaluation.scoring_config(10.0, (-1024.0, 3071.0), 2.5, 1.0, 5.0)


def _study(offset_suv, body_px=128, crc=(0.5, 0.7)):
    """Accumulators of a study whose PET is off by `offset_suv` everywhere on a 1 SUV body and 0 SUV outside."""
    truth = np.zeros((16, 16))
    body = np.zeros((16, 16), bool)
    body.flat[:body_px] = True
    truth[body] = 1.0
    acc = evaluation.new_acc()
    evaluation.accumulate_image(acc, "pet", truth, truth + offset_suv, body, 10.0)
    acc["n_slices"] = 1
    return dict(acc=acc, lesions=[dict(crc=c) for c in crc], det={})


def test_study_summary_pools_squared_errors_and_normalises_the_nrmse_by_the_truth():
    s = evaluation.study_summary(_study(0.1), CFG)
    assert s["psnr_pet"] == pytest.approx(20 * math.log10(10 / 0.1)) == s["psnr_pet_body"]
    assert s["nrmse_pet_body"] == pytest.approx(0.1)  # sqrt(128 * 0.1^2 / (128 * 1^2))
    assert s["crc_mean"] == pytest.approx(0.6)
    assert math.isnan(s["psnr_ct"]) and math.isnan(s["ssim_ct"])  # no CT scored
    assert math.isnan(evaluation.study_summary(_study(0.1, crc=(float("nan"),)), CFG)["crc_mean"])


def test_paired_bootstrap_takes_per_study_differences():
    a = {h: dict(x=v) for h, v in zip("ABCD", (2.0, 3.0, 4.0, 5.0))}
    b = {h: dict(x=v) for h, v in zip("ABCD", (1.0, 1.0, 1.0, 1.0))}
    b["E"] = dict(x=100.0)  # a study only one method has is not paired
    r = evaluation.paired_bootstrap(a, b, ["x"], seed=0)["x"]
    assert r["mean"] == pytest.approx(2.5) and r["n_studies"] == 4
    assert 1.0 <= r["ci95"][0] < 2.5 < r["ci95"][1] <= 4.0
    assert evaluation.paired_bootstrap(a, b, ["x"], seed=0) == evaluation.paired_bootstrap(a, b, ["x"], seed=0)
    same = evaluation.paired_bootstrap(a, a, ["x"], seed=0)["x"]
    assert same["mean"] == 0.0 and same["ci95"] == [0.0, 0.0]


def test_target_rows_are_met_by_a_non_negative_margin_and_unmeasurable_without_a_value():
    assert evaluation.target_row("t", 1.2, 1.0, 0.2)["met"] is True
    assert evaluation.target_row("t", 0.8, 1.0, -0.2)["met"] is False
    assert evaluation.target_row("t", 1.0, 1.0, 0.0)["met"] is True
    assert evaluation.target_row("t", float("nan"), 1.0, float("nan"))["met"] is None
    assert evaluation.target_row("t", 1.0, 0.0, 0.5, met=False)["met"] is False  # an explicit verdict wins
    assert evaluation.nanmedian([1.0, None, float("nan"), 3.0]) == 2.0 and math.isnan(evaluation.nanmedian([]))
