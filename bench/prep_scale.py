"""`python bench/prep_scale.py [--cases 8] [--small] [--out FILE]`: preparation at scale, side by side in one run.

Studies per second of `python -m data_prep convert` on the same phantom studies with the local process pool and the
Beam DirectRunner (multi-process mode), each with 1 and 2 workers, and the 1 -> 2 worker scaling, as ratios. Every
rate is end to end (header scan on the driver + the run). Beside them, what bounds the scaling:
  scan      discover_studies alone (DICOM headers, on the driver, serial);
  compute   prepare_study of every study in this process, serial (the work that parallelises);
  overhead  the same runner on TWO studies minus their compute / workers: what does not shrink with more workers
            (worker start-up and imports, pipeline set-up, shard writing); the machine's load inflates it too.
Levers beside the four main runs: Beam in_memory (one thread in the driver process: no worker start-up) and Beam
multi_threading with 2 workers. After one untimed warm-up of each runner, the runs alternate for `--repeats` rounds
and the best of each is kept, so they see the same machine load. Prints a table; --out writes the numbers as JSON
(atomically).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _quiet(_msg: str) -> None:
    pass


def _runners(work: Path, cfg) -> dict[str, tuple[int, Callable[[list], None]]]:
    """name -> (workers, run(specs)): a fresh conversion of `specs` into its own folder under `work`."""
    from data_prep import beam_pipeline as bp
    from data_prep import convert as cv

    def local(w: int):
        return w, lambda specs: cv.convert(specs, work / f"local_{w}", cfg, workers=w, overwrite=True, log=_quiet)

    def beam(w: int, mode: str = "multi_processing", name: str = ""):
        args = [f"--direct_running_mode={mode}", f"--direct_num_workers={w}"]
        return w, lambda specs: bp.convert_beam(specs, work / (name or f"beam_{w}"), cfg, runner="direct",
                                                pipeline_args=args, overwrite=True, log=_quiet)

    runs = {"local_1": local(1), "local_2": local(2)}
    if bp.beam_available():
        runs.update(beam_1=beam(1), beam_2=beam(2), beam_in_memory=beam(1, "in_memory", "beam_in_memory"),
                    beam_threads_2=beam(2, "multi_threading", "beam_threads_2"))
    return runs


def measure(cases: int, small: bool, repeats: int, work: Path, only: set[str] | None = None,
            warmup: bool = True) -> dict[str, Any]:
    """Writes `cases` phantom studies under `work` and times each runner on them (see the module doc).

    Args:
        only: the runners to time (default: all); warmup: one untimed run of each first.
    """
    from data_prep import convert as cv
    from data_prep.phantom import PhantomConfig, write_phantom_studies

    pcfg = PhantomConfig(fov_mm=128.0, pet_slices=6) if small else PhantomConfig()
    root = work / "dicom"
    write_phantom_studies(root, cases, seed=0, cfg=pcfg)
    cfg = cv.ConvertConfig(scale=2)
    res: dict[str, Any] = {"cases": cases, "files": sum(1 for _ in root.rglob("*.dcm")),
                           "phantom": {"fov_mm": pcfg.fov_mm, "pet_slices": pcfg.pet_slices},
                           "cores": os.cpu_count(), "repeats": repeats, "load_before": list(os.getloadavg())}
    specs = cv.discover_studies(root, log=_quiet)  # page cache warm for every runner
    runs = {k: v for k, v in _runners(work, cfg).items() if only is None or k in only}
    for _, run in runs.values() if warmup else ():  # imports of the driver process (TensorFlow for the shards, Beam)
        run(specs[:2])
    scans, per_study = [], []
    full = {k: [] for k in runs}
    two = {k: [] for k in runs}
    for _ in range(repeats):  # each round: the scan, the serial compute, then every runner (the same load)
        t = time.perf_counter()
        specs = cv.discover_studies(root, log=_quiet)
        scans.append(time.perf_counter() - t)
        times = []
        for s in specs:
            t = time.perf_counter()
            cv.prepare_study(s, cfg)
            times.append(time.perf_counter() - t)
        per_study.append(times)
        for name, (_, run) in runs.items():
            t = time.perf_counter()
            run(specs[:2])
            two[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            run(specs)
            full[name].append(time.perf_counter() - t)
    per_study = min(per_study, key=sum)
    res["scan_s"], res["compute_s"] = min(scans), sum(per_study)
    res["compute_per_study_s"] = res["compute_s"] / len(specs)
    same = {json.dumps(json.loads((work / n / "manifest.json").read_text()), sort_keys=True) for n in runs}
    res["same_manifest"] = len(same) == 1
    res["runs"] = {}
    for name, (w, _) in runs.items():
        secs = min(full[name]) + res["scan_s"]
        res["runs"][name] = {"workers": w, "seconds": secs, "studies_per_s": cases / secs,
                             "overhead_s": max(0.0, min(two[name]) - sum(per_study[:2]) / w)}
    r = res["runs"]
    res["ratios"] = {f"{a}_over_{b}": r[a]["studies_per_s"] / r[b]["studies_per_s"]
                     for a, b in (("local_2", "local_1"), ("beam_2", "beam_1"), ("beam_1", "local_1"),
                                  ("beam_2", "local_2"), ("beam_in_memory", "local_1")) if a in r and b in r}
    for name, v in r.items():  # the 2-worker time an ideal split of the compute would give (Amdahl)
        if name in ("local_2", "beam_2") and name[:-1] + "1" in r:
            one_w = res["scan_s"] + r[name[:-1] + "1"]["overhead_s"] + res["compute_s"]
            two_w = res["scan_s"] + v["overhead_s"] + res["compute_s"] / 2
            res["ratios"][f"{name[:-2]}_2_over_1_bound"] = one_w / two_w
    res["load_after"] = list(os.getloadavg())
    return res


def table(res: dict[str, Any]) -> str:
    lines = ["studies/s end to end (header scan + run); overhead: what more workers do not shrink (module doc)",
             f"{res['cases']} phantom studies ({res['files']} DICOM files, fov {res['phantom']['fov_mm']} mm,"
             f" {res['phantom']['pet_slices']} PET slices); {res['cores']} cores,"
             f" load {[round(x, 1) for x in res['load_before']]} -> {[round(x, 1) for x in res['load_after']]}",
             f"header scan (driver, serial) {res['scan_s']:.2f} s; compute (prepare_study, serial)"
             f" {res['compute_s']:.2f} s = {res['compute_per_study_s']:.2f} s/study",
             f"{'runner':15} {'workers':>7} {'seconds':>8} {'studies/s':>10} {'overhead s':>11}"]
    for name, v in res["runs"].items():
        lines.append(f"{name:15} {v['workers']:7d} {v['seconds']:8.2f} {v['studies_per_s']:10.3f}"
                     f" {v['overhead_s']:11.2f}")
    lines += [f"{k}: {v:.3f}" for k, v in res["ratios"].items()]
    lines.append(f"all runners wrote the same manifest: {res['same_manifest']}")
    for name in ("local", "beam"):
        if f"{name}_2_over_1_bound" not in res["ratios"]:
            continue
        v = res["runs"][f"{name}_2"]
        fixed = res["scan_s"] + v["overhead_s"]
        lines.append(f"{name} 2 workers: scan + overhead {fixed:.2f} s of {v['seconds']:.2f} s"
                     f" ({fixed / v['seconds']:.0%}); best possible 1->2 scaling with them:"
                     f" {res['ratios'][f'{name}_2_over_1_bound']:.2f}")
    if not any(k.startswith("beam") for k in res["runs"]):
        lines.append("Beam runs skipped: apache_beam is not installed (pip install -r requirements-beam.txt)")
    return "\n".join(lines)


def define_flags(fv) -> None:
    """The command line (absl flags, defined in the FlagValues `fv`)."""
    from absl import flags

    d = dict(flag_values=fv)
    flags.DEFINE_integer("cases", 8, "Phantom studies prepared by every run.", **d)
    flags.DEFINE_boolean("small", False, "Small phantoms (fov 128 mm, 6 PET slices): a quick check.", **d)
    flags.DEFINE_integer("repeats", 2, "Alternating rounds of the runs (the best of each is kept).", **d)
    flags.DEFINE_string("out", None, "JSON file to write.", **d)


def main(argv: list[str] | None = None) -> int:
    """`python bench/prep_scale.py ARGS` in-process (argv: the arguments after the program name); the exit status."""
    from ctpet_srgan import cli

    return cli.main(define_flags, prep_scale, argv, prog="bench/prep_scale.py")


def run() -> None:
    """The program: absl.app.run (--flagfile; a user error is one line and exit status 2)."""
    from ctpet_srgan import cli

    cli.run(define_flags, prep_scale)


def prep_scale(a) -> int:
    """Measures and prints the table (and writes a.out); returns the exit status."""
    work = Path(tempfile.mkdtemp(prefix="ctpet_prep_scale_"))
    try:
        res = measure(a.cases, a.small, a.repeats, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(res))
    if a.out:
        from ctpet_srgan.atomic import write_json_atomic

        write_json_atomic(a.out, res)
    return 0


if __name__ == "__main__":
    run()
