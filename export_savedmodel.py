"""Exports a trained generator as a TF Serving SavedModel.

  python export_savedmodel.py --model runs/demo --export_dir exports --model_name ctpet_srgan --version 1
  python export_savedmodel.py --bundled real --export_dir exports --model_name ctpet_srgan --version 1

writes exports/ctpet_srgan/1/ (saved_model.pb, variables/, assets/metadata.json). Signature serving_default:
pet (SUVbw) [batch, h, w, 1] and ct (HU) [batch, h*scale, w*scale, 1] (or [batch, h, w, 1] for a model trained
with --ct_mode=lr) -> sr_pet (SUVbw), sr_ct (HU), [batch, h*scale, w*scale, 1]. See docs/serving.md.
"""

from __future__ import annotations

import sys

from absl import app, flags

F = flags.FLAGS
flags.DEFINE_string("model", None, "Model directory from train_keras.py (run_config.json + best_generator.keras,"
                    " generator.keras or ckpt/), or a .keras file beside a run_config.json. Default: the bundled"
                    " phantom-trained demo model (not for clinical use).")
flags.DEFINE_alias("checkpoint", "model")  # the name this flag had before every program read models with --model
flags.DEFINE_enum("bundled", None, ["demo", "real"], "Export a bundled model instead of --model: demo (phantom-"
                  "trained) or real (trained on 20 IBSI STS patients); both research use only, not for clinical use.")
flags.DEFINE_string("export_dir", None, "Base folder TF Serving watches (its --model_base_path's parent).")
flags.DEFINE_string("model_name", "ctpet_srgan", "Model name: the export goes to EXPORT_DIR/MODEL_NAME/VERSION.")
flags.DEFINE_integer("version", None, "Integer version (TF Serving serves the highest).", lower_bound=1)
flags.DEFINE_boolean("overwrite", False, "Replace an existing version folder.")
flags.mark_flags_as_required(["export_dir", "version"])


def main(argv):
    del argv
    from ctpet_srgan.tf_quiet import import_tensorflow

    import_tensorflow()  # without the start-up lines that are not errors
    from ctpet_srgan.export import export_savedmodel
    from ctpet_srgan.inference import load_generator

    if F.bundled and F.model:
        print("export_savedmodel: error: give --model or --bundled, not both", file=sys.stderr)
        return 2
    try:
        model, run_config, source = load_generator(f"bundled:{F.bundled}" if F.bundled else F.model)
        out = export_savedmodel(model, run_config, F.export_dir, F.model_name, F.version, overwrite=F.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"export_savedmodel: error: {e}", file=sys.stderr)
        return 2
    print(f"exported {source} -> {out}")
    return 0


def run() -> None:
    """Console entry point `ctpet-export` (same flags as `python export_savedmodel.py`)."""
    app.run(main)


if __name__ == "__main__":
    run()
