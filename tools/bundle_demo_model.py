"""Copies a trained model into the package as a bundled model (`--model bundled:NAME` everywhere a model is taken).

  python tools/bundle_demo_model.py --model runs/demo [--scores_json runs/demo/eval.json]      # bundled:demo
  python tools/bundle_demo_model.py --name real --model runs/real --command "..."              # bundled:real

(--model_dir, this flag's former name, stays an alias.)
Takes best_generator.keras (else generator.keras) and run_config.json from --model, labels the copy (demo:
"phantom-trained demo model, not for clinical use"; real: "trained on 20 IBSI STS patients, research use only, not
for clinical use"; run_config.json: demo, bundled, label, clinical_use=false, trained_on: what the model saw, from
the manifest of its data set when that is at hand), checks that it loads with safe_mode=True and is at most --max_mb,
and replaces ctpet_srgan/assets/<name>_model/ atomically.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from absl import flags

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ctpet_srgan import cli  # noqa: E402
from ctpet_srgan.tf_quiet import import_tensorflow  # noqa: E402

import_tensorflow()  # before ctpet_srgan.inference imports it: no start-up lines that are not errors
from ctpet_srgan.inference import BUNDLED, DEMO_LABEL, REAL_LABEL  # noqa: E402
from ctpet_srgan.manifest import Manifest  # noqa: E402
from ctpet_srgan.run_config import RUN_CONFIG, RunConfig  # noqa: E402

LABEL = DEMO_LABEL  # kept for callers of the demo-only version
KINDS: dict[str, dict[str, str]] = {
    "demo": {"label": DEMO_LABEL, "title": "Bundled demo model",
             "what": "Trained on synthetic phantoms only; its outputs say nothing about real patients.",
             "data": "synthetic PET/CT phantoms (python -m data_prep phantom)",
             "scores_of": "held-out phantom studies"},
    "real": {"label": REAL_LABEL, "title": "Bundled real-patient model",
             "what": "Trained on the 20 training studies of the IBSI soft-tissue-sarcoma FDG PET/CT set (TCIA"
                     " Soft-tissue-Sarcoma, Vallieres et al. 2015, as prepared by the IBSI; CC BY 3.0). The HR target"
                     " was the clinical PET itself (no truth exists): the model learned to undo the documented"
                     " degradation of a clinical PET, not to exceed the scanner. Research use only; not for clinical"
                     " use.",
             "data": "IBSI soft-tissue-sarcoma FDG PET/CT (GE Discovery ST), 30 patients, train split",
             "scores_of": "the real test split"},
}


def trained_on(cfg: RunConfig, kind: str) -> dict[str, Any]:
    """What the model was trained on: the data description, and from the set's manifest (when it is at hand) the
    split sizes, split seed, grids and degradation. An invalid manifest is an InputError naming it."""
    out: dict[str, Any] = {"data": KINDS[kind]["data"]}
    data_dir = Path(str(cfg.extra.get("data_dir", "")))
    if not data_dir.is_absolute():
        data_dir = ROOT / data_dir
    try:
        m = Manifest.load(data_dir)
    except FileNotFoundError:
        return out
    out.update({f"{s}_studies": len(m.splits[s].studies) for s in ("train", "val", "test") if s in m.splits})
    spacing = {k: None if v is None else list(v) for k, v in (("hr_spacing_mm", m.hr_spacing_mm),
                                                               ("lr_spacing_mm", m.lr_spacing_mm))}
    out.update(split_seed=m.split_seed, degradation=dict(m.degradation), **spacing,
               with_tumour_masks=sum(e.has_mask for e in m.studies.values()))
    return out


def bundle(model_dir: Path, dest: Path | None = None, *, name: str = "demo", scores: dict | None = None,
           command: str | None = None, max_mb: float = 8.0) -> Path:
    """Copies, labels and checks a trained model as the bundled model `name`; returns its folder.

    Args:
      model_dir: a train_keras.py run folder. dest: default ctpet_srgan/assets/<name>_model. name: "demo" | "real".
      scores: optional evaluation scores to record; command: the training command to record; max_mb: size limit.
    """
    import keras

    import ctpet_srgan.models  # noqa: F401 (registers the custom layers)
    from ctpet_srgan.atomic import replace_dir

    if name not in KINDS:
        raise ValueError(f"--name must be one of {sorted(KINDS)}, not {name!r}")
    kind = KINDS[name]
    dest = Path(dest) if dest else BUNDLED[name]
    src = next((model_dir / n for n in ("best_generator.keras", "generator.keras") if (model_dir / n).exists()), None)
    cfg_path = model_dir / RUN_CONFIG
    if src is None or not cfg_path.exists():
        raise FileNotFoundError(f"{model_dir}: needs run_config.json and best_generator.keras or generator.keras")
    size_mb = src.stat().st_size / 2**20
    if size_mb > max_mb:
        raise ValueError(f"{src}: {size_mb:.1f} MB is over --max_mb {max_mb} (train a smaller generator)")
    keras.saving.load_model(str(src), safe_mode=True, compile=False)  # must load without unsafe deserialisation
    cfg = RunConfig.load(cfg_path)
    extra = dict(demo=name == "demo", bundled=name, label=kind["label"], clinical_use=False, bundled_from=src.name,
                 trained_on=trained_on(cfg, name))
    data_dir = Path(str(cfg.extra.get("data_dir", "")))
    if data_dir.is_absolute() and data_dir.is_relative_to(ROOT):  # no machine-specific paths in the repo
        extra["data_dir"] = str(data_dir.relative_to(ROOT))
    if scores is not None:
        extra["scores"] = scores
    if command:
        extra["trained_with"] = command
    cfg = cfg.replace(**extra)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private
    try:
        shutil.copyfile(src, tmp / "generator.keras")
        cfg.save(tmp)
        notes = [f"# {kind['title']}\n\n**{kind['label'][0].upper() + kind['label'][1:]}.** {kind['what']}\n",
                 f"Load it with `--model bundled:{name}` (generate.py, evaluate.py) or"
                 f" `python export_savedmodel.py --bundled {name} ...`.\n"]
        if command:
            notes.append(f"Trained with `{command}`; bundled with `python tools/bundle_demo_model.py --name {name}`.\n")
        notes.append("Trained on:\n\n```json\n" + json.dumps(cfg.extra["trained_on"], indent=1) + "\n```\n")
        if scores is not None:
            notes.append(f"Scores ({kind['scores_of']}):\n\n```json\n" + json.dumps(scores, indent=1) + "\n```\n")
        (tmp / "README.md").write_text("\n".join(notes))
        replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def define_flags(fv: flags.FlagValues) -> None:
    """The command line, defined in `fv` (importing `bundle` defines no absl flag)."""
    d = dict(flag_values=fv)
    flags.DEFINE_string("model", None, "Model directory written by train_keras.py (its --model_dir).", required=True,
                        **d)
    flags.DEFINE_alias("model_dir", "model", **d)  # its name before every program read a model with --model
    flags.DEFINE_enum("name", "demo", sorted(KINDS), "Which bundled model: demo (phantoms) or real (IBSI STS).", **d)
    flags.DEFINE_string("dest", None, "Destination folder (default ctpet_srgan/assets/<name>_model).", **d)
    flags.DEFINE_string("scores_json", None, "Optional JSON of evaluation scores to record in run_config.json.", **d)
    flags.DEFINE_string("command", None, "The command that trained the model (recorded in run_config.json).", **d)
    flags.DEFINE_float("max_mb", 8.0, "Refuse a generator file larger than this.", **d)


def _bundle(F: flags.FlagValues) -> int:
    scores = json.loads(Path(F.scores_json).read_text()) if F.scores_json else None
    out = bundle(Path(F.model), Path(F.dest) if F.dest else None, name=F.name, scores=scores, command=F.command,
                 max_mb=F.max_mb)
    print(f"bundled {F.model} -> {out} ({KINDS[F.name]['label']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python tools/bundle_demo_model.py ARGS` in-process (argv: the arguments after the program name); the exit
    status (2 with one line `PATH: problem` on stderr for bad input or flags)."""
    return cli.main(define_flags, _bundle, argv, prog="tools/bundle_demo_model.py")


if __name__ == "__main__":
    cli.run(define_flags, _bundle)
