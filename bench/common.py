"""Shared measuring tools for bench/: the CPU's matmul rate (the reference), FLOP counting, timing."""

from __future__ import annotations

import os
import platform
import time
from typing import Callable

import tensorflow as tf


def machine() -> dict:
    """What the numbers were measured on."""
    gpus = tf.config.list_physical_devices("GPU")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpus": [d.name for d in gpus],
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
    }


def best_seconds(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1) -> float:
    """The fastest of `repeats` timed calls of fn() (after `warmup` untimed calls), in seconds.
    fn must block until its work is done (e.g. call .numpy())."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_call(n: int = 2048, *, inner: int = 4, dtype=tf.float32) -> tuple[Callable[[], object], float]:
    """(blocking call, its FLOPs): a compiled, warmed-up chain of `inner` n x n TF matmuls. Timed alone it
    gives the reference rate; timed in turn with measured variants it sees the same machine load."""
    a = tf.random.normal([n, n], dtype=dtype)
    b = tf.random.normal([n, n], dtype=dtype)

    @tf.function
    def run():
        c = a
        for _ in range(inner):
            c = tf.matmul(c, b) * 1e-3
        return tf.reduce_sum(c)

    call = lambda: run().numpy()  # noqa: E731
    call()
    return call, 2.0 * n**3 * inner


def matmul_gflops(n: int = 2048, *, inner: int = 4, repeats: int = 5, dtype=tf.float32) -> float:
    """The machine's measured dense matmul rate (GFLOP/s) with TensorFlow: the reference for every ratio."""
    call, flops = matmul_call(n, inner=inner, dtype=dtype)
    return flops / best_seconds(call, repeats=repeats, warmup=0) / 1e9


def count_flops(concrete_fn) -> int:
    """Floating-point operations of one call of a concrete tf.function (TensorFlow's profiler on the
    frozen graph; a convolution counts 2 FLOPs per multiply-add)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(concrete_fn)
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph=frozen.graph, options=opts).total_float_ops)
