"""Reading and replacing a generator's feature maps at a named layer, with forward hooks.

``capture`` runs the generator only as far as the layer (the hook stops the forward pass),
``modified`` runs ``G[l:](f(Z))`` for any function ``f`` of the layer's output. Hooks are
always removed, also when the forward pass raises, so the generator is unchanged afterwards.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Iterator, Sequence

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


def batches(items: Sequence[int], batch_size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), batch_size):
        yield items[start:start + batch_size]


def iter_features(
    generator: GeneratorAdapter,
    layer: str,
    seeds: Sequence[int],
    batch_size: int = 256,
    progress: bool | None = False,
    desc: str = "features",
) -> Iterator[torch.Tensor]:
    """Stream feature maps for ``seeds``, batch by batch, flattened to (B, C, S), S = H*W."""
    if batch_size < 1:
        raise PandaError(f"batch size must be >= 1, got {batch_size}.")
    with progress_bar(total=len(seeds), desc=desc, unit="img", progress=progress) as bar:
        for chunk in batches(seeds, batch_size):
            z = capture(generator, generator.sample(chunk), layer)
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
    """The feature maps of a fixed list of seeds at one layer: the data a :class:`panda.model.PandA` is fitted on.

    Nothing is generated until the first pass. The first pass keeps the maps in memory when they fit
    ``memory_budget`` bytes; otherwise every pass re-generates them batch by batch (bounded memory).

    Parameters
    ----------
    generator : GeneratorAdapter
        The generator.
    layer : str
        The layer's name (``generator.layer_shapes()`` lists them).
    seeds : sequence of int
        The samples; every pass sees them in this order.
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
        seeds: Sequence[int],
        batch_size: int | None = None,
        memory_budget: int | None = None,
        progress: bool | None = None,
    ) -> None:
        self.seeds = check_seeds(seeds)  # now, not minutes later when a pass reaches a bad one
        batch_size = generator.default_batch if batch_size is None else batch_size
        memory_budget = default_memory_budget(generator.device) if memory_budget is None else memory_budget
        if len(self.seeds) == 0:
            raise PandaError("no samples: give at least one seed.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise PandaError(f"batch_size={batch_size!r}: give a whole number >= 1.")
        if not isinstance(memory_budget, (int, float)) or not memory_budget >= 0 or memory_budget == float("inf"):
            raise PandaError(f"memory_budget={memory_budget!r}: give a finite number of bytes >= 0.")
        self.generator, self.layer = generator, layer
        self.batch_size, self.memory_budget, self.progress = batch_size, memory_budget, progress
        generator.layer_module(layer)  # validates the name, listing the valid ones
        c, h, w = self.shape = generator.layer_shapes()[layer]
        self.nbytes = len(self.seeds) * c * h * w * 4
        self.streamed = self.nbytes > memory_budget
        self.extract_time = 0.0
        self._cache: list[torch.Tensor] | None = None

    @classmethod
    def heldout(cls, generator: GeneratorAdapter, layer: str, n_samples: int, **kwargs) -> "FeatureSource":
        """``n_samples`` seeds from :data:`HELDOUT_SEED_START`, never used for training."""
        return cls(generator, layer, range(HELDOUT_SEED_START, HELDOUT_SEED_START + n_samples), **kwargs)

    def __len__(self) -> int:
        return len(self.seeds)

    def _generate(self, desc: str) -> Iterator[torch.Tensor]:
        it = iter_features(self.generator, self.layer, self.seeds, self.batch_size, self.progress, desc)
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
