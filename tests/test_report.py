"""ctpet_srgan.report: strict JSON for results.json and the Markdown tables of results.md."""

import json
import math

import numpy as np

from ctpet_srgan import report


def test_results_json_encodes_infinite_and_missing_values_explicitly():
    out = report.clean({"psnr": float("inf"), "ssim": float("nan"), "x": [np.float32(1.5), np.int64(2)],
                         "m": -math.inf})
    assert out == {"psnr": "inf", "ssim": None, "x": [1.5, 2], "m": "-inf"}
    json.dumps(out, allow_nan=False)  # strict JSON


def test_markdown_escapes_pipes_and_marks_targets():
    res = {"methods": {}, "data": dict(split="test", n_studies=1, n_slices=2, n_studies_with_truth=0,
                                       n_slices_with_truth=0, n_lesions=0, n_lesion_free_studies=0, scale=2),
           "settings": dict(pet_range_suv=10.0, ct_range_hu=[-1024.0, 3071.0], body_mask="HR CT > -500 HU",
                            det_threshold_suv=2.5, min_separation_mm=5.0),
           "patients": dict(n_studies_with_tumour_mask=0, per_study={}, median={}, reference={}),
           "targets": [dict(target="median |SUVmean error| <= 0.02", value=0.03, limit=0.02, met=False, margin=-0.01),
                       dict(target="x", value=None, limit=None, met=None, margin=None)]}
    md = report.results_markdown(res)
    assert "| median \\|SUVmean error\\| <= 0.02 | 0.0300 | 0.0200 | missed | -0.0100 |" in md
    assert "| x | n/a | n/a | not measurable | n/a |" in md
    assert "body = HR CT > -500 HU." in md
