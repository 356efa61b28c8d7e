"""The data_prep command line: --help, phantom, convert, inspect (complete and unfinished sets), info."""

import json
import subprocess
import sys
from pathlib import Path

from data_prep.__main__ import main as cli
from data_prep.inspect import format_report, inspect

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_the_subcommands():
    r = subprocess.run([sys.executable, "-m", "data_prep", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("phantom", "convert", "inspect", "info"):
        assert cmd in r.stdout


def test_phantom_convert_inspect_info_from_the_command_line(tmp_path, capsys):
    ph, out = tmp_path / "ph", tmp_path / "set"
    assert cli(["phantom", "--out", str(ph), "--cases", "1", "--seed", "2", "--fov_mm", "64", "--pet_slices", "3",
                "--compress", "rle"]) == 0
    assert sorted(p.name for p in (ph / "case_000").iterdir()) == ["ct", "lesions.json", "pet", "pet_truth"]
    assert cli(["inspect", str(out)]) == 2  # nothing there yet
    assert "does not exist" in capsys.readouterr().err
    out.mkdir()
    assert cli(["inspect", str(out)]) == 1  # there, but unfinished
    assert "INCOMPLETE" in capsys.readouterr().out
    assert cli(["convert", "--studies", str(ph), "--out", str(out), "--scale", "4", "--compression", "GZIP",
                "--shard_size", "2"]) == 0
    capsys.readouterr()
    assert cli(["inspect", str(out), "--json", "--verify"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] and info["scale"] == 4 and info["examples"] == 3 and info["compression"] == "GZIP"
    assert info["splits"]["train"] == {"studies": 1, "examples": 3, "shards": 2}
    assert info["hr_shapes"] == [[64, 64]] and info["with_truth"] == 1
    assert cli(["inspect", "--data_dir", str(out), "--json"]) == 0  # the name every program gives a prepared set
    assert json.loads(capsys.readouterr().out)["examples"] == 3
    assert cli(["inspect", str(out), "--data_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["inspect: give the prepared set once: DIR or --data_dir DIR"]
    assert cli(["info", str(ph / "case_000" / "pet")]) == 0
    pet = json.loads(capsys.readouterr().out)
    assert pet["modality"] == "PT" and pet["units"] == "SUVbw" and pet["shape"] == [3, 16, 16]
    assert cli(["info", str(tmp_path / "nowhere")]) == 2


def test_inspect_reports_missing_and_miscounted_shards(tmp_path):
    import tensorflow as tf

    sys.path.insert(0, str(ROOT / "tests"))
    from _tiny_set import write_tiny_set

    m = write_tiny_set(tmp_path, studies=3, slices=2)
    info = inspect(tmp_path, verify=True)
    assert info["complete"] and info["examples"] == 6 and info["studies"] == 3
    assert "3 studies" in format_report(info)
    first = m["splits"]["train"]["shards"][0]["file"]
    with tf.io.TFRecordWriter(str(tmp_path / first)) as w:  # one record lost
        w.write(b"x")
    bad = inspect(tmp_path, verify=True)
    assert not bad["complete"] and any("1 records, manifest says 2" in p for p in bad["problems"])
    (tmp_path / first).unlink()
    assert any("missing" in p for p in inspect(tmp_path)["problems"])


def test_inspect_missing_dir_and_verify_says_what_it_checked(tmp_path, capsys):
    assert cli(["inspect", str(tmp_path / "nonexistent")]) == 2
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'nonexistent'}: does not exist"
    sys.path.insert(0, str(ROOT / "tests"))
    from _tiny_set import write_tiny_set

    write_tiny_set(tmp_path / "set", studies=3, slices=2)
    assert cli(["inspect", str(tmp_path / "set"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "verified: read every record of" in out and "(6 records)" in out
    assert cli(["inspect", str(tmp_path / "set")]) == 0
    assert "verified" not in capsys.readouterr().out


def test_tf_start_up_noise_is_filtered_but_other_lines_kept():
    from ctpet_srgan.tf_quiet import filter_noise

    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1.2 1 port.cc:153] oneDNN custom operations are on. You may see ...\n"
            "E0000 00:00:1.3 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
            "I0000 00:00:1.4 1 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...\n"
            "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow ...\n"
            "E0000 00:00:1.5 1 some_kernel.cc:1] a real error\n")
    assert filter_noise(text) == "E0000 00:00:1.5 1 some_kernel.cc:1] a real error\n"


def test_programs_start_without_tf_noise(tmp_path):
    """What a user sees from a program that imports TensorFlow: no cuInit / oneDNN / absl banner lines."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    r = subprocess.run([sys.executable, "-c", "from ctpet_srgan.tf_quiet import import_tensorflow as i; "
                        "tf = i(); print(tf.constant(2) * 3)"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "6" in r.stdout
    for noise in ("cuInit", "oneDNN", "InitializeLog", "cuda drivers"):
        assert noise not in r.stderr, r.stderr
