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


def fuse_prelu(src: Path, dst: Path) -> int:
    """Writes src with each PReLU that tf2onnx exported as Keras 3's formula, Add(Relu(x), Mul(Relu(Neg(x)), c)),
    replaced by one ONNX PRelu(x, -c) node (the same function: x for x >= 0, -c*x below). Returns how many were
    fused. A lever for an ORT deployment, not part of the converted export."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    prod = {o: n for n in g.node for o in n.output}
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}

    def const_value(name: str):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in consts:
            return numpy_helper.to_array(next(a.t for a in consts[name].attribute if a.name == "value"))
        return None

    def op(name: str, kind: str):
        n = prod.get(name)
        return n if n is not None and n.op_type == kind else None

    drop, new_nodes, fused = set(), [], 0
    for n in g.node:
        if n.op_type != "Add":
            continue
        for a, b in ((n.input[0], n.input[1]), (n.input[1], n.input[0])):
            pos, mul = op(a, "Relu"), op(b, "Mul")
            if pos is None or mul is None:
                continue
            for r, c in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
                neg_relu = op(r, "Relu")
                neg = op(neg_relu.input[0], "Neg") if neg_relu is not None else None
                cv = const_value(c)
                if neg is None or cv is None or neg.input[0] != pos.input[0]:
                    continue
                slope = numpy_helper.from_array((-cv).astype(np.float32), f"{n.name}/prelu_slope")
                g.initializer.append(slope)
                new_nodes.append((n, onnx.helper.make_node("PRelu", [pos.input[0], slope.name], [n.output[0]],
                                                           name=f"{n.name}/prelu")))
                drop.update({id(n), id(mul), id(neg_relu), id(neg), id(pos)})
                fused += 1
                break
            else:
                continue
            break
    used_elsewhere = {i for n in g.node if id(n) not in drop for i in n.input}
    keep = []
    for n in g.node:
        for old, nn in new_nodes:
            if n is old:
                keep.append(nn)
        if id(n) not in drop or (n.op_type in ("Relu", "Neg") and any(o in used_elsewhere for o in n.output)):
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    unused = [t for t in g.initializer if t.name not in used]
    for t in unused:
        g.initializer.remove(t)
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))
    return fused


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
    so.log_severity_level = 3  # errors only
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
