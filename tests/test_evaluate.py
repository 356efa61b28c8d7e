"""ctpet_srgan.evaluation on a tiny phantom set: exact numbers with fake predictors; evaluate.py (the thin program)
in a smoke run with tiny real models."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

import evaluate
from ctpet_srgan import evaluation, records
from ctpet_srgan.atomic import write_json_atomic
from ctpet_srgan.geometry import axial_affine
from ctpet_srgan.normalization import DEFAULT

SCALE, HR, SP, NSL = 2, 48, 2.0, 3  # HR 48x48 px of 2 mm, 3 slices 2 mm apart
LESION = dict(center_mm=[0.0, 0.0, 2.0], diameter_mm=12.0, uptake_ratio=4.0)  # centred on slice 1
ORIGIN = (-47.0, -47.0, 0.0)  # pixel (23.5, 23.5) is x = y = 0 mm
OFFSET_SUV, OFFSET_HU = 0.1, 10.0


def _phantom_slice(k, lesion):
    aff = axial_affine((ORIGIN[0], ORIGIN[1], ORIGIN[2] + SP * k), (SP, SP, SP))
    jj, ii = np.mgrid[:HR, :HR]
    x, y = ORIGIN[0] + SP * ii, ORIGIN[1] + SP * jj
    body = x**2 + y**2 <= 40.0**2
    ct = np.where(body, 0.0, -1000.0)
    pet = np.where(body, 1.0, 0.0)
    if lesion:
        z = ORIGIN[2] + SP * k
        c = LESION["center_mm"]
        inside = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= (LESION["diameter_mm"] / 2) ** 2
        pet = np.where(inside, LESION["uptake_ratio"], pet)
    lr = lambda a: a.reshape(HR // SCALE, SCALE, HR // SCALE, SCALE).mean(axis=(1, 3))  # noqa: E731
    return dict(hr_pet=pet, hr_ct=ct, lr_pet=lr(pet), lr_ct=lr(ct), hr_affine=aff)


def write_phantom_set(out):
    """Test split: study A with one 12 mm hot sphere, study B lesion-free; 3 slices each."""
    out.mkdir(parents=True, exist_ok=True)
    studies, names = {}, {"A": records.study_hash("1.2.3.4"), "B": records.study_hash("1.2.3.5")}
    fname = "test-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(out / fname)) as w:
        for key, h in names.items():
            for k in range(NSL):
                s = _phantom_slice(k, key == "A")
                w.write(records.serialize_example(scale=SCALE, study=h, slice_index=k, has_truth=True, **s))
            studies[h] = dict(split="test", slices=NSL, hr_shape=[HR, HR], has_truth=True,
                              lesions=[LESION] if key == "A" else [])
    empty = {"studies": [], "examples": 0, "shards": []}
    manifest = dict(
        schema_version=records.SCHEMA_VERSION, scale=SCALE, hr_spacing_mm=[SP, SP, SP],
        lr_spacing_mm=[SP * SCALE, SP * SCALE, SP],
        normalization=DEFAULT.to_dict(), degradation={}, compression="",
        splits={"train": empty, "val": empty, "test": {"studies": list(names.values()), "examples": 2 * NSL,
                                                       "shards": [{"file": fname, "examples": 2 * NSL}]}},
        studies=studies,
    )
    write_json_atomic(out / records.MANIFEST, manifest)
    return names


class Oracle:
    """Fake predictor: returns the HR truth + a known offset (and optionally a planted hot spot)."""

    def __init__(self, data_dir, *, hot_spot=False, ct_input="hr"):
        self.scale, self.ct_input, self.hot_spot = SCALE, ct_input, hot_spot
        self.table = {}
        for _, slices in evaluation.iter_studies(data_dir):
            for s in slices:
                self.table[s["lr_pet"].tobytes()] = (s["hr_pet"], s["hr_ct"])

    def predict(self, lr_pet, ct_hu=None, *, batch_size=8):
        pet = np.stack([self.table[x.astype(np.float32).tobytes()][0] for x in lr_pet]) + OFFSET_SUV
        if self.hot_spot:
            pet[:, 8:10, 23:25] = 5.0  # 2x2 px at y ~ -30 mm, far from the lesion, inside the body
        out = {"sr_pet": pet.astype(np.float32)}
        if self.ct_input is not None:
            out["sr_ct"] = np.stack([self.table[x.astype(np.float32).tobytes()][1] for x in lr_pet]) + OFFSET_HU
        return out


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("phantom")
    write_phantom_set(d)
    return d


def test_lesion_is_placed_on_the_slice_through_its_centre():
    slices = [dict(hr_affine=_phantom_slice(k, False)["hr_affine"]) for k in range(NSL)]
    dz, rc = evaluation.lesion_on_slice([4.0, -6.0, 2.0], slices[1]["hr_affine"])
    assert dz == pytest.approx(0.0)
    assert rc == pytest.approx((23.5 - 3.0, 23.5 + 2.0))  # y -6 mm = 3 rows up, x +4 mm = 2 cols right
    lesions = [LESION, dict(LESION, center_mm=[0, 0, 50.0]), dict(LESION, uptake_ratio=0.5)]
    per_slice, missing = evaluation.place_lesions(lesions, slices)
    assert missing == 1  # the lesion at z = 50 mm crosses no slice; the cold one is not a hot lesion
    assert [[les["scored"] for les in ls] for ls in per_slice] == [[False], [True], [False]]
    assert per_slice[1][0]["radius_mm"] == pytest.approx(6.0)
    assert per_slice[0][0]["radius_mm"] == pytest.approx(math.sqrt(36 - 4))


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


def _save_tiny_model(run_dir, ct_mode):
    import keras

    from ctpet_srgan import models

    cfg = models.GeneratorConfig(scale=SCALE, filters=4, num_blocks=1, ct_mode=ct_mode)
    keras.utils.set_random_seed(0)
    g = models.build_generator(cfg)
    rng = np.random.default_rng(0)  # perturb every weight (the heads start at zero): a non-trivial model
    g.set_weights([w + rng.normal(0, 0.02, w.shape).astype(w.dtype) for w in g.get_weights()])
    run_dir.mkdir(parents=True)
    g.save(run_dir / "best_generator.keras")
    write_json_atomic(run_dir / "run_config.json",
                      dict(generator=cfg.to_dict(), normalization=DEFAULT.to_dict(), scale=SCALE,
                           hr_spacing_mm=[SP, SP, SP], lr_spacing_mm=[SP * SCALE, SP * SCALE, SP]))


def test_cli_smoke_run_with_tiny_models(phantom_dir, tmp_path):
    _save_tiny_model(tmp_path / "fused", "s2d")
    _save_tiny_model(tmp_path / "pet_only", "none")
    out = tmp_path / "eval"
    argv = ["--model", str(tmp_path / "fused"), "--pet_only", str(tmp_path / "pet_only"), "--data", str(phantom_dir),
            "--out", str(out)]
    assert evaluate.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    for name in ("bicubic", "lanczos", "fused_srgan", "pet_only"):
        r = res["methods"][name]
        for key in ("psnr_pet", "ssim_pet", "crc", "sensitivity", "fp_per_slice"):
            assert key in r, (name, key)
        assert r["n_studies"] == 2 and r["n_slices"] == 2 * NSL
        assert np.isfinite(r["psnr_pet"])
    assert np.isfinite(res["methods"]["fused_srgan"]["psnr_ct"])
    assert res["methods"]["pet_only"]["psnr_ct"] is None
    assert res["fusion_gain"]["baseline"] == "pet_only"
    assert (out / "results.md").exists() and (out / "figures" / "slice_0.png").exists()
    assert evaluate.main(argv) == 2  # existing results are not overwritten
    assert evaluate.main(argv + ["--overwrite", "--n_figures", "0"]) == 0


def test_cli_user_errors_are_one_path_problem_line_and_exit_2(phantom_dir, tmp_path, capsys):
    from ctpet_srgan.inference import DEMO_MODEL_DIR

    for model, data, bad in ((tmp_path / "no_model", phantom_dir, tmp_path / "no_model"),
                             (DEMO_MODEL_DIR, tmp_path / "no_set", tmp_path / "no_set")):
        assert evaluate.main(["--model", str(model), "--data_dir", str(data), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"{bad}"), err
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "results.json").write_text("{}")
    assert evaluate.main(["--model", "x", "--data_dir", str(phantom_dir), "--out", str(tmp_path / "done")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{tmp_path / 'done'}: results.json already exists; pass --overwrite to replace it"]


def test_library_sets_no_environment_variable_at_import():
    import subprocess
    import sys

    code = ("import os; before = dict(os.environ); import ctpet_srgan.evaluation, ctpet_srgan.figures; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- real-data style: tumour masks
TUM_NSL, TUM_R, TUM_UPTAKE = 9, 8.0, 4.0  # 9 slices of 2 mm; an 8 mm radius tumour of 4 SUV in a 1 SUV body


def _tumour_slice(k, shift_mm):
    z = ORIGIN[2] + SP * k
    aff = axial_affine((ORIGIN[0], ORIGIN[1], z), (SP, SP, SP))
    jj, ii = np.mgrid[:HR, :HR]
    x, y = ORIGIN[0] + SP * ii, ORIGIN[1] + SP * jj
    body = x**2 + y**2 <= 40.0**2
    ct = np.where(body, 40.0, -1000.0) + np.where(body & (x**2 + y**2 >= 34.0**2), 660.0, 0.0)  # soft tissue, bone
    tumour = (x - shift_mm) ** 2 + y**2 + (z - SP * (TUM_NSL // 2)) ** 2 <= TUM_R**2
    pet = np.where(tumour, TUM_UPTAKE, np.where(body, 1.0, 0.0))
    lr = lambda a: a.reshape(HR // SCALE, SCALE, HR // SCALE, SCALE).mean(axis=(1, 3))  # noqa: E731
    return dict(hr_pet=pet, hr_ct=ct, lr_pet=lr(pet), lr_ct=lr(ct), hr_affine=aff), tumour


def write_tumour_set(out):
    """Test split of two 'patients' (HR = clinical PET, has_truth 0) with tumour masks, 0 and 6 mm off centre."""
    out.mkdir(parents=True, exist_ok=True)
    names = [records.study_hash(f"1.2.9.{n}") for n in range(2)]
    fname = "test-00000-of-00001.tfrecord"
    studies = {}
    with tf.io.TFRecordWriter(str(out / fname)) as w:
        for h, shift in zip(names, (0.0, 6.0)):
            for k in range(TUM_NSL):
                s, tumour = _tumour_slice(k, shift)
                w.write(records.serialize_example(scale=SCALE, study=h, slice_index=k, has_truth=False,
                                                  hr_mask=tumour, **s))
            studies[h] = dict(split="test", slices=TUM_NSL, hr_shape=[HR, HR], has_truth=False, has_mask=True,
                              lesions=[])
    empty = {"studies": [], "examples": 0, "shards": []}
    write_json_atomic(out / records.MANIFEST, dict(
        schema_version=records.SCHEMA_VERSION, scale=SCALE, hr_spacing_mm=[SP, SP, SP],
        lr_spacing_mm=[SP * SCALE, SP * SCALE, SP], normalization=DEFAULT.to_dict(), degradation={}, compression="",
        splits={"train": empty, "val": empty, "test": {"studies": names, "examples": 2 * TUM_NSL,
                                                       "shards": [{"file": fname, "examples": 2 * TUM_NSL}]}},
        studies=studies))
    return names


class CtAware(Oracle):
    """HR truth + 0.1 SUV with the real CT, + 0.3 SUV when the CT is only a water-filled outline."""

    def predict(self, lr_pet, ct_hu=None, *, batch_size=8):
        pet = np.stack([self.table[x.astype(np.float32).tobytes()][0] for x in lr_pet])
        water = ct_hu is not None and set(np.unique(ct_hu)) <= {0.0, -1000.0}
        return {"sr_pet": (pet + (0.3 if water else 0.1)).astype(np.float32)}


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


# ----------------------------------------------------------------------------- guidance (issue 12)
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
