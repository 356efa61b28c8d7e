import json
import os

import pytest

from ctpet_srgan.atomic import atomic_path, replace_dir, write_json_atomic, write_json_once


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
