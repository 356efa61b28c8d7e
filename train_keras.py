"""Trains the CT-guided PET SRGAN: `python train_keras.py --flagfile=flags/gpu.cfg`.

Two phases in one run (--pretrain_steps with the pixel loss, then --gan_steps), on the strategy chosen by --strategy
(auto: MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy over local GPUs, else one device).
Writes --model_dir/run_config.json, ckpt/, logs/ (TensorBoard), best_generator.keras and generator.keras.
SIGTERM/SIGINT save a checkpoint at the next step boundary and exit with status 128+signal; --resume continues.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

from absl import app, flags

from ctpet_srgan import cli
from ctpet_srgan.errors import InputError

F = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Prepared data set (manifest.json + shards), from `python -m data_prep convert`.")
flags.DEFINE_string("model_dir", None, "Output directory (checkpoints, logs, run_config.json, *.keras).")
flags.DEFINE_boolean("prepare_demo_data", False, "Create the phantom demo set in --data_dir if it has no"
                     " manifest.json.")
flags.DEFINE_integer("demo_cases", 8, "Phantom studies for --prepare_demo_data.")
flags.DEFINE_integer("demo_seed", 0, "Seed of the phantom studies for --prepare_demo_data.")
flags.DEFINE_integer("demo_scale", 2, "Super-resolution factor of the demo set (2 or 4).")
flags.DEFINE_enum("demo_world", "default", ["default", "guided"],
                  "Phantom world of --prepare_demo_data (guided: CT guidance can be right or wrong).")
# Model
flags.DEFINE_enum("ct_mode", "s2d", ["s2d", "lr", "none"], "CT branch: HR CT space-to-depth, LR CT, or none"
                  " (PET-only).")
flags.DEFINE_integer("filters", 64, "Generator width.")
flags.DEFINE_integer("num_blocks", 16, "Generator residual blocks.")
flags.DEFINE_integer("context_slices", 1, "2.5-D: slices (odd) into both encoders, the slice and its neighbours;"
                     " 1 is the 2-D model.")
flags.DEFINE_integer("d_filters", 64, "Discriminator base width.")
flags.DEFINE_boolean("d_spectral_norm", False, "Spectral normalisation of every discriminator layer (Miyato et al."
                     " 2018), so that D keeps learning instead of sitting at chance.")
# Optimisation
flags.DEFINE_integer("batch_size", 16, "GLOBAL batch size (all replicas).")
flags.DEFINE_integer("patch_size", 24, "LR patch size in pixels (HR patch = patch_size * scale).")
flags.DEFINE_integer("val_batch_size", 4, "Validation batch size (whole slices).")
flags.DEFINE_integer("pretrain_steps", 1000, "Steps with the pixel loss only (SRResNet pre-training).")
flags.DEFINE_integer("gan_steps", 1000, "Adversarial steps after pre-training.")
flags.DEFINE_float("g_lr", 1e-4, "Generator learning rate.")
flags.DEFINE_float("d_lr", 1e-4, "Discriminator learning rate.")
flags.DEFINE_float("lr_decay_factor", 0.1, "Learning rates are multiplied by this half-way through the GAN phase.")
# Losses
flags.DEFINE_enum("pixel_loss", "l1", ["l1", "mse"], "Pixel loss.")
flags.DEFINE_float("pixel_weight", None, "Pixel-loss weight in the GAN phase (default: 0 with VGG, as in SRGAN).")
flags.DEFINE_enum("content_loss", "vgg", ["vgg", "none"], "GAN-phase content loss: VGG19 features, or none (pixel).")
flags.DEFINE_float("content_weight", 1.0, "Content-loss weight.")
flags.DEFINE_string("vgg_weights", "keras-cache", "VGG19 no-top weights: a file path, 'keras-cache'"
                    " (~/.keras/models/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5) or 'random' (tests only).")
flags.DEFINE_string("vgg_layer", "block5_conv4", "VGG19 layer of the content loss (e.g. block2_conv2, block5_conv4).")
flags.DEFINE_boolean("vgg_before_activation", True, "VGG features before the ReLU (ESRGAN) instead of after (SRGAN).")
flags.DEFINE_enum("adv_loss", "relativistic", ["standard", "relativistic"],
                  "Adversarial loss (relativistic average, ESRGAN; chosen by tools/gan_study.py, see README).")
flags.DEFINE_float("adv_weight", 1e-2, "Adversarial weight (SRGAN: 1e-3; 1e-2 chosen by tools/gan_study.py).")
flags.DEFINE_float("ct_weight", 0.5, "Weight of the CT output's losses relative to PET.")
# Robustness to a wrong or empty CT (ctpet_srgan/augment.py; training data only, off by default)
flags.DEFINE_float("ct_shift_max_mm", 0.0, "Misregistration augmentation: shift each training CT in-plane by a"
                   " random 0..this many mm (PET untouched).")
flags.DEFINE_float("ct_dropout", 0.0, "CT dropout: probability of giving a training example the uninformative CT"
                   " (body outline filled with water).")
# Run
flags.DEFINE_boolean("resume", False, "Continue from the latest checkpoint in --model_dir.")
flags.DEFINE_enum("strategy", "auto", ["auto", "default", "mirrored", "multiworker", "tpu"], "tf.distribute strategy.")
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
flags.DEFINE_enum("mixed_precision", "", ["", "mixed_float16", "mixed_bfloat16"], "Keras mixed-precision policy.")
flags.DEFINE_boolean("xla", False, "XLA-compile the loss/gradient computation.")
flags.DEFINE_boolean("deterministic", False, "Deterministic ops and data order (slower).")
flags.DEFINE_boolean("cache", False, "Keep parsed training slices in memory.")
flags.DEFINE_integer("seed", 0, "Seed of weights and data order.")
flags.DEFINE_enum("data_resume", "skip", ["skip", "reseed"], "On --resume, skip the batches already used (exact"
                  " continuation with --deterministic; re-reads them) or restart the data stream with a seed derived"
                  " from (seed, step) (instant; use for very long runs).")
flags.DEFINE_integer("checkpoint_every", 500, "Checkpoint every N steps (and at the end, and on SIGTERM/SIGINT).")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.")
flags.DEFINE_integer("log_every", 50, "Progress line and TensorBoard scalars every N steps.")
flags.DEFINE_integer("eval_every", 500, "Validation (PSNR/SSIM, image panels, best model) every N steps.")
flags.DEFINE_integer("eval_batches", 8, "Validation batches per evaluation (0: all).")
flags.mark_flags_as_required(["data_dir", "model_dir"])

log = logging.getLogger("train_keras")
# Every TrainConfig field is the flag of the same name, except these (tests/test_train_keras.py checks the defaults).
FLAG_OF = {"jit_compile": "xla"}


def _git_commit() -> str:
    """HEAD's commit, with "+dirty" when tracked files differ from it (the run's code is then not that commit)."""
    here = Path(__file__).parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv):
    del argv
    from ctpet_srgan.tf_quiet import import_tensorflow

    import_tensorflow()  # without the start-up lines that are not errors (cuInit on a CPU machine, oneDNN)
    try:
        _main()
    except (FileNotFoundError, FileExistsError, InputError) as e:  # missing VGG weights / data set, an existing run,
        sys.exit(cli.fail(cli.error_line(e)))  # an invalid manifest.json / run_config.json: "PATH: problem", exit 2


def _main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout, force=True)  # force: replace the handler absl installs
    logging.getLogger("absl").setLevel(logging.WARNING)  # TF's INFO chatter (checkpoint sharding callbacks)
    import tensorflow as tf

    from ctpet_srgan import distribute, training

    strategy = distribute.make_strategy(F.strategy, F.tpu)  # first: MultiWorkerMirroredStrategy must come first
    _configure_tf(tf)
    from ctpet_srgan import pipeline
    from ctpet_srgan.manifest import Manifest
    from ctpet_srgan.models import GeneratorConfig

    cfg = training.TrainConfig(**{f.name: F[FLAG_OF.get(f.name, f.name)].value
                                  for f in dataclasses.fields(training.TrainConfig)})

    # VGG first, so that a missing weight file fails before any data preparation or training.
    vgg_model, vgg_label, vgg_key = _load_vgg(cfg, strategy)

    if F.prepare_demo_data:
        from data_prep.demo import ensure_demo_data

        ensure_demo_data(F.data_dir, cases=F.demo_cases, seed=F.demo_seed, scale=F.demo_scale,
                         world=F.demo_world)
    data = Manifest.load(F.data_dir)
    try:
        gen_cfg = GeneratorConfig(scale=data.scale, filters=F.filters, num_blocks=F.num_blocks, ct_mode=F.ct_mode,
                                  context_slices=F.context_slices)
    except ValueError as e:
        raise InputError("--context_slices", str(e)) from None
    run_config = _run_config(cfg, gen_cfg, data, vgg_key)

    def train_ds(seed: int):
        ds = pipeline.make_dataset(F.data_dir, "train", batch_size=cfg.batch_size, patch_size=cfg.patch_size,
                                   training=True, seed=seed, deterministic=F.deterministic, repeat=True,
                                   cache=F.cache, ct_shift_max_mm=cfg.ct_shift_max_mm, ct_dropout=cfg.ct_dropout,
                                   context_slices=gen_cfg.context_slices)
        return ds

    has_val = "val" in data.splits and data.splits["val"].examples > 0
    val_ds = (lambda: pipeline.make_dataset(F.data_dir, "val", batch_size=cfg.val_batch_size,
                                            context_slices=gen_cfg.context_slices)) if has_val else None
    trainer = training.Trainer(gen_cfg=gen_cfg, cfg=cfg, model_dir=F.model_dir, strategy=strategy,
                               train_dataset_fn=train_ds, val_dataset_fn=val_ds, run_config=run_config,
                               resume=F.resume, vgg=vgg_model, vgg_label=vgg_label,
                               normalization=data.normalization.to_dict())
    _fit_and_report(trainer, cfg)


def _configure_tf(tf) -> None:
    """Op determinism, Grappler's remapper off on CPU and the mixed-precision policy, as the flags ask."""
    if F.deterministic:
        tf.config.experimental.enable_op_determinism()
    if not tf.config.list_physical_devices("GPU") and F.strategy != "tpu":
        # Grappler's remapper cannot fuse the discriminator's Conv+BiasAdd+LeakyReLU (its gradient also reads the
        # pre-activation) and says so with an "E ... remapper failed" line in the GAN phase, which is not an error.
        # On CPU its fusions gain nothing measurable for these models (cpu.cfg steps, paired with the matmul
        # reference: 0.56-0.59 with it, 0.59-0.61 without; bench/RESULTS.md), so it is off there.
        tf.config.optimizer.set_experimental_options({"remapping": False})
    import keras

    if F.mixed_precision:
        keras.mixed_precision.set_global_policy(F.mixed_precision)


def _run_config(cfg, gen_cfg, data, vgg_key: str):
    """The run's RunConfig; with --resume, refuses a --model_dir whose run_config.json has another model.

    Returns:
        the RunConfig that the Trainer writes to --model_dir/run_config.json.
    """
    from ctpet_srgan.run_config import RunConfig

    run_config = RunConfig.from_dict({
        "generator": gen_cfg.to_dict(),
        "normalization": data.normalization.to_dict(),
        "scale": data.scale,
        "hr_spacing_mm": None if data.hr_spacing_mm is None else list(data.hr_spacing_mm),
        "lr_spacing_mm": None if data.lr_spacing_mm is None else list(data.lr_spacing_mm),
        "data_dir": str(Path(F.data_dir).resolve()),
        "steps": {"pretrain": cfg.pretrain_steps, "gan": cfg.gan_steps},
        "git_commit": _git_commit(),
        "vgg": vgg_key,
        "train": cfg.to_dict(),
    })
    prev = Path(F.model_dir) / "run_config.json"
    if F.resume and prev.exists():
        old = RunConfig.load(prev)
        if old.generator_config() != gen_cfg or old.scale != run_config.scale:  # configs: defaults filled in
            raise InputError(prev, f"the checkpointed model is {old.generator}, these flags ask for"
                             f" {run_config.generator}; use the same model flags to --resume")
    return run_config


def _load_vgg(cfg, strategy):
    """The VGG19 feature model of the content loss (in `strategy`'s scope), or none when it is not used.

    Returns:
        (model or None, label for the logs, the run_config.json "vgg" key).
    """
    from ctpet_srgan import vgg

    vgg_model, vgg_label, vgg_key = None, "none (pixel + adversarial losses only)", "none"
    if cfg.content_loss == "vgg" and cfg.gan_steps > 0:
        with strategy.scope():
            vgg_model, vgg_label = vgg.load_vgg_features(cfg.vgg_weights, cfg.vgg_layer, cfg.vgg_before_activation)
        vgg_key = vgg.RUN_CONFIG_KEY[vgg_label]
        if vgg_key == "random":
            log.warning("VGG19 has %s: the content loss is NOT a perceptual loss", vgg_label)
    return vgg_model, vgg_label, vgg_key


def _fit_and_report(trainer, cfg) -> None:
    """Trains with signal handlers installed; exits 128 + signal number when interrupted, else prints the result."""
    from ctpet_srgan import training

    trainer.install_signal_handlers()
    try:
        metrics = trainer.fit()
    except training.Interrupted as e:
        print(f"train_keras: {e}", file=sys.stderr, flush=True)
        sys.exit(128 + e.signum)
    if metrics:
        print("train_keras: done; final validation " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()),
              flush=True)
    else:
        print(f"train_keras: done; {F.model_dir} was already trained to step {cfg.pretrain_steps + cfg.gan_steps}"
              " (nothing to do)" if F.resume else "train_keras: done (no validation split to score)", flush=True)


def run() -> None:
    """Console entry point `ctpet-train` (same flags as `python train_keras.py`)."""
    app.run(main, flags_parser=cli.parse_flags)  # a flag error: one line, exit status 2


if __name__ == "__main__":
    run()
