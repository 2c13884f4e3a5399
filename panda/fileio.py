"""Files: atomic writes, output folders, content hashes, arrays (.npz), torch files read without running code, and labels
as file names (the bottom layer; no panda imports but errors).

Every file panda writes goes through :func:`atomic_write`: a temporary file in the same folder,
flushed to disk, then renamed over the target. An interrupted run leaves either the old file or the
new one, never half of one, and no temporary file (it is removed on any exception; on Linux a kill -9
can leave one only in the instant between naming and renaming it, and the next write of that file removes it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch

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
    not ``mkstemp``'s ``0o600``, so a web server or a colleague can read it. On Linux the data go to an
    unnamed file (``O_TMPFILE``) that gets a name only once complete, and is renamed over the target at once
    (no system call can link it there directly): a ``kill -9`` while writing leaves nothing behind, except in
    the instant between those two calls, and the next write of the same file removes what that left
    (:func:`_remove_stale_names`). Elsewhere a named temporary file is removed on any exception.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    mode = 0o666 & ~_umask()
    fd = None
    if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd"):
        try:
            fd = os.open(parent, os.O_TMPFILE | os.O_WRONLY, mode)
        except OSError:  # a file system without O_TMPFILE: the named temporary file below
            fd = None
    if fd is not None:
        try:
            _remove_stale_names(parent, path.name)
            with os.fdopen(fd, "wb") as fh:
                _fill(fh, data)
                tmp = parent / f".{path.name}.{os.getpid()}.{id(fh):x}.tmp"
                _link_unnamed(fh.fileno(), tmp)
                try:  # before closing the file: the name exists for as short a time as can be
                    os.replace(tmp, path)
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
        except OSError as exc:
            raise PandaError(f"cannot write '{path}' ({exc.strerror}): choose another location.") from exc
        return path
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise PandaError(f"cannot write '{path}' ({exc.strerror}): choose another location.") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            _fill(fh, data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _remove_stale_names(parent: Path, name: str) -> None:
    """Remove the names ``.NAME.PID.ID.tmp`` (see :func:`atomic_write`) whose writer no longer runs: a writer killed
    between naming its unnamed file and renaming it over NAME. A running writer holds such a name for the time of
    one system call, and its process is alive."""
    prefix = f".{name}."
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    for n in names:
        fields = n[len(prefix):-len(".tmp")].split(".")
        if len(fields) != 2 or not fields[0].isdigit() or _running(int(fields[0])):
            continue
        try:
            os.unlink(parent / n)
        except OSError:  # gone already, or not ours to remove
            pass


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _link_unnamed(fd: int, target: Path) -> None:
    """Give the unnamed (O_TMPFILE) file ``fd`` the name ``target``: linkat through /proc with AT_SYMLINK_FOLLOW
    (os.link uses linkat, not link, only when given a directory fd)."""
    proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(str(fd), target, src_dir_fd=proc, follow_symlinks=True)
    finally:
        os.close(proc)


def _fill(fh: BinaryIO, data: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Write the content and make it durable (flush and fsync) before it is given its name."""
    if callable(data):
        data(fh)
    else:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    fh.flush()
    os.fsync(fh.fileno())


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


def file_label(label: object) -> str:
    """A label as file names carry it: '20 (blue)' as ``20blue``, 'part 3' as ``part3``, 'left eye' as ``lefteye``
    (letters, digits, '.', '_' and '-' only: nothing a shell would need quoted)."""
    return re.sub(r"[^A-Za-z0-9._-]", "", str(label))


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_tensors(path: str | os.PathLike, fix: str) -> Any:
    """What ``torch.save`` wrote to ``path``, read with ``weights_only=True`` (tensors and containers only: no code in
    the file runs) onto the CPU. A file holding other objects, and one torch cannot read, are each one line that ends
    with ``fix`` (what the user should do, e.g. "save it with torch.save(module.state_dict(), path)")."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        # torch reports a class in the pickle and a file that is no pickle at all with the same exception type; only
        # the first names a global.
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            raise PandaError(f"'{path}' holds objects other than tensors and containers ({found[1]}), so panda will "
                             f"not load it: {fix}.") from exc
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        reason = detail[1] if detail else text.splitlines()[0] if text else type(exc).__name__
        raise PandaError(f"'{path}' is not a readable torch file ({reason[:200]}): {fix}.") from exc


def check_output_file(path: str | os.PathLike, overwrite: bool = False, flag: str = "--overwrite") -> Path:
    """Check, before any work, that ``path`` can be written as a new file; nothing is created.

    Refused: an empty name, a folder, a path under a file, a folder that cannot be created or written, and an
    existing file unless ``overwrite`` (the message names ``flag``).

    Returns
    -------
    Path
        The path.
    """
    if str(path).strip() == "":
        raise PandaError("the output file name is empty: give a file name, e.g. factors.safetensors.")
    path = Path(path)
    if path.is_dir():
        raise PandaError(f"'{path}' is a folder: give a file name inside it, e.g. {path / 'factors.safetensors'}.")
    if path.exists() and not overwrite:
        raise PandaError(f"'{path}' already exists: pass {flag} to replace it, or choose another name.")
    ancestor = path.parent if str(path.parent) else Path(".")
    while not ancestor.exists():  # the nearest existing folder must be a writable folder
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PandaError(f"cannot write '{path}': '{ancestor}' is a file, not a folder; choose another path.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PandaError(f"cannot write '{path}': the folder '{ancestor}' is not writable; choose another path.")
    try:  # os.access says yes to root everywhere, /proc and read-only mounts included: try an unnamed file
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        raise PandaError(f"cannot write '{path}': files cannot be created in '{ancestor}' ({exc.strerror}); "
                         f"choose another path.") from exc
    return path


def backup(path: str | os.PathLike) -> Path | None:
    """Copy an existing file to ``<path>.bak`` (atomically) before it is rewritten in place; returns the copy's path."""
    path = Path(path)
    if not path.is_file():
        return None
    return atomic_write(path.with_name(path.name + ".bak"), path.read_bytes())


#: The list of the files a page folder was published with (:func:`publish_folder`): the next page written there
#: replaces those, and refuses to replace a folder holding others.
PAGE_MARKER = ".panda-page"


#: Files a file browser leaves in any folder it shows: not the user's work, so they do not keep a page from being
#: replaced.
BROWSER_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def _foreign_files(folder: Path) -> list[str]:
    """The entries of ``folder`` that panda did not write there: those its marker does not list, or, in a page written
    before the marker, anything but its index, factors and pictures (and a file browser's own files)."""
    names = sorted(p.name for p in folder.iterdir() if p.name not in BROWSER_FILES)
    marker = folder / PAGE_MARKER
    if marker.is_file():
        ours = set(marker.read_text().splitlines()) | {PAGE_MARKER}
        return [n for n in names if n not in ours]
    return [n for n in names if n not in ("index.html", "factors.safetensors") and not n.endswith(".png")]


def staging_folder(final: str | os.PathLike) -> Path:
    """A fresh, empty hidden folder beside ``final`` to build its new content in (see :func:`publish_folder`); a
    leftover from an interrupted run is cleared first. ``final`` must not exist, be empty, or hold only what a
    page written this way put there: :func:`publish_folder` replaces it as a whole, so a folder holding any file of
    the user's own is refused, before any work."""
    final = Path(final).resolve()
    if final.exists() and not final.is_dir():
        raise PandaError(f"'{final}' is a file: give a folder for the output.")
    foreign = _foreign_files(final) if final.is_dir() else []
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise PandaError(f"'{final}' holds files panda did not write ({shown}), and the page replaces its folder as "
                         f"a whole: give a new or empty folder, or move those files out.")
    staging = final.parent / f".{final.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    return check_writable(staging)


def publish_folder(staging: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Put a finished ``staging`` folder in the place of ``final`` with two renames: an interrupted run leaves the
    previous ``final`` whole (and at worst a hidden ``.NAME.old`` copy of it), never a mix of old and new files. The
    folder gets a list of its files (:data:`PAGE_MARKER`), so that the next page replaces it only if nothing was added."""
    staging, target = Path(staging), Path(final).resolve()  # resolved: 'out/.' has a name and a parent
    (staging / PAGE_MARKER).write_text("".join(f"{p.name}\n" for p in sorted(staging.iterdir())
                                               if p.name != PAGE_MARKER))
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    return Path(final)


def as_arrays(data: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """The arrays in ``data`` by name: a dict's, a dataclass's or a named tuple's entries that are tensors, NumPy
    arrays, numbers, strings or lists of them; nested ones give ``outer_inner`` names, and a table keyed by other
    than names (``{(appearance, sign): gain}``) gives ``outer_keys`` and ``outer_values``. Anything else (None,
    objects) is left out: this is the data behind a picture, not a way to store Python objects."""
    if dataclasses.is_dataclass(data):
        items = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    elif hasattr(data, "_asdict"):  # a named tuple
        items = data._asdict()
    elif all(isinstance(k, str) for k in data):
        items = data
    else:
        items = {"keys": list(data.keys()), "values": list(data.values())}
    out: dict[str, np.ndarray] = {}
    for name, value in items.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) or dataclasses.is_dataclass(value) or hasattr(value, "_asdict"):
            out.update(as_arrays(value, key + "_"))
            continue
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if value is None:
            continue
        try:
            array = np.asarray(value)
        except (ValueError, TypeError):  # ragged lists
            continue
        if array.dtype.kind in "biufUS":  # numbers and text; objects would need a pickle to read back
            out[key] = array
    return out


def save_arrays(path: str | os.PathLike, data: Any) -> Path:
    """Write :func:`as_arrays` of ``data`` as one compressed ``.npz``, atomically: ``np.load(path)`` reads it, no
    pickle involved."""
    arrays = as_arrays(data)
    return atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))
