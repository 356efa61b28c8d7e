"""run_config.json, what a trained model is (scale, generator, normalisation, provenance), as a typed value.

The same document travels with every form of a model: train_keras.py writes MODEL_DIR/run_config.json, a bundled
model carries one (tools/bundle_demo_model.py adds label, demo, trained_on, ...), and an export's
assets/metadata.json holds its keys plus the serving signature's description (ctpet_srgan.export).
`RunConfig.load(path)` finds and checks it for any of them (a model folder, a .keras file beside a run_config.json,
a SavedModel version folder, or the JSON file itself) and raises an InputError naming the file and the problem;
`save` writes atomically. Files from before `schema_version` existed load as version 1, and keys this code does
not know are kept (`extra`), so load + save loses nothing. Which CT a generator takes is `RunConfig.ct_input`
(from the generator's ct_mode by `models.CT_INPUT_OF_MODE`, the one place that knows), not re-derived by readers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

from ctpet_srgan.errors import InputError
from ctpet_srgan.manifest import SCALES, is_int, need, normalization_from, spacing
from ctpet_srgan.normalization import DEFAULT, Normalization

SCHEMA_VERSION = 1
RUN_CONFIG = "run_config.json"
EXPORT_METADATA = Path("assets") / "metadata.json"
CT_INPUTS = ("hr", "lr", None)
_TYPED = ("schema_version", "scale", "normalization", "generator")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A model's run_config.json.

    scale: HR/LR in-plane factor (2 or 4); normalization: constants to the network's units; generator: the
    GeneratorConfig dict (scale, filters, num_blocks, ct_mode), None where the model's file alone defines it
    (an export's metadata may omit it); extra: every other key as written (hr/lr_spacing_mm, data_dir, steps,
    git_commit, vgg, train, label, demo, trained_on, scores, an export's ct_input/inputs/outputs, ...).
    """

    scale: int
    normalization: Normalization = DEFAULT
    generator: Mapping[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, source: Any = RUN_CONFIG) -> "RunConfig":
        """Checks a run_config dict and types it. `source` names the file in errors ("SOURCE: problem").

        A missing scale is the generator's; a missing normalization is the default one (as before this class).
        """
        need(isinstance(d, dict), source, f"a run_config is a JSON object, got {type(d).__name__}")
        version = d.get("schema_version", 1)  # files from before the field existed are version 1
        need(version == SCHEMA_VERSION, source, f"schema_version {version!r}, this code reads {SCHEMA_VERSION}")
        gen = d.get("generator")
        if gen is not None:
            gen = dict(gen) if isinstance(gen, dict) else gen
            _check_generator(gen, source)
        scale = d.get("scale") or (gen or {}).get("scale")
        need(scale is not None, source, "no scale (neither scale nor generator.scale)")
        need(is_int(scale) and scale in SCALES, source, f"scale must be 2 or 4, got {scale!r}")
        need(gen is None or gen.get("scale", scale) == scale, source,
              f"scale {scale} but generator.scale {(gen or {}).get('scale')}")
        norm = normalization_from(d.get("normalization") or {}, source)
        for key in ("hr_spacing_mm", "lr_spacing_mm"):
            spacing(d.get(key), key, source)
        for key in ("vgg", "label", "data_dir", "git_commit"):
            need(d.get(key) is None or isinstance(d[key], str), source, f"{key} must be a string, got {d.get(key)!r}")
        need(d.get("demo") is None or isinstance(d["demo"], bool), source, "demo must be true or false")
        need(d.get("ct_input") in CT_INPUTS, source, f"ct_input must be 'hr', 'lr' or null, got {d.get('ct_input')!r}")
        cfg = cls(scale=scale, normalization=norm, generator=gen, schema_version=version,
                  extra={k: v for k, v in d.items() if k not in _TYPED})
        if gen is not None and "ct_input" in d:
            need(d["ct_input"] == cfg.ct_input, source,
                  f"ct_input {d['ct_input']!r} but generator ct_mode {gen.get('ct_mode')!r} takes {cfg.ct_input!r}")
        return cfg

    @classmethod
    def coerce(cls, cfg: "RunConfig | Mapping[str, Any]", source: Any = RUN_CONFIG) -> "RunConfig":
        """`cfg` itself, or the RunConfig of a run_config dict (checked)."""
        return cfg if isinstance(cfg, RunConfig) else cls.from_dict(dict(cfg), source)

    @staticmethod
    def find(path: str | Path) -> Path | None:
        """The run_config file of a model: PATH itself (.json), MODEL_DIR/run_config.json, a .keras file's sibling
        run_config.json, or a SavedModel folder's assets/metadata.json; None when there is none."""
        p = Path(path)
        if p.suffix == ".json" and p.is_file():
            return p
        if p.is_dir():
            for cand in (p / RUN_CONFIG, p / EXPORT_METADATA):
                if cand.is_file():
                    return cand
            return None
        cand = p.parent / RUN_CONFIG
        return cand if p.suffix == ".keras" and cand.is_file() else None

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """Reads and checks the run_config of a model (see `find`).

        Raises:
            FileNotFoundError: no run_config there.
            InputError: unreadable JSON, another schema version, or a key missing or of the wrong type.
        """
        found = cls.find(path)
        if found is None:
            raise FileNotFoundError(f"{path}: no {RUN_CONFIG} (a train_keras.py model folder, a .keras file beside a"
                                    f" {RUN_CONFIG}, or a SavedModel export with {EXPORT_METADATA})")
        try:
            d = json.loads(found.read_text())
        except (OSError, ValueError) as e:
            raise InputError(found, f"unreadable JSON ({e})") from e
        return cls.from_dict(d, found)

    def to_dict(self) -> dict[str, Any]:
        """The run_config.json object: schema_version, scale, normalization, generator (when known), the rest as
        it was read."""
        out = {**self.extra, "schema_version": self.schema_version, "scale": self.scale,
               "normalization": self.normalization.to_dict()}
        if self.generator is not None:
            out["generator"] = dict(self.generator)
        return out

    def save(self, dir_or_path: str | Path) -> Path:
        """Writes DIR/run_config.json (or the .json path given) atomically (sorted keys, indent 2); returns it."""
        from ctpet_srgan.atomic import write_json_atomic

        p = Path(dir_or_path)
        path = p if p.suffix == ".json" else p / RUN_CONFIG
        write_json_atomic(path, self.to_dict())
        return path

    def replace(self, **extra: Any) -> "RunConfig":
        """A copy with these keys of `extra` set (label, demo, trained_on, scores, ...), checked again."""
        return RunConfig.from_dict({**self.to_dict(), **extra})

    @property
    def ct_mode(self) -> str | None:
        """The generator's ct_mode ("s2d", "lr", "none"), None when the run_config has no generator."""
        return None if self.generator is None else self.generator.get("ct_mode", "s2d")

    @property
    def ct_input(self) -> str | None:
        """The grid of the CT the model takes: "hr", "lr" or None (PET only), from the generator's ct_mode, else an
        export's recorded ct_input. ValueError when the run_config says neither (ask the model:
        `models.ct_input_of(input_names)`)."""
        if self.generator is not None:
            from ctpet_srgan.models import CT_INPUT_OF_MODE

            return CT_INPUT_OF_MODE[self.ct_mode]
        if "ct_input" in self.extra:
            return self.extra["ct_input"]
        raise ValueError("the run_config has no generator ct_mode or ct_input; the model's inputs decide")

    @property
    def context_slices(self) -> int:
        """The generator's context_slices (slices in per output slice; 1: 2-D, also where no generator is given)."""
        return int((self.generator or {}).get("context_slices", 1))

    def generator_config(self):
        """The models.GeneratorConfig of the generator (ValueError when the run_config has none)."""
        from ctpet_srgan.models import GeneratorConfig

        if self.generator is None:
            raise ValueError("the run_config has no generator config")
        return GeneratorConfig.from_dict(self.generator)

    @property
    def hr_spacing_mm(self) -> list[float] | None:
        """HR voxel size (mm, x y z) of the data the model was trained on, when recorded."""
        return self.extra.get("hr_spacing_mm")

    @property
    def lr_spacing_mm(self) -> list[float] | None:
        """LR voxel size (mm, x y z) of the data the model was trained on, when recorded."""
        return self.extra.get("lr_spacing_mm")

    @property
    def label(self) -> str | None:
        """A bundled model's label ("... not for clinical use")."""
        return self.extra.get("label")

    @property
    def demo(self) -> bool:
        """True for the bundled phantom-trained demo model."""
        return bool(self.extra.get("demo"))

    @property
    def vgg(self) -> str | None:
        """Which VGG19 the content loss used ("none" when there was none; vgg.RUN_CONFIG_KEY)."""
        return self.extra.get("vgg")


def _check_generator(gen: Any, source: Any) -> None:
    """A generator entry must build a models.GeneratorConfig with no key this code does not know."""
    from ctpet_srgan.models import GeneratorConfig

    need(isinstance(gen, dict), source, f"generator must be an object, got {type(gen).__name__}")
    unknown = sorted(set(gen) - {f.name for f in dataclasses.fields(GeneratorConfig)})
    need(not unknown, source, f"generator has unknown keys {unknown} (written by a newer version?)")
    need(all(is_int(gen[k]) for k in ("scale", "filters", "num_blocks") if k in gen), source,
          f"generator scale, filters and num_blocks must be integers, got {gen}")
    try:
        GeneratorConfig.from_dict(gen)
    except (TypeError, ValueError) as e:
        raise InputError(source, f"generator: {e}") from None
