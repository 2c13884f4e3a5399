"""Reading and replacing a generator's feature maps at a named layer, with forward hooks.

``capture`` runs the generator only as far as the layer (the hook stops the forward pass),
``modified`` runs ``G[l:](f(Z))`` for any function ``f`` of the layer's output. Hooks are
always removed, also when the forward pass raises, so the generator is unchanged afterwards.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from .errors import PandaError
from .generators import GeneratorAdapter, Latents


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
    progress: bool = False,
    desc: str = "features",
) -> Iterator[torch.Tensor]:
    """Stream feature maps for ``seeds``, batch by batch, flattened to (B, C, S), S = H*W."""
    if batch_size < 1:
        raise PandaError(f"batch size must be >= 1, got {batch_size}.")
    with tqdm(total=len(seeds), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for chunk in batches(seeds, batch_size):
            z = capture(generator, generator.sample(chunk), layer)
            bar.update(len(chunk))
            yield z.flatten(2)


class FeatureSource:
    """The feature maps of a fixed list of seeds, kept in memory when they fit ``memory_budget``
    bytes and re-generated batch by batch (bounded memory) otherwise.

    Iterating yields (B, C, S) float tensors; every pass sees the same samples in the same order.
    """

    def __init__(
        self,
        generator: GeneratorAdapter,
        layer: str,
        seeds: Sequence[int],
        batch_size: int = 256,
        memory_budget: int = 2 << 30,
        progress: bool = False,
    ) -> None:
        if len(seeds) == 0:
            raise PandaError("no samples: n_samples must be >= 1.")
        self.generator, self.layer, self.seeds = generator, layer, list(seeds)
        self.batch_size, self.progress = batch_size, progress
        generator.layer_module(layer)  # validates the name, listing the valid ones
        c, h, w = self.shape = generator.layer_shapes()[layer]
        self.nbytes = len(self.seeds) * c * h * w * 4
        self.cached: list[torch.Tensor] | None = None
        if self.nbytes <= memory_budget:
            self.cached = list(iter_features(generator, layer, self.seeds, batch_size, progress, "extracting features"))

    def __len__(self) -> int:
        return len(self.seeds)

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.cached is not None:
            return iter(self.cached)
        return iter_features(self.generator, self.layer, self.seeds, self.batch_size, self.progress, "re-generating features")
