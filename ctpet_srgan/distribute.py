"""tf.distribute: choosing the strategy, and what a replica or a worker needs to know about it."""

from __future__ import annotations

import os

import tensorflow as tf


def make_strategy(name: str = "auto", tpu: str = "") -> tf.distribute.Strategy:
    """"auto": MultiWorkerMirroredStrategy if TF_CONFIG is set, MirroredStrategy if there are GPUs, else the
    default strategy; or explicitly "default", "mirrored", "multiworker", "tpu" (tpu: the TPU name/address)."""
    if name == "auto":
        if os.environ.get("TF_CONFIG"):
            name = "multiworker"
        elif tf.config.list_physical_devices("GPU"):
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}: use auto, default, mirrored, multiworker or tpu")


def num_replicas() -> int:
    """Replicas in sync, from inside a replica context or from the current strategy."""
    ctx = tf.distribute.get_replica_context()
    return ctx.num_replicas_in_sync if ctx is not None else tf.distribute.get_strategy().num_replicas_in_sync


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes files (checkpoints, logs, models): the chief, or worker 0 without a chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())
