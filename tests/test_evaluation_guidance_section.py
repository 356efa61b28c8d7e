"""ctpet_srgan.evaluation.guidance_section: the guidance numbers and targets on constructed studies with known
answers, and the section on a guided set."""

import numpy as np
import pytest
from _evaluation_sets import Oracle

from ctpet_srgan import evaluation, records
from ctpet_srgan.atomic import write_json_atomic
from ctpet_srgan.geometry import axial_affine

G_N, G_K, G_SP, G_DZ = 64, 6, 2.0, 4.0  # 64x64 px of 2 mm, 6 slices 4 mm apart
G_LESION = dict(center_mm=[-20.0, -10.0, 4.0], diameter_mm=8.0, uptake_ratio=4.0, has_ct_correlate=False)
G_CYST = dict(structure="cyst", shape="sphere", center_mm=[16.0, 12.0, 16.0], diameter_mm=14.0, hu=200.0,
              shift_mm=[0.0, 0.0, 0.0])


def _guided_study():
    """Uniform 1 SUV body with a PET-only 8 mm lesion (slice 1) and a CT-only cyst (slice 4, 200 HU)."""
    org = -G_SP * (G_N - 1) / 2
    slices = []
    for k in range(G_K):
        aff = axial_affine((org, org, G_DZ * k), (G_SP, G_SP, G_DZ))
        jj, ii = np.mgrid[:G_N, :G_N]
        x, y, z = org + G_SP * ii, org + G_SP * jj, G_DZ * k
        body = x**2 + y**2 <= 50.0**2
        pet = np.where(body, 1.0, 0.0)
        c = G_LESION["center_mm"]
        pet[(x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= 16.0] = 4.0
        ct = np.where(body, 40.0, -1000.0)
        c = G_CYST["center_mm"]
        ct[(x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= 49.0] = 200.0
        lr = pet.reshape(G_N // 2, 2, G_N // 2, 2).mean(axis=(1, 3))
        slices.append(dict(hr_pet=pet.astype(np.float32), hr_ct=ct.astype(np.float32), lr_pet=lr.astype(np.float32),
                           hr_affine=aff, slice_index=k))
    return slices, dict(lesions=[G_LESION], ct_only=[G_CYST], world="guided")


def _guided_fakes(slices):
    truth, true_ct = np.stack([s["hr_pet"] for s in slices]), np.stack([s["hr_ct"] for s in slices])
    bic = evaluation.upsample(np.stack([s["lr_pet"] for s in slices]), 2, "INTER_CUBIC")

    def oracle(ct):  # the truth when its CT is the true CT, bicubic otherwise: the CT is all it needs
        return truth + 0.01 if np.array_equal(ct, true_ct) else bic

    def copier(ct):  # "CT edge => PET edge": +0.5 SUV wherever the CT is denser than soft tissue
        return bic + 0.5 * (ct > 100)

    def hallucinator(ct):  # bicubic plus a 5 SUV spot on the two lesion-free slices
        out = bic.copy()
        out[4:, 40:42, 20:22] = 5.0
        return out

    fakes = dict(bicubic=lambda ct: bic, pet_only=lambda ct: bic, oracle=oracle, copier=copier,
                 hallucinator=hallucinator)
    takes_ct = dict(bicubic=False, pet_only=False, oracle=True, copier=True, hallucinator=True)
    return fakes, takes_ct, true_ct


def test_guidance_numbers_have_known_answers_on_a_constructed_study():
    slices, info = _guided_study()
    fakes, takes_ct, true_ct = _guided_fakes(slices)
    calls = []

    def run(m, ct):
        calls.append((m, ct is None))
        return fakes[m](true_ct if ct is None else ct)

    cfg = evaluation.scoring_config(10.0, (-1024.0, 3071.0), 2.5, 1.0, 5.0)
    raw = evaluation.guidance_study(slices, info, run, takes_ct, cfg)
    assert ("pet_only", False) not in calls and ("oracle", False) in calls  # a PET-only method runs once
    g = evaluation.guidance_summary({"A": raw}, cfg)
    ms = g["methods"]
    po, orc, cop, hal = ms["pet_only"], ms["oracle"], ms["copier"], ms["hallucinator"]
    # a PET-only method: zero reliance, the same score at every misregistration
    assert po["reliance"]["reliance_psnr"] == 0.0 and po["reliance"]["reliance_ssim"] == 0.0
    assert len({r["psnr"] for r in po["misregistration"]}) == 1
    # the oracle takes everything from the CT: the truth + 0.01 SUV with it (60 dB), bicubic with a wrong or empty CT
    assert orc["reliance"]["true_psnr"] == pytest.approx(60.0) and orc["reliance"]["reliance_psnr"] > 0.5
    bic_psnr = po["reliance"]["true_psnr"]
    assert orc["misregistration"][-1]["psnr"] == bic_psnr and orc["reliance"]["uninformative_psnr"] == bic_psnr
    assert orc["pet_only_lesions"]["crc"] == pytest.approx((4.01 / 1.01 - 1) / 3)
    assert orc["pet_only_lesions"]["n_lesions"] == 1
    assert po["pet_only_lesions"]["crc"] < 0.9
    # the CT-edge copier imprints the cyst: +0.5 SUV on 1 SUV of truth = 50 %
    imp = cop["ct_only_imprint"]
    assert imp["imprint"] == pytest.approx(0.5, abs=0.01) and imp["n_structures"] == 1
    assert ms["bicubic"]["ct_only_imprint"]["imprint"] < 0.01 and cop["ct_only_imprint"]["over_pet_only"] > 50
    assert cop["reliance"]["reliance_psnr"] < 0  # the CT hurts it
    # hallucinations at the matched false-positive rate (0.5 / slice of 6 slices: the 2 spots pass)
    assert hal["detection"]["n_free_slices"] == 2 and hal["detection"]["hot_spots_per_free_slice"] == 1.0
    hd = hal["detection"]
    assert hd["shared_threshold_suv"] == 2.5 and hd["hot_spots_per_free_slice_shared"] == 1.0
    assert ms["bicubic"]["detection"]["hot_spots_per_free_slice_shared"] == 0.0
    assert [r["hot_spots_per_free_slice_shared"] for r in hal["misregistration"]] == [1.0] * 4
    assert orc["detection"]["hot_spots_per_free_slice"] == 0.0 and orc["detection"]["sensitivity_6_10mm"] == 1.0
    assert orc["detection"]["n_6_10mm"] == 1 and orc["detection"]["n_6_10mm_low_contrast"] == 0  # 4:1 is not low
    t = {(r["target"].split(":")[0], r["target"].split(":")[1].split()[0]): r["met"]
         for r in evaluation.guidance_targets(g, ["oracle", "copier", "hallucinator"])}
    assert t[("oracle", "CT")] is True and t[("oracle", "PSNR")] is True and t[("oracle", "PET-only")] is True
    assert t[("copier", "CT-only")] is False and t[("copier", "CT")] is False
    assert t[("hallucinator", "hot")] is False and t[("oracle", "hot")] is True


def test_hot_spots_are_compared_at_one_shared_threshold_for_every_method():
    """Bicubic's noise puts its own 0.5 FP/slice threshold above its noise spikes (0 hot spots there, a bar no model
    could pass); at the one shared threshold a model that adds spots scores more than bicubic, one that adds none
    does not."""
    slices, info = _guided_study()
    clean = evaluation.upsample(np.stack([s["lr_pet"] for s in slices]), 2, "INTER_CUBIC")
    noisy = clean.copy()
    noisy[:, 44:46, 14:16] = noisy[:, 20:22, 44:46] = 4.0  # two 4 SUV noise spikes on every slice, in the body
    adder = noisy.copy()
    adder[4:, 40:42, 20:22] = 5.0  # and a spurious spot on the two lesion-free slices
    fakes = dict(bicubic=noisy, denoiser=clean, same=noisy.copy(), adder=adder)
    cfg = evaluation.scoring_config(10.0, (-1024.0, 3071.0), 2.5, 1.0, 5.0)
    raw = evaluation.guidance_study(slices, info, lambda m, ct: fakes[m], {m: False for m in fakes}, cfg)
    g = evaluation.guidance_summary({"A": raw}, cfg)
    d = {m: r["detection"] for m, r in g["methods"].items()}
    assert d["bicubic"]["threshold_suv"] > 4.0 and d["bicubic"]["hot_spots_per_free_slice"] == 0.0  # the old bar
    assert {x["shared_threshold_suv"] for x in d.values()} == {2.5}
    assert d["bicubic"]["hot_spots_per_free_slice_shared"] == 2.0
    assert d["adder"]["hot_spots_per_free_slice_shared"] == 3.0
    assert d["denoiser"]["hot_spots_per_free_slice_shared"] == 0.0
    rows = {r["target"].split(":")[0]: r for r in evaluation.guidance_targets(g, ["denoiser", "same", "adder"])
            if "hot spots" in r["target"]}
    assert rows["adder"]["met"] is False and rows["adder"]["margin"] == pytest.approx(-1.0)
    assert rows["same"]["met"] is True and rows["same"]["margin"] == 0.0  # bicubic's own image: no more than bicubic
    assert rows["denoiser"]["met"] is True and rows["denoiser"]["margin"] == pytest.approx(2.0)
    assert "at 2.5 SUV (every method)" in rows["adder"]["target"]
    cfg3 = evaluation.scoring_config(10.0, (-1024.0, 3071.0), 4.5, 1.0, 5.0)  # the shared threshold is det_threshold
    d3 = evaluation.guidance_summary({"A": evaluation.guidance_study(slices, info, lambda m, ct: fakes[m],
                                                                     {m: False for m in fakes}, cfg3)}, cfg3)
    assert d3["methods"]["bicubic"]["detection"]["hot_spots_per_free_slice_shared"] == 0.0  # 4 SUV spikes < 4.5
    assert d3["methods"]["adder"]["detection"]["hot_spots_per_free_slice_shared"] == 1.0


def test_a_guided_set_gets_the_guidance_section_automatically(phantom_dir, tmp_path):
    import shutil

    d = tmp_path / "guided"
    shutil.copytree(phantom_dir, d)
    m = records.read_manifest(d)
    for st in m["studies"].values():
        st.update(world="guided", ct_only=[])
        st["lesions"] = [dict(les, has_ct_correlate=False) for les in st["lesions"]]
    write_json_atomic(d / records.MANIFEST, m)
    models = {"fused_srgan": Oracle(d), "pet_only": Oracle(d, ct_input=None)}
    res = evaluation.evaluate(d, tmp_path / "out", models, n_figures=0, ct_ablation=False)
    g = res["guidance"]["methods"]
    assert set(g) == {"bicubic", "fused_srgan", "pet_only"}
    assert g["fused_srgan"]["reliance"]["reliance_psnr"] == 0.0  # the oracle ignores its CT
    assert g["fused_srgan"]["pet_only_lesions"]["crc"] == pytest.approx((4.1 / 1.1 - 1) / 3)
    assert [t["met"] for t in res["guidance"]["targets"]][0] is False
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## CT guidance (issue 12)" in md and "Guidance targets (issue 12)" in md
    assert "| hot spots / free slice at 2.5 SUV |" in md and "hot spots per lesion-free slice at 2.5 SUV" in md
    plain = evaluation.evaluate(phantom_dir, tmp_path / "plain", models, n_figures=0, ct_ablation=False)
    assert plain["guidance"] is None  # not a guided world
    forced = evaluation.evaluate(phantom_dir, tmp_path / "forced", models, n_figures=0, ct_ablation=False,
                                 guidance=True)
    assert forced["guidance"]["methods"]["fused_srgan"]["ct_only_imprint"]["n_structures"] == 0
