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


def labelled_row(panels: list, labels: list[str], min_width: int = 96, strip: int = 14):
    """Grey panels side by side, each under a strip with its label (numpy float32 [H', W', 1] in [0, 1]).

    Args:
        panels: 2-D float arrays of one shape [H, W], values in [0, 1] (clipped).
        labels: one short label per panel, drawn in white on black above it.
        min_width: panels narrower than this are enlarged by an integer factor (nearest) so the label is legible.
        strip: height in pixels of the label strip.
    Returns:
        The row as float32 [strip + H * f, n * W * f, 1].
    """
    import cv2
    import numpy as np

    if len(panels) != len(labels):
        raise ValueError(f"{len(panels)} panels but {len(labels)} labels")
    h, w = np.asarray(panels[0]).shape
    f = max(1, -(-min_width // w))
    cols = []
    for img, text in zip(panels, labels):
        img = np.clip(np.asarray(img, np.float32), 0.0, 1.0)
        if img.shape != (h, w):
            raise ValueError(f"panel {text!r} is {img.shape}, expected {(h, w)}")
        big = np.repeat(np.repeat(img, f, axis=0), f, axis=1)
        head = np.zeros((strip, w * f), np.uint8)  # OpenCV draws text on 8-bit images only
        cv2.putText(head, text, (2, strip - 4), cv2.FONT_HERSHEY_PLAIN, 0.8, 255, 1, cv2.LINE_AA)
        cols.append(np.concatenate([head.astype(np.float32) / 255.0, big], axis=0))
    return np.concatenate(cols, axis=1)[..., None]
