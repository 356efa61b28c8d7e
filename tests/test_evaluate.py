"""evaluate.py, the thin program over ctpet_srgan.evaluation: a smoke run with tiny real models and its user
errors."""

import json

import numpy as np
from _evaluation_sets import NSL, SCALE, SP

import evaluate
from ctpet_srgan.atomic import write_json_atomic
from ctpet_srgan.normalization import DEFAULT


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
