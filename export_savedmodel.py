"""Exports a trained generator as a TF Serving SavedModel.

  python export_savedmodel.py --model runs/demo --export_dir exports --model_name ctpet_srgan --version 1
  python export_savedmodel.py --bundled real --export_dir exports --model_name ctpet_srgan --version 1

writes exports/ctpet_srgan/1/ (saved_model.pb, variables/, assets/metadata.json). Signature serving_default:
pet (SUVbw) [batch, h, w, 1] and ct (HU) [batch, h*scale, w*scale, 1] (or [batch, h, w, 1] for a model trained
with --ct_mode=lr) -> sr_pet (SUVbw), sr_ct (HU), [batch, h*scale, w*scale, 1]. See docs/serving.md.
Flags: absl (--flagfile=FILE). A user error prints one line `PATH: problem` and exits with status 2.
"""

from __future__ import annotations

from absl import flags

from ctpet_srgan import cli


def define_flags(fv: flags.FlagValues) -> None:
    """The command line (see --help), defined in `fv`."""
    d = dict(flag_values=fv)
    flags.DEFINE_string("model", None, "Model directory from train_keras.py (run_config.json + best_generator.keras,"
                        " generator.keras or ckpt/), or a .keras file beside a run_config.json. Default: the bundled"
                        " phantom-trained demo model (not for clinical use).", **d)
    flags.DEFINE_alias("checkpoint", "model", **d)  # the name this flag had before every program read --model
    flags.DEFINE_enum("bundled", None, ["demo", "real"], "Export a bundled model instead of --model: demo (phantom-"
                      "trained) or real (trained on 20 IBSI STS patients); both research use only, not for clinical"
                      " use.", **d)
    flags.DEFINE_string("export_dir", None, "Base folder TF Serving watches (its --model_base_path's parent).", **d)
    flags.DEFINE_string("model_name", "ctpet_srgan", "Model name: the export goes to EXPORT_DIR/MODEL_NAME/VERSION.",
                        **d)
    flags.DEFINE_integer("version", None, "Integer version (TF Serving serves the highest).", lower_bound=1, **d)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing version folder.", **d)
    flags.mark_flags_as_required(["export_dir", "version"], **d)


def export(F: flags.FlagValues) -> int:
    """Exports the model; returns the exit status (2 with one stderr line for a user error)."""
    if F.bundled and F.model:
        return cli.fail("--bundled, --model: give one of them, not both")
    from ctpet_srgan.tf_quiet import import_tensorflow

    import_tensorflow()  # without the start-up lines that are not errors
    from ctpet_srgan.export import export_savedmodel
    from ctpet_srgan.inference import load_generator

    model, run_config, source = load_generator(f"bundled:{F.bundled}" if F.bundled else F.model)
    out = export_savedmodel(model, run_config, F.export_dir, F.model_name, F.version, overwrite=F.overwrite)
    print(f"exported {source} -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python export_savedmodel.py ARGS` in-process (argv: the arguments after the program name); the exit status."""
    return cli.main(define_flags, export, argv, prog="export_savedmodel.py")


def run() -> None:
    """Console entry point `ctpet-export` (same flags as `python export_savedmodel.py`): absl.app.run."""
    cli.run(define_flags, export)


if __name__ == "__main__":
    run()
