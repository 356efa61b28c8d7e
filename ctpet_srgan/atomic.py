"""Atomic file and folder writes: an output either appears whole under its final name or not at all; what an
interrupted job left beside it is recognised and removed (`remove_stale_temporaries`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `final`; renames it onto `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; final files get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically (temp file + fsync + rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as indented JSON to `path` atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_json_once(path: str | os.PathLike, obj: Any) -> bool:
    """Writes `obj` to `path` (atomically) unless the file exists; then True only if it holds the same JSON.
    The settings marker of a resumable job: a rerun with other settings must not mix its output with the first."""
    p = Path(path)
    if p.exists():
        return json.loads(p.read_text()) == json.loads(json.dumps(obj))
    write_json_atomic(p, obj)
    return True


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Moves the finished folder `tmp` to `final` (same file system) by rename. An existing `final` is
    first renamed aside (into ".FINAL.old.PID.XXXX", which `remove_stale_temporaries` leaves alone while this
    process lives) and deleted only after the new folder is in place, so `final` is never half written (a reader
    may briefly find it missing, never incomplete)."""
    tmp, final = Path(tmp), Path(final)
    if not final.exists():
        os.replace(tmp, final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.{os.getpid()}.", dir=final.parent))
    os.replace(final, old / final.name)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty folder (mode 0755 less the umask) to fill; moves it onto `final` by `replace_dir` only if
    the block succeeds. It lies in a hidden ".FINAL.PID.XXXX.tmp" folder beside `final` (the parent must exist),
    removed in every case, so an interrupted job leaves nothing that looks like `final`."""
    final = Path(final)
    holder = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent))
    try:
        work = holder / final.name
        work.mkdir(mode=0o755)
        yield work
        replace_dir(work, final)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    """True if process `pid` exists (also another user's, which we may not signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(*finals: str | os.PathLike, min_age_s: float = 3600.0) -> list[Path]:
    """Removes what killed jobs left beside the outputs `finals`: hidden ".FINAL.PID.XXXX.tmp" (`atomic_dir`) and
    ".FINAL.old.PID.XXXX" (`replace_dir`) folders whose process is gone, older-style ones without a PID, and
    `atomic_path` temporary files (".FINAL.XXXX.tmp") older than `min_age_s` seconds.

    Args:
        finals: the output paths (files or folders) whose temporaries to look for, each in its own parent folder.
        min_age_s: age in seconds from which a temporary file is taken as abandoned (a live job's is younger).

    Returns:
        The removed paths. Folders of a live process are kept (two jobs may share an output folder).
    """
    removed: list[Path] = []
    by_parent: dict[Path, set[str]] = {}
    for f in map(Path, finals):
        by_parent.setdefault(f.parent, set()).add(f.name)
    now = time.time()
    for parent, names in by_parent.items():
        if not parent.is_dir():
            continue
        for p in parent.iterdir():
            owner = next((n for n in names if p.name.startswith(f".{n}.")), None)
            if owner is None:
                continue
            rest = p.name[len(owner) + 2:]
            if p.is_dir() and (rest.endswith(".tmp") or rest.startswith("old.")):
                m = re.match(r"(?:old\.)?(\d+)\.", rest)
                if m and _pid_alive(int(m.group(1))) and int(m.group(1)) != os.getpid():
                    continue
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
            elif p.is_file() and re.search(r"\.tmp(\.|$)", rest) and now - p.stat().st_mtime > min_age_s:
                p.unlink(missing_ok=True)
                removed.append(p)
    for p in removed:
        log.debug("removed %s, left by an interrupted run", p.name)
    return removed
