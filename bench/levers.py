"""`python bench/levers.py [--part inference|training|all]`: sweeps of the speed levers that bench/run.py does not
repeat on every run (shapes per call, XLA, mixed shapes), for the flags/cpu.cfg generator. Prints one line per
setting: seconds (best of N after warm-up), GFLOP/s and the fraction of the matmul reference measured in the same
process. Thread counts and oneDNN are process-wide: run this script under TF_NUM_INTRAOP_THREADS /
TF_NUM_INTEROP_THREADS / TF_ENABLE_ONEDNN_OPTS=0 to compare them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="all", choices=["inference", "training", "all"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="", help="optional JSON file")
    args = ap.parse_args(argv)

    from bench import run as R
    from bench.common import matmul_gflops
    from ctpet_srgan.models import GeneratorConfig

    sizes = R.SIZES["quick"]
    st = R.model_settings(sizes)
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
    ref2 = matmul_gflops()
    print(f"reference again {ref2:.1f} GFLOP/s, load {R.loadavg()}", flush=True)
    if args.out:
        from ctpet_srgan.atomic import write_json_atomic

        write_json_atomic(args.out, {"reference_gflops": [ref, ref2], "env": env, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
