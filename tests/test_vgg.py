"""VGG19 feature extractor: weight files, labels, pre-activation features, grey -> VGG input, clear errors."""

import h5py
import keras
import numpy as np
import pytest

from ctpet_srgan import vgg


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """A random VGG19 no-top saved (a) in the Keras legacy .h5 layout of the ImageNet file and (b) as a
    .weights.h5 tagged as the 8-bit quantised copy; plus the source model to compare with."""
    d = tmp_path_factory.mktemp("vgg")
    keras.utils.set_random_seed(3)
    base = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    legacy = d / vgg.NOTOP_FILE
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, base)
    tagged = d / "vgg19_notop_q8.weights.h5"
    base.save_weights(tagged)
    with h5py.File(tagged, "a") as f:
        f.attrs["ctpet_srgan_label"] = vgg.LABEL_QUANTISED
    return base, legacy, tagged


def _grey(seed=0):
    return np.random.default_rng(seed).uniform(-0.2, 1.2, (2, 16, 12, 1)).astype("float32")


def test_features_match_keras_vgg19_with_caffe_preprocessing(weight_files):
    base, legacy, _ = weight_files
    x = _grey()
    pre, label = vgg.load_vgg_features(str(legacy), "block2_conv2", before_activation=True)
    post, _ = vgg.load_vgg_features(str(legacy), "block2_conv2", before_activation=False)
    assert label == vgg.LABEL_IMAGENET
    rgb = np.repeat(np.clip(x, 0, 1) * 255.0, 3, axis=-1)
    ref_model = keras.Model(base.input, base.get_layer("block2_conv2").output)  # after ReLU
    ref = ref_model(keras.applications.vgg19.preprocess_input(rgb)).numpy()
    f_pre, f_post = pre(x).numpy(), post(x).numpy()
    assert f_pre.shape == ref.shape == (2, 8, 6, 128)
    np.testing.assert_allclose(f_post, ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(np.maximum(f_pre, 0), ref, rtol=1e-4, atol=1e-3)
    assert (f_pre < 0).any()  # pre-activation features keep the negative part
    assert not pre.trainable and not pre.trainable_weights


def test_quantised_copy_is_labelled(weight_files):
    base, _, tagged = weight_files
    model, label = vgg.load_vgg_features(str(tagged), "block1_conv2")
    assert label == vgg.LABEL_QUANTISED and vgg.RUN_CONFIG_KEY[label] == "imagenet-8bit-quantised"
    np.testing.assert_array_equal(model.get_layer("block1_conv2").get_weights()[0],
                                  base.get_layer("block1_conv2").get_weights()[0])


def test_random_weights_are_labelled_as_not_perceptual():
    model, label = vgg.load_vgg_features("random", "block1_conv1")
    assert label == vgg.LABEL_RANDOM and "not a perceptual loss" in label
    assert vgg.RUN_CONFIG_KEY[label] == "random"
    assert model(_grey()).shape == (2, 16, 12, 64)


def test_missing_file_names_path_expected_file_and_random_option(tmp_path):
    missing = tmp_path / "nowhere" / "vgg.h5"
    with pytest.raises(FileNotFoundError) as e:
        vgg.load_vgg_features(str(missing))
    msg = str(e.value)
    assert str(missing) in msg and vgg.NOTOP_FILE in msg and "--vgg_weights=random" in msg


def test_keras_cache_is_used_and_missing_cache_is_clear(tmp_path, monkeypatch, weight_files):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        vgg.load_vgg_features("keras-cache", "block1_conv1")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / vgg.NOTOP_FILE).symlink_to(weight_files[1])
    _, label = vgg.load_vgg_features("keras-cache", "block1_conv1")
    assert label == vgg.LABEL_IMAGENET


def test_bad_layer_and_bad_tag(tmp_path, weight_files):
    with pytest.raises(ValueError, match="block5_conv4"):
        vgg.load_vgg_features("random", "block5_pool")
    bad = tmp_path / "x.weights.h5"
    bad.write_bytes(weight_files[2].read_bytes())
    with h5py.File(bad, "a") as f:
        f.attrs["ctpet_srgan_label"] = "something else"
    with pytest.raises(ValueError, match="ctpet_srgan_label"):
        vgg.load_vgg_features(str(bad))
