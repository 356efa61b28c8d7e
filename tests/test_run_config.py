"""ctpet_srgan.run_config: load/validate/save of run_config.json (model folder, .keras sibling, export metadata,
bundled models), old files without schema_version, unknown keys kept, the CT input of each ct_mode."""

import json

import pytest

from ctpet_srgan import inference
from ctpet_srgan.errors import InputError
from ctpet_srgan.normalization import DEFAULT, Normalization
from ctpet_srgan.run_config import RUN_CONFIG, SCHEMA_VERSION, RunConfig


def _rc(**over) -> dict:
    d = {"generator": {"scale": 2, "filters": 8, "num_blocks": 1, "ct_mode": "s2d"}, "scale": 2,
         "normalization": DEFAULT.to_dict(), "hr_spacing_mm": [2.0, 2.0, 3.0], "lr_spacing_mm": [4.0, 4.0, 3.0],
         "data_dir": "data/phantom", "steps": {"pretrain": 10, "gan": 5}, "git_commit": "0123abc", "vgg": "none",
         "train": {"seed": 0, "g_lr": 0.0005}}
    d.update(over)
    return d


def test_round_trip_and_typed_fields(tmp_path):
    d = _rc(schema_version=SCHEMA_VERSION, label="x, not for clinical use", demo=True)
    (tmp_path / RUN_CONFIG).write_text(json.dumps(d))
    cfg = RunConfig.load(tmp_path)
    assert cfg.to_dict() == d and RunConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.scale == 2 and cfg.normalization == DEFAULT and cfg.ct_mode == "s2d" and cfg.ct_input == "hr"
    assert cfg.hr_spacing_mm == [2.0, 2.0, 3.0] and cfg.label.endswith("clinical use") and cfg.demo
    assert cfg.vgg == "none" and cfg.generator_config().filters == 8
    out = cfg.save(tmp_path / "copy")
    assert out == tmp_path / "copy" / RUN_CONFIG and RunConfig.load(out) == cfg
    assert out.read_text() == json.dumps(d, indent=2, sort_keys=True) + "\n" and not list(out.parent.glob(".*tmp"))


@pytest.mark.parametrize("mode,grid", [("s2d", "hr"), ("lr", "lr"), ("none", None)])
def test_ct_input_follows_the_ct_mode(mode, grid):
    cfg = RunConfig.from_dict(_rc(generator={"scale": 2, "filters": 8, "num_blocks": 1, "ct_mode": mode}))
    assert cfg.ct_input == grid and cfg.generator_config().input_names()[1:] == (
        (f"{grid}_ct",) if grid else ())


def test_export_metadata_without_generator_and_unknown_ct_input():
    meta = RunConfig.from_dict({"scale": 4, "ct_input": "lr", "inputs": {"pet": "..."}})
    assert meta.ct_input == "lr" and meta.ct_mode is None and meta.normalization == DEFAULT
    bare = RunConfig.from_dict({"scale": 2})
    with pytest.raises(ValueError, match="the model's inputs decide"):
        bare.ct_input
    with pytest.raises(ValueError, match="no generator config"):
        bare.generator_config()


def test_old_files_without_schema_version_or_scale_load_as_version_1():
    d = _rc()
    del d["scale"], d["normalization"]
    cfg = RunConfig.from_dict(d)
    assert cfg.schema_version == 1 and cfg.scale == 2 and cfg.normalization == Normalization()
    assert cfg.to_dict()["schema_version"] == 1 and cfg.to_dict()["scale"] == 2


def test_unknown_keys_are_kept_and_replace_checks_again(tmp_path):
    d = _rc(trained_on={"train_studies": 4}, scores={"psnr": 30.0}, future_key=[1, 2])
    cfg = RunConfig.from_dict(d)
    assert cfg.extra["future_key"] == [1, 2] and cfg.to_dict() == {**d, "schema_version": 1}
    labelled = cfg.replace(label="demo", demo=True)
    assert labelled.demo and labelled.extra["trained_on"] == {"train_studies": 4} and not cfg.demo
    with pytest.raises(InputError, match="demo must be true or false"):
        cfg.replace(demo="yes")


BAD = [
    (_rc(schema_version=2), "schema_version 2"),
    (_rc(scale=3, generator=None), "scale must be 2 or 4, got 3"),
    (_rc(generator=None, scale=None), "no scale"),
    (_rc(scale=4), "scale 4 but generator.scale 2"),
    (_rc(generator={"scale": 2, "ct_mode": "ct"}), "generator: ct_mode must be one of"),
    (_rc(generator={"scale": 2, "attention_heads": 3}), r"generator has unknown keys \['attention_heads'\]"),
    (_rc(generator={"scale": 2, "context_slices": 2}), "generator: context_slices must be an odd integer"),
    (_rc(generator={"scale": 2, "filters": "8"}), "must be integers"),
    (_rc(normalization={"pet_scale_suv": 0.0}), "normalization scales must be > 0"),
    (_rc(normalization={"suv_gain": 2.0}), r"unknown constants \['suv_gain'\]"),
    (_rc(lr_spacing_mm="4 mm"), "lr_spacing_mm must be a list"),
    (_rc(vgg=3), "vgg must be a string"),
    (_rc(ct_input="ct"), "ct_input must be 'hr', 'lr' or null"),
    (_rc(ct_input="lr"), "ct_input 'lr' but generator ct_mode 's2d' takes 'hr'"),
]


@pytest.mark.parametrize("d,problem", BAD)
def test_validation_errors_name_the_file_and_the_problem(tmp_path, d, problem):
    (tmp_path / RUN_CONFIG).write_text(json.dumps(d))
    with pytest.raises(InputError, match=problem) as e:
        RunConfig.load(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / RUN_CONFIG}: ")


def test_where_it_is_found_and_what_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run_config.json"):
        RunConfig.load(tmp_path)
    (tmp_path / "m.keras").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="m.keras: no run_config.json"):
        RunConfig.load(tmp_path / "m.keras")
    (tmp_path / RUN_CONFIG).write_text("{ half")
    with pytest.raises(InputError, match="unreadable JSON"):
        RunConfig.load(tmp_path / "m.keras")
    (tmp_path / RUN_CONFIG).write_text(json.dumps(_rc()))
    assert RunConfig.load(tmp_path / "m.keras") == RunConfig.load(tmp_path) == RunConfig.load(tmp_path / RUN_CONFIG)
    export = tmp_path / "exp" / "1"
    (export / "assets").mkdir(parents=True)
    (export / "assets" / "metadata.json").write_text(json.dumps({"scale": 2, "ct_input": None}))
    assert RunConfig.load(export).ct_input is None


@pytest.mark.parametrize("name", sorted(inference.BUNDLED))
def test_the_bundled_models_load(name):
    folder = inference.BUNDLED[name]
    if not (folder / RUN_CONFIG).exists():
        pytest.skip(f"{folder / RUN_CONFIG} is absent (bundled model not built)")
    cfg = RunConfig.load(folder)
    assert cfg.label in (inference.DEMO_LABEL, inference.REAL_LABEL) and cfg.demo == (name == "demo")
    assert cfg.ct_input == "hr" and cfg.to_dict() == {**json.loads((folder / RUN_CONFIG).read_text()),
                                                       "schema_version": 1}
    p = inference.load_predictor(f"bundled:{name}")  # the Predictor carries the checked RunConfig
    assert p.config == cfg and p.config.lr_spacing_mm == p.metadata["lr_spacing_mm"] and p.ct_input == cfg.ct_input
