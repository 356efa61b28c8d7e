"""slabs: streamed NIfTI / NPY outputs equal the whole-volume writers byte for byte; read-once slab views."""

import numpy as np
import pytest

from ctpet_srgan import slabs
from ctpet_srgan.geometry import Volume, axial_affine
from ctpet_srgan.nifti_io import read_nifti

RNG = np.random.default_rng(5)
AFF = axial_affine((-3.2, 7.1, 11.0), (0.7, 0.9, 2.5))


class FakeStream:
    """What slabs needs of an inference.VolumeStream: batches of (k0, SR PET, SR CT or None) and hr_ct."""

    def __init__(self, pet, ct, batch, model_ct=True, fail_after=None):
        self.shape, self.affine, self.pet_meta = pet.shape, AFF, {"model": "fake"}
        self.pet, self.ct, self.batch, self.model_ct, self.fail_after = pet, ct, batch, model_ct, fail_after
        self.hr_ct_calls = []

    def batches(self):
        for n, k0 in enumerate(range(0, self.shape[0], self.batch)):
            if self.fail_after is not None and n >= self.fail_after:
                raise RuntimeError("model died")
            k1 = min(self.shape[0], k0 + self.batch)
            yield k0, self.pet[k0:k1], (self.ct[k0:k1] if self.model_ct else None)

    def hr_ct(self, k0, k1):
        self.hr_ct_calls.append((k0, k1))
        return self.ct[k0:k1]


def _volumes(shape=(7, 5, 9)):
    pet = RNG.normal(1.0, 2.0, shape).astype(np.float32)  # undershoots below 0 SUV, to be clipped
    ct = RNG.normal(0.0, 300.0, shape).astype(np.float32)
    return pet, ct


@pytest.mark.parametrize("name", ["sr.nii", "sr.nii.gz", "sr.npy"])
@pytest.mark.parametrize("model_ct", [True, False])
def test_streamed_pair_equals_the_whole_volume_writers(tmp_path, name, model_ct):
    pet, ct = _volumes()
    ext = name[2:]
    stream = FakeStream(pet, ct, batch=3, model_ct=model_ct)
    slabs.write_stream(stream, tmp_path / f"a{ext}", tmp_path / f"a_ct{ext}")
    whole_pet = Volume(slabs.clip_suv(pet), AFF, "PT", "SUVbw")
    slabs.write_volumes(whole_pet, Volume(ct, AFF, "CT", "HU"), tmp_path / f"b{ext}", tmp_path / f"b_ct{ext}")
    for a, b in ((f"a{ext}", f"b{ext}"), (f"a_ct{ext}", f"b_ct{ext}")):
        assert (tmp_path / a).read_bytes() == (tmp_path / b).read_bytes(), a
    # a PET-only model's CT output is the input CT on the HR grid, asked for batch by batch
    assert stream.hr_ct_calls == ([] if model_ct else [(0, 3), (3, 6), (6, 7)])
    got = np.load(tmp_path / "a.npy") if ext == ".npy" else read_nifti(tmp_path / f"a{ext}", modality="PT").array
    assert got.min() == 0.0 and (got == 0).mean() > 0.1  # clipped at 0 SUV
    np.testing.assert_allclose(got, np.maximum(pet, 0), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"a{ext}", f"a_ct{ext}", f"b{ext}", f"b_ct{ext}"])


def test_a_2d_npy_output_is_one_h_by_w_array(tmp_path):
    pet, ct = _volumes((1, 6, 4))
    slabs.write_stream(FakeStream(pet, ct, batch=4), tmp_path / "a.npy", tmp_path / "a_ct.npy", two_d=True)
    slabs.write_volumes(Volume(slabs.clip_suv(pet), AFF, "PT", "SUVbw"), Volume(ct, AFF, "CT", "HU"),
                        tmp_path / "b.npy", tmp_path / "b_ct.npy", two_d=True)
    assert np.load(tmp_path / "a.npy").shape == (6, 4)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert (tmp_path / "a_ct.npy").read_bytes() == (tmp_path / "b_ct.npy").read_bytes()


@pytest.mark.parametrize("name", ["sr.nii.gz", "sr.npy"])
def test_a_stream_failing_midway_leaves_nothing(tmp_path, name):
    pet, ct = _volumes()
    ext = name[2:]
    with pytest.raises(RuntimeError, match="model died"):
        slabs.write_stream(FakeStream(pet, ct, batch=2, fail_after=2), tmp_path / f"a{ext}", tmp_path / f"a_ct{ext}")
    assert list(tmp_path.iterdir()) == []


def test_npy_slab_writer_writes_np_save_bytes_and_refuses_missing_slices(tmp_path):
    arr = RNG.normal(0, 1, (5, 3, 4)).astype(np.float32)
    np.save(tmp_path / "ref.npy", arr)
    w = slabs.NpySlabWriter(tmp_path / "a.npy", arr.shape)
    for k0 in (0, 2, 3):
        w.write(arr[k0 : {0: 2, 2: 3, 3: 5}[k0]])
    w.close()
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()
    w = slabs.NpySlabWriter(tmp_path / "b.npy", arr.shape)
    w.write(arr[:4])
    with pytest.raises(ValueError, match="4 of 5 slices"):
        w.close()
    w.abort()


def test_slab_slices_are_read_once_in_order():
    pet, _ = _volumes()
    view = slabs.SlabSlices(pet.shape, ((k0, pet[k0 : k0 + 3]) for k0 in range(0, 7, 3)))
    assert view.shape == pet.shape
    np.testing.assert_array_equal(view[0], pet[0])
    np.testing.assert_array_equal(view[4], pet[4])  # skips into the second slab
    with pytest.raises(IndexError, match="read once"):
        view[2]  # the first slab is gone
    np.testing.assert_array_equal(view[6], pet[6])
    mapped = slabs.MappedSlices(pet, lambda k, a: a * 0 + k)
    assert mapped.shape == pet.shape and float(mapped[5].max()) == 5.0


def test_streamed_pet_volume_is_the_clipped_sr_pet_on_the_stream_grid():
    pet, ct = _volumes()
    vol = slabs.streamed_pet_volume(FakeStream(pet, ct, batch=3))
    assert vol.shape == pet.shape and vol.units == "SUVbw" and vol.meta == {"model": "fake"}
    np.testing.assert_array_equal(vol.affine, AFF)
    np.testing.assert_array_equal(np.stack([vol.array[k] for k in range(7)]), np.maximum(pet, 0))
