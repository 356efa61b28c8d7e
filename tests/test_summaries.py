"""TensorBoard summaries written with TF core only: read the event file back and check what landed."""

import numpy as np
import pytest
import tensorflow as tf

from ctpet_srgan import summaries


def _events(logdir):
    files = list(logdir.glob("events.out.tfevents.*"))
    assert len(files) == 1
    out = {}
    for e in tf.compat.v1.train.summary_iterator(str(files[0])):
        for v in e.summary.value:
            out[v.tag] = (e.step, v)
    return out


def test_scalar_and_png_image_round_trip(tmp_path):
    img = np.zeros((6, 10, 3), np.float32)
    img[2:4, 3:8, 0] = 1.0  # a red bar
    img[0, 0] = 2.0  # out of range: clipped to 1, not wrapped
    with tf.summary.create_file_writer(str(tmp_path)).as_default():
        summaries.tb_scalar("loss/g", 0.25, step=7)
        summaries.tb_image("panels/x", img, step=3)
    ev = _events(tmp_path)
    step, v = ev["loss/g"]
    assert step == 7 and v.metadata.plugin_data.plugin_name == "scalars"
    assert tf.make_ndarray(v.tensor) == np.float32(0.25)
    step, v = ev["panels/x"]
    assert step == 3 and v.metadata.plugin_data.plugin_name == "images"
    w, h, png = tf.make_ndarray(v.tensor)
    assert (int(w), int(h)) == (10, 6)
    decoded = tf.io.decode_png(png).numpy()
    assert decoded.shape == (6, 10, 3)
    assert decoded[3, 5, 0] == 255 and decoded[3, 5, 1] == 0 and decoded[5, 9, 0] == 0
    assert decoded[0, 0].tolist() == [255, 255, 255]


def test_labelled_row_keeps_the_panels_and_writes_each_label_above_its_own():
    a = np.full((8, 10), 0.25, np.float32)
    b = np.full((8, 10), 2.0, np.float32)  # clipped to 1
    row = summaries.labelled_row([a, b], ["LR", "HR"], min_width=40, strip=14)
    f = 4  # 10 px panels enlarged to >= 40 px
    assert row.shape == (14 + 8 * f, 2 * 10 * f, 1)
    body = row[14:, :, 0]
    assert np.allclose(body[:, : 10 * f], 0.25) and np.allclose(body[:, 10 * f:], 1.0)
    heads = row[:14, :, 0]
    assert heads[:, : 10 * f].max() > 0.5 and heads[:, 10 * f:].max() > 0.5  # text in both strips
    assert not np.array_equal(heads[:, : 10 * f], heads[:, 10 * f:])  # different words
    with pytest.raises(ValueError):
        summaries.labelled_row([a], ["LR", "HR"])
