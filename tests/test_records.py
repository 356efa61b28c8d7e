import json

import numpy as np
import pytest
import tensorflow as tf

from ctpet_srgan import records
from ctpet_srgan.atomic import write_json_atomic
from ctpet_srgan.geometry import axial_affine


def _example(scale=2, **over):
    rng = np.random.default_rng(0)
    kw = dict(
        hr_pet=rng.random((8, 6)).astype(np.float32), hr_ct=rng.random((8, 6)).astype(np.float32) * 100,
        lr_pet=rng.random((4, 3)).astype(np.float32), lr_ct=rng.random((4, 3)).astype(np.float32),
        scale=scale, study="abc", slice_index=5, hr_affine=axial_affine((1, 2, 3), (2, 2, 4)), has_truth=True,
    )
    kw.update(over)
    return kw


def test_round_trip_keeps_values_shapes_and_geometry():
    kw = _example()
    ex = records.parse_example(tf.constant(records.serialize_example(**kw)))
    for k in records.IMAGE_KEYS:
        np.testing.assert_array_equal(ex[k].numpy()[..., 0], kw[k])
    assert int(ex["slice_index"]) == 5 and int(ex["scale"]) == 2 and int(ex["has_truth"]) == 1
    np.testing.assert_allclose(ex["hr_affine"].numpy(), kw["hr_affine"])


def test_hand_encoding_is_byte_identical_to_tensorflows():
    kw = _example(slice_index=300)  # a two-byte varint
    f = tf.train.Feature
    feats = {k: f(bytes_list=tf.train.BytesList(value=[np.asarray(kw[k], "<f4").tobytes()]))
             for k in records.IMAGE_KEYS}
    feats.update(
        hr_shape=f(int64_list=tf.train.Int64List(value=[8, 6])),
        lr_shape=f(int64_list=tf.train.Int64List(value=[4, 3])),
        scale=f(int64_list=tf.train.Int64List(value=[2])), study=f(bytes_list=tf.train.BytesList(value=[b"abc"])),
        slice_index=f(int64_list=tf.train.Int64List(value=[300])),
        hr_affine=f(float_list=tf.train.FloatList(value=kw["hr_affine"].ravel())),
        has_truth=f(int64_list=tf.train.Int64List(value=[1])),
    )
    expected = tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString(deterministic=True)
    assert records.serialize_example(**kw) == expected
    # negative and large int64 values as protobuf writes them (ten-byte two's complement varints)
    vals = [-1, 0, 127, 128, 2**40, -(2**63)]
    assert records._ints(vals) == f(int64_list=tf.train.Int64List(value=vals)).SerializeToString()


def test_inconsistent_shapes_are_refused():
    with pytest.raises(ValueError, match="inconsistent shapes"):
        records.serialize_example(**_example(scale=4))


def test_study_hash_is_stable_and_hides_the_uid():
    uid = "1.2.840.113619.2.55.3.1234"
    h = records.study_hash(uid)
    assert h == records.study_hash(uid) and len(h) == 16 and uid not in h
    assert h != records.study_hash(uid + "1")


def test_manifest_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="preparation did not finish"):
        records.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{ half")
    with pytest.raises(ValueError, match="not valid JSON"):
        records.read_manifest(tmp_path)
    write_json_atomic(tmp_path / "manifest.json", {"schema_version": 99})
    with pytest.raises(ValueError, match="schema_version 99"):
        records.read_manifest(tmp_path)
    m = {"schema_version": records.SCHEMA_VERSION, "scale": 2, "normalization": {}, "studies": {},
         "splits": {"train": {"studies": [], "examples": 1, "shards": [{"file": "x.tfrecord", "examples": 1}]}}}
    write_json_atomic(tmp_path / "manifest.json", m)
    with pytest.raises(FileNotFoundError, match="x.tfrecord"):
        records.shard_paths(tmp_path, records.read_manifest(tmp_path), "train")
    assert json.loads((tmp_path / "manifest.json").read_text())["schema_version"] == 1


def test_tumour_mask_round_trip_and_records_without_one():
    mask = np.zeros((8, 6), np.uint8)
    mask[2:5, 1:3] = 1
    ex = records.parse_example(tf.constant(records.serialize_example(**_example(), hr_mask=mask * 7)))
    assert ex["hr_mask"].dtype == tf.float32 and ex["hr_mask"].shape == (8, 6, 1)
    np.testing.assert_array_equal(ex["hr_mask"].numpy()[..., 0], mask)  # nonzero -> 1
    assert int(ex["has_mask"]) == 1
    plain = records.serialize_example(**_example())  # no mask: what older sets hold, byte for byte
    ex = records.parse_example(tf.constant(plain))
    assert int(ex["has_mask"]) == 0 and not ex["hr_mask"].numpy().any() and ex["hr_mask"].shape == (8, 6, 1)
    assert b"hr_mask" not in plain and b"hr_mask" in records.serialize_example(**_example(), hr_mask=mask)
    with pytest.raises(ValueError, match="hr_mask"):
        records.serialize_example(**_example(), hr_mask=np.zeros((4, 3)))


def test_masked_encoding_is_byte_identical_to_tensorflows():
    kw = _example()
    mask = (np.arange(48).reshape(8, 6) % 5 == 0).astype(np.uint8)
    ours = tf.train.Example.FromString(records.serialize_example(**kw, hr_mask=mask))
    assert ours.features.feature["hr_mask"].bytes_list.value[0] == mask.tobytes()
    assert list(ours.features.feature["has_mask"].int64_list.value) == [1]
    assert ours.SerializeToString(deterministic=True) == records.serialize_example(**kw, hr_mask=mask)


def test_parsing_in_a_dataset_map_batches_masked_and_unmasked_records():
    mask = np.ones((8, 6), np.uint8)
    exs = [records.serialize_example(**_example(), hr_mask=mask), records.serialize_example(**_example())]
    ds = tf.data.Dataset.from_tensor_slices(exs).map(records.parse_example).batch(2)
    b = next(iter(ds))
    assert b["hr_mask"].shape == (2, 8, 6, 1) and b["has_mask"].numpy().tolist() == [1, 0]
    assert b["hr_mask"].numpy()[0].all() and not b["hr_mask"].numpy()[1].any()
