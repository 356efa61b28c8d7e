"""ctpet_srgan.evaluation.patients: tumour quantification per patient, the CT ablation and the issue-11 targets."""

import math

import pytest
from _evaluation_sets import SCALE, TUM_R, TUM_UPTAKE, CtAware, Oracle, write_tumour_set

from ctpet_srgan import evaluation


def test_tumour_quantification_ablation_and_targets(tmp_path):
    d = tmp_path / "tumour_set"
    names = write_tumour_set(d)
    models = {"fused_srgan": CtAware(d), "pet_only": Oracle(d, ct_input=None)}  # pet_only: + 0.1 SUV as well
    models["fused_srgan"].scale = SCALE
    res = evaluation.evaluate(d, tmp_path / "out", models, n_figures=1)
    p = res["patients"]
    assert p["n_studies_with_tumour_mask"] == 2 and set(p["reference"]) == set(names)
    ref = p["reference"][names[0]]
    assert ref["suvmax"] == ref["suvmean"] == pytest.approx(TUM_UPTAKE)
    assert ref["suvpeak"] == pytest.approx(TUM_UPTAKE)  # the 1 mL sphere fits inside the 8 mm tumour
    assert ref["background_mean"] == pytest.approx(1.0) and ref["tbr"] == pytest.approx(TUM_UPTAKE)
    assert ref["tumour_volume_ml"] == pytest.approx(4 / 3 * math.pi * TUM_R**3 / 1000, rel=0.1)
    row = p["per_study"]["fused_srgan"][names[1]]
    for key in ("suvmax", "suvmean", "suvpeak"):
        assert row[f"{key}_err"] == pytest.approx(0.1 / TUM_UPTAKE)
    assert row["tbr_err"] == pytest.approx((4.1 / 1.1) / 4.0 - 1)
    assert row["psnr_pet_body"] == pytest.approx(20 * math.log10(10 / 0.1), abs=1e-3)
    assert row["nrmse_pet_body"] > 0
    med = p["median"]["fused_srgan"]
    assert med["abs_suvmean_err"] == pytest.approx(0.025) and med["n_tumours"] == 2
    assert p["median"]["bicubic"]["abs_suvmax_err"] > med["abs_suvmax_err"]  # bicubic blurs the tumour's edge
    # the ablation: the same model with a water CT is 0.3 SUV off instead of 0.1: 20 log10(3) dB worse
    a = res["ct_ablation"]
    assert a["ablated"] == "fused_srgan_water_ct"
    assert a["median_diff"]["psnr_pet_body"] == pytest.approx(20 * math.log10(3), abs=1e-3)
    assert a["paired"]["psnr_pet_body"]["n_studies"] == 2
    t = {row["target"].split(":")[1].strip()[:18]: row for row in res["targets"]}
    assert t["real CT - water CT"]["met"] is True
    assert t["real CT - water CT"]["margin"] == pytest.approx(20 * math.log10(3) - 0.3, abs=1e-3)
    suvmean = t["median |SUVmean er"]
    assert suvmean["met"] is False and suvmean["margin"] == pytest.approx(-0.005, abs=1e-6)
    gain = [row for row in res["targets"] if "pet_only" in row["target"]][0]
    assert gain["met"] is False and gain["value"] == pytest.approx(0.0, abs=1e-6)  # same error as pet_only: no gain
    pg = p["fusion_gain"]
    assert pg["median_diff"]["psnr_pet_body"] == pytest.approx(0.0, abs=1e-6)
    assert pg["paired"]["abs_suvmax_err"]["n_studies"] == 2
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## Fusion gain per patient" in md and "## Per patient" in md and "## CT ablation" in md
    assert "| missed |" in md and "| met |" in md
    assert (tmp_path / "out" / "figures" / "slice_0.png").exists()


def test_studies_without_masks_have_no_tumour_numbers(phantom_dir, tmp_path):
    res = evaluation.evaluate(phantom_dir, tmp_path / "out", {"fused_srgan": Oracle(phantom_dir)}, n_figures=0)
    assert res["patients"]["n_studies_with_tumour_mask"] == 0 and res["patients"]["reference"] == {}
    assert all("suvmax_err" not in r for r in res["patients"]["per_study"]["fused_srgan"].values())
    assert res["patients"]["median"]["fused_srgan"]["abs_suvmax_err"] is None
    assert [t["met"] for t in res["targets"]][1:4] == [None, None, None]  # no tumours, no pet_only: not measurable
