"""Imports TensorFlow without the start-up lines that are not errors (a user reads every E line as one).

TensorFlow 2.21 prints, before its logging is initialised and so regardless of TF_CPP_MIN_LOG_LEVEL: the absl
"log messages before absl::InitializeLog()" banner, "oneDNN custom operations are on", "Could not find cuda
drivers", the CPU-feature note and, on a machine without a GPU, "E ... failed call to cuInit". import_tensorflow()
captures file descriptor 2 while TensorFlow loads and probes its devices, drops exactly those lines and writes
every other line back to stderr. Programs call it first; later TensorFlow messages are untouched.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|failed call to cuInit"
    r"|cpu_feature_guard\.cc"
    r"|To enable the following instructions: .*rebuild TensorFlow"
    r"|rebuild TensorFlow with the appropriate compiler flags"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
)


def filter_noise(text: str) -> str:
    """`text` without the lines NOISE matches (the CPU-feature note spans two lines)."""
    out, skip_next = [], False
    for line in text.splitlines(keepends=True):
        if skip_next and line.startswith("To enable the following instructions"):
            skip_next = False
            continue
        skip_next = False
        if NOISE.search(line):
            skip_next = "cpu_feature_guard" in line
            continue
        out.append(line)
    return "".join(out)


def import_tensorflow():
    """`import tensorflow` (and its device probe) with the start-up noise removed; returns the module.

    Also lowers absl's Python logging to WARNING (SavedModel writing logs INFO lines such as "Assets written to"
    and "Writing fingerprint" through it once absl's app.run has set INFO)."""
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:
        pass
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr is not a real file (e.g. captured by a test runner)
        fd = None
    if fd is None:
        import tensorflow as tf

        return tf
    with tempfile.TemporaryFile() as cap:
        sys.stderr.flush()
        saved = os.dup(fd)
        os.dup2(cap.fileno(), fd)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the cuInit probe happens here, not at import
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            cap.seek(0)
            rest = filter_noise(cap.read().decode("utf-8", "replace"))
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()
    return tf
