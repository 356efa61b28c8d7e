import numpy as np
import pytest
import tensorflow as tf

from ctpet_srgan import pipeline, records
from ctpet_srgan.normalization import DEFAULT
from tests._tiny_set import write_tiny_set


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("set")
    write_tiny_set(d, gzip=True)
    return d


def _to_suv(x):
    return DEFAULT.pet_from_norm(np.asarray(x))


def test_eval_split_gives_whole_slices_in_order_with_meta(tiny):
    ds = pipeline.make_dataset(tiny, "val", batch_size=2, include_meta=True)
    batches = list(ds.as_numpy_iterator())
    assert [b["lr_pet"].shape for b in batches] == [(2, 12, 12, 1), (2, 12, 12, 1)]
    assert batches[0]["hr_pet"].shape == (2, 24, 24, 1)
    assert [int(i) for b in batches for i in b["slice_index"]] == [0, 1, 2, 3]
    # normalised CT: 40 HU -> (40 + 1000) / 2000
    np.testing.assert_allclose(batches[0]["hr_ct"][0, 0, 0, 0], 0.52, rtol=1e-6)
    np.testing.assert_allclose(_to_suv(batches[0]["lr_pet"][1, 3, 5, 0]), 1000 + 100 + 1.5 + 0.05, rtol=1e-5)


def test_training_patches_stay_aligned_under_augmentation(tiny):
    ds = pipeline.make_dataset(tiny, "train", batch_size=4, patch_size=5, training=True, seed=3, repeat=True)
    for b in ds.take(5).as_numpy_iterator():
        assert b["lr_pet"].shape == (4, 5, 5, 1) and b["hr_pet"].shape == (4, 10, 10, 1)
        lr = _to_suv(b["lr_pet"][..., 0])
        hr = _to_suv(b["hr_pet"][..., 0])
        # every HR pixel equals the LR pixel it lies in, whatever rotation/flip was drawn
        up = np.repeat(np.repeat(lr, 2, axis=1), 2, axis=2)
        np.testing.assert_allclose(hr, up, atol=1e-3)
        hr_ct = DEFAULT.ct_from_norm(b["hr_ct"][..., 0])
        lr_ct = DEFAULT.ct_from_norm(b["lr_ct"][..., 0])
        np.testing.assert_allclose(np.repeat(np.repeat(lr_ct, 2, 1), 2, 2), hr_ct, atol=1e-3)


def test_training_order_is_a_function_of_the_seed(tiny):
    def first(seed):
        ds = pipeline.make_dataset(tiny, "train", batch_size=2, patch_size=4, training=True, seed=seed,
                                   deterministic=True, repeat=True)
        return [b["lr_pet"] for b in ds.take(3).as_numpy_iterator()]

    a, b, c = first(7), first(7), first(8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_patch_larger_than_slice_is_refused(tiny):
    ds = pipeline.make_dataset(tiny, "train", batch_size=1, patch_size=40, training=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="smaller than the LR patch size"):
        next(iter(ds))


def test_incomplete_set_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        pipeline.make_dataset(tmp_path, "train", batch_size=1)


def test_works_with_distribute_dataset(tiny):
    strategy = tf.distribute.get_strategy()
    ds = pipeline.make_dataset(tiny, "train", batch_size=2, patch_size=4, training=True, repeat=True)
    dist = strategy.experimental_distribute_dataset(ds)
    b = next(iter(dist))
    assert b["hr_ct"].shape == (2, 8, 8, 1)


def _train(tiny, **kw):
    ds = pipeline.make_dataset(tiny, "train", batch_size=2, patch_size=5, training=True, seed=4, deterministic=True,
                               repeat=True, **kw)
    return list(ds.take(4).as_numpy_iterator())


def test_ct_augmentation_is_off_by_default_and_changes_only_the_ct(tiny):
    plain, default = _train(tiny), _train(tiny, ct_shift_max_mm=0.0, ct_dropout=0.0)
    for a, b in zip(plain, default):
        for k in pipeline.IMAGE_KEYS:
            np.testing.assert_array_equal(a[k], b[k])
    dropped = _train(tiny, ct_dropout=1.0)  # the tiny set is all tissue: the uninformative CT is water everywhere
    shifted = _train(tiny, ct_shift_max_mm=6.0)
    for a, d, s in zip(plain, dropped, shifted):
        for k in ("lr_pet", "hr_pet"):
            np.testing.assert_array_equal(a[k], d[k])
            np.testing.assert_array_equal(a[k], s[k])
        np.testing.assert_allclose(DEFAULT.ct_from_norm(d["hr_ct"]), 0.0, atol=1e-3)
        np.testing.assert_allclose(DEFAULT.ct_from_norm(d["lr_ct"]), 0.0, atol=1e-3)
        # HR and LR CT stay consistent after the shift (LR = area average of HR)
        np.testing.assert_allclose(s["lr_ct"], tf.nn.avg_pool2d(s["hr_ct"], 2, 2, "VALID").numpy(), atol=1e-5)
    assert any(not np.allclose(a["hr_ct"], s["hr_ct"]) for a, s in zip(plain, shifted))


def test_ct_augmentation_is_refused_outside_training(tiny):
    with pytest.raises(ValueError, match="training"):
        pipeline.make_dataset(tiny, "val", batch_size=2, ct_dropout=0.5)
    with pytest.raises(ValueError, match="ct_dropout"):
        pipeline.make_dataset(tiny, "train", batch_size=2, patch_size=4, training=True, ct_dropout=2.0)


def _record(study: str, k: int, n: int = 4):
    v = np.full((n, n), 100.0 * k + (0.5 if study == "b" else 0.0), np.float32)
    lv = v[::2, ::2]
    return records.serialize_example(hr_pet=v, hr_ct=v - 50, lr_pet=lv, lr_ct=lv - 50, scale=2, study=study,
                                     slice_index=k, hr_affine=np.eye(4), has_truth=True)


def test_context_stacks_are_the_studys_neighbours_in_slice_order():
    # two studies in one stream, written as data_prep writes them: a then b, each in slice order
    order = [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    ds = pipeline.context_stacks(tf.data.Dataset.from_tensor_slices([_record(s, k) for s, k in order]), 3)
    got = list(ds.as_numpy_iterator())
    assert [(e["study"].decode(), int(e["slice_index"])) for e in got] == order
    want = {("a", 0): [0, 0, 1], ("a", 1): [0, 1, 2], ("a", 2): [1, 2, 2], ("b", 0): [0, 0, 1], ("b", 1): [0, 1, 1]}
    for e, key in zip(got, order):
        off = 0.5 if key[0] == "b" else 0.0  # never a slice of the other study
        assert e["lr_pet_ctx"].shape == (2, 2, 3) and e["hr_ct_ctx"].shape == (4, 4, 3)
        np.testing.assert_array_equal(e["lr_pet_ctx"][0, 0], [100.0 * k + off for k in want[key]])
        np.testing.assert_array_equal(e["hr_ct_ctx"][1, 2], [100.0 * k + off - 50 for k in want[key]])
        np.testing.assert_array_equal(e["lr_pet_ctx"][..., 1:2], e["lr_pet"])  # the centre is the slice itself


def test_context_stacks_of_five_and_a_one_slice_study():
    order = [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    ds = pipeline.context_stacks(tf.data.Dataset.from_tensor_slices([_record(s, k) for s, k in order]), 5)
    got = [e["lr_pet_ctx"][0, 0] for e in ds.as_numpy_iterator()]
    np.testing.assert_array_equal(got[0], [0, 0, 0, 100, 200])
    np.testing.assert_array_equal(got[1], [0, 0, 100, 200, 200])
    np.testing.assert_array_equal(got[3], [0.5] * 5)


def test_context_stacks_refuse_slices_out_of_order():
    order = [("a", 0), ("a", 2), ("a", 1)]
    ds = pipeline.context_stacks(tf.data.Dataset.from_tensor_slices([_record(s, k) for s, k in order]), 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not consecutive slices"):
        list(ds.as_numpy_iterator())


def test_make_dataset_with_context(tiny):
    ds = pipeline.make_dataset(tiny, "val", batch_size=4, include_meta=True, context_slices=3)
    b = next(ds.as_numpy_iterator())
    assert b["lr_pet"].shape == (4, 12, 12, 1) and b["lr_pet_ctx"].shape == (4, 12, 12, 3)
    assert b["hr_ct_ctx"].shape == (4, 24, 24, 3) and b["lr_ct_ctx"].shape == (4, 12, 12, 3)
    # tiny set: lr_pet = study*1000 + slice*100 + ...; the val study is study 1 with slices 0..3
    hundreds = np.round((_to_suv(b["lr_pet_ctx"][:, 0, 0, :]) - 1000) / 100)
    np.testing.assert_array_equal(hundreds, [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]])
    t = pipeline.make_dataset(tiny, "train", batch_size=2, patch_size=5, training=True, seed=1, repeat=True,
                              context_slices=3, ct_dropout=0.5, ct_shift_max_mm=4.0)
    for e in t.take(4).as_numpy_iterator():
        assert e["lr_pet_ctx"].shape == (2, 5, 5, 3) and e["hr_ct_ctx"].shape == (2, 10, 10, 3)
        np.testing.assert_array_equal(e["lr_pet_ctx"][..., 1:2], e["lr_pet"])  # same crop/rotation for the stack
        np.testing.assert_array_equal(e["hr_ct_ctx"][..., 1:2], e["hr_ct"])  # same CT draw for the stack
        np.testing.assert_array_equal(e["lr_ct_ctx"][..., 1:2], e["lr_ct"])
    m = pipeline.model_inputs(b, ("lr_pet", "hr_ct"), 3)
    assert m["lr_pet"] is b["lr_pet_ctx"] and m["hr_ct"] is b["hr_ct_ctx"]
    with pytest.raises(ValueError, match="context_slices"):
        pipeline.make_dataset(tiny, "val", batch_size=1, context_slices=2)
