"""panda: unsupervised parts and appearances in the feature maps of GAN generators (PandA, ICLR 2023)."""

import os

# torch's OpenMP threads spin for a while before they sleep. On a machine whose cores something else is using, the
# spinning threads take turns with the work they wait for: a fit measured 40x slower on 2 busy cores (49.5 s against
# 1.2 s idle). A short spin keeps that to 2x (2.6 s) and costs about 5% when idle; the user's own setting wins, and it
# only takes effect if torch was not imported before panda (benchmarks/fit_speed.md, "Busy machine").
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

# imports after the OpenMP setting above
from .checkpoints import FORMATS, load_checkpoint, load_generator  # noqa: E402
from .errors import PandaError  # noqa: E402
from .generators import (DEFAULT_GENERATOR, GENERATORS, GeneratorAdapter, GeneratorSpec, Latents,  # noqa: E402
                         LocalWeights, register_generator)
from .latents import load_latents, save_latents  # noqa: E402
from .version import __version__  # noqa: E402

# The estimator and its data, importable from the package (``from panda import PandA, FeatureSource``) but imported
# only when first asked for, so that ``import panda`` (a generator plugin, the registries) stays at the bottom layers.
_LAZY = {"PandA": "model", "FeatureSource": "features"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'panda' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["DEFAULT_GENERATOR", "FORMATS", "FeatureSource", "GENERATORS", "GeneratorAdapter", "GeneratorSpec", "Latents",
           "LocalWeights", "PandA", "PandaError", "__version__", "load_checkpoint", "load_generator", "load_latents",
           "register_generator", "save_latents"]
