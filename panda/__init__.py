"""panda: unsupervised parts and appearances in the feature maps of GAN generators (PandA, ICLR 2023)."""

__version__ = "0.1.0"

from .errors import PandaError  # noqa: E402
from .generators import BUILTIN, DEFAULT_GENERATOR, GeneratorAdapter, Latents, load_generator  # noqa: E402

__all__ = ["BUILTIN", "DEFAULT_GENERATOR", "GeneratorAdapter", "Latents", "PandaError", "__version__", "load_generator"]
