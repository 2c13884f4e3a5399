"""Files: atomic writes, output folders and content hashes (the bottom layer; no panda imports but errors).

Every file panda writes goes through :func:`atomic_write`: a temporary file in the same folder,
flushed to disk, then renamed over the target. An interrupted run leaves either the old file or the
new one, never half of one, and never a temporary file (it is removed on any exception).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import PandaError


def _umask() -> int:
    # os.umask can only be read by setting it; set it back at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], None]) -> Path:
    """Write ``data`` to ``path`` atomically and return the path.

    Parameters
    ----------
    path : path-like
        The file to (over)write; its folder must exist.
    data : bytes, str or callable
        The content (a str is written as UTF-8), or a function that writes it to an open binary file.

    Notes
    -----
    The file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask),
    not ``mkstemp``'s ``0o600``, so a web server or a colleague can read it.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise PandaError(f"cannot write '{path}' ({exc.strerror}): choose another location.") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_writable(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed and make sure files can be written there.

    Returns
    -------
    Path
        The folder.
    """
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".panda-write-test-"):
            pass
    except OSError as exc:
        raise PandaError(f"cannot write to the output folder '{path}' ({exc.strerror}): choose another folder.") from exc
    return path


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
