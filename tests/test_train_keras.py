"""train_keras.py's flags and the library's config dataclasses must agree: one source of truth for defaults."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


_DUMP = """
import json, sys
import train_keras
from absl import flags
F = flags.FLAGS
print(json.dumps({"defaults": {name: F[name].default for name in F}, "renamed": train_keras.FLAG_OF}))
"""


def _flag_defaults() -> dict:
    out = subprocess.run([sys.executable, "-c", _DUMP], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])  # in a subprocess: absl flags are process-global


def test_every_train_config_field_is_a_flag_with_the_same_default():
    from ctpet_srgan.training import TrainConfig

    dump = _flag_defaults()
    defaults, renamed = dump["defaults"], dump["renamed"]
    cfg = TrainConfig()
    missing, differ = [], []
    for f in dataclasses.fields(TrainConfig):
        name = renamed.get(f.name, f.name)
        if name not in defaults:
            missing.append(f.name)
        elif defaults[name] != getattr(cfg, f.name):
            differ.append((f.name, defaults[name], getattr(cfg, f.name)))
    assert not missing, f"TrainConfig fields without a train_keras flag: {missing}"
    assert not differ, f"flag default != TrainConfig default: {differ}"


def test_generator_flags_match_generator_config_defaults():
    from ctpet_srgan.models import GeneratorConfig

    defaults = _flag_defaults()["defaults"]
    gen = GeneratorConfig(scale=2)
    for name in ("filters", "num_blocks", "ct_mode", "context_slices"):
        assert defaults[name] == getattr(gen, name), name


def test_an_invalid_manifest_is_one_line_and_exit_2(tmp_path):
    """A data set whose manifest.json is invalid stops train_keras before any training: `PATH: problem`, exit 2."""
    from ctpet_srgan.normalization import DEFAULT

    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"scale": 3, "normalization": DEFAULT.to_dict(), "splits": {},
                                                    "studies": {}}))
    out = subprocess.run([sys.executable, str(ROOT / "train_keras.py"), f"--data_dir={data}",
                          f"--model_dir={tmp_path / 'run'}", "--pretrain_steps=1", "--gan_steps=0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == f"{data / 'manifest.json'}: scale must be 2 or 4, got 3"
    assert not (tmp_path / "run" / "run_config.json").exists()


def test_a_short_2p5d_run_trains_and_records_context_slices(tmp_path):
    """--context_slices=3: both phases and a validation run on K-slice stacks; run_config and the model say K."""
    import keras

    import ctpet_srgan.models  # noqa: F401 (registers the custom layers)
    from tests._synthetic import write_tiny_dataset

    data = write_tiny_dataset(tmp_path / "data", hr=16, n_train=6, n_val=2)
    m = tmp_path / "m"
    tiny = ["--filters=8", "--num_blocks=1", "--d_filters=4", "--batch_size=2", "--patch_size=4", "--log_every=1",
            "--eval_every=2", "--eval_batches=1", "--content_loss=none", "--strategy=default", "--ct_dropout=0.5"]
    run = [sys.executable, str(ROOT / "train_keras.py"), f"--data_dir={data}", f"--model_dir={m}",
           "--pretrain_steps=2", "--gan_steps=2", *tiny]
    out = subprocess.run([*run, "--context_slices=3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = json.loads((m / "run_config.json").read_text())
    assert cfg["generator"]["context_slices"] == 3
    g = keras.saving.load_model(m / "generator.keras", safe_mode=True)
    assert {k: tuple(v.shape)[-1] for k, v in g.input.items()} == {"lr_pet": 3, "hr_ct": 3}
    bad = subprocess.run([*run, "--context_slices=2", f"--model_dir={tmp_path / 'm2'}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--context_slices: context_slices must be an odd integer" in bad.stderr
