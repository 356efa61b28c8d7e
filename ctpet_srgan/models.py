"""Generator and discriminator of the CT-guided PET SRGAN (Keras 3, fully convolutional).

All images are in normalised units (see `ctpet_srgan.normalization`): PET = SUVbw / 10, CT = (HU + 1000) / 2000.
Custom layers are registered under the package "ctpet_srgan" and no Lambda layer is used, so a saved
`.keras` file loads with `keras.saving.load_model(path, safe_mode=True)` after `import ctpet_srgan.models`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import tensorflow as tf
from keras import layers

CT_MODES = ("s2d", "lr", "none")
# The one place that knows which CT a generator takes: the grid of its CT input for each ct_mode ("hr": the HR CT,
# "lr": the CT on the LR grid, None: PET only), and the model input name that carries it.
CT_INPUT_OF_MODE = {"s2d": "hr", "lr": "lr", "none": None}
CT_INPUT_NAME = {"hr": "hr_ct", "lr": "lr_ct"}
# The discriminator's PET input gain: normalised PET (SUV / 10) times this is SUV-like (see build_discriminator).
D_PET_GAIN = 10.0


def ct_input_of(input_names, ct_mode: str | None = None) -> str | None:
    """The grid of a built generator's CT input, from its input names, checked against its ct_mode.

    Args:
        input_names: the model's input names (e.g. ("lr_pet", "hr_ct")).
        ct_mode: the run_config's generator ct_mode, or None when unknown (not checked).
    Returns:
        "hr", "lr" or None (a PET-only model).
    Raises:
        ValueError: ct_mode says another CT input than the model has.
    """
    names = set(input_names)
    grid = next((g for g, n in CT_INPUT_NAME.items() if n in names), None)
    if ct_mode is not None and CT_INPUT_OF_MODE.get(ct_mode, "?") != grid:
        raise ValueError(f"run_config ct_mode {ct_mode!r} does not match the model's inputs {sorted(names)}")
    return grid


@keras.saving.register_keras_serializable(package="ctpet_srgan")
class SubPixel(layers.Layer):
    """Sub-pixel convolution shuffle: [B, h, w, C*r*r] -> [B, h*r, w*r, C] (tf.nn.depth_to_space)."""

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x):
        return tf.nn.depth_to_space(x, self.factor)

    def compute_output_shape(self, s):
        r = self.factor
        mul = lambda d: None if d is None else d * r  # noqa: E731
        return (s[0], mul(s[1]), mul(s[2]), s[3] // (r * r))

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="ctpet_srgan")
class SpaceToDepth(layers.Layer):
    """Folds an HR image onto the LR grid: [B, h*r, w*r, C] -> [B, h, w, C*r*r] (tf.nn.space_to_depth)."""

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x):
        return tf.nn.space_to_depth(x, self.factor)

    def compute_output_shape(self, s):
        r = self.factor
        div = lambda d: None if d is None else d // r  # noqa: E731
        return (s[0], div(s[1]), div(s[2]), s[3] * r * r)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="ctpet_srgan")
class ChannelSlice(layers.Layer):
    """Channels [start, start + size) of a [B, H, W, C] tensor (splits the shared output head)."""

    def __init__(self, start: int = 0, size: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.start, self.size = int(start), int(size)

    def call(self, x):
        return x[..., self.start:self.start + self.size]

    def compute_output_shape(self, s):
        return (*s[:-1], self.size)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "size": self.size}


@keras.saving.register_keras_serializable(package="ctpet_srgan")
class BilinearUpsample(layers.Layer):
    """Bilinear resize by an integer factor: [B, h, w, C] -> [B, h*r, w*r, C] (tf.image.resize).

    Used instead of keras' UpSampling2D(interpolation="bilinear"), which checks its target size with a
    Python `if` and so cannot be traced with unknown h, w (as a serving signature needs)."""

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x):
        hw = tf.shape(x)[1:3] * self.factor
        return tf.cast(tf.image.resize(x, hw, method="bilinear"), x.dtype)

    def compute_output_shape(self, s):
        r = self.factor
        mul = lambda d: None if d is None else d * r  # noqa: E731
        return (s[0], mul(s[1]), mul(s[2]), s[3])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """scale: 2 or 4 (HR pixels per LR pixel along each axis); filters: trunk width; num_blocks: residual blocks;
    ct_mode: "s2d" (HR CT folded onto the LR grid), "lr" (CT on the LR grid) or "none" (PET-only baseline);
    context_slices: K, odd: the PET and CT inputs carry K channels, the slice and its (K-1)/2 neighbours on each
    side in z order (2.5-D); the outputs stay the centre slice. 1 (default) is the 2-D model."""

    scale: int = 2
    filters: int = 64
    num_blocks: int = 16
    ct_mode: str = "s2d"
    context_slices: int = 1

    def __post_init__(self):
        if self.scale not in (2, 4):
            raise ValueError(f"scale must be 2 or 4 (x2 sub-pixel stages), got {self.scale}")
        if self.ct_mode not in CT_MODES:
            raise ValueError(f"ct_mode must be one of {CT_MODES}, got {self.ct_mode!r}")
        if self.filters < 1 or self.num_blocks < 0:
            raise ValueError(f"bad filters={self.filters} / num_blocks={self.num_blocks}")
        k = self.context_slices
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(f"context_slices must be an odd integer >= 1 (the slice and its neighbours), got {k!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GeneratorConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def input_names(self) -> tuple[str, ...]:
        grid = CT_INPUT_OF_MODE[self.ct_mode]
        return ("lr_pet",) + ((CT_INPUT_NAME[grid],) if grid else ())


def _conv(filters: int, k: int, name: str, **kw) -> layers.Conv2D:
    return layers.Conv2D(filters, k, padding="same", name=name, **kw)


def _prelu(name: str) -> layers.PReLU:
    # One slope per channel, shared over space, so the model stays fully convolutional.
    return layers.PReLU(shared_axes=[1, 2], name=name)


def build_generator(cfg: GeneratorConfig) -> keras.Model:
    """Dual-encoder SRResNet generator.

    PET encoder (conv 9x9 + PReLU) on lr_pet; CT encoder (separate weights) on lr_ct ("lr") or on the HR CT
    folded onto the LR grid by space-to-depth ("s2d"); merge = concatenation + 1x1 conv; a trunk of residual blocks
    with a long skip. The blocks have NO batch normalisation: EDSR (Lim et al. 2017) and ESRGAN (Wang et al. 2018)
    showed BN hurts SR quality (it normalises away the absolute intensity that PET SUVs carry) and batch statistics
    make multi-replica and resumed training depend on the per-replica batch. Then per x2 stage conv -> SubPixel(2)
    -> PReLU, and one 3x3 head whose channels are HR PET and HR CT. Global residual: sr_pet = head[0] +
    bilinear(lr_pet); sr_ct = head[1] + bilinear(lr_ct) ("lr") or + hr_ct ("s2d"); the head starts at zero, so
    training starts from interpolation. The head and residual adds are float32 under mixed precision.
    Inputs: dict of [B, h, w, K] (lr_*) / [B, h*s, w*s, K] (hr_ct), K = context_slices (neighbouring slices in z
    order, the centre one at K // 2, whose interpolation the residuals add to); outputs {'sr_pet', 'sr_ct'}
    [B, h*s, w*s, 1] of the centre slice.
    """
    s, f, k = cfg.scale, cfg.filters, cfg.context_slices
    inputs = {"lr_pet": keras.Input((None, None, k), name="lr_pet")}
    x = _prelu("pet_enc_prelu")(_conv(f, 9, "pet_enc_conv")(inputs["lr_pet"]))
    if cfg.ct_mode != "none":
        if cfg.ct_mode == "s2d":
            inputs["hr_ct"] = keras.Input((None, None, k), name="hr_ct")
            ct_in = SpaceToDepth(s, name="ct_space_to_depth")(inputs["hr_ct"])
        else:
            inputs["lr_ct"] = keras.Input((None, None, k), name="lr_ct")
            ct_in = inputs["lr_ct"]
        c = _prelu("ct_enc_prelu")(_conv(f, 9, "ct_enc_conv")(ct_in))
        x = _conv(f, 1, "merge_conv")(layers.Concatenate(name="merge_concat")([x, c]))
    skip = x
    for i in range(cfg.num_blocks):
        y = _prelu(f"res{i}_prelu")(_conv(f, 3, f"res{i}_conv1")(x))
        y = _conv(f, 3, f"res{i}_conv2")(y)
        x = layers.Add(name=f"res{i}_add")([x, y])
    x = layers.Add(name="long_skip")([skip, _conv(f, 3, "trunk_conv")(x)])
    for i in range(int(math.log2(s))):
        x = _conv(4 * f, 3, f"up{i}_conv")(x)
        x = _prelu(f"up{i}_prelu")(SubPixel(2, name=f"up{i}_shuffle")(x))

    # One zero-initialised 3x3 head for all outputs (PET, then CT): an untrained generator returns the interpolated
    # input, so training starts there. 3x3 as in EDSR/ESRGAN rather than SRResNet's 9x9: on a CPU a 9x9 conv with
    # one or two output channels at HR ran at 7% of the matmul rate and took 57% of the x2 model's time
    # (bench/RESULTS.md); a 3x3 costs 1/7 of that, and one conv with 2 outputs costs what one with 1 output does.
    names = ["sr_pet"] + (["sr_ct"] if cfg.ct_mode != "none" else [])
    heads = _conv(len(names), 3, "head", dtype="float32", kernel_initializer="zeros")(x)

    def bilinear(t, name):
        return BilinearUpsample(s, name=name, dtype="float32")(t)

    def centre(name):  # the centre slice of a K-channel input (K = 1: the input itself, as the 2-D model)
        return inputs[name] if k == 1 else ChannelSlice(k // 2, 1, name=f"{name}_centre")(inputs[name])

    bases = {"sr_pet": bilinear(centre("lr_pet"), "lr_pet_bilinear")}
    if cfg.ct_mode == "s2d":
        bases["sr_ct"] = centre("hr_ct")
    elif cfg.ct_mode == "lr":
        bases["sr_ct"] = bilinear(centre("lr_ct"), "lr_ct_bilinear")
    outputs = {}
    for i, name in enumerate(names):
        y = heads if len(names) == 1 else ChannelSlice(i, 1, name=f"{name}_head", dtype="float32")(heads)
        outputs[name] = layers.Add(name=name, dtype="float32")([y, bases[name]])
    return keras.Model(inputs, outputs, name=f"generator_x{s}_{cfg.ct_mode}")


def build_discriminator(filters: int = 64, num_stages: int = 4, spectral_norm: bool = False,
                        pet_gain: float = D_PET_GAIN) -> keras.Model:
    """SRGAN-style discriminator judging HR PET with its HR CT as context.

    Inputs {'pet', 'ct'}: [B, H, W, 1] (normalised). conv3 + LeakyReLU(0.2), then `num_stages` stages of
    (conv3 stride 1 [from stage 2], conv3 stride 2) with filters doubling per stage (64..512 as in SRGAN), global
    average pooling (so any patch size works), Dense(16*filters) + LeakyReLU, Dense(1) -> logits [B, 1] (float32).
    No batch normalisation (per-replica statistics would make the distributed and single-device runs differ).
    spectral_norm: every conv and dense layer wrapped in keras.layers.SpectralNormalization (Miyato et al. 2018; one
    power iteration per training call; the kernel is divided by its largest singular value), logits still float32.
    pet_gain: the PET is multiplied by this (keras Rescaling) before the first conv. Normalised PET is SUV / 10, so
    soft tissue sits at 0.01-0.1 and the high-frequency detail that tells HR from SR is ~1e-3: at that input scale
    the discriminator stayed at chance for the whole GAN phase (D(real) = D(fake) = 0.50 in every demo and guided
    run). With the PET back at SUV magnitudes (gain 10) it separates HR from a pixel-trained generator's SR within
    a few hundred steps (measured: README, "What the adversarial phase changes"). 1.0 is the old discriminator.
    """
    pet = keras.Input((None, None, 1), name="pet")
    ct = keras.Input((None, None, 1), name="ct")
    pet_in = layers.Rescaling(pet_gain, name="d_pet_gain")(pet) if pet_gain != 1.0 else pet
    x = layers.Concatenate(name="pet_ct")([pet_in, ct])
    act = lambda i: layers.LeakyReLU(0.2, name=f"d_lrelu{i}")  # noqa: E731

    def sn(layer: layers.Layer) -> layers.Layer:
        return layers.SpectralNormalization(layer, name=f"sn_{layer.name}") if spectral_norm else layer

    x = act(0)(sn(_conv(filters, 3, "d_conv0"))(x))
    n = 1
    for stage in range(num_stages):
        width = filters * 2**stage
        if stage > 0:
            x = act(n)(sn(_conv(width, 3, f"d_conv{n}"))(x))
            n += 1
        x = act(n)(sn(_conv(width, 3, f"d_conv{n}", strides=2))(x))
        n += 1
    x = layers.GlobalAveragePooling2D(name="d_pool")(x)
    x = layers.LeakyReLU(0.2, name="d_dense_lrelu")(sn(layers.Dense(16 * filters, name="d_dense"))(x))
    logits = sn(layers.Dense(1, name="d_logits", dtype="float32"))(x)
    if spectral_norm:  # the wrapper casts back to its input's dtype (float16 under mixed precision)
        logits = layers.Activation("linear", dtype="float32", name="d_logits_float32")(logits)
    return keras.Model({"pet": pet, "ct": ct}, logits, name="discriminator")
