"""Where data lives: the data root (user data, read-only) and the cache (derived files we write).

The data root is resolved in this order: an explicit ``--data-root``; ``$DSDISTILL_DATA``;
``../shared/data`` next to the repository checkout (the project's shared dataset folder) when it
exists; ``~/.cache/dsdistill/data``. We never write into the data root: decompressed or converted
copies go to the cache (``$DSDISTILL_CACHE`` or ``~/.cache/dsdistill``).
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
from pathlib import Path

EMBEDDED_ROOT = Path(__file__).resolve().parent / "embedded"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_root() -> Path:
    """The data root used when none is given (see module docstring)."""
    env = os.environ.get("DSDISTILL_DATA")
    if env:
        return Path(env).expanduser()
    for candidate in (_REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return Path.home() / ".cache" / "dsdistill" / "data"


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """``data_root`` as a Path, or the default."""
    return Path(data_root).expanduser() if data_root else default_data_root()


def cache_dir(*parts: str) -> Path:
    """A writable cache directory (created), e.g. ``cache_dir("mnist")``."""
    root = Path(os.environ.get("DSDISTILL_CACHE", Path.home() / ".cache" / "dsdistill")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def decompress_to(source: Path, target: Path) -> Path:
    """Decompress a ``.gz``/``.xz`` file to ``target`` once (atomically); return ``target``."""
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    opener = gzip.open if source.suffix == ".gz" else lzma.open
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with opener(source, "rb") as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, length=1 << 22)
    os.replace(tmp, target)
    return target
