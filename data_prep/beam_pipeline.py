"""`python -m data_prep convert ... --runner=direct|<Beam runner>`: the preparation as an Apache Beam pipeline.

One code path with the local process pool: every study goes through the same pure `convert.prepare_study`; the
splits are `convert.assign_splits` of the prepared studies' hashes; the shards follow `convert.shard_layout` (shard i of
a split holds its examples i*shard_size.. in (study hash, slice index) order) and the manifest is
`convert.build_manifest`. So a Beam run gives the local runner's set record for record (and shard for shard).

    Create(folders) | Reshuffle | FlatMap(scan headers) | GroupByKey(study hash) | FlatMap(pair)   (a StudyTree)
      or Create(specs)
    -> Reshuffle | FlatMap(prepare_study, or read back from OUT/.work)  -> slices (hash, k, bytes) + studies
    studies -> slice counts -> side input: the splits and the shard layout
    slices -> (shard file, (index, bytes)) | GroupByKey | write each shard (temp + rename, by a worker)
    studies + written shards -> OUT/.beam/<run>/results*.jsonl (read back by the driver)

Given a StudyTree (`--studies ROOT`), the driver only lists the folders (no file opened): workers scan the headers,
group the series by study and pair them exactly as `convert.discover_studies` does (`dicom_io.merge_series`,
`convert.pair_study`). Each prepared study is saved in OUT/.work (the local runner's files) by its worker, so a rerun
of an interrupted or failed run reads it back instead of preparing it again.

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

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ctpet_srgan import records
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
def prepare_elements(spec: StudySpec, cfg: ConvertConfig, work: str | None = None) -> Iterator[Any]:
    """One study on a worker: its slices (hash, slice index, serialized example) as the main output and one
    tagged `study` record, {"study": hash, "summary": ...} or {"study": hash, "error": "..."}; never raises for a
    bad study, so one failure does not fail (or retry) the run.

    With `work` (OUT/.work, the local runner's format): a study an earlier interrupted run prepared is read back
    instead of prepared again (its record says "resumed"), and a newly prepared one is saved there first."""
    from apache_beam import pvalue

    resumed = work is not None and (res := convert.load_prepared(Path(work), spec.key)) is not None
    try:
        if not resumed:
            res = convert.prepare_study(spec, cfg)
            if work is not None:
                convert.save_prepared(res, Path(work))
    except Exception as e:  # noqa: BLE001 - reported by hash in the run's summary, other studies are kept
        _LOG.warning("study %s: FAILED: %s", spec.key, e)
        problem = e.problem if isinstance(e, InputError) else str(e)  # the manifest's, without paths
        yield pvalue.TaggedOutput(_STUDY, {"study": spec.key, "error": str(e), "problem": problem})
        return
    yield pvalue.TaggedOutput(_STUDY, {"study": spec.key, "summary": res.summary, "resumed": resumed})
    for k, ex in enumerate(res.examples):
        yield spec.key, k, ex


def scan_elements(item: tuple[int, tuple[str, tuple[str, ...]]]) -> Iterator[tuple[str, tuple[int, dict]]]:
    """One folder's DICOM headers on a worker (`dicom_io.scan_dicom_folder`): (study hash, (folder index, series))
    per series, to be grouped by study."""
    from ctpet_srgan.dicom_io import scan_dicom_folder

    index, folder = item
    series, n_derived = scan_dicom_folder(folder)
    if n_derived:
        _LOG.warning("%d files without a SeriesInstanceUID in a folder: grouped by what they still say", n_derived)
    for s in series:
        yield records.study_hash(s["study_uid"]), (index, s)


def pair_elements(item: tuple[str, Iterable[tuple[int, dict]]], root: str,
                  allow_unregistered: bool) -> Iterator[Any]:
    """One study's series (from every folder) -> its StudySpec, exactly as `convert.discover_studies` pairs it
    (`dicom_io.merge_series` in walk order, then `convert.pair_study`). Notes (skipped, several PETs) and a refusal
    (not registered) go out as tagged `study` records; a refusal fails the run on the driver."""
    from apache_beam import pvalue

    from ctpet_srgan.dicom_io import merge_series

    key, parts = item
    series = merge_series(s for _, s in sorted(parts, key=lambda t: t[0]))
    notes: list[str] = []
    try:
        spec = convert.pair_study(series, root, allow_unregistered=allow_unregistered, log=notes.append)
    except InputError as e:
        yield pvalue.TaggedOutput(_STUDY, {"study": key, "fatal": e.problem, "path": e.path})
        return
    for n in notes:
        yield pvalue.TaggedOutput(_STUDY, {"study": key, "note": n})
    if spec is not None:
        yield spec


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


write_tfrecord = convert.write_tfrecord  # TFRecords without TensorFlow (google-crc32c), as the local runner


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


def build_pipeline(p, specs: Sequence[StudySpec] | convert.StudyTree, cfg: ConvertConfig, out: str,
                   results_prefix: str, *, val_fraction: float, test_fraction: float, split_seed: int | None,
                   shard_size: int, compression: str, work: str | None = None) -> None:
    """Adds the preparation to pipeline `p` (see the module doc); a StudyTree is scanned and paired by workers."""
    beam = _import_beam()
    from apache_beam.pvalue import AsSingleton

    notes = []
    if isinstance(specs, convert.StudyTree):
        from ctpet_srgan.dicom_io import dicom_folders

        paired = (
            p
            | "Folders" >> beam.Create(list(enumerate(dicom_folders(Path(specs.root)))))
            | "SpreadFolders" >> beam.Reshuffle()
            | "ScanHeaders" >> beam.FlatMap(scan_elements)
            | "ByStudy" >> beam.GroupByKey()
            | "Pair" >> beam.FlatMap(pair_elements, specs.root, specs.allow_unregistered).with_outputs(
                _STUDY, main="specs")
        )
        notes, to_prepare = [paired[_STUDY]], paired.specs
    else:
        to_prepare = p | "Studies" >> beam.Create(list(specs))
    prepared = (
        to_prepare
        | "OneStudyPerWorker" >> beam.Reshuffle()
        | "Prepare" >> beam.FlatMap(prepare_elements, cfg, work).with_outputs(_STUDY, main="slices")
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
        (studies, written, *notes)
        | "Results" >> beam.Flatten()
        | "AsJson" >> beam.Map(lambda r: json.dumps(r, sort_keys=True))
        | "WriteResults" >> beam.io.WriteToText(results_prefix, file_name_suffix=".jsonl")
    )


# 61 lines only by its 12 arguments and their docstring; the steps are the helpers below.
def convert_beam(
    specs: Sequence[StudySpec] | convert.StudyTree,
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
        specs: the studies, or a convert.StudyTree whose DICOM headers the workers scan and pair (the studies are
            those of convert.discover_studies(root)).
        runner: "direct" (Beam's local FnApiRunner) or any Beam runner name (DataflowRunner, FlinkRunner, ...).
        pipeline_args: Beam pipeline options, e.g. ["--direct_running_mode=multi_processing"].
        workers: direct runner only, when pipeline_args do not set it: worker processes (multi-processing mode).
        OUT_DIR and the studies' files must be on a filesystem that the driver and every worker mount.
    Returns:
        The manifest (failed studies listed under `skipped`); InputError naming the failed studies by hash when
        all failed or, with `strict`, any did (no manifest and no shards then).

    Resumable like the local runner, and with its files: each prepared study is saved in OUT/.work by the worker
    that prepared it; a rerun after an interrupted or failed run (same settings, else refused) reads those back
    instead of preparing them again, rewrites every shard and writes the manifest last; .work goes when it is.
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
    tree = specs if isinstance(specs, convert.StudyTree) else None
    keys = [] if tree else [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise ValueError("the same study is listed twice")
    if not tree and not specs:
        raise ValueError("no studies to convert")
    work = convert.start_run(out, cfg, compression, shard_size, val_fraction, test_fraction, split_seed)
    results = _run_pipeline(beam, specs, cfg, out, work, runner=runner, pipeline_args=pipeline_args, workers=workers,
                            val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed,
                            shard_size=shard_size, compression=compression, log=log)
    summaries, failed, written = _outcomes(results, out, tree, keys, strict, work, log)
    return _write_manifest(out, work, summaries, failed, written, cfg, compression=compression, shard_size=shard_size,
                           val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed, log=log)


def _run_pipeline(beam, specs: Sequence[StudySpec] | convert.StudyTree, cfg: ConvertConfig, out: Path, work: Path, *,
                  runner: str, pipeline_args: Sequence[str], workers: int, val_fraction: float, test_fraction: float,
                  split_seed: int | None, shard_size: int, compression: str,
                  log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Runs the preparation pipeline of `convert_beam` to its end.

    Returns:
        Its result records (notes, study summaries, errors, fatal refusals, written shards), read back from
        OUT/.beam, which is then removed; RuntimeError when the runner ends in another state than DONE.
    """
    tree = specs if isinstance(specs, convert.StudyTree) else None
    shutil.rmtree(out / BEAM_DIR, ignore_errors=True)  # results of an earlier run that was killed
    tmp = out / BEAM_DIR / uuid.uuid4().hex
    tmp.mkdir(parents=True)
    options = _options(runner, pipeline_args, workers)
    p = beam.Pipeline(runner=_direct_runner(options) if _is_direct(runner) else None, options=options)
    build_pipeline(p, specs, cfg, str(out), str(tmp / "results"), val_fraction=val_fraction,
                   test_fraction=test_fraction, split_seed=split_seed, shard_size=shard_size, compression=compression,
                   work=str(work))
    log(f"running the preparation of {f'the studies under {tree.root}' if tree else f'{len(specs)} studies'}"
        f" on Beam ({runner})")
    state = p.run().wait_until_finish()
    if str(state).split(".")[-1] != "DONE":
        raise RuntimeError(f"{out}: the Beam pipeline ended {state}; no manifest written")

    results = [json.loads(line) for f in sorted(tmp.glob("results*.jsonl")) for line in f.read_text().splitlines()]
    shutil.rmtree(out / BEAM_DIR, ignore_errors=True)
    return results


def _outcomes(results: list[dict[str, Any]], out: Path, tree: convert.StudyTree | None, keys: list[str], strict: bool,
              work: Path, log: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    """Logs the workers' notes and each study's outcome; refuses the run as `convert_beam` documents (written shards
    removed).

    Args:
        keys: the studies asked for (empty for a tree: those the workers found).
    Returns:
        (summary per prepared study, error record per failed study, examples per written shard file).
    """
    for r in sorted((r for r in results if "note" in r), key=lambda r: (r["study"], r["note"])):
        log(r["note"])
    summaries = {r["study"]: r["summary"] for r in results if "summary" in r}
    failed = {r["study"]: r for r in results if "error" in r}
    written = {r["shard"]: r["examples"] for r in results if "shard" in r}
    fatal = sorted((r for r in results if "fatal" in r), key=lambda r: r["study"])
    if fatal:  # discover_studies would have refused the tree before preparing anything
        for name in written:
            (out / name).unlink(missing_ok=True)
        more = f" (and {len(fatal) - 1} more studies)" if len(fatal) > 1 else ""
        raise InputError(fatal[0]["path"] or None, fatal[0]["fatal"] + more)
    if tree:
        keys = sorted(set(summaries) | set(failed))
        if not keys:
            raise tree.nothing_found()
    failed.update({k: {"error": "no result from the pipeline", "problem": "no result from the pipeline"}
                   for k in keys if k not in summaries and k not in failed})
    resumed = sum(1 for r in results if r.get("resumed"))
    if resumed:
        log(f"resumed: {resumed} of {len(keys)} studies were prepared by an earlier run (read from {work})")
    for k in sorted(keys):
        log(f"study {k}: FAILED: {failed[k]['error']}" if k in failed else f"study {k}: done")
    if failed and (strict or not summaries):
        for name in written:
            (out / name).unlink(missing_ok=True)
        raise InputError(out, f"{len(failed)} of {len(keys)} studies failed, no manifest written (fix them and"
                              " rerun to resume): " + "; ".join(f"study {k}: {failed[k]['error']}"
                                                                for k in sorted(failed)))
    if failed:
        log(f"warning: {len(failed)} of {len(keys)} studies skipped (see the manifest's 'skipped'): "
            + ", ".join(sorted(failed)))
    return summaries, failed, written


def _write_manifest(out: Path, work: Path, summaries: dict[str, Any], failed: dict[str, Any], written: dict[str, int],
                    cfg: ConvertConfig, *, compression: str, shard_size: int, val_fraction: float, test_fraction: float,
                    split_seed: int | None, log: Callable[[str], None]) -> dict[str, Any]:
    """Checks that the shards written are those the splits plan, removes older shards, writes the manifest (last)
    and removes OUT/.work.

    Returns:
        The manifest as a dict.
    """
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
    manifest.save(out)
    shutil.rmtree(work, ignore_errors=True)
    log(f"{out}: {manifest.examples} slices from {len(ok)} studies; "
        + ", ".join(f"{s} {splits[s]['examples']} ({len(splits[s]['studies'])} studies)" for s in records.SPLITS))
    return manifest.to_dict()
