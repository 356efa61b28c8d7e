"""Atomic file writes: a file either appears whole under its final name or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


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
    first renamed aside and deleted only after the new folder is in place, so `final` is never half
    written (a reader may briefly find it missing, never incomplete)."""
    import shutil

    tmp, final = Path(tmp), Path(final)
    if not final.exists():
        os.replace(tmp, final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
    os.replace(final, old / final.name)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
