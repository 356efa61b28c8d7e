"""Plants plausible physics bugs one at a time in a scratch copy of the repository and checks that a test fails.

    python tools/mutants.py                   # every mutant (about 10-15 min on 2 cores); exit 1 on any survivor
    python tools/mutants.py --list            # names, files and the tests each one runs
    python tools/mutants.py --only ssim_sigma_1,suv_weight_in_kg   # some of them (also --only A B)

Each mutant is a textual replacement that must match exactly once in its file (a mutant whose pattern no longer
matches is reported as stale and fails the run, so the list is kept in step with the code), plus the test files
(or test node ids) that should catch it: `pytest -x -q` on those, in the scratch copy, must fail. The copy is
the working tree (tracked and untracked, not ignored files), made once; each mutant is written, tested and
reverted in turn, with byte-code caching off so no stale module survives a revert. Before the mutants, the union
of their tests runs once unmutated (a failing suite would "catch" everything); --no_baseline skips it.

Exit status: 0 when every mutant is caught; 1 when one survives, is stale or errs (timeout, no tests collected);
2 when the unmutated tests fail, or for a user error (a bad flag, an unknown mutant: one stderr line). Flags: absl
(--flagfile=FILE). tests/test_mutants.py checks that the list is well formed (not the runs).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One planted bug: replace `old` (must occur exactly once in `path`) by `new`; `tests` must then fail."""

    name: str
    path: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: test files or node ids
    why: str  # what a developer might have meant


DEG = "tests/test_degradation.py"
GEO = "tests/test_geometry.py"
MET = "tests/test_metrics.py"
SUV = "tests/test_suv.py"
REC = "tests/test_records.py"
INF = "tests/test_inference.py"
CNV = "tests/test_convert.py"

MUTANTS: tuple[Mutant, ...] = (
    # ------------------------------------------------------------------ the five of issue 15
    Mutant("ssim_sigma_1", "ctpet_srgan/metrics.py", "SSIM_FILTER_SIGMA = 1.5", "SSIM_FILTER_SIGMA = 1.0",
           (MET,), "SSIM Gaussian window sigma 1.0 px instead of Wang et al.'s 1.5"),
    Mutant("noise_per_hr_voxel", "ctpet_srgan/degradation.py",
           "    lr = downsample_area(blurred, scale)\n"
           "    return add_count_noise(lr, counts_per_suv, rng) if counts_per_suv else lr",
           "    noisy = add_count_noise(blurred, counts_per_suv, rng) if counts_per_suv else blurred\n"
           "    return downsample_area(noisy, scale)",
           (DEG,), "count noise drawn per HR voxel before the area average (a scale^2 lower variance)"),
    Mutant("prep_counts_per_hr_voxel", "data_prep/convert.py",
           "counts_per_suv=counts, rng=study_rng(cfg, spec.key)",
           "counts_per_suv=counts * cfg.scale**2, rng=study_rng(cfg, spec.key)",
           (DEG,), "preparation reads counts_per_suv as counts per HR voxel"),
    Mutant("prep_extra_blur_full_lr_fwhm", "data_prep/convert.py",
           "extra = extra_fwhm_mm(lr_fwhm, truth_fwhm) if truth is not None",
           "extra = lr_fwhm if truth is not None",
           (DEG,), "the truth PET blurred by the whole LR FWHM, not sqrt(lr^2 - truth^2)"),
    Mutant("patient_to_index_no_transpose", "ctpet_srgan/geometry.py",
           "return xyz @ inv[:3, :3].T + inv[:3, 3]", "return xyz @ inv[:3, :3] + inv[:3, 3]",
           (GEO,), "row-vector product without the transpose (right only for symmetric rotations)"),
    # ------------------------------------------------------------------ degradation
    Mutant("fwhm_is_hwhm", "ctpet_srgan/degradation.py",
           "FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))", "FWHM_PER_SIGMA = math.sqrt(2.0 * math.log(2.0))",
           (DEG,), "half width taken for the full width"),
    Mutant("kernel_sigma_times_spacing", "ctpet_srgan/degradation.py",
           "sigma = fwhm_to_sigma_mm(fwhm_mm) / float(spacing_mm)",
           "sigma = fwhm_to_sigma_mm(fwhm_mm) * float(spacing_mm)",
           (DEG,), "mm -> voxels the wrong way"),
    Mutant("kernel_truncated_at_1_sigma", "ctpet_srgan/degradation.py",
           "radius = max(1, int(math.ceil(truncate * sigma)))", "radius = max(1, int(math.ceil(sigma)))",
           (DEG,), "a kernel cut at one sigma"),
    Mutant("fwhm_subtracted_linearly", "ctpet_srgan/degradation.py",
           "math.sqrt(max(float(target_fwhm_mm) ** 2 - float(current_fwhm_mm) ** 2, 0.0))",
           "max(float(target_fwhm_mm) - float(current_fwhm_mm), 0.0)",
           (DEG,), "resolutions subtracted, not in quadrature"),
    Mutant("area_downsample_all_axes", "ctpet_srgan/degradation.py",
           "factors = [1] * (a.ndim - 2) + [int(scale)] * 2", "factors = [int(scale)] * a.ndim",
           (DEG,), "an int scale applied to the slice axis too"),
    Mutant("volume_blur_axes_reversed", "ctpet_srgan/degradation.py",
           "gaussian_blur(src.array, (sk, sj, si), fwhm_mm", "gaussian_blur(src.array, (si, sj, sk), fwhm_mm",
           (DEG,), "Volume.spacing_mm (i, j, k) passed where array-axis (k, j, i) spacing is expected"),
    Mutant("clinical_pet_through_hr_grid", "ctpet_srgan/degradation.py",
           "if si >= lr_sp[0] - 1e-6 and sj >= lr_sp[1] - 1e-6:", "if False:",
           (DEG,), "a clinical PET resampled to HR and area-averaged back (a second [1/8, 3/4, 1/8] blur)"),
    Mutant("poisson_not_rescaled", "ctpet_srgan/degradation.py",
           "return (rng.poisson(lam) / float(counts_per_suv)).astype(np.float32)",
           "return (rng.poisson(lam) / float(counts_per_suv) ** 0.5).astype(np.float32)",
           (DEG,), "counts divided by the square root of the count rate"),
    Mutant("blur_edges_zero", "ctpet_srgan/degradation.py",
           'gaussian_blur(src.array, (sk, sj, si), fwhm_mm, mode="nearest")',
           'gaussian_blur(src.array, (sk, sj, si), fwhm_mm, mode="constant")',
           (DEG,), "zeros outside the source PET blurred into the LR edges"),
    # ------------------------------------------------------------------ geometry and the HR grid
    Mutant("spacing_from_rows", "ctpet_srgan/geometry.py",
           "return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))",
           "return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=1))",
           (GEO,), "voxel size from the affine's rows instead of its columns"),
    Mutant("sitk_direction_transposed", "ctpet_srgan/geometry.py",
           "(affine[:3, :3] / spacing[None, :]).ravel()", "(affine[:3, :3] / spacing[None, :]).T.ravel()",
           (GEO,), "SimpleITK's row-major direction written column-major"),
    Mutant("pixel_spacing_swapped", "ctpet_srgan/geometry.py",
           "a[:3, 0] = np.asarray(row_cosine, float) * float(spacing_ij_mm[0])",
           "a[:3, 0] = np.asarray(row_cosine, float) * float(spacing_ij_mm[1])",
           (GEO,), "column spacing taken from the row spacing"),
    Mutant("hr_grid_half_voxel_off", "data_prep/convert.py",
           "first = lo_e + (offset + hr_sp / 2.0) / np.array([si, sj])",
           "first = lo_e + offset / np.array([si, sj])",
           (GEO,), "the HR grid starts at a voxel edge, not a voxel centre"),
    Mutant("lr_origin_not_shifted", "data_prep/convert.py",
           "lr[:3, 3] = origin + (scale - 1) / 2.0 * (d[:, 0] * hr_sp[0] + d[:, 1] * hr_sp[1])",
           "lr[:3, 3] = origin",
           (GEO,), "LR voxel centre put on the first HR voxel centre"),
    Mutant("inference_hr_offset_sign", "ctpet_srgan/inference.py",
           "off = -(scale - 1) / (2.0 * scale)", "off = (scale - 1) / (2.0 * scale)",
           (f"{INF}::test_hr_affine_splits_each_lr_pixel",), "HR pixel centres shifted the wrong way"),
    Mutant("nifti_ras_not_flipped", "ctpet_srgan/nifti_io.py",
           "affine = RAS_TO_LPS @ affine_ras", "affine = affine_ras",
           ("tests/test_nifti_io.py",), "a NIfTI's RAS affine used as LPS"),
    # ------------------------------------------------------------------ SUV
    Mutant("suv_weight_in_kg", "ctpet_srgan/suv.py",
           "weight_g = weight_kg * 1000.0 * activity_scale", "weight_g = weight_kg * activity_scale",
           (SUV,), "PatientWeight used in kg, not g"),
    Mutant("suv_decay_sign", "ctpet_srgan/suv.py",
           "return dose * 2.0 ** (-elapsed / half_life)", "return dose * 2.0 ** (elapsed / half_life)",
           (SUV,), "the dose grows instead of decaying"),
    Mutant("suv_start_latest_acquisition", "ctpet_srgan/suv.py",
           "earliest = min(known) if known else None", "earliest = max(known) if known else None",
           (SUV,), "the latest slice time taken as the series start"),
    Mutant("suv_none_one_factor", "ctpet_srgan/suv.py",
           "factors = np.array([weight_g / decayed(t) for t in acq], np.float64)",
           "factors = np.array([weight_g / decayed(min(acq)) for t in acq], np.float64)",
           (SUV,), "DecayCorrection NONE decayed to the first slice only"),
    Mutant("suv_no_midnight_rollback", "ctpet_srgan/suv.py",
           "if inj > series_dt and inj - dt.timedelta(days=1) <= series_dt:", "if False:",
           (SUV,), "an injection before midnight put on the scan's day"),
    Mutant("suv_decy_not_required", "ctpet_srgan/suv.py",
           'need = {"ATTN"} if decay == "NONE" else {"ATTN", "DECY"}', 'need = {"ATTN"}',
           (SUV,), "a PET that is not decay corrected accepted for SUV"),
    Mutant("suv_time_fraction", "ctpet_srgan/suv.py",
           'frac = int(f.ljust(6, "0"))', "frac = int(f)",
           (SUV,), "TM fraction digits read as microseconds"),
    Mutant("suv_ge_scan_time_ignored", "ctpet_srgan/suv.py", "        if ge is not None:", "        if False:",
           (SUV,), "the GE private scan time skipped for a post-processed series"),
    # ------------------------------------------------------------------ normalisation
    Mutant("ct_norm_offset_sign", "ctpet_srgan/normalization.py",
           "- self.ct_offset_hu) / self.ct_scale_hu", "+ self.ct_offset_hu) / self.ct_scale_hu",
           (f"{INF}::test_units_round_trip_through_the_normalisation",), "HU offset added, not subtracted"),
    Mutant("pet_denorm_divides", "ctpet_srgan/normalization.py",
           "return x * self.pet_scale_suv", "return x / self.pet_scale_suv",
           (f"{INF}::test_units_round_trip_through_the_normalisation",), "normalised PET divided back"),
    # ------------------------------------------------------------------ records
    Mutant("record_affine_transposed", "ctpet_srgan/records.py",
           "hr_affine=_floats(np.asarray(hr_affine, float).ravel())",
           "hr_affine=_floats(np.asarray(hr_affine, float).T.ravel())",
           (f"{REC}::test_round_trip_keeps_values_shapes_and_geometry",), "the affine stored column-major"),
    Mutant("record_lr_shape_swapped", "ctpet_srgan/records.py",
           "lr_shape=_ints([h, w])", "lr_shape=_ints([w, h])",
           (f"{REC}::test_round_trip_keeps_values_shapes_and_geometry",), "(width, height) for (rows, cols)"),
    Mutant("record_has_truth_inverted", "ctpet_srgan/records.py",
           "has_truth=_ints([int(bool(has_truth))])", "has_truth=_ints([int(not has_truth)])",
           (f"{REC}::test_round_trip_keeps_values_shapes_and_geometry",), "the truth flag inverted"),
    # ------------------------------------------------------------------ metrics
    Mutant("ssim_k2", "ctpet_srgan/metrics.py", "SSIM_K2 = 0.03", "SSIM_K2 = 0.01",
           (MET,), "K2 given K1's value"),
    Mutant("psnr_amplitude_ratio", "ctpet_srgan/metrics.py",
           "return 10.0 * math.log10(float(data_range) ** 2 / mse)",
           "return 20.0 * math.log10(float(data_range) / mse)",
           (MET,), "20 log10 of R over the MSE (not the RMSE)"),
    Mutant("crc_without_minus_one", "ctpet_srgan/metrics.py",
           "crc = (c_hot / c_bkg - 1.0) / (true_ratio - 1.0) if c_bkg != 0 else nan",
           "crc = (c_hot / c_bkg) / true_ratio if c_bkg != 0 else nan",
           (MET,), "recovery as a ratio of ratios, not of contrasts"),
    Mutant("background_sd_population", "ctpet_srgan/metrics.py",
           "sd_bkg = float(np.std(bkg_means, ddof=1))", "sd_bkg = float(np.std(bkg_means))",
           (MET,), "NEMA's K - 1 denominator dropped"),
    Mutant("froc_counts_ties_out", "ctpet_srgan/metrics.py",
           'n_les = np.searchsorted(ls_sorted, ts, side="left")',
           'n_les = np.searchsorted(ls_sorted, ts, side="right")',
           (MET,), "a lesion scored exactly at the threshold counted as missed"),
    Mutant("mi_natural_log", "ctpet_srgan/metrics.py",
           "return float((p[nz] * np.log2(p[nz] / (pa @ pb)[nz])).sum())",
           "return float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())",
           (MET,), "mutual information in nats where the docs say bits"),
    Mutant("detect_threshold_strict", "ctpet_srgan/metrics.py",
           "cand = (img == neighbourhood_max) & (img >= threshold)",
           "cand = (img == neighbourhood_max) & (img > threshold)",
           (MET,), "a peak exactly at the threshold not detected (the docs say >=)"),
    Mutant("background_rois_from_zero_degrees", "ctpet_srgan/metrics.py",
           "a = 2 * math.pi * (k + 0.5) / n", "a = 2 * math.pi * k / n",
           (MET,), "NEMA background ROIs started on the +col axis, not at half a step"),
    Mutant("ct_not_antialiased", "data_prep/convert.py",
           "hr_ct = resample(_antialias(ct, grid), grid.hr_affine", "hr_ct = resample(ct, grid.hr_affine",
           (f"{CNV}::test_a_fine_ct_is_low_passed_before_it_is_resampled_onto_the_coarser_hr_grid",),
           "a fine CT resampled onto the coarser HR grid without a low-pass (aliasing)"),
    Mutant("hr_patch_not_scaled", "ctpet_srgan/pipeline.py",
           "img = ex[k][y * scale : y * scale + hp, x * scale : x * scale + hp, :]",
           "img = ex[k][y : y + hp, x : x + hp, :]",
           ("tests/test_pipeline.py::test_training_patches_stay_aligned_under_augmentation",),
           "the HR patch cut at the LR patch's offset"),
    # ------------------------------------------------------------------ tiling and splitting
    Mutant("tiles_cut_at_next_start", "ctpet_srgan/inference.py",
           "cuts = [0] + [(starts[t + 1] + starts[t] + tile) // 2 for t in range(len(starts) - 1)] + [n]",
           "cuts = [0] + [starts[t + 1] for t in range(len(starts) - 1)] + [n]",
           (f"{INF}::test_tiles_cover_the_axis_once", f"{INF}::test_tiled_equals_whole_slice"),
           "the seam cut at the edge of the next tile, where its padding shows"),
    Mutant("tiles_last_missing", "ctpet_srgan/inference.py",
           "starts = list(range(0, n - tile, tile - overlap)) + [n - tile]",
           "starts = list(range(0, n - tile, tile - overlap))",
           (f"{INF}::test_tiles_cover_the_axis_once",), "the last tile dropped"),
    Mutant("splits_order_dependent", "data_prep/convert.py",
           "keys = sorted(set(keys))\n", "keys = list(dict.fromkeys(keys))\n",
           (f"{CNV}::test_splits_are_by_study_and_deterministic",), "splits follow the input order"),
    Mutant("contour_inside_any_crossing", "ctpet_srgan/rtstruct.py",
           "return (count % 2 == 1).reshape(shape)", "return (count > 0).reshape(shape)",
           ("tests/test_rtstruct.py",), "a voxel is inside when any edge crosses its ray (holes filled, not even-odd)"),
    Mutant("contour_vertex_rule_closed", "ctpet_srgan/rtstruct.py",
           "crosses = (sb > py) != (sd > py)", "crosses = (sb >= py) != (sd >= py)",
           ("tests/test_rtstruct.py",), "the half-open rule flipped: voxels on a vertex row counted by the other edge"),
    Mutant("splits_can_be_empty", "data_prep/convert.py",
           "n_test = max(int(round(n * test_fraction)), 1 if test_fraction > 0 else 0)",
           "n_test = int(round(n * test_fraction))",
           (f"{CNV}::test_splits_are_by_study_and_deterministic",), "few studies leave the test split empty"),
)


# --------------------------------------------------------------------------------------------- running
def check(mutant: Mutant, root: Path = ROOT) -> str | None:
    """None when `mutant` can be planted in the tree at `root`, else what is wrong with it."""
    p = root / mutant.path
    if not p.is_file():
        return f"{mutant.path}: no such file"
    n = p.read_text().count(mutant.old)
    if n != 1:
        return f"{mutant.path}: pattern found {n} times (must be once)"
    if mutant.old == mutant.new:
        return "replacement is the pattern itself"
    for t in mutant.tests:
        f, _, node = t.partition("::")
        if not (root / f).is_file():
            return f"test file {f} does not exist"
        if node and f"def {node.split('[')[0]}(" not in (root / f).read_text():
            return f"test {t} does not exist"
    return None


def _tree_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         check=True, capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f and (root / f).is_file() and "__pycache__" not in f]


def make_scratch(root: Path = ROOT) -> Path:
    """A copy of the working tree in a new temporary folder (`<tmp>/repo`; `<tmp>/shared` links to ../shared)."""
    tmp = Path(tempfile.mkdtemp(prefix="ctpet-mutants-"))
    repo = tmp / "repo"
    for f in _tree_files(root):
        dst = repo / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, dst)
    if (root.parent / "shared").exists():
        (tmp / "shared").symlink_to(root.parent / "shared")
    return repo


def _pytest(repo: Path, tests: tuple[str, ...], timeout_s: float) -> tuple[int, str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(repo), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return -1, "timeout"
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    failed = [ln.split(" - ")[0] for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    return r.returncode, "; ".join(failed[:2] + lines[-1:]) if lines else ""


def run_mutant(mutant: Mutant, repo: Path, timeout_s: float = 600.0) -> tuple[str, str]:
    """Plants `mutant` in the scratch copy `repo`, runs its tests, reverts it.

    Returns:
        (verdict, detail): verdict "caught" (a test failed or errored), "survived" (all passed), "stale"
        (the pattern does not match once) or "error" (timeout, nothing collected, bad arguments).
    """
    problem = check(mutant, repo)
    if problem:
        return "stale", problem
    p = repo / mutant.path
    original = p.read_text()
    p.write_text(original.replace(mutant.old, mutant.new))
    try:
        rc, last = _pytest(repo, mutant.tests, timeout_s)
    finally:
        p.write_text(original)
    if rc in (1, 2):  # tests failed / collection or import error
        return "caught", last
    if rc == 0:
        return "survived", last
    return "error", f"pytest exit {rc}: {last}"


def define_flags(fv) -> None:
    """The command line (absl flags, defined in the FlagValues `fv`)."""
    from absl import flags

    d = dict(flag_values=fv)
    flags.DEFINE_list("only", None, "Run only these mutants: NAME,NAME,... (or --only NAME NAME ...).", **d)
    flags.DEFINE_boolean("list", False, "List the mutants and exit.", **d)
    flags.DEFINE_boolean("no_baseline", False, "Skip the unmutated run of the tests.", **d)
    flags.DEFINE_float("timeout_s", 600.0, "Per pytest run (s).", **d)
    flags.DEFINE_boolean("keep", False, "Keep the scratch copy (its path is printed).", **d)


def _cli():
    """ctpet_srgan.cli, importable when this file runs as a script."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from ctpet_srgan import cli

    return cli


def main(argv: list[str] | None = None) -> int:
    """`python tools/mutants.py ARGS` in-process (argv: the arguments after the program name); the exit status."""
    return _cli().main(define_flags, mutants, argv, takes_args=True, prog="tools/mutants.py")


def run() -> None:
    """The program: absl.app.run (--flagfile; a user error is one line and exit status 2)."""
    _cli().run(define_flags, mutants, takes_args=True)


def mutants(args, more: list[str]) -> int:
    """Runs the chosen mutants; returns the exit status (see the docstring). more: further --only names (the
    space-separated form `--only A B`)."""
    names = [m.name for m in MUTANTS]
    if len(set(names)) != len(names):
        raise SystemExit("duplicate mutant names")
    if more and not args.only:
        raise ValueError(f"{more[0]}: unexpected argument (mutant names go after --only)")
    only = list(args.only or []) + more
    chosen = list(MUTANTS)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"--only: unknown mutants: {', '.join(unknown)} (see --list)")
        chosen = [m for m in MUTANTS if m.name in only]
    if args.list:
        for m in chosen:
            print(f"{m.name:32s} {m.path:28s} {' '.join(m.tests)}\n{'':32s} {m.why}")
        return 0
    repo = make_scratch()
    print(f"scratch copy: {repo}", flush=True)
    t_all = time.monotonic()
    try:
        if not args.no_baseline:
            union = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            t0 = time.monotonic()
            rc, last = _pytest(repo, union, args.timeout_s * 3)
            print(f"baseline (unmutated, {len(union)} test selections): exit {rc}, {last} "
                  f"[{time.monotonic() - t0:.0f} s]", flush=True)
            if rc != 0:
                print("the unmutated tests do not pass: fix them first")
                return 2
        counts: dict[str, int] = {}
        bad = []
        for i, m in enumerate(chosen, 1):
            t0 = time.monotonic()
            verdict, detail = run_mutant(m, repo, args.timeout_s)
            counts[verdict] = counts.get(verdict, 0) + 1
            print(f"[{i:2d}/{len(chosen)}] {verdict:8s} {m.name:32s} {time.monotonic() - t0:5.0f} s  {detail}",
                  flush=True)
            if verdict != "caught":
                bad.append(f"{m.name} ({verdict}): {m.why}")
        total = time.monotonic() - t_all
        print(f"{len(chosen)} mutants: " + ", ".join(f"{v} {n}" for v, n in sorted(counts.items()))
              + f"; {total:.0f} s in all")
        for b in bad:
            print("  not caught:", b)
        return 1 if bad else 0
    finally:
        if args.keep:
            print(f"kept {repo}")
        else:
            shutil.rmtree(repo.parent, ignore_errors=True)


if __name__ == "__main__":
    run()
