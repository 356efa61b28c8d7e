import json
import os

import pytest

from ctpet_srgan.atomic import (
    atomic_dir,
    atomic_path,
    remove_stale_temporaries,
    replace_dir,
    write_json_atomic,
    write_json_once,
)


def test_failed_write_leaves_neither_file_nor_temp(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_written_file_has_the_usual_mode(tmp_path):
    write_json_atomic(tmp_path / "m.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_replace_dir_swaps_whole_folders(tmp_path):
    final = tmp_path / "1"
    for content in ("old", "new"):
        tmp = tmp_path / f".tmp-{content}"
        tmp.mkdir()
        (tmp / "f").write_text(content)
        replace_dir(tmp, final)
    assert (final / "f").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


def test_write_json_once_writes_then_only_agrees_with_the_same_settings(tmp_path):
    p = tmp_path / "settings.json"
    assert write_json_once(p, {"a": 1, "b": [1.5, 2]}) and json.loads(p.read_text()) == {"a": 1, "b": [1.5, 2]}
    assert write_json_once(p, {"b": (1.5, 2), "a": 1})  # same JSON: key order and tuple vs list do not matter
    assert not write_json_once(p, {"a": 2, "b": [1.5, 2]})
    assert json.loads(p.read_text()) == {"a": 1, "b": [1.5, 2]}  # the first settings are kept


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "series"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as d:
            (d / "IM1.dcm").write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary
    with atomic_dir(final) as d:
        assert d.is_dir() and not final.exists()
        (d / "f").write_text("first")
    with atomic_dir(final) as d:
        (d / "f").write_text("second")
        assert (final / "f").read_text() == "first"  # the old folder is whole until the new one is in place
    assert (final / "f").read_text() == "second" and [p.name for p in tmp_path.iterdir()] == ["series"]
    mask = os.umask(0)
    os.umask(mask)
    assert final.stat().st_mode & 0o777 == 0o755 & ~mask


def test_stale_temporaries_of_a_live_run_are_kept(tmp_path):
    live = tmp_path / f".x.nii.gz.{os.getppid()}.abc.tmp"
    live.mkdir()
    dead = tmp_path / ".x.nii.gz.999999999.abc.tmp"
    dead.mkdir()
    young = tmp_path / ".x.nii.gz.q1w2e3.tmp"
    young.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path / "x.nii.gz") == [dead]
    assert live.exists() and young.exists()  # a file temp is removed only once it is an hour old
    os.utime(young, (0, 0))
    assert remove_stale_temporaries(tmp_path / "x.nii.gz") == [young]


def test_stale_temporaries_of_every_output_and_aside_folders(tmp_path):
    """Temporaries of each named output are found (other files are never touched); a replace_dir aside folder
    (".X.old.PID.*") of a dead process goes, one of a live process stays, one without a PID goes."""
    (tmp_path / "sub").mkdir()
    dead_ct = tmp_path / "sub" / ".x_ct.nii.gz.999999999.abc.tmp"
    dead_ct.mkdir()
    live_old = tmp_path / f".x.nii.gz.old.{os.getppid()}.abc"
    live_old.mkdir()
    dead_old = tmp_path / ".x.nii.gz.old.999999999.abc"
    dead_old.mkdir()
    no_pid = tmp_path / ".x.nii.gz.old.abc"
    no_pid.mkdir()
    other = tmp_path / ".y.nii.gz.999999999.abc.tmp"
    other.mkdir()
    removed = remove_stale_temporaries(tmp_path / "x.nii.gz", tmp_path / "sub" / "x_ct.nii.gz")
    assert sorted(removed) == sorted([dead_ct, dead_old, no_pid])
    assert live_old.exists() and other.exists() and not dead_ct.exists()
    assert remove_stale_temporaries(tmp_path / "missing" / "x.nii.gz") == []  # no such folder: nothing to do
