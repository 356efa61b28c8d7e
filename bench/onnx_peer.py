"""The deployment peer for bench/run.py: our exported model (ctpet_srgan.export, the TF Serving SavedModel) converted by
tf2onnx and run by ONNX Runtime on the CPU.

tf2onnx and onnxruntime are bench-only optional dependencies (bench/requirements-bench.txt). The conversion runs as
`python -m tf2onnx.convert --saved-model DIR --output FILE --opset N` in a child process, so that a failure gives its
own error line (kept verbatim in the bench's JSON and table) and cannot take the bench down.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

OPSET = 17


class PeerError(RuntimeError):
    """The ONNX peer could not be built; the message is the tool's own error line."""


def onnx_available() -> tuple[bool, str]:
    """(importable, why not) for tf2onnx + onnxruntime."""
    missing = [m for m in ("onnx", "tf2onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        return False, (f"{', '.join(missing)} not installed (pip install -r bench/requirements-bench.txt to run the"
                       " ONNX Runtime peer)")
    return True, ""


def error_line(text: str) -> str:
    """The most telling line of a failed tool's output: the last one naming an error, else the last non-empty one."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error:" in ln.lower() or "Exception" in ln:
            return ln[-500:]
    return lines[-1][-500:] if lines else "(no output)"


def export_and_convert(model, gen_cfg, work: Path, *, opset: int = OPSET, timeout: float = 900) -> tuple[Path, dict]:
    """Exports `model` with ctpet_srgan.export.export_savedmodel into work/export and converts that SavedModel to
    work/model.onnx. Returns (onnx path, info: export_s, convert_s, opset, tf2onnx version). Raises PeerError with the
    converter's error line when the conversion fails."""
    import tf2onnx

    from ctpet_srgan.export import export_savedmodel
    from ctpet_srgan.normalization import DEFAULT

    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    run_config = {"scale": gen_cfg.scale, "generator": gen_cfg.to_dict(), "normalization": DEFAULT.to_dict(),
                  "label": "bench model (random weights)"}
    saved = export_savedmodel(model, run_config, work / "export", "bench", 1, overwrite=True)
    export_s = time.perf_counter() - t
    out = work / "model.onnx"
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved), "--output", str(out),
           "--opset", str(opset)]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PeerError(f"tf2onnx.convert did not finish within {timeout:.0f} s") from None
    convert_s = time.perf_counter() - t
    if p.returncode != 0 or not out.exists():
        raise PeerError(f"tf2onnx.convert exited with status {p.returncode}: {error_line(p.stderr + p.stdout)}")
    return out, {"saved_model": str(saved), "export_s": export_s, "convert_s": convert_s, "opset": opset,
                 "tf2onnx": tf2onnx.__version__, "onnx_bytes": out.stat().st_size}


def prepare_call(onnx_path: Path, pet_suv: np.ndarray, ct_hu: np.ndarray | None, *, threads: int,
                 spinning: bool = False) -> tuple[Callable[[], object], dict]:
    """A blocking, warmed-up ONNX Runtime call (CPUExecutionProvider, all graph optimisations) on NHWC inputs in
    physical units (the serving signature: pet SUVbw [B, h, w, 1], ct HU). threads: intra-op threads (TF's count);
    spinning off by default, so that idle ORT threads do not take the cores from the variants timed in turn with it.
    Returns (call, info); call() returns the sr_pet array."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    t = time.perf_counter()
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t
    names = [i.name for i in sess.get_inputs()]
    feed: dict[str, Any] = {}
    for n in names:
        key = n.split(":")[0]
        if key == "pet":
            feed[n] = np.ascontiguousarray(pet_suv, np.float32)
        elif key == "ct" and ct_hu is not None:
            feed[n] = np.ascontiguousarray(ct_hu, np.float32)
        else:
            raise PeerError(f"{onnx_path}: unexpected ONNX input {n!r} (inputs {names})")
    outs = [o.name for o in sess.get_outputs()]
    pet_out = next((o for o in outs if o.split(":")[0] == "sr_pet"), outs[0])

    def call():
        return sess.run([pet_out], feed)[0]

    t = time.perf_counter()
    call()
    warm = time.perf_counter() - t
    call()
    return call, {"onnxruntime": ort.__version__, "threads": int(threads), "spinning": spinning,
                  "session_load_s": load_s, "warmup_s": warm, "inputs": names, "outputs": outs}
