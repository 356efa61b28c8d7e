"""`python -m data_prep inspect DIR`: what a prepared data set holds (or how far an unfinished one got)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ctpet_srgan.manifest import MANIFEST, Manifest
from data_prep.convert import prepared_studies


def _count_records(path: Path, compression: str) -> int:
    from ctpet_srgan.tf_quiet import import_tensorflow

    tf = import_tensorflow()

    return sum(1 for _ in tf.data.TFRecordDataset(str(path), compression_type=compression))


def inspect(data_dir: str | Path, *, verify: bool = False) -> dict[str, Any]:
    """Summary of DATA_DIR. `verify` also counts the records in every shard against the manifest (and says so
    in "verified"). InputError if DATA_DIR does not exist or is not a folder."""
    from ctpet_srgan.errors import InputError

    d = Path(data_dir)
    if not d.exists():
        raise InputError(d, "does not exist")
    if not d.is_dir():
        raise InputError(d, "is not a folder (give the --out folder of data_prep convert)")
    if not (d / MANIFEST).exists():
        done = prepared_studies(d)
        return {"dir": str(d), "complete": False, "prepared_studies": len(done),
                "problems": ["no manifest.json: missing or unfinished (rerun convert with the same --out)"]}
    m = Manifest.load(d)
    problems = []
    splits = {}
    counted = {"shards": 0, "records": 0}
    for split, s in m.splits.items():
        for sh in s.shards:
            p = d / sh.file
            if not p.exists():
                problems.append(f"{sh.file}: missing")
            elif verify:
                n = _count_records(p, m.compression)
                counted["shards"] += 1
                counted["records"] += n
                if n != sh.examples:
                    problems.append(f"{sh.file}: {n} records, manifest says {sh.examples}")
        if sum(sh.examples for sh in s.shards) != s.examples:
            problems.append(f"split {split}: shard counts do not add up to {s.examples}")
        splits[split] = {"studies": len(s.studies), "examples": s.examples, "shards": len(s.shards)}
    studies = m.studies.values()
    return {
        "dir": str(d),
        "complete": not problems,
        "schema_version": m.schema_version,
        "scale": m.scale,
        "hr_spacing_mm": None if m.hr_spacing_mm is None else list(m.hr_spacing_mm),
        "lr_spacing_mm": None if m.lr_spacing_mm is None else list(m.lr_spacing_mm),
        "hr_shapes": sorted({s.hr_shape for s in studies if s.hr_shape is not None}),
        "compression": m.compression or "none",
        "studies": len(studies),
        "with_truth": sum(1 for s in studies if s.has_truth),
        "lesions": sum(len(s.lesions) for s in studies),
        "lesion_free_studies": sum(1 for s in studies if not s.lesions),
        "examples": sum(s.examples for s in m.splits.values()),
        "splits": splits,
        "degradation": dict(m.degradation),
        "normalization": m.normalization.to_dict(),
        "problems": problems,
        "verified": (f"read every record of {counted['shards']} shards ({counted['records']} records) and compared "
                     "the counts with the manifest") if verify else None,
    }


def format_report(info: dict[str, Any]) -> str:
    """Human-readable lines for `inspect`'s dict."""
    if "scale" not in info:
        return "\n".join([f"{info['dir']}: INCOMPLETE ({info['prepared_studies']} studies prepared so far)"]
                         + [f"  problem: {p}" for p in info["problems"]])
    lines = [
        f"{info['dir']}: {'complete' if info['complete'] else 'PROBLEMS'}, schema {info['schema_version']}",
        f"  scale x{info['scale']}, HR spacing {info['hr_spacing_mm']} mm, LR spacing {info['lr_spacing_mm']} mm,"
        f" HR slice shapes {[list(s) for s in info['hr_shapes']]}",
        f"  {info['studies']} studies ({info['with_truth']} with HR PET truth, {info['lesions']} lesions,"
        f" {info['lesion_free_studies']} lesion-free), {info['examples']} slices, compression {info['compression']}",
    ]
    for split, s in info["splits"].items():
        lines.append(f"  {split:5s}: {s['studies']} studies, {s['examples']} slices in {s['shards']} shards")
    lines.append(f"  degradation: {json.dumps(info['degradation'], sort_keys=True)}")
    if info.get("verified"):
        lines.append(f"  verified: {info['verified']}")
    lines += [f"  problem: {p}" for p in info["problems"]]
    return "\n".join(lines)
