"""Subprocess helper of test_distribute.py: trains a tiny SRGAN with the custom loop under a strategy.

  python tests/_dist_worker.py mirrored OUT.npz MODEL_DIR     (2 logical CPUs: default strategy vs MirroredStrategy)
  python tests/_dist_worker.py multiworker OUT.npz MODEL_DIR  (TF_CONFIG set by the caller)
Writes OUT.npz with per-step losses and the final weights.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def run(strategy, model_dir):
    from _synthetic import synthetic_dataset

    from ctpet_srgan import training
    from ctpet_srgan.models import GeneratorConfig

    gen = GeneratorConfig(scale=2, filters=8, num_blocks=1, ct_mode="lr")
    cfg = training.TrainConfig(batch_size=4, patch_size=8, pretrain_steps=2, gan_steps=2, g_lr=1e-3, d_lr=1e-3,
                               content_loss="none", adv_loss="standard", d_filters=4, checkpoint_every=100,
                               log_every=100, eval_every=0, eval_batches=1, seed=0)
    t = training.Trainer(gen_cfg=gen, cfg=cfg, model_dir=model_dir, strategy=strategy,
                         train_dataset_fn=lambda seed: synthetic_dataset(4, n=8, hr=16, seed=seed),
                         val_dataset_fn=lambda: synthetic_dataset(2, n=2, hr=16, repeat=False, shuffle=False))
    val = t.evaluate()
    t.fit()
    losses = np.array([[h["g_loss"], h["pixel"], h.get("d_loss", 0.0)] for h in t.history])
    weights = [w.numpy() for w in t.generator.weights + t.discriminator.weights]
    return losses, weights, int(t.step.numpy()), val["psnr"]


def main():
    mode, out, model_dir = sys.argv[1:4]
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        l1, w1, s1, p1 = run(tf.distribute.get_strategy(), os.path.join(model_dir, "single"))
        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        l2, w2, s2, p2 = run(mirrored, os.path.join(model_dir, "mirrored"))
        np.savez(out, losses_single=l1, losses_dist=l2, steps=[s1, s2], psnr=[p1, p2],
                 replicas=mirrored.num_replicas_in_sync,
                 **{f"single_{i}": w for i, w in enumerate(w1)}, **{f"dist_{i}": w for i, w in enumerate(w2)})
    elif mode == "multiworker":
        from ctpet_srgan import distribute

        strategy = distribute.make_strategy("auto")  # TF_CONFIG -> MultiWorkerMirroredStrategy
        assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), type(strategy)
        losses, weights, step, psnr = run(strategy, model_dir)
        np.savez(out, losses=losses, steps=[step], psnr=[psnr], replicas=strategy.num_replicas_in_sync,
                 **{f"w_{i}": w for i, w in enumerate(weights)})
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
