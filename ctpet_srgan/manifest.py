"""manifest.json, the description of a prepared data set, as a typed and validated value.

`Manifest.load(DIR)` reads and checks DIR/manifest.json (required keys and their types, scale 2 or 4, every split
with its studies, example count and list of shards, every study of a split described under `studies`) and raises
an InputError naming the file and the problem. `save(DIR)` writes it atomically (manifest.json last is what makes a
set complete). Manifests written before `schema_version` existed load as version 1; keys this code does not know
are kept (in `extra`, and in each study's `info`), so load + save loses nothing. Written JSON is key for key what
`data_prep convert` wrote before this module existed (sorted keys, indent 2).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping

from ctpet_srgan.errors import InputError
from ctpet_srgan.normalization import Normalization

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
SCALES = (2, 4)
_TOP_KEYS = ("schema_version", "scale", "normalization", "splits", "studies", "hr_spacing_mm", "lr_spacing_mm",
             "degradation", "compression", "shard_size", "split_fractions", "split_seed", "examples", "skipped")


def is_int(v: Any) -> bool:
    """An integer and not a bool (JSON true/false)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    """A finite number and not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def need(cond: bool, source: Any, problem: str) -> None:
    """InputError("SOURCE: problem") unless `cond` (the checks of manifest and run_config files)."""
    if not cond:
        raise InputError(source, problem)


def spacing(v: Any, key: str, source: Any) -> tuple[float, ...] | None:
    """A checked voxel size entry (mm, 2 or 3 positive numbers) as a tuple; None stays None."""
    if v is None:
        return None
    need(isinstance(v, list) and len(v) in (2, 3) and all(is_num(x) and x > 0 for x in v), source,
          f"{key} must be a list of 2 or 3 positive numbers (mm), got {v!r}")
    return tuple(v)


def normalization_from(d: Any, source: Any) -> Normalization:
    """The Normalization of a manifest / run_config entry; unknown constants are refused (they would change the
    mapping to the network's units), missing ones take the defaults."""
    need(isinstance(d, dict), source, f"normalization must be an object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(Normalization)}
    unknown = sorted(set(d) - names)
    need(not unknown, source, f"normalization has unknown constants {unknown} (written by a newer version?)")
    need(all(is_num(v) for v in d.values()), source, f"normalization constants must be numbers, got {d!r}")
    norm = Normalization(**{k: float(v) for k, v in d.items()})
    need(norm.ct_scale_hu > 0 and norm.pet_scale_suv > 0, source, "normalization scales must be > 0")
    return norm


@dataclasses.dataclass(frozen=True)
class Shard:
    """One TFRecord file of a split: its name (relative to the set's folder) and its number of examples."""

    file: str
    examples: int

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "examples": self.examples}


@dataclasses.dataclass(frozen=True)
class Split:
    """A split: its studies (hashes, sorted), its example count and its shards in order."""

    studies: tuple[str, ...]
    examples: int
    shards: tuple[Shard, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"studies": list(self.studies), "examples": self.examples, "shards": [s.to_dict() for s in self.shards]}


@dataclasses.dataclass(frozen=True)
class StudyEntry:
    """What the manifest says about one study (named by its hash).

    split and slices are always there; `info` holds everything else exactly as written (hr_shape, has_truth,
    lesions, tumour volumes, a guided world's entries, ...), read through the properties below.
    """

    split: str
    slices: int
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def has_truth(self) -> bool | None:
        """Whether the HR PET is a true high-resolution PET (phantom); None when the manifest does not say."""
        v = self.info.get("has_truth")
        return None if v is None else bool(v)

    @property
    def has_mask(self) -> bool:
        """Whether the records carry a tumour mask."""
        return bool(self.info.get("has_mask"))

    @property
    def hr_shape(self) -> tuple[int, int] | None:
        """(rows, columns) of the HR slices."""
        v = self.info.get("hr_shape")
        return None if v is None else (int(v[0]), int(v[1]))

    @property
    def lesions(self) -> list[dict[str, Any]]:
        """The study's lesions (center_mm LPS, diameter_mm, uptake_ratio, ...); [] when lesion-free."""
        return list(self.info.get("lesions") or [])

    @property
    def world(self) -> str | None:
        """The phantom world ("guided") of a guided study; None for the default world and patients."""
        return self.info.get("world")

    def to_dict(self) -> dict[str, Any]:
        return {**self.info, "split": self.split, "slices": self.slices}


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A prepared data set's manifest.json.

    scale: HR/LR in-plane factor (2 or 4); normalization: constants to the network's units; splits: name ->
    Split; studies: hash -> StudyEntry; hr/lr_spacing_mm: voxel sizes (mm, x y z) of the first study; degradation:
    how LR was made from HR; compression: "" or "GZIP"; split_seed: seed of the split by study (None: sorted-hash
    order); examples: slices in all splits; skipped: {study, problem} of studies left out; extra: unknown keys.
    """

    scale: int
    normalization: Normalization
    splits: Mapping[str, Split]
    studies: Mapping[str, StudyEntry]
    schema_version: int = SCHEMA_VERSION
    hr_spacing_mm: tuple[float, ...] | None = None
    lr_spacing_mm: tuple[float, ...] | None = None
    degradation: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    compression: str = ""
    shard_size: int | None = None
    split_fractions: Mapping[str, float] | None = None
    split_seed: int | None = None
    examples: int = 0
    skipped: tuple[Mapping[str, Any], ...] = ()
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, source: Any = MANIFEST) -> "Manifest":
        """Checks a manifest dict and types it. `source` names the file in errors (InputError "SOURCE: problem")."""
        need(isinstance(d, dict), source, f"a manifest is a JSON object, got {type(d).__name__}")
        version = d.get("schema_version", 1)  # manifests from before the field existed are version 1
        need(version == SCHEMA_VERSION, source, f"schema_version {version!r}, this code reads {SCHEMA_VERSION}")
        missing = [k for k in ("scale", "normalization", "splits", "studies") if k not in d]
        need(not missing, source, f"missing keys {missing}")
        need(d["scale"] in SCALES and is_int(d["scale"]), source, f"scale must be 2 or 4, got {d['scale']!r}")
        need(isinstance(d["studies"], dict), source, "studies must be an object (study hash -> entry)")
        studies = {h: _study(h, e, source) for h, e in d["studies"].items()}
        need(isinstance(d["splits"], dict), source, "splits must be an object (split name -> split)")
        splits = {name: _split(name, s, source) for name, s in d["splits"].items()}
        for name, s in splits.items():
            for h in s.studies:
                need(h in studies, source, f"split {name}: study {h} is not described under studies")
                said = studies[h].split
                need(said == name, source, f"study {h}: in split {name}, its entry says {said}")
        compression = d.get("compression") or ""
        need(compression in ("", "GZIP"), source, f"compression must be '' or 'GZIP', got {compression!r}")
        for key in ("shard_size", "split_seed"):
            need(d.get(key) is None or is_int(d[key]), source, f"{key} must be an integer, got {d.get(key)!r}")
        for key in ("degradation", "split_fractions"):
            need(d.get(key) is None or isinstance(d[key], dict), source, f"{key} must be an object")
        skipped = d.get("skipped") or []
        need(isinstance(skipped, list) and all(isinstance(x, dict) and "study" in x for x in skipped), source,
              "skipped must be a list of {study, problem}")
        examples = d.get("examples", sum(s.examples for s in splits.values()))
        need(is_int(examples) and examples >= 0, source, f"examples must be a count, got {examples!r}")
        return cls(
            scale=d["scale"], normalization=normalization_from(d["normalization"], source), splits=splits,
            studies=studies, schema_version=version,
            hr_spacing_mm=spacing(d.get("hr_spacing_mm"), "hr_spacing_mm", source),
            lr_spacing_mm=spacing(d.get("lr_spacing_mm"), "lr_spacing_mm", source),
            degradation=d.get("degradation") or {}, compression=compression, shard_size=d.get("shard_size"),
            split_fractions=d.get("split_fractions"), split_seed=d.get("split_seed"), examples=examples,
            skipped=tuple(skipped), extra={k: v for k, v in d.items() if k not in _TOP_KEYS},
        )

    @classmethod
    def load(cls, dir_or_path: str | Path) -> "Manifest":
        """Reads and checks DIR/manifest.json (or the file given); a set without one is incomplete and is refused.

        Raises:
            FileNotFoundError: no manifest (the set is missing or its preparation did not finish).
            InputError: not JSON, another schema version, or a key missing or of the wrong type (names the file).
        """
        p = Path(dir_or_path)
        path = p if p.suffix == ".json" and not p.is_dir() else p / MANIFEST
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no manifest.json; the data set is missing or its preparation did not finish"
                " (rerun `python -m data_prep convert` with the same --out to resume)"
            )
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(path, f"not valid JSON ({e})") from e
        return cls.from_dict(d, path)

    def to_dict(self) -> dict[str, Any]:
        """The manifest.json object (every known key, unknown ones as they were read)."""
        return {
            **self.extra,
            "schema_version": self.schema_version,
            "scale": self.scale,
            "hr_spacing_mm": None if self.hr_spacing_mm is None else list(self.hr_spacing_mm),
            "lr_spacing_mm": None if self.lr_spacing_mm is None else list(self.lr_spacing_mm),
            "normalization": self.normalization.to_dict(),
            "degradation": dict(self.degradation),
            "compression": self.compression,
            "shard_size": self.shard_size,
            "split_fractions": None if self.split_fractions is None else dict(self.split_fractions),
            "split_seed": self.split_seed,
            "examples": self.examples,
            "splits": {k: s.to_dict() for k, s in self.splits.items()},
            "studies": {h: e.to_dict() for h, e in self.studies.items()},
            "skipped": [dict(x) for x in self.skipped],
        }

    def save(self, data_dir: str | Path) -> Path:
        """Writes DATA_DIR/manifest.json atomically (sorted keys, indent 2) and returns its path."""
        from ctpet_srgan.atomic import write_json_atomic

        path = Path(data_dir) / MANIFEST
        write_json_atomic(path, self.to_dict())
        return path

    def split(self, name: str, data_dir: Any = None) -> Split:
        """The split `name`; InputError naming DATA_DIR (or the manifest) and the splits there are if it has none."""
        if name not in self.splits:
            raise InputError(data_dir or MANIFEST, f"no split {name!r}; it has {sorted(self.splits)}")
        return self.splits[name]

    def shard_paths(self, data_dir: str | Path, split: str) -> list[str]:
        """Paths of the shards of `split` under DATA_DIR, checked to exist (FileNotFoundError naming the missing)."""
        paths = [str(Path(data_dir) / s.file) for s in self.split(split, data_dir).shards]
        missing = [p for p in paths if not Path(p).exists()]
        if missing:
            raise FileNotFoundError(f"{data_dir}: shards listed in manifest.json are missing: {missing}")
        return paths

    @property
    def is_guided(self) -> bool:
        """Whether the set holds guided-world phantom studies."""
        return any(e.world == "guided" for e in self.studies.values())


def _study(h: str, e: Any, source: Any) -> StudyEntry:
    need(isinstance(e, dict), source, f"study {h}: its entry must be an object")
    need(e.get("split") in SPLITS, source, f"study {h}: split must be one of {list(SPLITS)}, got {e.get('split')!r}")
    need(is_int(e.get("slices")) and e["slices"] >= 0, source,
          f"study {h}: slices must be a count, got {e.get('slices')!r}")
    need(isinstance(e.get("lesions") or [], list), source, f"study {h}: lesions must be a list")
    return StudyEntry(e["split"], e["slices"], {k: v for k, v in e.items() if k not in ("split", "slices")})


def _split(name: str, s: Any, source: Any) -> Split:
    need(name in SPLITS, source, f"unknown split {name!r} (splits are {list(SPLITS)})")
    need(isinstance(s, dict), source, f"split {name}: must be an object")
    missing = [k for k in ("studies", "examples", "shards") if k not in s]
    need(not missing, source, f"split {name}: missing keys {missing}")
    need(isinstance(s["studies"], list) and all(isinstance(h, str) for h in s["studies"]), source,
          f"split {name}: studies must be a list of study hashes")
    need(is_int(s["examples"]) and s["examples"] >= 0, source, f"split {name}: examples must be a count")
    need(isinstance(s["shards"], list), source, f"split {name}: shards must be a list")
    shards = []
    for i, sh in enumerate(s["shards"]):
        ok = isinstance(sh, dict) and isinstance(sh.get("file"), str) and is_int(sh.get("examples"))
        need(ok, source, f"split {name}: shard {i} must be {{file, examples}}, got {sh!r}")
        need(Path(sh["file"]).name == sh["file"] and not sh["file"].startswith("."), source,
              f"split {name}: shard file {sh['file']!r} must be a plain file name in the set's folder")
        shards.append(Shard(sh["file"], sh["examples"]))
    need(s["examples"] == 0 or shards, source, f"split {name}: {s['examples']} examples but no shards listed")
    return Split(tuple(s["studies"]), s["examples"], tuple(shards))
