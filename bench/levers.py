"""`python bench/levers.py [--part inference|training|graph|all] [--train_flagfile F]`: sweeps of the speed levers that
bench/run.py does not repeat on every run (shapes per call, XLA, mixed shapes, graph forms), for the flags/cpu.cfg
generator. Prints one line per setting: seconds (best of N after warm-up), GFLOP/s and the fraction of the matmul
reference measured in the same process. `--part graph`: ways of executing the same model at B=8, LR 128^2 (plain
tf.function, frozen weights, XLA, the exported SavedModel signature, oneDNN bfloat16 auto-mixed precision), each timed
in turn with the reference, with the largest output difference from the plain call. Thread counts and oneDNN are
process-wide: run this script under TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS / TF_ENABLE_ONEDNN_OPTS=0 to
compare them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def graph_levers(gen_cfg, repeats: int, b: int = 8, lr: int = 128) -> list[dict]:
    """The same model executed in different ways, each timed in turn with the matmul reference (see the docstring)."""
    import tempfile

    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from bench import run as R
    from bench.common import count_flops, matmul_call
    from ctpet_srgan.export import export_savedmodel
    from ctpet_srgan.models import build_generator
    from ctpet_srgan.normalization import DEFAULT

    model = build_generator(gen_cfg)
    R._perturb(model)
    x = R._gen_inputs(gen_cfg, b, lr)
    fn = tf.function(lambda t: model(t, training=False))
    conc = fn.get_concrete_function(x)
    flops = count_flops(conc)
    want = fn(x)["sr_pet"].numpy()
    flat = tf.nest.flatten(x)
    frozen = convert_variables_to_constants_v2(conc)
    frozen_pet = sorted(conc.structured_outputs).index("sr_pet")  # flat outputs follow tf.nest's sorted keys
    xla = tf.function(lambda t: model(t, training=False), jit_compile=True)
    tmp = Path(tempfile.mkdtemp(prefix="ctpet_levers_"))
    saved = export_savedmodel(model, {"scale": gen_cfg.scale, "generator": gen_cfg.to_dict(),
                                      "normalization": DEFAULT.to_dict()}, tmp, "levers", 1)
    serve = tf.saved_model.load(str(saved)).signatures["serving_default"]
    ct_key = "hr_ct" if "hr_ct" in x else "lr_ct" if "lr_ct" in x else None
    feed = {"pet": DEFAULT.pet_from_norm(x["lr_pet"])}
    if ct_key:
        feed["ct"] = DEFAULT.ct_from_norm(x[ct_key])
    variants = {
        "plain tf.function": lambda: fn(x)["sr_pet"].numpy(),
        "frozen weights (constants; oneDNN caches reordered filters)": lambda: frozen(*flat)[frozen_pet].numpy(),
        "XLA jit_compile": lambda: xla(x)["sr_pet"].numpy(),
        "exported SavedModel serving_default (HU/SUV in and out)":
            lambda: DEFAULT.pet_to_norm(serve(**feed)["sr_pet"].numpy()),
    }
    rows = []
    ref_call, ref_flops = matmul_call()
    for name, call in variants.items():
        call()
        call()
        diff = float(np.max(np.abs(call() - want)))
        t = R.alternate({"v": call, "reference": ref_call}, repeats)
        local = ref_flops / t["reference"][0] / 1e9
        r = {"part": "graph", "lever": name, "best_s": t["v"][0], "gflops": flops / t["v"][0] / 1e9,
             "paired_reference_gflops": local, "paired_share": flops / t["v"][0] / 1e9 / local, "max_abs_diff": diff}
        rows.append(r)
        print(f"graph {name:62s} {r['best_s']:.4f}s {r['gflops']:6.1f} GFLOP/s paired {r['paired_share']:6.1%}"
              f" max|diff| {diff:.2e}", flush=True)
    # Last: process-wide grappler option, changes the numerics (bfloat16 convolutions on AVX512_BF16)
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    bf = tf.function(lambda t: model(t, training=False))
    call = lambda: bf(x)["sr_pet"].numpy()  # noqa: E731
    call()
    diff = float(np.max(np.abs(call() - want)))
    t = R.alternate({"v": call, "reference": ref_call}, repeats)
    local = ref_flops / t["reference"][0] / 1e9
    rows.append({"part": "graph", "lever": "oneDNN bfloat16 auto mixed precision (changes outputs)",
                 "best_s": t["v"][0], "gflops": flops / t["v"][0] / 1e9, "paired_reference_gflops": local,
                 "paired_share": flops / t["v"][0] / 1e9 / local, "max_abs_diff": diff})
    print(f"graph {rows[-1]['lever']:62s} {t['v'][0]:.4f}s {rows[-1]['gflops']:6.1f} GFLOP/s paired"
          f" {rows[-1]['paired_share']:6.1%} max|diff| {diff:.2e} (of the float32 reference ratio, not a float32 rate)",
          flush=True)
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": False})
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return rows


def define_flags(fv) -> None:
    """The command line (absl flags, defined in the FlagValues `fv`)."""
    from absl import flags

    d = dict(flag_values=fv)
    flags.DEFINE_enum("part", "all", ["inference", "training", "graph", "all"], "Which sweep.", **d)
    # Not --flagfile: that is absl's (flags of this program read from a file).
    flags.DEFINE_string("train_flagfile", str(ROOT / "flags" / "cpu.cfg"), "Training flags giving the generator.", **d)
    flags.DEFINE_integer("repeats", 3, "Timed calls per setting (best of N).", **d)
    flags.DEFINE_string("out", "", "Optional JSON file.", **d)


def main(argv: list[str] | None = None) -> int:
    """`python bench/levers.py ARGS` in-process (argv: the arguments after the program name); the exit status."""
    from ctpet_srgan import cli

    return cli.main(define_flags, levers, argv, prog="bench/levers.py")


def run() -> None:
    """The program: absl.app.run (--flagfile; a user error is one line and exit status 2)."""
    from ctpet_srgan import cli

    cli.run(define_flags, levers)


def levers(args) -> int:
    """Runs the sweeps of args.part; returns the exit status."""
    from bench import run as R
    from bench.common import matmul_gflops
    from ctpet_srgan.models import GeneratorConfig

    sizes = R.SIZES["quick"]
    st = R.model_settings(sizes, Path(args.train_flagfile))
    gen_cfg = GeneratorConfig(scale=st["demo_scale"], filters=st["filters"], num_blocks=st["num_blocks"],
                              ct_mode=st["ct_mode"])
    ref = matmul_gflops()
    env = {k: os.environ.get(k, "") for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                                               "TF_ENABLE_ONEDNN_OPTS")}
    print(f"generator {gen_cfg.to_dict()}, reference {ref:.1f} GFLOP/s, load {R.loadavg()}, env {env}", flush=True)
    rows = []
    if args.part in ("inference", "all"):
        from ctpet_srgan.models import build_generator

        model = build_generator(gen_cfg)
        for b, lr, jit in ((1, 128, False), (8, 128, False), (32, 64, False), (1, 256, False), (4, 256, False),
                           (8, 128, True), (1, 256, True)):
            r = R._time_model_call(model, R._gen_inputs(gen_cfg, b, lr), jit=jit, repeats=args.repeats, flops=None)
            r.update(part="inference", batch=b, lr=lr, xla=jit, gflops=r["flops"] / r["best_s"] / 1e9)
            r["fraction"] = r["gflops"] / ref
            rows.append(r)
            print(f"infer B={b:3d} LR {lr}^2 xla={jit!s:5s} {r['best_s']:.4f}s {r['gflops']:6.1f} GFLOP/s"
                  f" {r['fraction']:6.1%} (compile {r['compile_s']:.1f}s)", flush=True)
    if args.part in ("training", "all"):
        for b, p, jit in ((8, 24, False), (16, 24, False), (8, 32, False), (16, 32, False), (8, 48, False),
                          (16, 48, False), (16, 48, True)):
            s2 = dict(st, batch_size=b, patch_size=p)
            tr = R.bench_training(gen_cfg, s2, ref, R.dataclasses.replace(sizes, train_repeats=args.repeats),
                                  jits=(jit,))["xla" if jit else "plain"]
            for ph, r in tr.items():
                r.update(part="training", phase=ph)
                rows.append(r)
                print(f"train {ph:8s} B={b:3d} LR {p}^2 xla={jit!s:5s} {r['best_s']:.4f}s {r['gflops']:6.1f} GFLOP/s"
                      f" {r['fraction']:6.1%} {r['hr_pixels_per_s'] / 1e6:.3f} MHRpx/s", flush=True)
    if args.part in ("graph", "all"):
        rows += graph_levers(gen_cfg, args.repeats)
    ref2 = matmul_gflops()
    print(f"reference again {ref2:.1f} GFLOP/s, load {R.loadavg()}", flush=True)
    if args.out:
        from ctpet_srgan.atomic import write_json_atomic

        write_json_atomic(args.out, {"reference_gflops": [ref, ref2], "env": env, "rows": rows})
    return 0


if __name__ == "__main__":
    run()
