"""Latent files: a person's own generator inputs (z, W or W+), read and checked against a generator, and written.

Seeds reach only the latents panda draws itself. Whoever compares editing methods edits the same latents with each
of them, so every command that draws samples also takes a file of latents (``--latent FILE``). Formats, chosen by
the file's suffix; never a pickle (``.pt``, ``.pth`` and ``.pkl`` files can run code when read):

- ``.npy``: one array: z, (N, latent_dim) or (latent_dim,) for one latent; or W+, (N, num_ws, w_dim);
- ``.npz`` and ``.safetensors``: arrays by name: ``z`` (N, latent_dim), or ``ws`` (N, w_dim) for W (one w for every
  layer) or (N, num_ws, w_dim) for W+; and, for a conditional generator, ``labels`` (N,) class indices.

W and W+ are used as given (no truncation), z goes through the mapping network with the generator's truncation, as
a seed's z does. ``panda project`` writes ``.safetensors`` files with ``ws`` and the hash of the generator's weights
in the metadata; a file that names a generator is refused on any other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from .errors import PandaError
from .fileio import atomic_write
from .generators import GeneratorAdapter, Latents

#: The suffixes :func:`load_latents` reads.
LATENT_SUFFIXES = (".npy", ".npz", ".safetensors")
#: The arrays a ``.npz`` or ``.safetensors`` latent file may hold.
LATENT_KEYS = ("z", "ws", "labels")
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin")


def _read_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The file's arrays by name (a ``.npy``'s one array is named by its rank: 3-D ``ws``, else ``z``), and its
    metadata (safetensors only)."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise PandaError(f"'{path}' is a pickle, which can run code when read: save the latents with "
                         f"numpy.save('latents.npy', z) or numpy.savez('latents.npz', z=z) instead.")
    if suffix not in LATENT_SUFFIXES:
        raise PandaError(f"'{path}': give latents as {', '.join(LATENT_SUFFIXES)} (numpy.save, numpy.savez or "
                         f"safetensors), not '{suffix or 'no suffix'}'.")
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            return {"ws" if array.ndim == 3 else "z": array}, {}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files}, {}
        with safe_open(str(path), framework="np") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata() or {}
    except Exception as exc:
        raise PandaError(f"'{path}' is not a readable {suffix} file ({exc}): write the latents again.") from exc


def _floats(path: Path, name: str, array: np.ndarray) -> torch.Tensor:
    if array.dtype.kind != "f":
        raise PandaError(f"'{path}': {name} holds {array.dtype} values: latents are floating-point numbers.")
    if not np.isfinite(array).all():
        raise PandaError(f"'{path}': {name} holds non-finite values (NaN or infinity): write the latents again.")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _labels(path: Path, generator: GeneratorAdapter, labels: np.ndarray | None, n: int) -> torch.Tensor | None:
    """(N,) class indices for a conditional generator: the file's, or ``--class``'s for every latent."""
    if generator.classes is None:
        if labels is not None:
            raise PandaError(f"'{path}' gives class labels, but '{generator.name}' is unconditional: remove them.")
        return None
    if labels is None:
        if generator.class_index is None:
            raise PandaError(f"'{generator.name}' is conditional: put the classes in the file (labels, (N,) indices "
                             f"in 0..{len(generator.classes) - 1}) or give one class for all with --class.")
        return torch.full((n,), generator.class_index, dtype=torch.long)
    if generator.class_index is not None:
        raise PandaError(f"'{path}' gives class labels and --class gives one more: drop one of them.")
    if labels.dtype.kind not in "iu" or labels.shape != (n,):
        raise PandaError(f"'{path}': labels must be {n} integers (one per latent), not {labels.dtype} {labels.shape}.")
    if labels.min() < 0 or labels.max() >= len(generator.classes):
        raise PandaError(f"'{path}': labels must be class indices in 0..{len(generator.classes) - 1} "
                         f"({', '.join(generator.classes)}).")
    return torch.from_numpy(labels.astype(np.int64))


def load_latents(path: str | Path, generator: GeneratorAdapter) -> Latents:
    """Latents (N) read from ``path`` (formats: the module's docstring), checked against ``generator``: shapes,
    finiteness, class labels and, where the file names one, the generator it was made with."""
    path = Path(path)
    if not path.is_file():
        raise PandaError(f"latent file '{path}' does not exist: give a .npy or .npz of latents, or the file "
                         f"`panda project` wrote.")
    arrays, meta = _read_arrays(path)
    if meta.get("generator_sha256", generator.weight_hash) != generator.weight_hash:
        raise PandaError(f"'{path}' was made with generator '{meta.get('generator')}', not '{generator.name}': "
                         f"use that generator, or project the image again.")
    unknown = sorted(set(arrays) - set(LATENT_KEYS))
    if unknown or ("z" in arrays) == ("ws" in arrays):
        raise PandaError(f"'{path}' holds {sorted(arrays) or 'no arrays'}: give z (N, {generator.latent_dim}) or ws "
                         f"(W or W+) and, for a conditional generator, labels; nothing else.")
    if "z" in arrays:
        z = _floats(path, "z", arrays["z"])
        z = z[None] if z.dim() == 1 else z
        if z.dim() != 2 or z.shape[1] != generator.latent_dim or len(z) == 0:
            raise PandaError(f"'{path}': z has shape {tuple(arrays['z'].shape)}; '{generator.name}' takes "
                             f"(N, {generator.latent_dim}) with N >= 1.")
        return Latents(z, _labels(path, generator, arrays.get("labels"), len(z)))
    ws = _floats(path, "ws", arrays["ws"])
    # the generator's W+ shape, from one mapping pass (it also says when there is no mapping network at all)
    _, num_ws, w_dim = generator.to_w([0]).shape
    if not ((ws.dim() == 2 and ws.shape[1] == w_dim) or (ws.dim() == 3 and ws.shape[1:] == (num_ws, w_dim))) or not len(ws):
        raise PandaError(f"'{path}': ws has shape {tuple(ws.shape)}; '{generator.name}' takes W (N, {w_dim}) or W+ "
                         f"(N, {num_ws}, {w_dim}) with N >= 1.")
    return Latents.from_w(ws, _labels(path, generator, arrays.get("labels"), len(ws)), generator.latent_dim)


def check_latent_path(path: str | Path) -> Path:
    """``path`` as a latent file may be named (``.safetensors``), checked before any work."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise PandaError(f"'{path}': latents are written as .safetensors: give a path ending in .safetensors.")
    return path


def save_latents(latents: Latents, generator: GeneratorAdapter, path: str | Path,
                 metadata: dict[str, str] | None = None) -> Path:
    """Write ``latents`` as ``.safetensors`` (``ws`` where they are given in W or W+, else ``z``; ``labels`` for a
    conditional generator) with the generator's name and weight hash, which :func:`load_latents` checks."""
    path = check_latent_path(path)
    tensors = {"ws": latents.ws} if latents.ws is not None else {"z": latents.z}
    if latents.labels is not None:
        tensors["labels"] = latents.labels
    meta = {"generator": generator.name, "generator_sha256": generator.weight_hash} | dict(metadata or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta))
