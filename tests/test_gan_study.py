"""tools/gan_study.py on a constructed study: a known blur is recovered per lesion, white residual noise measured."""

import argparse

import numpy as np
import pytest

import tools.gan_study as gs
from ctpet_srgan import resolution as rs
from ctpet_srgan.geometry import axial_affine

ARGS = argparse.Namespace(roi_margin_mm=10.0, edge_suv_per_mm=0.05, margin_mm=6.0, nps_roi_px=16)


def _study():
    """One 128x128 slice at 2 mm: a water body (CT 0 HU) of SUV 1 with a 16 mm sphere of SUV 4 at its centre plane."""
    n = 128
    yy, xx = np.mgrid[:n, :n]
    body = np.hypot(yy - 64, xx - 64) < 60
    affine = axial_affine((0, 0, 0), (2, 2, 4))
    c_rc = (40.0, 40.0)
    truth = np.where(body, 1.0, 0.0) + 3.0 * (np.hypot(yy - c_rc[0], xx - c_rc[1]) * 2 <= 8.0)
    s = {"hr_pet": truth.astype(np.float32), "hr_ct": np.where(body, 0.0, -1000.0).astype(np.float32),
         "hr_affine": affine, "has_truth": True}
    centre_mm = (affine @ np.array([c_rc[1], c_rc[0], 0, 1]))[:3]  # index (i = col, j = row, k) -> LPS mm
    lesion = {"center_mm": centre_mm.tolist(), "diameter_mm": 16.0, "uptake_ratio": 4.0}
    return [s], [lesion], truth


def test_study_measures_recover_a_known_blur_and_white_noise():
    slices, lesions, truth = _study()
    blurred = rs.gaussian_blur_mm(truth, 6.0, (2.0, 2.0))
    noisy = truth + np.random.default_rng(0).normal(0, 0.1, truth.shape)
    preds = {"exact": truth[None], "blur6": blurred[None], "noisy": noisy[None]}
    m = gs.study_measures(preds, slices, lesions, ARGS)
    assert len(m["blur6"]["lesions"]) == 1
    assert m["blur6"]["lesions"][0]["fwhm_mm"] == pytest.approx(6.0, rel=0.03)
    assert abs(m["exact"]["lesions"][0]["fwhm_mm"]) < 0.1
    s = gs.summarize(m["noisy"]["lesions"], m["noisy"]["noise"], (2.0, 2.0))
    assert s["n_noise_rois"] >= 10  # the uniform body away from the sphere and the body's edge
    assert s["noise_sd_suv"] == pytest.approx(0.1, rel=0.1)
    assert s["nps_f_mean"] == pytest.approx((1 / 32 + 0.25) / 2, rel=0.1)  # white: the mean of the bins
    d = gs.paired({k: v["lesions"] for k, v in m.items()}, "exact")
    assert d["blur6"]["median_mm"] == pytest.approx(6.0, rel=0.03) and d["blur6"]["n_sharper"] == 0
