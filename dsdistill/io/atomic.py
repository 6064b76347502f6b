"""Atomic file writes: write to a temporary sibling, fsync, then rename onto the final name.

A crash (exception, kill, power loss) while writing never leaves a half-written file under the
final name: either the old file (or nothing) is there, or the complete new one.

Example:
    >>> with atomic_path("out.h5") as tmp:          # doctest: +SKIP
    ...     with h5py.File(tmp, "w") as f:
    ...         f["x"] = 1
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsdistill.errors import ConfigError

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "check_overwrite"]


def _fsync_file(path: Path) -> None:
    """Flush a closed file's data to disk (the writer has closed it; reopen to fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Persist a rename by fsyncing the directory (a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_overwrite(path: str | os.PathLike[str], overwrite: bool) -> None:
    """Raise ConfigError if ``overwrite`` is False and ``path`` exists (call before any work)."""
    if not overwrite and os.path.lexists(path):
        raise ConfigError(f"output {path} exists; pass --overwrite to replace it")


def _move_no_clobber(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` onto ``final`` unless ``final`` appeared meanwhile (race-free via link)."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise ConfigError(f"output {final} exists; pass --overwrite to replace it") from None
    except OSError:  # filesystem without hard links: best effort
        check_overwrite(final, False)
        os.replace(tmp, final)
        return
    tmp.unlink()


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file is ``.<name>.tmp-<pid>-<random>`` in the same directory (so the final
    ``os.replace`` is an atomic rename on one filesystem). On normal exit the file is fsynced,
    renamed onto ``path`` and the directory is fsynced. On an exception the temporary file is
    removed and the exception re-raised; ``path`` is untouched.

    The caller must close whatever it opened on the temporary path before the block ends.

    Args:
        path: Final destination.
        overwrite: If False and ``path`` already exists, raise before doing any work.

    Yields:
        The temporary path to write to (it does not exist yet).

    Raises:
        ConfigError: ``overwrite=False`` and ``path`` exists.
        FileNotFoundError: The block ended without creating the temporary file.
    """
    final = Path(path)
    check_overwrite(final, overwrite)
    directory = final.parent if str(final.parent) else Path(".")
    tmp = directory / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic write to {final} produced no file at {tmp}")
        _fsync_file(tmp)
        if overwrite:
            os.replace(tmp, final)
        else:
            _move_no_clobber(tmp, final)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def atomic_write_text(path: str | os.PathLike[str], text: str, overwrite: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Args:
        path: Destination file.
        text: Content.
        overwrite: If False, refuse to replace an existing ``path`` (ConfigError).
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, overwrite: bool = True) -> None:
    """Write ``obj`` as JSON (indent 2, keys in insertion order, trailing newline) atomically.

    Args:
        path: Destination file.
        obj: JSON-serialisable object.
        overwrite: If False, refuse to replace an existing ``path`` (ConfigError).
    """
    check_overwrite(path, overwrite)
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    atomic_write_text(path, text, overwrite=overwrite)
