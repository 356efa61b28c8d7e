"""ctpet_srgan.manifest: load/validate/save of manifest.json, old manifests, unknown keys, a real prepared set."""

import json

import pytest

from ctpet_srgan import records
from ctpet_srgan.errors import InputError
from ctpet_srgan.manifest import MANIFEST, SCHEMA_VERSION, Manifest, Shard, Split
from ctpet_srgan.normalization import DEFAULT, Normalization
from tests._tiny_set import write_tiny_set


def _valid() -> dict:
    h = records.study_hash("1.2.3")
    return {
        "schema_version": SCHEMA_VERSION, "scale": 2, "normalization": DEFAULT.to_dict(),
        "hr_spacing_mm": [2.0, 2.0, 4.0], "lr_spacing_mm": [4.0, 4.0, 4.0], "degradation": {"lr_fwhm_mm": 6.0},
        "compression": "GZIP", "shard_size": 5, "split_fractions": {"val": 0.1, "test": 0.1}, "split_seed": 3,
        "examples": 7, "skipped": [{"study": "00000000000000ff", "problem": "no PET"}],
        "splits": {"train": {"studies": [h], "examples": 7, "shards": [{"file": "train-00000-of-00002.tfrecord.gz",
                                                                         "examples": 5},
                                                                        {"file": "train-00001-of-00002.tfrecord.gz",
                                                                         "examples": 2}]},
                   "val": {"studies": [], "examples": 0, "shards": []},
                   "test": {"studies": [], "examples": 0, "shards": []}},
        "studies": {h: {"split": "train", "slices": 7, "hr_shape": [64, 48], "has_truth": False, "has_mask": True,
                        "lesions": [{"center_mm": [1.0, 2.0, 3.0], "diameter_mm": 10.0}], "tumour_volume_ml": 2.5,
                        "contour_volume_ml": None}},
    }


def _write(tmp_path, d) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps(d))


def test_round_trip_types_and_atomic_save(tmp_path):
    d = _valid()
    _write(tmp_path, d)
    m = Manifest.load(tmp_path)
    h = records.study_hash("1.2.3")
    assert m.to_dict() == d and Manifest.from_dict(m.to_dict()) == m
    assert m.scale == 2 and m.normalization == DEFAULT and m.compression == "GZIP" and m.split_seed == 3
    assert m.hr_spacing_mm == (2.0, 2.0, 4.0) and m.examples == 7
    assert m.splits["train"] == Split((h,), 7, (Shard("train-00000-of-00002.tfrecord.gz", 5),
                                                Shard("train-00001-of-00002.tfrecord.gz", 2)))
    e = m.studies[h]
    assert (e.split, e.slices, e.hr_shape, e.has_truth, e.has_mask, e.world) == ("train", 7, (64, 48), False, True,
                                                                                   None)
    assert e.lesions == [{"center_mm": [1.0, 2.0, 3.0], "diameter_mm": 10.0}] and e.info["contour_volume_ml"] is None
    out = tmp_path / "copy"
    assert m.save(out) == out / MANIFEST
    assert Manifest.load(out / MANIFEST) == m and not list(out.glob(".*.tmp"))
    assert (out / MANIFEST).read_text() == json.dumps(d, indent=2, sort_keys=True) + "\n"  # atomic.write_json_atomic


def test_old_manifest_without_schema_version_loads_as_version_1(tmp_path):
    d = _valid()
    del d["schema_version"], d["examples"], d["skipped"], d["split_seed"]
    _write(tmp_path, d)
    m = Manifest.load(tmp_path)
    assert m.schema_version == 1 and m.examples == 7 and m.skipped == () and m.split_seed is None
    assert m.to_dict()["schema_version"] == 1 and records.read_manifest(tmp_path)["schema_version"] == 1


def test_unknown_keys_are_kept(tmp_path):
    d = _valid()
    d["made_by"] = {"tool": "future", "version": 9}
    h = next(iter(d["studies"]))
    d["studies"][h]["world"] = "guided"
    d["studies"][h]["ct_only"] = [{"center_mm": [0, 0, 0]}]
    _write(tmp_path, d)
    m = Manifest.load(tmp_path)
    assert m.extra == {"made_by": {"tool": "future", "version": 9}} and m.is_guided
    assert m.studies[h].world == "guided" and m.to_dict() == d
    m.save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / MANIFEST).read_text()) == d


def _broken(change):
    d = _valid()
    change(d)
    return d


H = records.study_hash("1.2.3")
BAD = [
    (lambda d: d.update(schema_version=99), "schema_version 99"),
    (lambda d: d.pop("scale"), r"missing keys \['scale'\]"),
    (lambda d: d.update(scale=3), "scale must be 2 or 4, got 3"),
    (lambda d: d.update(scale="2"), "scale must be 2 or 4"),
    (lambda d: d["normalization"].update(pet_offset=1.0), r"unknown constants \['pet_offset'\]"),
    (lambda d: d["normalization"].update(pet_scale_suv="ten"), "must be numbers"),
    (lambda d: d.update(hr_spacing_mm=[2.0, -1.0, 4.0]), "hr_spacing_mm must be a list of 2 or 3 positive"),
    (lambda d: d.update(compression="zip"), "compression must be"),
    (lambda d: d["splits"]["train"].pop("shards"), r"split train: missing keys \['shards'\]"),
    (lambda d: d["splits"]["train"].update(shards=[]), "split train: 7 examples but no shards listed"),
    (lambda d: d["splits"]["train"]["shards"][0].pop("examples"), "split train: shard 0 must be"),
    (lambda d: d["splits"]["train"]["shards"][0].update(file="../x.tfrecord"), "plain file name"),
    (lambda d: d["splits"].update(holdout=d["splits"]["val"]), "unknown split 'holdout'"),
    (lambda d: d["splits"]["val"]["studies"].append("feedfeedfeedfeed"), "study feedfeedfeedfeed is not described"),
    (lambda d: d["studies"][H].update(split="test"), f"study {H}: in split train, its entry says test"),
    (lambda d: d["studies"][H].pop("slices"), f"study {H}: slices must be a count"),
    (lambda d: d.update(split_seed=1.5), "split_seed must be an integer"),
    (lambda d: d.update(skipped="none"), "skipped must be a list"),
]


@pytest.mark.parametrize("change,problem", BAD)
def test_validation_errors_name_the_file_and_the_problem(tmp_path, change, problem):
    _write(tmp_path, _broken(change))
    with pytest.raises(InputError, match=problem) as e:
        Manifest.load(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / MANIFEST}: ") and "\n" not in str(e.value)


def test_missing_unreadable_and_not_an_object(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json; the data set is missing or its preparation"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST).write_text("{ half")
    with pytest.raises(InputError, match=f"{MANIFEST}: not valid JSON"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(InputError, match="a manifest is a JSON object, got list"):
        Manifest.load(tmp_path / MANIFEST)


def test_split_and_shard_paths(tmp_path):
    written = write_tiny_set(tmp_path, studies=3, slices=2)
    m = Manifest.load(tmp_path)
    assert m.to_dict()["splits"] == written["splits"] and m.normalization == Normalization()
    assert m.shard_paths(tmp_path, "train") == [str(tmp_path / s["file"]) for s in written["splits"]["train"]["shards"]]
    with pytest.raises(InputError, match=r"no split 'holdout'; it has \['test', 'train', 'val'\]"):
        m.shard_paths(tmp_path, "holdout")
    (tmp_path / written["splits"]["val"]["shards"][0]["file"]).unlink()
    with pytest.raises(FileNotFoundError, match="shards listed in manifest.json are missing"):
        m.shard_paths(tmp_path, "val")


def test_a_set_prepared_by_convert_loads_and_saves_byte_identically(tmp_path):
    from data_prep import convert as cv
    from data_prep import phantom as ph

    ph.write_phantom_studies(tmp_path / "dicom", 3, 5, nema_every=0, cfg=ph.PhantomConfig(fov_mm=96.0, pet_slices=4))
    out = tmp_path / "set"
    returned = cv.convert(cv.discover_studies(tmp_path / "dicom"), out, cv.ConvertConfig(scale=2, seed=1),
                          shard_size=3, log=lambda s: None)
    m = Manifest.load(out)
    assert m.to_dict() == returned == records.read_manifest(out)
    assert sorted(m.splits) == ["test", "train", "val"] and len(m.studies) == 3 and m.examples == sum(
        e.slices for e in m.studies.values())
    assert all(sum(s.examples for s in sp.shards) == sp.examples for sp in m.splits.values())
    copy_dir = tmp_path / "copy"
    m.save(copy_dir)
    assert (copy_dir / MANIFEST).read_bytes() == (out / MANIFEST).read_bytes()
    with pytest.raises(InputError, match="scale must be 2 or 4, got 8"):
        Manifest.from_dict({**returned, "scale": 8}, out / MANIFEST)
