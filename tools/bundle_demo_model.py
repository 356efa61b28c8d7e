"""Copies a trained model into ctpet_srgan/assets/demo_model/ as the bundled demo model.

  python tools/bundle_demo_model.py --model_dir runs/demo [--scores_json runs/demo/eval.json]

Takes best_generator.keras (else generator.keras) and run_config.json from --model_dir, labels the copy
"phantom-trained demo model, not for clinical use" (run_config.json: demo=true, label, clinical_use=false),
checks that it loads with safe_mode=True and is at most --max_mb, and replaces the assets folder atomically.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from absl import app, flags

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

F = flags.FLAGS
from ctpet_srgan.inference import DEMO_LABEL as LABEL  # noqa: E402


def bundle(model_dir: Path, dest: Path, *, scores: dict | None = None, command: str | None = None,
           max_mb: float = 8.0) -> Path:
    """Copies, labels and checks the demo model; returns `dest`."""
    import keras

    import ctpet_srgan.models  # noqa: F401 (registers the custom layers)
    from ctpet_srgan.atomic import replace_dir, write_json_atomic

    src = next((model_dir / n for n in ("best_generator.keras", "generator.keras") if (model_dir / n).exists()), None)
    cfg_path = model_dir / "run_config.json"
    if src is None or not cfg_path.exists():
        raise FileNotFoundError(f"{model_dir}: needs run_config.json and best_generator.keras or generator.keras")
    size_mb = src.stat().st_size / 2**20
    if size_mb > max_mb:
        raise ValueError(f"{src}: {size_mb:.1f} MB is over --max_mb {max_mb} (train a smaller generator)")
    keras.saving.load_model(str(src), safe_mode=True, compile=False)  # must load without unsafe deserialisation
    cfg = json.loads(cfg_path.read_text())
    cfg.update(demo=True, label=LABEL, clinical_use=False, bundled_from=src.name)
    data_dir = Path(str(cfg.get("data_dir", "")))
    if data_dir.is_absolute() and data_dir.is_relative_to(ROOT):  # no machine-specific paths in the repo
        cfg["data_dir"] = str(data_dir.relative_to(ROOT))
    if scores is not None:
        cfg["scores"] = scores
    if command:
        cfg["trained_with"] = command
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private
    try:
        shutil.copyfile(src, tmp / "generator.keras")
        write_json_atomic(tmp / "run_config.json", cfg)
        notes = [f"# Bundled demo model\n\n**{LABEL.capitalize()}.** Trained on synthetic phantoms only; its outputs"
                 " say nothing about real patients.\n"]
        if command:
            notes.append(f"Trained with `{command}`; bundled with `python tools/bundle_demo_model.py`.\n")
        if scores is not None:
            notes.append("Scores (held-out phantom studies):\n\n```json\n" + json.dumps(scores, indent=1) + "\n```\n")
        (tmp / "README.md").write_text("\n".join(notes))
        replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def main(argv):
    del argv
    scores = json.loads(Path(F.scores_json).read_text()) if F.scores_json else None
    out = bundle(Path(F.model_dir), Path(F.dest), scores=scores, command=F.command, max_mb=F.max_mb)
    print(f"bundled {F.model_dir} -> {out} ({LABEL})")


def _define_flags() -> None:
    """Defined only when run as a script, so importing `bundle` defines no absl flags."""
    flags.DEFINE_string("model_dir", None, "Model directory written by train_keras.py.", required=True)
    flags.DEFINE_string("dest", str(ROOT / "ctpet_srgan" / "assets" / "demo_model"), "Destination folder.")
    flags.DEFINE_string("scores_json", None, "Optional JSON of evaluation scores to record in run_config.json.")
    flags.DEFINE_string("command", None, "The command that trained the model (recorded in run_config.json).")
    flags.DEFINE_float("max_mb", 8.0, "Refuse a generator file larger than this.")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
