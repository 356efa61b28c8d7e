"""TensorBoard summaries written with TensorFlow core only (scalars and PNG images)."""

from __future__ import annotations

import tensorflow as tf


def _tb_metadata(plugin: str, data_class: int):
    from tensorflow.core.framework import summary_pb2

    m = summary_pb2.SummaryMetadata()
    m.plugin_data.plugin_name = plugin
    m.data_class = data_class
    return m


def tb_scalar(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar (written with TF core only: the tensorboard package is not a dependency)."""
    from tensorflow.core.framework import summary_pb2

    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step,
                     metadata=_tb_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR))


def tb_image(name: str, image, step: int) -> None:
    """A TensorBoard image from float [H, W, C] in [0, 1] or uint8 [H, W, C] (PNG-encoded)."""
    from tensorflow.core.framework import summary_pb2

    img = tf.convert_to_tensor(image)
    if img.dtype != tf.uint8:
        img = tf.image.convert_image_dtype(tf.clip_by_value(tf.cast(img, tf.float32), 0.0, 1.0), tf.uint8,
                                           saturate=True)
    h, w = int(img.shape[0]), int(img.shape[1])
    tensor = tf.stack([tf.as_string(w), tf.as_string(h), tf.io.encode_png(img)])
    tf.summary.write(name, tensor, step=step, metadata=_tb_metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE))
