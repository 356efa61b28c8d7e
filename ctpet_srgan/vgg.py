"""VGG19 feature extractor for the content (perceptual) loss, from local weight files only (no downloads).

`load_vgg_features(weights, layer, before_activation)` returns a model that takes a grey image in normalised units
[B, H, W, 1] and returns VGG19 features of `layer`, and a label saying what the weights are. Grey -> VGG input:
clip to [0, 1] (PET: SUV 0..10; CT: -1000..1000 HU), scale to [0, 255], repeat to 3 channels, subtract the ImageNet
BGR channel means (the "caffe" preprocessing of keras.applications.vgg19.preprocess_input).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
from keras import layers

NOTOP_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
LABEL_IMAGENET = "ImageNet VGG19"
LABEL_QUANTISED = "ImageNet VGG19, 8-bit quantised copy"
LABEL_RANDOM = "RANDOM weights (tests only, not a perceptual loss)"
# The value stored in run_config.json["vgg"] for each label (and "none" when no content loss is used).
RUN_CONFIG_KEY = {LABEL_IMAGENET: "imagenet", LABEL_QUANTISED: "imagenet-8bit-quantised", LABEL_RANDOM: "random"}
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="ctpet_srgan")
class GreyToVGG(layers.Layer):
    """Normalised grey image [B, H, W, 1] -> caffe-preprocessed VGG input [B, H, W, 3] (0..255 minus BGR mean)."""

    def call(self, x):
        x = keras.ops.clip(x, 0.0, 1.0) * 255.0
        x = keras.ops.repeat(x, 3, axis=-1)
        return x - keras.ops.convert_to_tensor(np.asarray(CAFFE_BGR_MEAN, "float32"), dtype=x.dtype)

    def compute_output_shape(self, s):
        return (*s[:-1], 3)


def keras_cache_file() -> Path:
    """Where Keras keeps downloaded weights: $KERAS_HOME/models or ~/.keras/models."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / NOTOP_FILE


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{path}: VGG19 weight file not found. The VGG content loss needs the ImageNet VGG19 no-top weights, the Keras"
        f" file '{NOTOP_FILE}' (or its 8-bit quantised .weights.h5 copy); pass its path with --vgg_weights=PATH or"
        f" put it in {keras_cache_file().parent}/. Weights are never downloaded at run time. Use --content_loss=none to"
        " train without a perceptual loss, or --vgg_weights=random in tests only."
    )


def _file_label(path: Path) -> str:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            tag = f.attrs.get("ctpet_srgan_label")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 VGG19 weight file ({e})") from e
    if isinstance(tag, bytes):
        tag = tag.decode()
    if tag is None:
        return LABEL_IMAGENET
    if tag != LABEL_QUANTISED:
        raise ValueError(f"{path}: unknown ctpet_srgan_label {tag!r} (expected {LABEL_QUANTISED!r})")
    return LABEL_QUANTISED


def _base_vgg19(weights: str) -> tuple[keras.Model, str]:
    base = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    if weights == "random":
        return base, LABEL_RANDOM
    path = keras_cache_file() if weights in ("", "keras-cache") else Path(weights)
    if not path.is_file():
        raise _missing(path)
    label = _file_label(path)
    try:
        base.load_weights(str(path))
    except Exception as e:  # wrong architecture, truncated file, ...
        raise ValueError(f"{path}: could not load as VGG19 no-top weights ({type(e).__name__}: {e})") from e
    return base, label


def load_vgg_features(
    weights: str, layer: str = "block5_conv4", before_activation: bool = True
) -> tuple[keras.Model, str]:
    """(frozen feature model, label). weights: a file path, "keras-cache" (or "") for the Keras cache, or "random".

    layer: a VGG19 conv layer name (e.g. "block5_conv4", "block2_conv2"). before_activation: features before the
    ReLU (ESRGAN) instead of after it (SRGAN). The model maps normalised grey [B, H, W, 1] -> features [B, h, w, C].
    Raises FileNotFoundError naming the path and the expected file when the weight file is missing.
    """
    base, label = _base_vgg19(weights)
    names = [lyr.name for lyr in base.layers]
    if layer not in names or not isinstance(base.get_layer(layer), layers.Conv2D):
        convs = [lyr.name for lyr in base.layers if isinstance(lyr, layers.Conv2D)]
        raise ValueError(f"unknown VGG19 conv layer {layer!r}; choose one of {convs}")
    inp = keras.Input((None, None, 1), name="grey")
    x = GreyToVGG(name="grey_to_vgg")(inp)
    for src in base.layers[1:]:
        if isinstance(src, layers.Conv2D):
            conv = layers.Conv2D(src.filters, src.kernel_size, padding=src.padding, name=src.name)
            x = conv(x)
            conv.set_weights(src.get_weights())
            if src.name == layer and before_activation:
                break
            x = layers.ReLU(name=f"{src.name}_relu")(x)
            if src.name == layer:
                break
        elif isinstance(src, layers.MaxPooling2D):
            x = layers.MaxPooling2D(src.pool_size, src.strides, name=src.name)(x)
    model = keras.Model(inp, x, name=f"vgg19_{layer}_{'pre' if before_activation else 'post'}")
    model.trainable = False
    return model, label
