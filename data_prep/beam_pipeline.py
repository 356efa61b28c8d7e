"""`python -m data_prep convert ... --runner=direct|<Beam runner>`: the preparation as an Apache Beam pipeline.

One code path with the local process pool: every study goes through the same pure `convert.prepare_study`; the
splits are `convert.assign_splits` of the prepared studies' hashes; the shards follow `convert.shard_layout` (shard i of
a split holds its examples i*shard_size.. in (study hash, slice index) order) and the manifest is
`convert.build_manifest`. So a Beam run gives the local runner's set record for record (and shard for shard).

    Create(specs) | Reshuffle | FlatMap(prepare_study)  -> slices (hash, k, bytes) + studies {summary | error}
    studies -> slice counts -> side input: the splits and the shard layout
    slices -> (shard file, (index, bytes)) | GroupByKey | write each shard (temp + rename, by a worker)
    studies + written shards -> OUT/.beam/<run>/results*.jsonl (read back by the driver)

The driver writes manifest.json LAST, only when the pipeline finished and the shards written are exactly the
planned ones; a failed or partial run leaves no manifest. A study that fails on a worker is caught there, so it
neither fails nor retries the run: as with the local runner it is reported by its hash and skipped (the manifest's
`skipped`), and only when every study fails, or any with `strict`, is the run an error (no manifest, no shards).

Shards are not written through `beam.io.WriteToTFRecord`: its shard count is fixed when the pipeline is built, before
the example counts are known, and it puts records in shards in no set order, so neither the local runner's layout
nor the manifest's per-shard counts would follow. Apache Beam is an optional extra (requirements-beam.txt); this
module imports it lazily, so data_prep imports without it.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ctpet_srgan import records
from ctpet_srgan.atomic import atomic_path, write_json_atomic
from ctpet_srgan.errors import InputError
from data_prep import convert
from data_prep.convert import ConvertConfig, StudySpec

_LOG = logging.getLogger(__name__)
BEAM_DIR = ".beam"  # OUT/.beam/<run id>/: a run's results files, removed when it finishes
MISSING = "Apache Beam is not installed; pip install -r requirements-beam.txt (or pip install '.[beam]')"
_STUDY = "study"


def beam_available() -> bool:
    """Whether apache_beam imports here."""
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        return False
    return True


def _import_beam():
    try:
        import apache_beam as beam
    except ImportError as e:
        raise ImportError(MISSING) from e
    return beam


# --------------------------------------------------------------------------------------------- worker side
def prepare_elements(spec: StudySpec, cfg: ConvertConfig) -> Iterator[Any]:
    """One study on a worker: its slices (hash, slice index, serialized example) as the main output and one
    tagged `study` record, {"study": hash, "summary": ...} or {"study": hash, "error": "..."}; never raises for a
    bad study, so one failure does not fail (or retry) the run."""
    from apache_beam import pvalue

    try:
        res = convert.prepare_study(spec, cfg)
    except Exception as e:  # noqa: BLE001 - reported by hash in the run's summary, other studies are kept
        _LOG.warning("study %s: FAILED: %s", spec.key, e)
        problem = e.problem if isinstance(e, InputError) else str(e)  # the manifest's, without paths
        yield pvalue.TaggedOutput(_STUDY, {"study": spec.key, "error": str(e), "problem": problem})
        return
    yield pvalue.TaggedOutput(_STUDY, {"study": spec.key, "summary": res.summary})
    for k, ex in enumerate(res.examples):
        yield spec.key, k, ex


def shard_plan(slices: dict[str, int], val_fraction: float, test_fraction: float, split_seed: int | None,
               shard_size: int, compression: str) -> tuple[dict[str, tuple[str, int]], dict[str, list[str]]]:
    """The splits and shard layout as lookups: study hash -> (split, index of its first example in the split);
    split -> its shard files.

    Args:
        slices: prepared study hash -> its number of examples (the studies that failed are not in it).
    """
    keys = sorted(slices)
    split_of = convert.assign_splits(keys, val_fraction, test_fraction, split_seed, log=lambda s: None)
    layout = convert.shard_layout(keys, slices, split_of, shard_size, compression)
    first, files = {}, {}
    for split, s in layout.items():
        files[split] = [sh["file"] for sh in s["shards"]]
        n = 0
        for k in s["studies"]:
            first[k] = (split, n)
            n += slices[k]
    return first, files


def to_shard(element: tuple[str, int, bytes], plan, shard_size: int) -> tuple[str, tuple[int, bytes]]:
    """(hash, k, bytes) -> (its shard file, (its index in the split, bytes))."""
    key, k, ex = element
    first, files = plan
    split, start = first[key]
    i = start + k
    return files[split][i // shard_size], (i, ex)


def write_tfrecord(path: Path, examples: Iterable[bytes], compression: str = "") -> None:
    """A TFRecord file (GZIP or not) written atomically with Beam's TFRecord encoder, not TensorFlow's: a worker
    that imports TensorFlow spends seconds on it (19 s on the loaded 2-core machine here) for nothing else.
    Uncompressed, the bytes are TensorFlow's (the format is fixed); gzip: the same records, another gzip header."""
    from apache_beam.io.tfrecordio import _TFRecordUtil  # crc32c from google-crc32c (requirements-beam.txt)

    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        if compression == "GZIP":
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:  # leaves `raw` open
                for ex in examples:
                    _TFRecordUtil.write_record(f, ex)
        else:
            for ex in examples:
                _TFRecordUtil.write_record(raw, ex)
        raw.flush()
        os.fsync(raw.fileno())


def write_shard(item: tuple[str, Iterable[tuple[int, bytes]]], out: str, compression: str) -> dict[str, Any]:
    """Writes one shard (its examples in split order) atomically into OUT; returns {"shard": name, "examples": n}."""
    name, indexed = item
    examples = [ex for _, ex in sorted(indexed, key=lambda t: t[0])]
    write_tfrecord(Path(out) / name, examples, compression)
    return {"shard": name, "examples": len(examples)}


# --------------------------------------------------------------------------------------------- driver side
def _options(runner: str, pipeline_args: Sequence[str], workers: int):
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(pipeline_args)
    if _is_direct(runner) and workers > 1 and not any(a.startswith("--direct_num_workers") for a in args):
        args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    if _is_direct(runner) and not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        args += ["--default_sdk_harness_log_level=WARNING"]  # local worker processes: no INFO chatter on stderr
    if not _is_direct(runner):
        args += [f"--runner={runner}"]
    return PipelineOptions(args)


def _is_direct(runner: str) -> bool:
    return runner.lower() in ("direct", "directrunner")


def _direct_runner(options):
    """Beam's DirectRunner minus its first try, the Prism runner, which downloads a binary at run time: the
    FnApiRunner it falls back to (honours --direct_running_mode and --direct_num_workers)."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=info)


def build_pipeline(p, specs: Sequence[StudySpec], cfg: ConvertConfig, out: str, results_prefix: str, *,
                   val_fraction: float, test_fraction: float, split_seed: int | None, shard_size: int,
                   compression: str) -> None:
    """Adds the preparation to pipeline `p` (see the module doc)."""
    beam = _import_beam()
    from apache_beam.pvalue import AsSingleton

    prepared = (
        p
        | "Studies" >> beam.Create(list(specs))
        | "OneStudyPerWorker" >> beam.Reshuffle()
        | "Prepare" >> beam.FlatMap(prepare_elements, cfg).with_outputs(_STUDY, main="slices")
    )
    studies = prepared[_STUDY]
    plan = (
        studies
        | "Prepared" >> beam.Filter(lambda r: "summary" in r)
        | "SliceCounts" >> beam.Map(lambda r: (r["study"], int(r["summary"]["slices"])))
        | "AllCounts" >> beam.combiners.ToDict()
        | "Layout" >> beam.Map(shard_plan, val_fraction, test_fraction, split_seed, shard_size, compression)
    )
    written = (
        prepared.slices
        | "ToShard" >> beam.Map(to_shard, AsSingleton(plan), shard_size)
        | "ByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.Map(write_shard, out, compression)
    )
    (
        (studies, written)
        | "Results" >> beam.Flatten()
        | "AsJson" >> beam.Map(lambda r: json.dumps(r, sort_keys=True))
        | "WriteResults" >> beam.io.WriteToText(results_prefix, file_name_suffix=".jsonl")
    )


def convert_beam(
    specs: Sequence[StudySpec],
    out_dir: str | os.PathLike,
    cfg: ConvertConfig = ConvertConfig(),
    *,
    runner: str = "direct",
    pipeline_args: Sequence[str] = (),
    workers: int = 1,
    shard_size: int = 256,
    compression: str = "",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int | None = None,
    strict: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = _LOG.info,
) -> dict[str, Any]:
    """`convert.convert` on a Beam runner: prepares `specs` into OUT_DIR and returns the manifest (written last).

    Args:
        runner: "direct" (Beam's local FnApiRunner) or any Beam runner name (DataflowRunner, FlinkRunner, ...).
        pipeline_args: Beam pipeline options, e.g. ["--direct_running_mode=multi_processing"].
        workers: direct runner only, when pipeline_args do not set it: worker processes (multi-processing mode).
        OUT_DIR and the studies' files must be on a filesystem that the driver and every worker mount.
    Returns:
        The manifest (failed studies listed under `skipped`); InputError naming the failed studies by hash when
        all failed or, with `strict`, any did (no manifest and no shards then).
    """
    beam = _import_beam()
    if "://" in str(out_dir):
        raise ValueError(f"{out_dir}: the output must be a path on a filesystem the driver and workers mount")
    out = Path(out_dir).resolve()
    compression = {"none": "", "": "", "gzip": "GZIP"}.get(str(compression).lower(), None)
    if compression is None:
        raise ValueError("compression must be GZIP or none")
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    if overwrite:
        convert._clear(out)
    elif (out / records.MANIFEST).exists():
        log(f"{out}: already complete (manifest.json present); nothing to do (use --overwrite to redo)")
        return records.read_manifest(out)
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise ValueError("the same study is listed twice")
    if not specs:
        raise ValueError("no studies to convert")
    shutil.rmtree(out / BEAM_DIR, ignore_errors=True)  # results of an earlier run that was killed
    tmp = out / BEAM_DIR / uuid.uuid4().hex
    tmp.mkdir(parents=True)
    options = _options(runner, pipeline_args, workers)
    p = beam.Pipeline(runner=_direct_runner(options) if _is_direct(runner) else None, options=options)
    build_pipeline(p, specs, cfg, str(out), str(tmp / "results"), val_fraction=val_fraction,
                   test_fraction=test_fraction, split_seed=split_seed, shard_size=shard_size, compression=compression)
    log(f"running the preparation of {len(specs)} studies on Beam ({runner})")
    state = p.run().wait_until_finish()
    if str(state).split(".")[-1] != "DONE":
        raise RuntimeError(f"{out}: the Beam pipeline ended {state}; no manifest written")

    results = [json.loads(line) for f in sorted(tmp.glob("results*.jsonl")) for line in f.read_text().splitlines()]
    shutil.rmtree(out / BEAM_DIR, ignore_errors=True)
    summaries = {r["study"]: r["summary"] for r in results if "summary" in r}
    failed = {r["study"]: r for r in results if "error" in r}
    failed.update({k: {"error": "no result from the pipeline", "problem": "no result from the pipeline"}
                   for k in keys if k not in summaries and k not in failed})
    written = {r["shard"]: r["examples"] for r in results if "shard" in r}
    for k in sorted(keys):
        log(f"study {k}: FAILED: {failed[k]['error']}" if k in failed else f"study {k}: done")
    if failed and (strict or not summaries):
        for name in written:
            (out / name).unlink(missing_ok=True)
        raise InputError(out, f"{len(failed)} of {len(specs)} studies failed, no manifest written (fix them and"
                              " rerun): " + "; ".join(f"study {k}: {failed[k]['error']}" for k in sorted(failed)))
    if failed:
        log(f"warning: {len(failed)} of {len(specs)} studies skipped (see the manifest's 'skipped'): "
            + ", ".join(sorted(failed)))
    ok = sorted(summaries)
    split_of = convert.assign_splits(ok, val_fraction, test_fraction, split_seed, log)
    splits = convert.shard_layout(ok, {k: s["slices"] for k, s in summaries.items()}, split_of, shard_size,
                                  compression)
    planned = {sh["file"]: sh["examples"] for s in splits.values() for sh in s["shards"]}
    if written != planned:
        raise RuntimeError(f"{out}: the pipeline wrote shards {sorted(written.items())}, planned"
                           f" {sorted(planned.items())}; no manifest written")
    for p_ in out.iterdir():  # shards of an earlier run with other counts
        if convert.SHARD_RE.match(p_.name) and p_.name not in planned:
            p_.unlink()
    skipped = [{"study": k, "problem": failed[k]["problem"]} for k in sorted(failed)]
    manifest = convert.build_manifest(ok, summaries, split_of, splits, cfg, compression, shard_size, val_fraction,
                                      test_fraction, log, split_seed=split_seed, skipped=skipped)
    write_json_atomic(out / records.MANIFEST, manifest)
    log(f"{out}: {manifest['examples']} slices from {len(ok)} studies; "
        + ", ".join(f"{s} {splits[s]['examples']} ({len(splits[s]['studies'])} studies)" for s in records.SPLITS))
    return manifest
