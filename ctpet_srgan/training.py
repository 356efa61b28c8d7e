"""SRGAN training: the SRGAN keras.Model (train_step/test_step for fit()) and ONE custom loop for every strategy.

The custom loop (Trainer) is the only path train_keras.py uses, on the default strategy (one CPU/GPU), MirroredStrategy
(local GPUs), MultiWorkerMirroredStrategy (TF_CONFIG; Keras 3 fit() fails there, keras-team/keras#20585) and
TPUStrategy. Its per-replica step is `SRGAN.replica_step`, which `SRGAN.train_step` also calls, so fit() trains the same
way where it works (one host). Losses are summed per replica and divided by the GLOBAL batch size; gradients are summed
over replicas by the optimizer. Two phases in one run: `pretrain_steps` with the pixel loss, then `gan_steps`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from ctpet_srgan import distribute, losses, summaries
from ctpet_srgan.models import GeneratorConfig, build_discriminator, build_generator
from ctpet_srgan.run_config import RUN_CONFIG, RunConfig

log = logging.getLogger("ctpet_srgan.training")
TRAIN_KEYS = ("g_loss", "pixel", "content", "adv", "d_loss", "d_real", "d_fake", "d_acc")
EVAL_KEYS = ("val_pixel", "psnr", "ssim", "psnr_bicubic")


@dataclasses.dataclass
class TrainConfig:
    """Training hyper-parameters. batch_size is GLOBAL (all replicas); patch_size in LR pixels (None: whole slices).

    G loss in the GAN phase = content_weight * content + pixel_weight * pixel + adv_weight * adversarial, where
    content is the VGG loss, or the pixel loss itself with content_loss="none" (SRGAN: content + 1e-3 adversarial).
    pixel_weight None means 0 with a VGG content loss (as in SRGAN) and is unused with content_loss="none".
    CT terms are weighted by ct_weight relative to PET. Learning rates: constant in pre-training, multiplied by
    lr_decay_factor half-way through the GAN phase (SRGAN: 1e-4 then 1e-5).
    """

    batch_size: int = 16
    patch_size: int | None = 24
    val_batch_size: int = 4
    pretrain_steps: int = 1000
    gan_steps: int = 1000
    g_lr: float = 1e-4
    d_lr: float = 1e-4
    lr_decay_factor: float = 0.1
    pixel_loss: str = "l1"
    pixel_weight: float | None = None
    content_loss: str = "vgg"
    content_weight: float = 1.0
    vgg_weights: str = "keras-cache"
    vgg_layer: str = "block5_conv4"
    vgg_before_activation: bool = True
    # Relativistic loss at 1e-2: chosen on the guided phantoms (README "What the adversarial phase changes"): the
    # largest weight that sharpened lesions without adding hot spots at 2.5 SUV or losing > 0.3 dB PSNR.
    adv_loss: str = "relativistic"
    adv_weight: float = 1e-2
    ct_weight: float = 0.5
    d_filters: int = 64
    d_spectral_norm: bool = False  # spectral normalisation of every D layer (models.build_discriminator)
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 50
    eval_every: int = 500
    eval_batches: int = 8
    seed: int = 0
    jit_compile: bool = False
    mixed_precision: str = ""
    data_resume: str = "skip"
    ct_shift_max_mm: float = 0.0  # training CT misregistration: random in-plane shift of 0..this mm (augment.py)
    ct_dropout: float = 0.0  # training CT dropout: probability of the uninformative CT (augment.py)

    def __post_init__(self):
        if self.pixel_loss not in losses.PIXEL_LOSSES:
            raise ValueError(f"pixel_loss must be one of {losses.PIXEL_LOSSES}, got {self.pixel_loss!r}")
        if self.adv_loss not in losses.ADV_LOSSES:
            raise ValueError(f"adv_loss must be one of {losses.ADV_LOSSES}, got {self.adv_loss!r}")
        if self.content_loss not in ("vgg", "none"):
            raise ValueError(f"content_loss must be 'vgg' or 'none', got {self.content_loss!r}")
        if self.data_resume not in ("skip", "reseed"):
            raise ValueError(f"data_resume must be 'skip' or 'reseed', got {self.data_resume!r}")
        if min(self.pretrain_steps, self.gan_steps) < 0 or self.batch_size < 1:
            raise ValueError("steps must be >= 0 and batch_size >= 1")
        if self.ct_shift_max_mm < 0 or not 0.0 <= self.ct_dropout <= 1.0:
            raise ValueError(f"ct_shift_max_mm must be >= 0 and ct_dropout in [0, 1], got {self.ct_shift_max_mm},"
                             f" {self.ct_dropout}")

    @property
    def effective_pixel_weight(self) -> float:
        if self.content_loss == "none":
            return self.content_weight
        return 0.0 if self.pixel_weight is None else float(self.pixel_weight)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@keras.saving.register_keras_serializable(package="ctpet_srgan")
class PhaseSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate as a function of the optimizer's update count: `base` during the first `pretrain_steps`
    updates and the first half of the `gan_steps`, `base * decay_factor` after. Resumes exactly (the count is
    in the checkpoint)."""

    def __init__(self, base: float, pretrain_steps: int, gan_steps: int, decay_factor: float = 0.1):
        self.base, self.pretrain_steps, self.gan_steps = float(base), int(pretrain_steps), int(gan_steps)
        self.decay_factor = float(decay_factor)

    def __call__(self, step):
        gan_step = tf.cast(step, tf.float32) - float(self.pretrain_steps)
        late = gan_step >= 0.5 * self.gan_steps if self.gan_steps > 0 else tf.constant(False)
        return tf.where(late, self.base * self.decay_factor, self.base)

    def get_config(self):
        return dict(base=self.base, pretrain_steps=self.pretrain_steps, gan_steps=self.gan_steps,
                    decay_factor=self.decay_factor)


def _psnr_ssim(hr, sr) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-example PSNR (dB) and SSIM with peak 1.0 in normalised units (PET: SUV 10)."""
    hr, sr = tf.cast(hr, tf.float32), tf.cast(sr, tf.float32)
    psnr = tf.image.psnr(sr, hr, max_val=1.0)
    sizes = [d for d in hr.shape[1:3] if d is not None]
    fs = min([11] + sizes)
    ssim = tf.image.ssim(tf.clip_by_value(sr, 0, 1), tf.clip_by_value(hr, 0, 1), max_val=1.0, filter_size=fs)
    return psnr, ssim


class SRGAN(keras.Model):
    """Generator + discriminator (+ frozen VGG) with the SRGAN losses.

    `compile(g_optimizer, d_optimizer)`; `set_phase("pretrain" | "gan")` chooses what `train_step` does under fit().
    Batches are dicts {'lr_pet', 'lr_ct', 'hr_pet', 'hr_ct'} in normalised units.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, gen_cfg: GeneratorConfig,
                 cfg: TrainConfig, vgg: keras.Model | None = None, **kwargs):
        super().__init__(**kwargs)
        self.generator, self.discriminator, self.vgg = generator, discriminator, vgg
        self.gen_cfg, self.cfg = gen_cfg, cfg
        if cfg.content_loss == "vgg" and cfg.gan_steps > 0 and vgg is None:
            raise ValueError("content_loss='vgg' needs a VGG feature model")
        self.phase = "pretrain"
        self.trackers = {k: keras.metrics.Mean(name=k) for k in TRAIN_KEYS + EVAL_KEYS}
        self._grad_fns: dict[bool, Callable] = {}
        self.built = True

    def compile(self, g_optimizer, d_optimizer, **kwargs):
        super().compile(**kwargs)
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, inputs, training=False):
        return self.generator(self.generator_inputs(inputs), training=training)

    def set_phase(self, phase: str) -> None:
        if phase not in ("pretrain", "gan"):
            raise ValueError(f"phase must be 'pretrain' or 'gan', got {phase!r}")
        self.phase = phase
        self.train_function = None  # fit() retraces train_step for the new phase

    def generator_inputs(self, batch: dict) -> dict:
        """The generator's inputs of a batch (its K-slice stacks for a 2.5-D generator: pipeline.model_inputs)."""
        from ctpet_srgan.pipeline import model_inputs

        return model_inputs(batch, self.gen_cfg.input_names(), self.gen_cfg.context_slices)

    def _pair(self, fn, batch, out) -> tf.Tensor:
        """fn(hr, sr) on PET plus ct_weight * fn on CT (when the generator has a CT head)."""
        v = fn(batch["hr_pet"], out["sr_pet"])
        if "sr_ct" in out:
            v = v + self.cfg.ct_weight * fn(batch["hr_ct"], out["sr_ct"])
        return v

    def _compute(self, batch: dict, gan: bool):
        """Per-replica losses and gradients. Returns (g_grads, d_grads or None, per-example loss dict)."""
        cfg = self.cfg
        n_global = tf.cast(tf.shape(batch["lr_pet"])[0] * distribute.num_replicas(), tf.float32)
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            out = self.generator(self.generator_inputs(batch), training=True)
            pix = self._pair(lambda a, b: losses.pixel_loss(a, b, cfg.pixel_loss), batch, out)
            vals = {"pixel": pix}
            if not gan:
                g_total = pix
            else:
                real = self.discriminator({"pet": batch["hr_pet"], "ct": batch["hr_ct"]}, training=True)
                fake = self.discriminator({"pet": out["sr_pet"], "ct": batch["hr_ct"]}, training=True)
                adv = losses.generator_adv_loss(real, fake, cfg.adv_loss)
                d_loss = losses.discriminator_loss(real, fake, cfg.adv_loss)
                if cfg.content_loss == "vgg":
                    content = self._pair(lambda a, b: losses.content_loss(self.vgg, a, b), batch, out)
                    g_total = cfg.content_weight * content
                    vals["content"] = content
                else:
                    g_total = tf.zeros_like(pix)
                g_total = g_total + cfg.effective_pixel_weight * pix + cfg.adv_weight * adv
                vals.update(adv=adv, d_loss=d_loss, d_real=tf.sigmoid(tf.reshape(real, [-1])),
                            d_fake=tf.sigmoid(tf.reshape(fake, [-1])),
                            d_acc=losses.discriminator_accuracy(real, fake, cfg.adv_loss))
                d_scaled = tf.reduce_sum(d_loss) / n_global
                if isinstance(self.d_optimizer, keras.optimizers.LossScaleOptimizer):
                    d_scaled = self.d_optimizer.scale_loss(d_scaled)
            vals["g_loss"] = g_total
            g_scaled = tf.reduce_sum(g_total) / n_global
            if isinstance(self.g_optimizer, keras.optimizers.LossScaleOptimizer):
                g_scaled = self.g_optimizer.scale_loss(g_scaled)
        g_grads = g_tape.gradient(g_scaled, self.generator.trainable_variables)
        d_grads = d_tape.gradient(d_scaled, self.discriminator.trainable_variables) if gan else None
        return g_grads, d_grads, vals

    def replica_step(self, batch: dict, gan: bool) -> dict[str, tf.Tensor]:
        """One optimisation step on this replica's batch. Returns SUMS over its examples of each loss, and 'n'."""
        if gan not in self._grad_fns:
            fn = lambda b, g=gan: self._compute(b, g)  # noqa: E731
            self._grad_fns[gan] = tf.function(fn, jit_compile=True) if self.cfg.jit_compile else fn
        g_grads, d_grads, vals = self._grad_fns[gan](batch)
        self.g_optimizer.apply_gradients(zip(g_grads, self.generator.trainable_variables))
        if gan:
            self.d_optimizer.apply_gradients(zip(d_grads, self.discriminator.trainable_variables))
        out = {k: tf.reduce_sum(v) for k, v in vals.items()}
        out["n"] = tf.cast(tf.shape(batch["lr_pet"])[0], tf.float32)
        return out

    def replica_eval(self, batch: dict) -> dict[str, tf.Tensor]:
        """Validation on this replica's batch: SUMS of val_pixel, PSNR, SSIM (SR PET) and bicubic PSNR, and 'n'."""
        out = self.generator(self.generator_inputs(batch), training=False)
        sr = tf.cast(out["sr_pet"], tf.float32)
        psnr, ssim = _psnr_ssim(batch["hr_pet"], sr)
        bic = tf.image.resize(batch["lr_pet"], tf.shape(batch["hr_pet"])[1:3], method="bicubic")
        psnr_bic, _ = _psnr_ssim(batch["hr_pet"], bic)
        pix = losses.pixel_loss(batch["hr_pet"], sr, self.cfg.pixel_loss)
        s = {"val_pixel": pix, "psnr": psnr, "ssim": ssim, "psnr_bicubic": psnr_bic}
        s = {k: tf.reduce_sum(v) for k, v in s.items()}
        s["n"] = tf.cast(tf.shape(batch["lr_pet"])[0], tf.float32)
        return s

    def _track(self, sums: dict) -> dict:
        n = sums["n"]
        for k, v in sums.items():
            if k != "n":
                self.trackers[k].update_state(v / n, sample_weight=n)
        return {k: self.trackers[k].result() for k in sums if k != "n"}

    def train_step(self, data):
        return self._track(self.replica_step(data, self.phase == "gan"))

    def test_step(self, data):
        return self._track(self.replica_eval(data))


def _save_model_atomic(model: keras.Model, final: Path) -> None:
    """model.save() to a temporary .keras file beside `final`, then rename onto it (Keras needs the suffix)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent)
    try:
        tmp = Path(tmpdir) / final.name
        model.save(tmp)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


class Interrupted(Exception):
    """Raised by Trainer.fit after a SIGTERM/SIGINT: a checkpoint at `step` was saved first."""

    def __init__(self, signum: int, step: int, checkpoint: str | None):
        super().__init__(f"interrupted by signal {signum} at step {step}; checkpoint {checkpoint}; rerun with --resume")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


class Trainer:
    """The custom training loop (one code path for every strategy).

    train_dataset_fn(seed) -> a repeating tf.data.Dataset of GLOBAL batches (dicts, normalised units);
    val_dataset_fn() -> a finite dataset of validation batches, or None. model_dir receives run_config.json (from
    `run_config`, a RunConfig or its dict, checked), ckpt/ (G, D, both optimizers, step, phase, RNG, best PSNR),
    logs/ (TensorBoard), best_generator.keras (best val PSNR) and generator.keras (final).
    """

    def __init__(self, *, gen_cfg: GeneratorConfig, cfg: TrainConfig, model_dir: str | Path,
                 strategy: tf.distribute.Strategy, train_dataset_fn: Callable[[int], tf.data.Dataset],
                 val_dataset_fn: Callable[[], tf.data.Dataset] | None = None,
                 run_config: RunConfig | dict | None = None,
                 resume: bool = False, vgg: keras.Model | None = None, vgg_label: str = "none",
                 normalization: dict | None = None, on_step: Callable[[int], None] | None = None):
        self.gen_cfg, self.cfg, self.strategy = gen_cfg, cfg, strategy
        self.model_dir = Path(model_dir)
        self.chief = distribute.is_chief(strategy)
        self._multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.on_step = on_step
        self.vgg_label = vgg_label
        self.normalization = normalization or {}
        self._signal: int | None = None
        # per-step global means of the losses (the last 10000 steps of this process)
        self.history: collections.deque[dict[str, float]] = collections.deque(maxlen=10_000)
        total = cfg.pretrain_steps + cfg.gan_steps
        keras.utils.set_random_seed(cfg.seed)
        g_opt, d_opt = self._build_models(vgg)
        self._total = total
        ckpt_dir = self.model_dir / "ckpt"  # read by every worker (shared file system)
        write_dir = ckpt_dir
        if not self.chief:  # non-chief workers write their (identical) checkpoints to a scratch directory
            write_dir = Path(tempfile.mkdtemp(prefix="ctpet_srgan_worker_ckpt_"))
        objects = dict(generator=self.generator, discriminator=self.discriminator, g_optimizer=g_opt,
                       d_optimizer=d_opt, step=self.step, phase=self.phase, best_psnr=self.best_psnr, rng=self.rng)
        latest = tf.train.latest_checkpoint(str(ckpt_dir))
        if latest and not resume:
            raise FileExistsError(f"{ckpt_dir}: holds checkpoint {latest}; pass --resume to continue it or choose a"
                                  " new --model_dir")
        start = int(tf.train.load_checkpoint(latest).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) if latest else 0
        self.iterator = self._train_iterator(train_dataset_fn, start)
        self.val_dataset_fn = val_dataset_fn
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(write_dir), max_to_keep=cfg.keep_checkpoints)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            log.info("resumed from %s at step %d", latest, int(self.step.numpy()))
        if self.chief and run_config is not None:
            RunConfig.coerce(run_config, self.model_dir / RUN_CONFIG).save(self.model_dir)
        self._fns = {gan: self._make_step_fn(gan) for gan in (False, True)}
        self._eval_fn = tf.function(reduce_retracing=True)(
            lambda b: self._reduce(self.strategy.run(self.model.replica_eval, args=(b,))))
        self._writers = {}
        if self.chief:
            self._writers = {k: tf.summary.create_file_writer(str(self.model_dir / "logs" / k))
                             for k in ("train", "val")}

    def _build_models(self, vgg: keras.Model | None):
        """Builds, in the strategy's scope, G, D, the SRGAN model, the step/phase/best-PSNR variables and the RNG.

        Returns:
            (the generator's optimizer, the discriminator's optimizer), built (their slots exist).
        """
        cfg, gen_cfg = self.cfg, self.gen_cfg
        with self.strategy.scope():
            self.generator = build_generator(gen_cfg)
            self.discriminator = build_discriminator(cfg.d_filters, spectral_norm=cfg.d_spectral_norm)
            g_opt = keras.optimizers.Adam(PhaseSchedule(cfg.g_lr, cfg.pretrain_steps, cfg.gan_steps,
                                                        cfg.lr_decay_factor), beta_1=0.9)
            d_opt = keras.optimizers.Adam(PhaseSchedule(cfg.d_lr, 0, cfg.gan_steps, cfg.lr_decay_factor),
                                          beta_1=0.9)
            if cfg.mixed_precision == "mixed_float16":
                g_opt, d_opt = keras.optimizers.LossScaleOptimizer(g_opt), keras.optimizers.LossScaleOptimizer(d_opt)
            g_opt.build(self.generator.trainable_variables)
            d_opt.build(self.discriminator.trainable_variables)
            self.model = SRGAN(self.generator, self.discriminator, gen_cfg, cfg, vgg=vgg)
            self.model.compile(g_opt, d_opt)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.phase = tf.Variable(0, dtype=tf.int64, trainable=False, name="phase")  # 0 pretrain, 1 GAN
            self.best_psnr = tf.Variable(-np.inf, dtype=tf.float32, trainable=False, name="best_psnr")
            # RNG state of the loop (checkpointed so that any randomness drawn from it resumes exactly).
            self.rng = tf.random.Generator.from_seed(cfg.seed)
        return g_opt, d_opt

    def _train_iterator(self, train_dataset_fn: Callable[[int], tf.data.Dataset], start: int):
        """The distributed iterator of global training batches from step `start` (0: a new run) on."""
        cfg = self.cfg
        # Data order is a pure function of (seed, step): the stream restarts at the resumed step by skipping the
        # batches already used (exact, as the pipeline's augmentation is a stateless function of the element index,
        # but it re-reads them), or with data_resume="reseed" from a new seed that depends on (seed, step) (instant).
        ds = train_dataset_fn(cfg.seed if (start == 0 or cfg.data_resume == "skip") else cfg.seed + 1_000_003 * start)
        if start and cfg.data_resume == "skip":
            ds = ds.skip(start)
        return iter(self.strategy.experimental_distribute_dataset(ds))

    def _reduce(self, per_replica: dict) -> dict:
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    def _make_step_fn(self, gan: bool):
        @tf.function
        def step_fn(iterator, stop):
            """One global step; `stop` (this worker's signal flag) is summed over replicas: all stop together."""

            def replica(batch):
                return self.model.replica_step(batch, gan=gan), tf.cast(stop, tf.int32)

            sums, stops = self.strategy.run(replica, args=(next(iterator),))
            return self._reduce(sums), self.strategy.reduce(tf.distribute.ReduceOp.SUM, stops, axis=None) > 0

        return step_fn

    # ---- signals -----------------------------------------------------------------------------------------
    def _handle(self, signum, frame):  # noqa: ARG002
        self._signal = signum
        log.warning("signal %d received: saving a checkpoint at the end of this step", signum)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT set a flag; fit() saves a checkpoint at the next step boundary and raises Interrupted."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    # ---- evaluation and summaries ------------------------------------------------------------------------
    def evaluate(self, max_batches: int | None = None) -> dict[str, float]:
        """Mean val_pixel, PSNR (dB), SSIM and bicubic PSNR of SR PET over the validation set (normalised, peak 1)."""
        if self.val_dataset_fn is None:
            return {}
        ds = self.val_dataset_fn()
        # Every worker reads the whole validation set (no sharding): equal batch counts, so no collective hangs.
        opts = tf.data.Options()
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        ds = ds.with_options(opts)
        if max_batches:
            ds = ds.take(max_batches)
        totals: dict[str, float] = {}
        for batch in self.strategy.experimental_distribute_dataset(ds):
            for k, v in self._eval_fn(batch).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        n = totals.pop("n", 0.0)
        return {k: v / n for k, v in totals.items()} if n else {}

    def _image_summary(self, step: int) -> None:
        """TensorBoard panels of one validation example: LR PET, bicubic, SR, HR, PET-on-CT fused overlay."""
        if self.val_dataset_fn is None or not self.chief:
            return
        batch = next(iter(self.val_dataset_fn().take(1)))
        batch = {k: v[:1] for k, v in batch.items()
                 if k in ("lr_pet", "lr_ct", "hr_pet", "hr_ct", "lr_pet_ctx", "lr_ct_ctx", "hr_ct_ctx")}
        sr = self.generator(self.model.generator_inputs(batch), training=False)["sr_pet"]
        hw = tf.shape(batch["hr_pet"])[1:3]
        panels = [tf.image.resize(batch["lr_pet"], hw, method="nearest"),
                  tf.image.resize(batch["lr_pet"], hw, method="bicubic"), tf.cast(sr, tf.float32), batch["hr_pet"]]
        vmax = max(float(tf.reduce_max(batch["hr_pet"])), 1e-6)
        row = summaries.labelled_row([p[0, ..., 0].numpy() / vmax for p in panels], ["LR", "bicubic", "SR", "HR"])
        with self._writers["val"].as_default():
            summaries.tb_image("panels/lr_bicubic_sr_hr_pet", row, step)
            try:
                from ctpet_srgan.fusion import fuse_rgb
                from ctpet_srgan.normalization import Normalization

                norm = Normalization.from_dict(self.normalization)
                rgb = fuse_rgb(norm.ct_from_norm(batch["hr_ct"][0, ..., 0].numpy()),
                               norm.pet_from_norm(tf.cast(sr, tf.float32)[0, ..., 0].numpy()))
                summaries.tb_image("panels/sr_pet_on_ct", rgb, step)
            except ImportError:
                log.debug("ctpet_srgan.fusion not available: no fused panel")

    # ---- the loop ----------------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Runs (or continues) both phases to pretrain_steps + gan_steps. Returns the last validation metrics."""
        cfg, total = self.cfg, self._total
        step = int(self.step.numpy())
        start_step, t0 = step, time.time()
        acc: dict[str, float] = {}
        last_eval: dict[str, float] = {}
        if self.chief:
            log.info("VGG content loss: %s", self.vgg_label)
        while step < total:
            gan = step >= cfg.pretrain_steps
            sums, stop = self._fns[gan](self.iterator, tf.constant(self._signal is not None))
            step += 1
            self.step.assign(step)
            self.phase.assign(int(gan))
            sums = {k: float(v) for k, v in sums.items()}
            self.history.append({k: v / sums["n"] for k, v in sums.items() if k != "n"})
            for k, v in sums.items():
                acc[k] = acc.get(k, 0.0) + v
            if self.on_step is not None:
                self.on_step(step)
            if step % cfg.log_every == 0 or step == total:
                self._log_train(step, acc, gan, start_step, t0)
                acc = {}
            if (cfg.eval_every and step % cfg.eval_every == 0) or step == total:
                last_eval = self._eval_and_keep_best(step)
            # Some worker got SIGTERM/SIGINT: all save this step and stop (one process: its own flag is enough).
            stop = bool(stop) or (self._signal is not None and not self._multiworker)
            if step % cfg.checkpoint_every == 0 or step == total or stop:
                path = self.manager.save(checkpoint_number=step)
                if stop:
                    raise Interrupted(self._signal or signal.SIGTERM, step, path)
        if self.chief:
            _save_model_atomic(self.generator, self.model_dir / "generator.keras")
            if not (self.model_dir / "best_generator.keras").exists():
                _save_model_atomic(self.generator, self.model_dir / "best_generator.keras")
        return last_eval

    def _log_train(self, step: int, acc: dict, gan: bool, start_step: int, t0: float) -> None:
        n = max(acc.pop("n", 0.0), 1.0)
        means = {k: v / n for k, v in acc.items()}
        rate = (step - start_step) / max(time.time() - t0, 1e-9)
        eta = (self._total - step) / rate if rate > 0 else math.inf
        g_lr = float(self.model.g_optimizer.learning_rate)
        d_lr = float(self.model.d_optimizer.learning_rate)
        if self.chief:
            msg = " ".join(f"{k}={v:.4g}" for k, v in means.items())
            eta_s = f"{int(eta // 60)}m{int(eta % 60):02d}s" if math.isfinite(eta) else "?"
            log.info("step %d/%d [%s] %s g_lr=%.3g %.2f steps/s ETA %s", step, self._total,
                     "gan" if gan else "pretrain", msg, g_lr, rate, eta_s)
            with self._writers["train"].as_default():
                for k, v in means.items():
                    summaries.tb_scalar(f"loss/{k}", v, step)
                summaries.tb_scalar("lr/generator", g_lr, step)
                summaries.tb_scalar("lr/discriminator", d_lr, step)
                summaries.tb_scalar("steps_per_second", rate, step)

    def _eval_and_keep_best(self, step: int) -> dict[str, float]:
        metrics = self.evaluate(self.cfg.eval_batches)
        if not metrics:
            return metrics
        if self.chief:
            log.info("step %d/%d validation %s", step, self._total,
                     " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            with self._writers["val"].as_default():
                for k, v in metrics.items():
                    summaries.tb_scalar(f"val/{k}", v, step)
            self._image_summary(step)
        if metrics["psnr"] > float(self.best_psnr.numpy()):
            self.best_psnr.assign(metrics["psnr"])
            if self.chief:
                _save_model_atomic(self.generator, self.model_dir / "best_generator.keras")
        return metrics

