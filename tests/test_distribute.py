"""tf.distribute: the custom loop under MirroredStrategy (2 logical CPUs) and MultiWorkerMirroredStrategy
(2 worker processes on 127.0.0.1) trains like one device. Each case runs in subprocesses with a timeout."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_dist_worker.py")


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _weights(npz, prefix):
    keys = sorted((k for k in npz.files if k.startswith(prefix)), key=lambda k: int(k.rsplit("_", 1)[1]))
    return [npz[k] for k in keys]


def test_mirrored_two_cpu_replicas_match_single_device(tmp_path):
    out = tmp_path / "mirrored.npz"
    r = subprocess.run([sys.executable, WORKER, "mirrored", str(out), str(tmp_path)], capture_output=True,
                       text=True, env=_env(), timeout=90)
    assert r.returncode == 0, r.stderr[-3000:]
    z = np.load(out)
    assert int(z["replicas"]) == 2 and list(z["steps"]) == [4, 4]
    np.testing.assert_allclose(z["losses_dist"], z["losses_single"], rtol=1e-4, atol=1e-6)
    assert z["losses_single"][2:, 2].min() > 0  # the GAN steps ran (discriminator loss)
    single, dist = _weights(z, "single_"), _weights(z, "dist_")
    assert len(single) == len(dist) > 0
    for a, b in zip(single, dist):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(z["psnr"][1], z["psnr"][0], rtol=1e-5)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multiworker_two_processes_train_and_agree(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen([sys.executable, WORKER, "multiworker", str(tmp_path / f"w{i}.npz"),
                                       str(tmp_path / "model")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=_env(TF_CONFIG=tf_config)))
    errs = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=90)
            errs.append(err)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(e[-2000:] for e in errs)
    z0, z1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert int(z0["replicas"]) == 2 and list(z0["steps"]) == list(z1["steps"]) == [4]
    np.testing.assert_allclose(z0["losses"], z1["losses"], rtol=1e-6)
    assert np.isfinite(z0["losses"]).all() and z0["losses"][2:, 2].min() > 0
    w0, w1 = _weights(z0, "w_"), _weights(z1, "w_")
    assert len(w0) == len(w1) > 0
    for a, b in zip(w0, w1):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    # only the chief writes the model directory
    assert (tmp_path / "model" / "generator.keras").exists()
    assert tf_checkpoint_step(tmp_path / "model" / "ckpt") == 4


def tf_checkpoint_step(ckpt_dir):
    text = (ckpt_dir / "checkpoint").read_text()
    return int(text.split('"')[1].rsplit("-", 1)[1])
