"""tools/mutants.py: its list of planted bugs stays in step with the code (running them all is the tool's job)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("ctpet_mutants", ROOT / "tools" / "mutants.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look the module up by name
    spec.loader.exec_module(mod)
    return mod


M = _tool()


@pytest.mark.parametrize("mutant", M.MUTANTS, ids=lambda m: m.name)
def test_every_mutant_matches_exactly_once_and_names_existing_tests(mutant):
    assert M.check(mutant) is None, f"{mutant.name}: {M.check(mutant)} (update tools/mutants.py with the code)"
    assert mutant.tests and mutant.why


def test_the_list_covers_issue_15_and_every_area():
    names = [m.name for m in M.MUTANTS]
    assert len(set(names)) == len(names) >= 33
    assert {"ssim_sigma_1", "noise_per_hr_voxel", "prep_counts_per_hr_voxel", "prep_extra_blur_full_lr_fwhm",
            "patient_to_index_no_transpose"} <= set(names)
    paths = {m.path for m in M.MUTANTS}
    for module in ("suv", "geometry", "degradation", "metrics", "normalization", "records", "inference"):
        assert f"ctpet_srgan/{module}.py" in paths
    assert "data_prep/convert.py" in paths


def _toy_repo(tmp_path: Path) -> Path:
    """A two-file git repository: a function and a test that pins it."""
    repo = tmp_path / "toy"
    (repo / "tests").mkdir(parents=True)
    (repo / "toy.py").write_text("def double(x):\n    return 2 * x\n")
    (repo / "tests" / "test_toy.py").write_text("from toy import double\n\n\ndef test_double():\n"
                                                "    assert double(3) == 6\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    return repo


def test_runner_catches_a_pinned_bug_reverts_it_and_reports_survivors_and_stale_patterns(tmp_path):
    repo = M.make_scratch(_toy_repo(tmp_path))
    try:
        caught = M.Mutant("times_three", "toy.py", "2 * x", "3 * x", ("tests/test_toy.py",), "")
        harmless = M.Mutant("commuted", "toy.py", "2 * x", "x * 2", ("tests/test_toy.py",), "")
        stale = M.Mutant("gone", "toy.py", "4 * x", "5 * x", ("tests/test_toy.py",), "")
        assert M.run_mutant(caught, repo)[0] == "caught"
        assert (repo / "toy.py").read_text() == "def double(x):\n    return 2 * x\n"  # reverted
        assert M.run_mutant(harmless, repo)[0] == "survived"
        assert M.run_mutant(stale, repo)[0] == "stale"
    finally:
        import shutil

        shutil.rmtree(repo.parent, ignore_errors=True)
