"""Reading and replacing a generator's feature maps at a named layer, with forward hooks.

``capture`` runs the generator only as far as the layer (the hook stops the forward pass),
``render_and_capture`` runs all of it and keeps the layer's output on the way, ``modified`` runs
``G[l:](f(Z))`` for any function ``f`` of the layer's output. Hooks are always removed, also when
the forward pass raises, so the generator is unchanged afterwards.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .errors import PandaError
from .generators import GeneratorAdapter, Latents, check_seeds, synchronize
from .progress import progress_bar


class _StopForward(Exception):
    """Raised by the capture hook: nothing after the layer needs computing."""


@torch.no_grad()
def capture(generator: GeneratorAdapter, latents: Latents, layer: str) -> torch.Tensor:
    """Feature maps (N, C, H, W) at ``layer`` for ``latents``."""
    module = generator.layer_module(layer)
    captured: list[torch.Tensor] = []

    def hook(_m, _inp, out):
        # clone: an in-place op downstream (ReLU(inplace=True)) must not alter what we keep.
        captured.append(out.detach().clone())
        raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        generator.synthesize(latents)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return _reached(captured, generator, layer)


@torch.no_grad()
def render_and_capture(generator: GeneratorAdapter, latents: Latents, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, H', W') in [0, 1] on the CPU, as ``generator.render`` gives them, and the feature maps
    (N, C, H, W) at ``layer``, as :func:`capture` gives them, from one forward pass: a sample's picture beside its
    maps (localisation, scores in each face's own region) would otherwise run the generator up to the layer twice."""
    module = generator.layer_module(layer)
    captured: list[torch.Tensor] = []
    # clone, as in capture: the layers after it may work in place
    handle = module.register_forward_hook(lambda _m, _inp, out: captured.append(out.detach().clone()))
    try:
        images = generator.synthesize(latents)
    finally:
        handle.remove()
    return generator.to_unit(images).cpu(), _reached(captured, generator, layer)


def _reached(captured: list[torch.Tensor], generator: GeneratorAdapter, layer: str) -> torch.Tensor:
    """The layer's first output in a forward pass, or the error that says it was never reached."""
    if not captured:
        raise PandaError(f"layer '{layer}' was not reached by the forward pass of '{generator.name}'.")
    return captured[0]


@contextlib.contextmanager
def modified(generator: GeneratorAdapter, layer: str, fn: Callable[[torch.Tensor], torch.Tensor]):
    """Within the block, ``layer``'s output Z (N, C, H, W) is replaced by ``fn(Z)``."""
    module = generator.layer_module(layer)
    handle = module.register_forward_hook(lambda _m, _inp, out: fn(out))
    try:
        yield
    finally:
        handle.remove()


def batches(items: Sequence[int] | Latents, batch_size: int) -> Iterator[Sequence[int] | Latents]:
    for start in range(0, len(items), batch_size):
        yield items[start:start + batch_size]


def iter_features(
    generator: GeneratorAdapter,
    layer: str,
    seeds: Sequence[int] | Latents,
    batch_size: int = 256,
    progress: bool | None = False,
    desc: str = "features",
) -> Iterator[torch.Tensor]:
    """Stream feature maps for ``seeds`` (or latents), batch by batch, flattened to (B, C, S), S = H*W."""
    if batch_size < 1:
        raise PandaError(f"batch size must be >= 1, got {batch_size}.")
    with progress_bar(total=len(seeds), desc=desc, unit="img", progress=progress) as bar:
        for chunk in batches(seeds, batch_size):
            z = capture(generator, generator.latents(chunk), layer)
            bar.update(len(chunk))
            yield z.flatten(2)


def default_memory_budget(device: str | torch.device = "cpu") -> int:
    """Bytes of feature maps a fit keeps in memory by default: a quarter of the memory of the device that holds them
    (the machine's, or the GPU's for a generator on a GPU, since the maps stay where they were computed), at most
    16 GiB; beyond it every pass re-generates them."""
    device = torch.device(device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            total = 8 << 30
    return int(min(total // 4, 16 << 30))


#: Held-out samples (for :meth:`panda.model.PandA.score`) are seeds from here on, far from training seeds' usual range.
HELDOUT_SEED_START = 1_000_000_000


class FeatureSource:
    """The feature maps of a fixed list of seeds (or of given latents) at one layer: the data a
    :class:`panda.model.PandA` is fitted on.

    Nothing is generated until the first pass. The first pass keeps the maps in memory when they fit
    ``memory_budget`` bytes; otherwise every pass re-generates them batch by batch (bounded memory).

    Parameters
    ----------
    generator : GeneratorAdapter
        The generator.
    layer : str
        The layer's name (``generator.layer_shapes()`` lists them).
    seeds : sequence of int, or Latents
        The samples; every pass sees them in this order. Latents (your own, :func:`panda.latents.load_latents`)
        instead of seeds: ``seeds`` is then None and ``latents`` holds them.
    batch_size : int, optional
        Generator batch size; default ``generator.default_batch`` (from the image size).
    memory_budget : int, optional
        Bytes of feature maps kept in memory; default :func:`default_memory_budget`.
    progress : bool or None
        A progress bar while generating; None (default): when stderr is a terminal.

    Attributes
    ----------
    shape : tuple of int
        The layer's (C, H, W).
    nbytes : int
        Size of all the feature maps in float32.
    streamed : bool
        True when the maps do not fit the budget and every pass re-generates them.
    extract_time : float
        Seconds spent in the generator so far, over all passes.

    Iterating yields (B, C, S) float tensors, S = H * W.
    """

    def __init__(
        self,
        generator: GeneratorAdapter,
        layer: str,
        seeds: Sequence[int] | Latents,
        batch_size: int | None = None,
        memory_budget: int | None = None,
        progress: bool | None = None,
    ) -> None:
        self.latents = seeds if isinstance(seeds, Latents) else None
        # seeds checked now, not minutes later when a pass reaches a bad one
        self.seeds = None if self.latents is not None else check_seeds(seeds)
        batch_size = generator.default_batch if batch_size is None else batch_size
        memory_budget = default_memory_budget(generator.device) if memory_budget is None else memory_budget
        if len(self) == 0:
            raise PandaError("no samples: give at least one seed.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise PandaError(f"batch_size={batch_size!r}: give a whole number >= 1.")
        if not isinstance(memory_budget, (int, float)) or not memory_budget >= 0 or memory_budget == float("inf"):
            raise PandaError(f"memory_budget={memory_budget!r}: give a finite number of bytes >= 0.")
        self.generator, self.layer = generator, layer
        self.batch_size, self.memory_budget, self.progress = batch_size, memory_budget, progress
        generator.layer_module(layer)  # validates the name, listing the valid ones
        c, h, w = self.shape = generator.layer_shapes()[layer]
        self.nbytes = len(self) * c * h * w * 4
        self.streamed = self.nbytes > memory_budget
        self.extract_time = 0.0
        self._cache: list[torch.Tensor] | None = None

    @classmethod
    def heldout(cls, generator: GeneratorAdapter, layer: str, n_samples: int, **kwargs) -> "FeatureSource":
        """``n_samples`` seeds from :data:`HELDOUT_SEED_START`, never used for training."""
        return cls(generator, layer, range(HELDOUT_SEED_START, HELDOUT_SEED_START + n_samples), **kwargs)

    def __len__(self) -> int:
        return len(self.seeds if self.latents is None else self.latents)

    @property
    def device(self) -> torch.device:
        """Where the feature maps are computed: the generator's device."""
        return self.generator.device

    def _generate(self, desc: str) -> Iterator[torch.Tensor]:
        it = iter_features(self.generator, self.layer, self.seeds if self.latents is None else self.latents,
                           self.batch_size, self.progress, desc)
        while True:
            t = time.perf_counter()
            z = next(it, None)
            if z is not None:
                synchronize(z.device)  # the generator's kernels run asynchronously: count them here
            self.extract_time += time.perf_counter() - t
            if z is None:
                return
            yield z

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self._cache is not None:
            yield from self._cache
            return
        if self.streamed:
            yield from self._generate("re-generating features (over the memory budget)")
            return
        kept = []
        for z in self._generate("extracting features"):
            kept.append(z)
            yield z
        self._cache = kept  # only a complete pass is kept


class FeatureArray:
    """Feature maps you already have, (N, C, H, W): saved from a generator panda does not wrap, or from any other
    network. :meth:`panda.model.PandA.fit` and :meth:`~panda.model.PandA.score` take them like a
    :class:`FeatureSource`; a model fitted on them has no generator, so it cannot edit, but its ``coefficients``,
    ``localize`` and ``reconstruct`` work on such maps.

    Parameters
    ----------
    maps : torch.Tensor or numpy.ndarray
        (N, C, H, W) floating-point. A NumPy array is converted a batch at a time, so a memory-mapped one
        (``np.load(path, mmap_mode="r")``) is read from disk on every pass instead of held in memory.
    layer : str
        A name for where the maps come from, recorded in the factor file.
    batch_size : int
        Samples per batch.
    device : torch device, optional
        Where the batches go (the statistics are computed there); default: the tensor's own, the CPU for NumPy.

    Iterating yields (B, C, S) float32 tensors, S = H * W. Non-finite values stop a pass with the samples' indices.
    """

    generator = None  # no generator: what a model fitted on these maps records
    seeds = None
    streamed = False
    extract_time = 0.0  # nothing is generated
    format = "features"  # the factor file's generator_source format for such a model

    def __init__(self, maps, layer: str = "features", batch_size: int = 256,
                 device: str | torch.device | None = None) -> None:
        kind = getattr(getattr(maps, "dtype", None), "kind", None)  # NumPy's: 'f' for floating-point
        if not (isinstance(maps, torch.Tensor) and maps.is_floating_point()) and kind != "f":
            raise PandaError(f"feature maps must be a floating-point torch.Tensor or numpy.ndarray (N, C, H, W), got "
                             f"{type(maps).__name__}{'' if kind is None else f' of {maps.dtype}'}.")
        if maps.ndim != 4 or maps.shape[0] == 0 or 0 in maps.shape[1:]:
            raise PandaError(f"feature maps must be (N, C, H, W) with N >= 1, got shape {tuple(maps.shape)}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise PandaError(f"batch_size={batch_size!r}: give a whole number >= 1.")
        if not isinstance(layer, str) or not layer:
            raise PandaError(f"layer={layer!r}: name where the maps come from (a non-empty string).")
        self.maps, self.layer, self.batch_size = maps, layer, batch_size
        default = maps.device if isinstance(maps, torch.Tensor) else "cpu"
        self.device = torch.device(default if device is None else device)
        self.shape = tuple(int(d) for d in maps.shape[1:])
        self.nbytes = int(maps.shape[0]) * self.shape[0] * self.shape[1] * self.shape[2] * 4

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def __iter__(self) -> Iterator[torch.Tensor]:
        for start in range(0, len(self), self.batch_size):
            chunk = self.maps[start:start + self.batch_size]
            if not isinstance(chunk, torch.Tensor):  # NumPy (any byte order or float width): read this batch now
                chunk = torch.from_numpy(np.array(chunk, dtype=np.float32))  # a copy: memory maps are read-only
            z = chunk.to(self.device, torch.float32)
            if not torch.isfinite(z).all():
                bad = start + int((~torch.isfinite(z)).flatten(1).any(1).nonzero()[0])
                raise PandaError(f"feature maps of sample {bad} hold NaN or infinity: remove or repair it.")
            yield z.flatten(2)


def as_features(data) -> "FeatureSource | FeatureArray":
    """What :meth:`panda.model.PandA.fit` and ``score`` take: a :class:`FeatureSource` or :class:`FeatureArray` as it
    is, a tensor or NumPy array (N, C, H, W) wrapped in a :class:`FeatureArray`."""
    if isinstance(data, (FeatureSource, FeatureArray)):
        return data
    if isinstance(data, torch.Tensor) or hasattr(data, "__array_interface__"):
        return FeatureArray(data)
    raise PandaError(f"give a FeatureSource (generator, layer, seeds) or feature maps (N, C, H, W) as a tensor or "
                     f"NumPy array, not {type(data).__name__}.")
