"""The one command-line convention of every program: absl flags (so `--flagfile=FILE` works everywhere), and for
every user error (a bad or missing flag, a missing or bad input) one line `PATH: problem` on stderr and exit status 2,
never a traceback.

A program defines its flags as a function of a `flags.FlagValues` and its work as a function of the parsed flags:

    def define_flags(fv): flags.DEFINE_string("out", None, "Output folder.", flag_values=fv, required=True)
    def body(F) -> int: ...                                   # F.out; raise InputError(path, problem) on bad input
    def main(argv=None) -> int: return cli.main(define_flags, body, argv)   # in-process (tests): fresh flags
    def run() -> None: cli.run(define_flags, body)                          # the program: absl.app.run

`main` parses into a new FlagValues on every call, so tests may call it repeatedly and importing a program defines
no global absl flag; `run` defines the flags in absl's global FLAGS and runs `absl.app.run` (--help, --helpfull,
--flagfile). A program whose flags are defined at import uses `app.run(main, flags_parser=cli.parse_flags)` and
`cli.fail(cli.error_line(e))`; programs with subcommands use `ArgumentParser` (absl's argparse_flags, one-line errors).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Callable, NoReturn, Sequence

from absl import app, flags
from absl.flags import argparse_flags

from ctpet_srgan.errors import InputError

USAGE_ERROR = 2  # the exit status of every user error
# What a program reports as a user error: InputError (a ValueError) and the other ValueErrors of bad flag values,
# missing / existing / unreadable files. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (InputError, ValueError, FileNotFoundError, FileExistsError,
                                                NotADirectoryError, IsADirectoryError, PermissionError)
_HELP = ("help", "helpshort", "helpfull", "helpxml", "?")

Define = Callable[[flags.FlagValues], None]
Body = Callable[..., Any]


def one_line(text: str) -> str:
    """`text` with its lines joined by spaces (an error message printed as one line)."""
    return " ".join(s.strip() for s in str(text).splitlines() if s.strip())


def error_line(e: BaseException) -> str:
    """The one line a user error prints: `PATH: problem` (InputError's own form; an OSError's filename first).

    Args:
      e: the exception.
    Returns:
      One line of text, no trailing newline.
    """
    if isinstance(e, OSError) and e.filename is not None and not isinstance(e, InputError):
        return one_line(f"{e.filename}: {e.strerror or type(e).__name__}")
    return one_line(str(e)) or type(e).__name__


def flag_error_line(e: flags.Error) -> str:
    """absl's flag-parsing error as one `--flag: problem` line (or `FLAGFILE: problem` for an unreadable flagfile)."""
    msg = one_line(str(e))
    if isinstance(e, flags.UnrecognizedFlagError):
        return f"--{e.flagname}: unknown flag (see --helpfull)"
    m = re.match(r"flag (--[^=]+)=None: Flag --\S+ must have a value other than None", msg)
    if m:
        return f"{m.group(1)}: required, not given"
    m = re.match(r"ERROR:: Unable to open flagfile: (?:\[Errno \d+\] )?(.*?): '(.*)'$", msg)
    if m:
        return f"{m.group(2)}: cannot read the flagfile ({m.group(1)})"
    return re.sub(r"^flags? ", "", msg)


def fail(line: str) -> int:
    """Prints `line` (one line) on stderr; returns USAGE_ERROR."""
    print(one_line(line), file=sys.stderr, flush=True)
    return USAGE_ERROR


def call(body: Body, fv: flags.FlagValues, args: Sequence[str], takes_args: bool = False) -> int:
    """Runs body(fv) (or body(fv, args)), turning a user error into one stderr line and USAGE_ERROR.

    Args:
      body: the program's work; returns its exit status (None: 0).
      fv: the parsed flags.
      args: the positional arguments left after the flags.
      takes_args: whether the program takes positional arguments (else any is a user error).
    Returns:
      The exit status.
    """
    if args and not takes_args:
        return fail(f"{args[0]}: unexpected argument (every input is a --flag; see --help)")
    try:
        status = body(fv, list(args)) if takes_args else body(fv)
    except USER_ERRORS as e:
        return fail(error_line(e))
    return 0 if status is None else int(status)


def main(define: Define, body: Body, argv: Sequence[str] | None = None, *, takes_args: bool = False,
         prog: str | None = None) -> int:
    """The in-process form of a program: parses argv into fresh flags (--flagfile read) and runs body.

    Args:
      define: defines the program's flags in the FlagValues it is given.
      body: the program's work, body(F) -> exit status (body(F, args) when takes_args).
      argv: the arguments after the program name (None: sys.argv[1:]).
      takes_args: whether positional arguments are allowed.
      prog: program name (default sys.argv[0]).
    Returns:
      The exit status: body's, or USAGE_ERROR with one stderr line for a user error.
    """
    fv = flags.FlagValues()
    define(fv)
    try:
        rest = fv([prog or sys.argv[0], *(sys.argv[1:] if argv is None else argv)])[1:]
    except flags.Error as e:
        return fail(flag_error_line(e))
    return call(body, fv, rest, takes_args)


def parse_flags(argv: list[str]) -> list[str]:
    """A flags_parser for `app.run(main, flags_parser=cli.parse_flags)`: absl's FLAGS parsed from argv (the program
    name first), a flag error one line and exit status 2, --help exiting 0. Returns the arguments left (name first)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(fail(flag_error_line(e)))
    except SystemExit as e:  # absl's help flags print the help and exit 1
        asked = any(a.lstrip("-").split("=")[0] in _HELP for a in argv[1:] if a.startswith("-"))
        if e.code == 1 and asked:
            sys.exit(0)
        raise


def run(define: Define, body: Body, *, takes_args: bool = False) -> NoReturn:
    """The program: defines the flags in absl's FLAGS and runs body under `absl.app.run` (exit status as `main`).

    Python logging stays at WARNING (as without absl) unless --verbosity is given. Under a console script (whose
    own module defines no flag and has no docstring) --help still shows the program's docstring and flags.
    """
    before = set(flags.FLAGS)
    define(flags.FLAGS)
    for name in sorted(set(flags.FLAGS) - before):  # absl's --help lists the key flags of sys.argv[0]
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
    main_module = sys.modules.get("__main__")
    if main_module is not None and not main_module.__doc__:
        main_module.__doc__ = sys.modules[body.__module__].__doc__

    def _main(argv: list[str]) -> int:
        if not flags.FLAGS["verbosity"].present:
            logging.getLogger().setLevel(logging.WARNING)
        return call(body, flags.FLAGS, argv[1:], takes_args)

    app.run(_main, flags_parser=parse_flags)
    raise AssertionError("unreachable: app.run exits")


class ArgumentParser(argparse_flags.ArgumentParser):
    """absl's argparse integration (reads --flagfile) for programs with subcommands; a parse error is one line.

    Pass `inherited_absl_flags=flags.FlagValues()` (to this parser and each subparser) for a parser that takes no
    global absl flag (in-process use), or leave the default (absl's FLAGS) under `app.run`.
    """

    def error(self, message: str) -> NoReturn:
        sys.exit(fail(f"{self.prog}: {message}"))
