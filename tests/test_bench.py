"""bench/run.py: the --tiny smoke run writes every contracted key; its pure helpers; the PyTorch peer is our generator
layer for layer (same parameters, shapes and outputs). No timing assertions."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT))
from bench import run as bench_run  # noqa: E402

KEYS = ("reference_gflops", "inference_fraction_of_reference", "train_fraction_of_reference", "pipeline_over_training",
        "prep_2_workers_over_decode_1", "generate_peak_rss_gib", "inference_gpu_cfg_fraction_of_reference", "machine")


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--tiny", "--skip", "xla", "--out", str(out)],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(out.read_text()), p.stdout


def test_tiny_run_writes_every_key(tiny_result):
    res, stdout = tiny_result
    for k in KEYS:
        assert res.get(k) is not None, k
    for k in KEYS[:-1]:
        assert isinstance(res[k], float) and res[k] > 0, (k, res[k])
    assert res["machine"]["cores"] >= 1 and res["machine"]["tensorflow"]
    assert res["mode"] == "tiny" and res["generate"]["returncode"] == 0
    assert not res["generate"]["full_size_study"]  # the tiny study says it is not the 512x512x300 one
    assert set(res["targets"]) == set(bench_run.TARGETS)
    assert "inference_fraction_of_reference" in stdout  # the table is printed


def test_tiny_run_times_the_peers_or_says_why_not(tiny_result):
    from bench.onnx_peer import onnx_available
    from bench.torch_peer import torch_available

    res, stdout = tiny_result
    pr = res["peers"]["gpu.cfg"]
    assert pr["generator"] == res["generator"]  # --tiny: the toy model in place of gpu.cfg's
    assert pr["timed"]["ours"]["best_s"] > 0 and pr["fraction_of_reference"] > 0
    expected = {"torch_eager": torch_available()[0], "torch_channels_last": torch_available()[0],
                "onnxruntime": onnx_available()[0], "onnxruntime_prelu_fused": onnx_available()[0]}
    for k, present in expected.items():
        if present:
            row = pr["timed"][k]
            assert row["ours_over"] == pytest.approx(row["best_s"] / pr["timed"]["ours"]["best_s"])
            assert pr["peers"][k]["max_abs_diff_vs_ours"] < 1e-4, k  # the same function, not only the same shapes
        else:
            assert k not in pr["timed"] and any(k.startswith(s) for s in pr["skipped"]), pr["skipped"]
            assert "not installed" in stdout
    if expected["torch_eager"]:
        assert res["ours_over_torch_eager"] == res["peer_ratios"]["gpu.cfg"]["torch_eager"] > 0
        assert pr["peers"]["torch_eager"]["threads"] == pr["threads"]  # torch runs on TF's intra-op thread count
    else:
        assert res["ours_over_torch_eager"] is None
    if expected["onnxruntime"]:
        assert pr["peers"]["onnxruntime_prelu_fused"]["prelu_nodes_fused"] == 2 + pr["generator"]["num_blocks"] + 1


@pytest.mark.parametrize("ct_mode,scale", [("s2d", 2), ("lr", 4), ("none", 2)])
def test_torch_peer_is_our_generator(ct_mode, scale):
    """Same parameter count, output shapes and (with our weights copied in) outputs as build_generator."""
    from bench import torch_peer

    ok, why = torch_peer.torch_available()
    if not ok:
        pytest.skip(f"PyTorch peer not testable: {why}")
    import numpy as np

    from ctpet_srgan.models import GeneratorConfig, build_generator

    cfg = GeneratorConfig(scale=scale, filters=8, num_blocks=2, ct_mode=ct_mode)
    keras_model = build_generator(cfg)
    rng = np.random.default_rng(0)  # every weight random (the head and PReLU slopes start at zero)
    keras_model.set_weights([rng.normal(0, 0.2, w.shape).astype(np.float32) for w in keras_model.get_weights()])
    tm = torch_peer.build_torch_generator(cfg)
    assert torch_peer.parameter_count(tm) == keras_model.count_params()
    b, h = 2, 10
    x = {"lr_pet": rng.uniform(0, 1, (b, h, h, 1)).astype(np.float32)}
    if ct_mode == "s2d":
        x["hr_ct"] = rng.uniform(0, 1, (b, h * scale, h * scale, 1)).astype(np.float32)
    elif ct_mode == "lr":
        x["lr_ct"] = rng.uniform(0, 1, (b, h, h, 1)).astype(np.float32)
    want = keras_model(x, training=False)
    ct = x.get("hr_ct", x.get("lr_ct"))
    import torch

    with torch.no_grad():
        before = tm(torch_peer.to_nchw(x["lr_pet"]), torch_peer.to_nchw(ct))[0]
    assert tuple(before.shape) == (b, 1, h * scale, h * scale)
    torch_peer.load_keras_weights(tm, keras_model)
    with torch.no_grad():
        sr_pet, sr_ct = tm(torch_peer.to_nchw(x["lr_pet"]), torch_peer.to_nchw(ct))
    np.testing.assert_allclose(sr_pet.permute(0, 2, 3, 1).numpy(), want["sr_pet"].numpy(), atol=1e-4)
    assert not np.allclose(before.numpy(), sr_pet.numpy(), atol=1e-3)  # the copied weights made the difference
    if ct_mode == "none":
        assert sr_ct is None and "sr_ct" not in want
    else:
        np.testing.assert_allclose(sr_ct.permute(0, 2, 3, 1).numpy(), want["sr_ct"].numpy(), atol=1e-4)
    # torch's own FLOP count of the convolutions equals TF's count of the model's convolutions (2 per multiply-add)
    import tensorflow as tf

    from bench.common import count_flops

    fn = tf.function(lambda t: keras_model(t, training=False))
    tf_flops = count_flops(fn.get_concrete_function({k: tf.constant(v) for k, v in x.items()}))
    t_flops = torch_peer.conv_flops(tm, torch_peer.to_nchw(x["lr_pet"]), torch_peer.to_nchw(ct))
    assert 0.9 * tf_flops < t_flops <= tf_flops  # TF also counts bias adds, PReLUs and adds


def test_onnx_error_line():
    from bench.onnx_peer import error_line

    assert error_line("info\nValueError: bad op Foo\nlast line\n") == "ValueError: bad op Foo"
    assert error_line("only\n  last  \n") == "last"
    assert error_line("") == "(no output)"


def test_tiny_run_counts_flops_consistently(tiny_result):
    res, _ = tiny_result
    calls = res["inference"]["model_calls"]
    per_px = {r["batch"]: r["flops"] / (r["batch"] * r["lr"][0] * r["lr"][1]) for r in calls if not r["xla"]}
    assert len(per_px) >= 2 and max(per_px.values()) == pytest.approx(min(per_px.values()), rel=1e-3)
    tr = res["training"]["plain"]
    # a GAN step also runs D (and VGG) forward and backward: more FLOPs than the G-only pixel step
    assert tr["gan"]["flops"] > tr["pretrain"]["flops"] > 0
    ref = res["reference_gflops"]
    r = calls[0]
    assert r["fraction"] == pytest.approx(r["flops"] / r["best_s"] / 1e9 / ref, rel=1e-6)
    ab = next(c for c in calls if "paired_share" in c and not c["xla"])
    assert res["inference_fraction_of_reference"] == pytest.approx(
        ab["flops"] / ab["best_s"] / 1e9 / ab["paired_reference_gflops"], rel=1e-6)
    assert ref >= max(res["reference_gflops_runs"]) > 0
    p = res["prep"]
    assert res["prep_2_workers_over_decode_1"] == pytest.approx(
        p["convert_2"]["slices_per_s"] / p["decode_1"]["slices_per_s"], rel=1e-9)
    assert p["files"] > 0


def test_read_flagfile(tmp_path):
    f = tmp_path / "x.cfg"
    f.write_text("# comment\n--filters=32\n--num_blocks=8\n--xla\n--nocache\n\n--ct_mode=lr\n")
    assert bench_run.read_flagfile(f) == {"filters": "32", "num_blocks": "8", "xla": True, "cache": False,
                                          "ct_mode": "lr"}
    assert bench_run.read_flagfile(tmp_path / "missing.cfg") == {}
    st = bench_run.model_settings(bench_run.SIZES["full"], f)
    assert st["filters"] == 32 and st["num_blocks"] == 8 and st["ct_mode"] == "lr"
    assert st["patch_size"] == bench_run.MODEL_DEFAULTS["patch_size"]


def test_check_targets_and_rescale():
    res = {"inference_fraction_of_reference": 0.8, "train_fraction_of_reference": 0.5, "pipeline_over_training": None,
           "prep_2_workers_over_decode_1": 0.5, "generate_peak_rss_gib": 2.01,
           "inference_fraction_of_max_reference": 0.6,
           "ours_over_torch_eager": 3.0,
           "inference": {"model_calls": [{"fraction": 0.4, "best_s": 2.0, "paired_share": 0.7}]}}
    t = bench_run.check_targets(res)
    assert t["inference_fraction_of_reference"]["met"] is True
    assert t["train_fraction_of_reference"]["met"] is False
    assert t["pipeline_over_training"]["met"] is None
    assert t["prep_2_workers_over_decode_1"]["met"] is True
    assert t["ours_over_torch_eager"]["met"] is True  # >= 3x
    assert t["inference_gpu_cfg_fraction_of_reference"]["met"] is None  # not measured
    assert t["generate_peak_rss_gib"]["met"] is False  # at most 2 GiB
    bench_run.rescale(res, 100.0, 200.0)  # fractions of the max reference follow it; paired ones do not
    assert res["inference_fraction_of_max_reference"] == pytest.approx(0.3)
    assert res["inference_fraction_of_reference"] == 0.8
    assert res["inference"]["model_calls"][0] == {"fraction": pytest.approx(0.2), "best_s": 2.0, "paired_share": 0.7}
    assert res["pipeline_over_training"] is None


def test_run_fraction_weights_phases_by_steps():
    tr = {"pretrain": {"flops": 10e9, "best_s": 1.0}, "gan": {"flops": 30e9, "best_s": 1.0}}
    st = {"pretrain_steps": 1, "gan_steps": 3}
    # (1*10 + 3*30) GFLOP in 4 s = 25 GFLOP/s of a 50 GFLOP/s reference
    assert bench_run.run_fraction(tr, st, 50.0) == pytest.approx(0.5)
    assert bench_run.run_fraction(tr, {"pretrain_steps": 0, "gan_steps": 0}, 50.0) == 0.0


def test_child_peak_rss_does_not_include_the_parents(tmp_path):
    """The generate.py memory figure is the child's own: a 300 MiB parent does not leak into a 100 MiB child's."""
    import numpy as np

    from bench.run import run_measuring_rss

    parent = np.ones((300, 2**20), np.uint8)
    child = "import numpy as np; a = np.ones((100, 2**20), np.uint8); print(int(a.sum()))"
    r = run_measuring_rss([sys.executable, "-c", child], tmp_path / "child.log", timeout=60)
    assert r["returncode"] == 0 and str(100 * 2**20) in r["log_tail"]
    assert 0.09 < r["peak_rss_gib"] < 0.25, r["peak_rss_gib"]
    assert parent.sum() == 300 * 2**20
