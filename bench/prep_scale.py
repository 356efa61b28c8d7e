"""`python bench/prep_scale.py [--cases 8] [--small] [--studies DIR --hr_spacing_mm MM] [--runners A,B] [--out FILE]`:
preparation at scale, side by side in one run.

Studies per second of `python -m data_prep convert --studies ROOT` on the same studies (phantoms, or the first
--cases study folders of --studies, e.g. the real IBSI set) with the local process
pool and the Beam DirectRunner (multi-process mode), each with 1 and 2 workers, and the 1 -> 2 worker scaling, as
ratios. Every rate is end to end: the driver lists the folders, the workers scan the DICOM headers and prepare the
studies (`convert.StudyTree`), the shards and the manifest are written. `cli_*` runs are the same command as a child
process (what a user times: interpreter, imports and worker start-up included). Beside them, what bounds it:
  decode    plain pydicom.dcmread(f).pixel_array of every file in this process (the issue's reference rate);
  scan      discover_studies alone, serial in this process (the header scan the workers now share);
  compute   prepare_study of every study in this process, serial (the work that parallelises);
  startup   a spawned worker process importing what prepare_study needs (pydicom, SimpleITK, OpenCV);
  parallel  up to 4 studies prepared in one process alone, then in two at once: the per-worker efficiency of two
            processes on this machine, the bound of any 2-worker scaling before start-up costs;
  overhead  the same runner on TWO studies minus their scan + compute / workers: what does not shrink with more
            workers (worker start-up and imports, pipeline set-up, shard writing); the machine's load inflates it too.
Levers beside the main runs: local_2_driver_scan (the header scan on the driver before the pool, as before issue 14),
Beam in_memory (one thread in the driver process: no worker start-up) and Beam multi_threading with 2 workers. After
one untimed warm-up of each runner, the runs alternate for `--repeats` rounds and the best of each is kept, so they
see the same machine load. Prints a table; --out writes the numbers as JSON (atomically).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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


def _runners(work: Path, cfg) -> dict[str, tuple[int, Callable[[Path], None]]]:
    """name -> (workers, run(root)): a fresh conversion of the DICOM tree `root` into its own folder under `work`."""
    from data_prep import beam_pipeline as bp
    from data_prep import convert as cv

    def local(w: int):
        return w, lambda root: cv.convert(cv.StudyTree(str(root)), work / f"local_{w}", cfg, workers=w,
                                          overwrite=True, log=_quiet)

    def driver_scan(w: int):
        return w, lambda root: cv.convert(cv.discover_studies(root, log=_quiet), work / f"local_{w}_driver_scan",
                                          cfg, workers=w, overwrite=True, log=_quiet)

    def beam(w: int, mode: str = "multi_processing", name: str = ""):
        args = [f"--direct_running_mode={mode}", f"--direct_num_workers={w}"]
        return w, lambda root: bp.convert_beam(cv.StudyTree(str(root)), work / (name or f"beam_{w}"), cfg,
                                               runner="direct", pipeline_args=args, overwrite=True, log=_quiet)

    def cli(w: int, runner: str):
        name = f"cli_{'local' if runner == 'local' else 'beam'}_{w}"
        argv = [sys.executable, "-m", "data_prep", "convert", "--out", str(work / name), "--overwrite",
                "--seed", str(cfg.seed), "--scale", str(cfg.scale), "--workers", str(w), f"--runner={runner}"]
        if cfg.hr_spacing_mm is not None:
            argv.append(f"--hr_spacing_mm={cfg.hr_spacing_mm}")

        def run(root: Path) -> None:
            subprocess.run(argv + ["--studies", str(root)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        return w, run

    runs = {"local_1": local(1), "local_2": local(2), "cli_local_1": cli(1, "local"), "cli_local_2": cli(2, "local"),
            "local_2_driver_scan": driver_scan(2)}
    if bp.beam_available():
        runs.update(beam_1=beam(1), beam_2=beam(2), cli_beam_1=cli(1, "direct"), cli_beam_2=cli(2, "direct"),
                    beam_in_memory=beam(1, "in_memory", "beam_in_memory"),
                    beam_threads_2=beam(2, "multi_threading", "beam_threads_2"))
    return runs


def _import_for_prepare() -> float:
    t = time.perf_counter()
    import cv2  # noqa: F401
    import pydicom  # noqa: F401
    import SimpleITK  # noqa: F401

    from data_prep import convert  # noqa: F401
    return time.perf_counter() - t


def worker_startup_s() -> float:
    """Seconds to spawn one worker process that imports what prepare_study needs (as the local pool's)."""
    import concurrent.futures as cf
    import multiprocessing

    t = time.perf_counter()
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(_import_for_prepare).result()
    return time.perf_counter() - t


def _copy_studies(src: Path, dst: Path, cases: int) -> list[str]:
    """Copies the first `cases` study folders of `src` (sorted) into `dst`; their names."""
    if not src.is_dir():
        from ctpet_srgan.errors import InputError

        raise InputError(src, "is not a folder of studies")
    names = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))[:cases]
    if len(names) < cases:
        raise ValueError(f"{src}: {len(names)} study folders, fewer than --cases={cases}")
    for n in names:
        shutil.copytree(src / n, dst / n)
    return names


_COMPUTE_CHILD = """
import sys, time
from data_prep import convert as cv
specs = cv.discover_studies(sys.argv[1], log=lambda m: None)[:int(sys.argv[2])]
cfg = cv.ConvertConfig(scale=2, hr_spacing_mm=float(sys.argv[3]) if sys.argv[3] != "None" else None)
cv.prepare_study(specs[0], cfg)  # imports and caches
print("ready", flush=True)
sys.stdin.readline()  # both children start together
t = time.perf_counter()
for s in specs:
    cv.prepare_study(s, cfg)
print(time.perf_counter() - t)
"""


def parallel_efficiency(root: Path, n: int, hr_spacing_mm: float | None) -> dict[str, float]:
    """The same serial preparation of `n` studies in one process alone, then in two processes at once: the time
    alone over the time together is what two workers can give per worker on this machine at best (shared caches,
    memory bandwidth, clock), before any start-up or scheduling cost."""
    def children(k: int) -> list[float]:
        procs = [subprocess.Popen([sys.executable, "-c", _COMPUTE_CHILD, str(root), str(n), str(hr_spacing_mm)],
                                  cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True) for _ in range(k)]
        for pr in procs:
            assert pr.stdout.readline().strip() == "ready", "the preparation child failed"
        for pr in procs:
            pr.stdin.write("go\n")
            pr.stdin.flush()
        return [float(pr.communicate()[0].strip().splitlines()[-1]) for pr in procs]
    alone = children(1)[0]
    together = max(children(2))
    return {"alone_s": alone, "together_s": together, "efficiency": alone / together}


def measure(cases: int, small: bool, repeats: int, work: Path, only: set[str] | None = None,
            warmup: bool = True, studies: Path | None = None, hr_spacing_mm: float | None = None) -> dict[str, Any]:
    """Writes `cases` phantom studies under `work` (or copies the first `cases` of `studies`) and times each
    runner on them (see the module doc).

    Args:
        only: the runners to time (default: all); warmup: one untimed run of each first.
        studies: a folder of study folders (e.g. the real IBSI set) instead of phantoms.
        hr_spacing_mm: the conversion's in-plane HR spacing (mm); None: the PET's spacing / scale.
    """
    import pydicom

    from data_prep import convert as cv
    from data_prep.phantom import PhantomConfig, write_phantom_studies

    pcfg = PhantomConfig(fov_mm=128.0, pet_slices=6) if small else PhantomConfig()
    root, root2 = work / "dicom", work / "dicom_2"
    if studies is None:
        write_phantom_studies(root, cases, seed=0, cfg=pcfg)
        source = {"phantom": {"fov_mm": pcfg.fov_mm, "pet_slices": pcfg.pet_slices}}
    else:
        source = {"studies": str(studies), "studies_copied": len(_copy_studies(studies, root, cases))}
    for d in sorted(p for p in root.iterdir() if p.is_dir())[:2]:  # the first two studies: the overhead runs
        shutil.copytree(d, root2 / d.name)
    cfg = cv.ConvertConfig(scale=2, hr_spacing_mm=hr_spacing_mm)
    specs = cv.discover_studies(root, log=_quiet)  # page cache warm for every runner
    files = sorted(f for s in specs for src in (s.ct, s.pet, s.truth) if src for f in src)  # image files only
    res: dict[str, Any] = {"cases": cases, "files": len(files), **source, "hr_spacing_mm": hr_spacing_mm,
                           "cores": os.cpu_count(), "repeats": repeats, "load_before": list(os.getloadavg())}
    every = _runners(work, cfg)
    if only is not None and set(only) - set(every):
        raise ValueError(f"unknown runners {sorted(set(only) - set(every))}; known: {', '.join(every)}")
    runs = {k: v for k, v in every.items() if only is None or k in only}
    assert len(specs) == cases, f"{len(specs)} studies found in {root}, expected {cases}"
    for _, run in runs.values() if warmup else ():  # imports of the driver process (Beam), the page cache
        run(root2)
    scans, per_study, decodes, startups = [], [], [], []
    full = {k: [] for k in runs}
    two = {k: [] for k in runs}
    for _ in range(repeats):  # each round: decode, scan, serial compute, start-up, then every runner (same load)
        t = time.perf_counter()
        for f in files:
            pydicom.dcmread(f).pixel_array
        decodes.append(time.perf_counter() - t)
        t = time.perf_counter()
        specs = cv.discover_studies(root, log=_quiet)
        scans.append(time.perf_counter() - t)
        times = []
        for s in specs:
            t = time.perf_counter()
            cv.prepare_study(s, cfg)
            times.append(time.perf_counter() - t)
        per_study.append(times)
        startups.append(worker_startup_s())
        for name, (_, run) in runs.items():
            t = time.perf_counter()
            run(root2)
            two[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            run(root)
            full[name].append(time.perf_counter() - t)
    per_study = min(per_study, key=sum)
    res["decode_s"], res["scan_s"], res["compute_s"] = min(decodes), min(scans), sum(per_study)
    res["startup_s"] = min(startups)
    res["parallel"] = parallel_efficiency(root, min(cases, 4), hr_spacing_mm)
    res["compute_per_study_s"] = res["compute_s"] / len(specs)
    scan2 = res["scan_s"] * 2 / len(specs)
    from ctpet_srgan.manifest import Manifest

    same = {json.dumps(Manifest.load(work / n).to_dict(), sort_keys=True) for n in runs}
    res["same_manifest"] = len(same) == 1
    res["runs"] = {}
    for name, (w, _) in runs.items():
        secs = min(full[name])
        res["runs"][name] = {"workers": w, "seconds": secs, "studies_per_s": cases / secs,
                             "overhead_s": max(0.0, min(two[name]) - (sum(per_study[:2]) + scan2) / w)}
    r = res["runs"]
    res["ratios"] = {f"{a}_over_{b}": r[a]["studies_per_s"] / r[b]["studies_per_s"]
                     for a, b in (("local_2", "local_1"), ("beam_2", "beam_1"), ("cli_local_2", "cli_local_1"),
                                  ("cli_beam_2", "cli_beam_1"), ("local_2", "local_2_driver_scan"),
                                  ("beam_1", "local_1"), ("beam_2", "local_2"), ("beam_in_memory", "local_1"))
                     if a in r and b in r}
    for name, v in r.items():  # of the plain pydicom decode of the same files in one process (bench/run.py's key)
        if name in ("local_1", "local_2", "beam_1", "beam_2", "cli_local_2", "cli_beam_2"):
            res["ratios"][f"{name}_over_decode_1"] = res["decode_s"] / v["seconds"]
    for name, v in r.items():  # the 2-worker time an ideal split of the scan + compute would give (Amdahl)
        if name.endswith("_2") and name[:-1] + "1" in r:
            work_s = res["scan_s"] + res["compute_s"]
            one_w = r[name[:-1] + "1"]["overhead_s"] + work_s
            two_w = v["overhead_s"] + work_s / 2
            res["ratios"][f"{name[:-2]}_2_over_1_bound"] = one_w / two_w
    res["load_after"] = list(os.getloadavg())
    return res


def _what(res: dict[str, Any]) -> str:
    if "phantom" in res:
        return f"phantom studies (fov {res['phantom']['fov_mm']} mm, {res['phantom']['pet_slices']} PET slices)"
    return f"studies from {res['studies']} (HR spacing {res['hr_spacing_mm']} mm)"


def table(res: dict[str, Any]) -> str:
    par = res["parallel"]
    lines = ["studies/s end to end (the workers scan the headers); overhead: what more workers do not shrink",
             f"{res['cases']} {_what(res)} ({res['files']} DICOM image files); {res['cores']} cores,"
             f" load {[round(x, 1) for x in res['load_before']]} -> {[round(x, 1) for x in res['load_after']]}",
             f"plain decode (1 process) {res['decode_s']:.2f} s; header scan (serial) {res['scan_s']:.2f} s;"
             f" compute (prepare_study, serial) {res['compute_s']:.2f} s = {res['compute_per_study_s']:.2f} s/study;"
             f" worker start-up {res['startup_s']:.2f} s",
             f"parallel efficiency: {min(res['cases'], 4)} studies prepared alone {par['alone_s']:.2f} s,"
             f" in two processes at once {par['together_s']:.2f} s each: {par['efficiency']:.2f}"
             f" (so 2 workers give at most {2 * par['efficiency']:.2f}x, before any start-up)",
             f"{'runner':20} {'workers':>7} {'seconds':>8} {'studies/s':>10} {'overhead s':>11}"]
    for name, v in res["runs"].items():
        lines.append(f"{name:20} {v['workers']:7d} {v['seconds']:8.2f} {v['studies_per_s']:10.3f}"
                     f" {v['overhead_s']:11.2f}")
    lines += [f"{k}: {v:.3f}" for k, v in res["ratios"].items()]
    lines.append(f"all runners wrote the same manifest: {res['same_manifest']}")
    for name in ("local", "beam", "cli_local", "cli_beam"):
        if f"{name}_2_over_1_bound" not in res["ratios"]:
            continue
        v = res["runs"][f"{name}_2"]
        lines.append(f"{name} 2 workers: overhead {v['overhead_s']:.2f} s of {v['seconds']:.2f} s"
                     f" ({v['overhead_s'] / v['seconds']:.0%}); best possible 1->2 scaling with it:"
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
    flags.DEFINE_string("studies", None, "A folder of study folders (e.g. ../shared/data/real/ibsi_sts) whose first "
                        "--cases studies are timed instead of phantoms.", **d)
    flags.DEFINE_list("runners", None, "Only these runners (e.g. cli_local_1,cli_local_2; default all).", **d)
    flags.DEFINE_float("hr_spacing_mm", None, "In-plane HR spacing of the conversion (mm); default the PET's / 2.",
                       **d)


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
        res = measure(a.cases, a.small, a.repeats, work, studies=Path(a.studies) if a.studies else None,
                      hr_spacing_mm=a.hr_spacing_mm, only=set(a.runners) if a.runners else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(res))
    if a.out:
        from ctpet_srgan.atomic import write_json_atomic

        write_json_atomic(a.out, res)
    return 0


if __name__ == "__main__":
    run()
