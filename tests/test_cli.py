"""ctpet_srgan.cli: absl flags with --flagfile, and every user error one `PATH: problem` line with exit status 2."""

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
