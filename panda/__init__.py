"""panda: unsupervised parts and appearances in the feature maps of GAN generators (PandA, ICLR 2023)."""

from .checkpoints import FORMATS, load_checkpoint, load_generator
from .errors import PandaError
from .generators import DEFAULT_GENERATOR, GENERATORS, GeneratorAdapter, GeneratorSpec, Latents, register_generator
from .version import __version__

__all__ = ["DEFAULT_GENERATOR", "FORMATS", "GENERATORS", "GeneratorAdapter", "GeneratorSpec", "Latents", "PandaError", "__version__",
           "load_checkpoint", "load_generator", "register_generator"]
