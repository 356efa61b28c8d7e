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
    assert cli(["inspect", str(out)]) == 1  # nothing there yet
    assert "INCOMPLETE" in capsys.readouterr().out
    assert cli(["convert", "--studies", str(ph), "--out", str(out), "--scale", "4", "--compression", "GZIP",
                "--shard_size", "2"]) == 0
    capsys.readouterr()
    assert cli(["inspect", str(out), "--json", "--verify"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] and info["scale"] == 4 and info["examples"] == 3 and info["compression"] == "GZIP"
    assert info["splits"]["train"] == {"studies": 1, "examples": 3, "shards": 2}
    assert info["hr_shapes"] == [[64, 64]] and info["with_truth"] == 1
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
