"""ctpet_srgan.evaluation.evaluate (driver) on a tiny phantom set: exact numbers with fake predictors, refused
inputs, no environment set at import."""

import json
import math

import pytest
from _evaluation_sets import NSL, OFFSET_HU, OFFSET_SUV, Oracle

from ctpet_srgan import evaluation


def test_exact_numbers_with_an_oracle_model(phantom_dir, tmp_path):
    models = {"fused_srgan": Oracle(phantom_dir), "pet_only": Oracle(phantom_dir, hot_spot=True, ct_input=None)}
    res = evaluation.evaluate(phantom_dir, tmp_path / "out", models, n_figures=1)
    assert res["data"]["n_studies"] == 2 and res["data"]["n_slices"] == 2 * NSL
    assert res["data"]["n_lesions"] == 1 and res["data"]["n_lesion_free_studies"] == 1
    f = res["methods"]["fused_srgan"]
    assert f["psnr_pet"] == pytest.approx(20 * math.log10(10.0 / OFFSET_SUV), abs=1e-3)
    assert f["psnr_pet_body"] == pytest.approx(20 * math.log10(10.0 / OFFSET_SUV), abs=1e-3)
    assert f["psnr_ct"] == pytest.approx(20 * math.log10(4095.0 / OFFSET_HU), abs=1e-3)
    assert 0.9 < f["ssim_pet"] < 1.0  # an offset of 0.1 SUV lowers SSIM where the truth is 0
    # the ROI is exactly the sphere's pixels on the centre slice: C_H = 4.1, C_B = 1.1
    assert f["crc"] == {"12": pytest.approx((4.1 / 1.1 - 1) / 3)}
    assert f["bv"]["12"] == pytest.approx(0.0, abs=1e-6)
    assert f["sensitivity"] == 1.0 and f["fp_per_slice"] == 0.0
    assert f["hallucinations_per_slice"] == 0.0
    # the PET-only fake plants one hot spot per slice: one false positive / hallucination per slice
    p = res["methods"]["pet_only"]
    assert p["fp_per_slice"] == pytest.approx(1.0)
    assert p["hallucinations_per_slice"] == pytest.approx(1.0)
    assert p["psnr_ct"] is None and p["ssim_ct"] is None
    # bicubic blurs the sphere: lower contrast recovery and PSNR than the oracle
    b = res["methods"]["bicubic"]
    assert b["crc"]["12"] < f["crc"]["12"]
    assert b["psnr_pet"] < f["psnr_pet"]
    assert set(res["methods"]) == {"bicubic", "lanczos", "fused_srgan", "pet_only"}
    g = res["fusion_gain"]["metrics"]
    assert g["psnr_pet"]["mean"] > 0 and g["psnr_pet"]["n_studies"] == 2
    assert g["psnr_pet"]["ci95"][0] <= g["psnr_pet"]["mean"] <= g["psnr_pet"]["ci95"][1]
    assert f["froc"] and f["froc"][-1]["sensitivity"] == 1.0
    # fusion metrics: the oracle keeps PET edges; MI with the CT is positive (body outline)
    assert f["fusion"]["mi_ct"] > 0 and 0 < f["fusion"]["qabf"] < 1
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["methods"]["fused_srgan"]["crc"]["12"] == pytest.approx(f["crc"]["12"])
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| fused_srgan |" in md and "Fusion gain" in md
    for rel in res["figures"]:
        assert (tmp_path / "out" / rel).stat().st_size > 1000
    expected = {"figures/slice_0.png", "figures/profile_0.png", "figures/crc_vs_size.png", "figures/froc.png"}
    assert expected <= set(res["figures"])
    with pytest.raises(FileExistsError):
        evaluation.evaluate(phantom_dir, tmp_path / "out", models, n_figures=0)


def test_scale_mismatch_is_refused(phantom_dir, tmp_path):
    o = Oracle(phantom_dir)
    o.scale = 4
    with pytest.raises(ValueError, match="scale"):
        evaluation.evaluate(phantom_dir, tmp_path / "o", {"fused_srgan": o})
    assert not (tmp_path / "o" / "results.json").exists()


def test_library_sets_no_environment_variable_at_import():
    import subprocess
    import sys

    code = ("import os; before = dict(os.environ); import ctpet_srgan.evaluation, ctpet_srgan.figures; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"
