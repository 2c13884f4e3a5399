"""Generator adapters: one seam for every architecture.

A :class:`GeneratorAdapter` wraps any ``torch.nn.Module`` generator with what panda needs
to know about it: how to turn seeds into latents (reproducibly), optional class
conditioning, the output range, and where its layers are. Features at a layer are read and
replaced with forward hooks (see :mod:`panda.features`), so ``G[l:](Z')`` needs no
per-architecture forward splitting: a StyleGAN or BigGAN adapter only has to say how to
call its module.

Built in are three real pretrained DCGANs that ship inside PyPI wheels. Their weight files
are read directly (``weights_only=True``), never their packages' code.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import PandaError

#: How a wrapped module is called: ``forward_fn(module, z, onehot) -> images``.
#: ``z`` is (N, latent_dim); ``onehot`` is (N, n_classes) or None; images are (N, 3, H, W).
ForwardFn = Callable[[nn.Module, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass
class Latents:
    """A batch of generator inputs.

    z:      (N, latent_dim) float tensor.
    labels: (N,) long tensor of class indices for a conditional generator, else None.
    """

    z: torch.Tensor
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.z.shape[0]

    def __getitem__(self, index) -> "Latents":
        labels = None if self.labels is None else self.labels[index]
        return Latents(self.z[index], labels)

    def to(self, device) -> "Latents":
        labels = None if self.labels is None else self.labels.to(device)
        return Latents(self.z.to(device), labels)


def _call_with_image_latent(module: nn.Module, z: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
    """DCGAN convention: the latent (and one-hot class, concatenated) is a 1x1 'image'."""
    x = z if onehot is None else torch.cat([z, onehot], dim=1)
    return module(x[:, :, None, None])


class GeneratorAdapter:
    """A pretrained generator with everything panda needs to sample, hook and edit it.

    Parameters
    ----------
    module:       the generator; put in eval mode, its parameters frozen.
    name:         identifier written into factor files (e.g. ``"dcgan-celeba"``).
    latent_dim:   size of z.
    weight_hash:  sha256 of the weights, written into factor files so that a factor file
                  is never used with another generator by mistake.
    forward_fn:   how to call ``module`` (see :data:`ForwardFn`); default ``module(z)``.
    classes:      class names of a conditional generator, else None.
    output_range: the range of the images the module returns.
    default_layer: the layer the CLI uses when none is given.
    """

    def __init__(
        self,
        module: nn.Module,
        name: str,
        latent_dim: int,
        weight_hash: str = "",
        forward_fn: ForwardFn | None = None,
        classes: Sequence[str] | None = None,
        output_range: tuple[float, float] = (-1.0, 1.0),
        default_layer: str | None = None,
        description: str = "",
    ) -> None:
        self.module = module.eval().requires_grad_(False)
        self.name = name
        self.latent_dim = latent_dim
        self.weight_hash = weight_hash
        self.forward_fn = forward_fn or (lambda m, z, onehot: m(z))
        self.classes = tuple(classes) if classes else None
        self.output_range = output_range
        self.default_layer = default_layer
        self.description = description
        self._layer_shapes: dict[str, tuple[int, int, int]] | None = None

    # ------------------------------------------------------------------ device
    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device: str | torch.device) -> "GeneratorAdapter":
        self.module.to(resolve_device(device))
        return self

    # ---------------------------------------------------------------- sampling
    def sample(self, seeds: Sequence[int], class_index: int | None = None) -> Latents:
        """Latents for ``seeds``: ``np.random.RandomState(seed).randn(1, latent_dim)``.

        The same seed gives the same image in every tool that follows this (StyleGAN3's
        ``gen_images.py`` convention). A conditional generator draws the class from the
        same RandomState after z unless ``class_index`` fixes it.
        """
        seeds = [int(s) for s in seeds]
        for s in seeds:
            if not 0 <= s < 2**32:
                raise PandaError(f"seed {s} is out of range: seeds must be in [0, 2**32).")
        if class_index is not None:
            if self.classes is None:
                raise PandaError(f"generator '{self.name}' is unconditional: drop --class.")
            if not 0 <= class_index < len(self.classes):
                raise PandaError(
                    f"class {class_index} is out of range for '{self.name}': "
                    f"use 0..{len(self.classes) - 1} ({', '.join(self.classes)})."
                )
        z = np.empty((len(seeds), self.latent_dim), dtype=np.float32)
        labels = np.empty(len(seeds), dtype=np.int64)
        for row, seed in enumerate(seeds):
            rng = np.random.RandomState(seed)
            z[row] = rng.randn(self.latent_dim)
            if self.classes is not None:
                labels[row] = rng.randint(len(self.classes)) if class_index is None else class_index
        device = self.device
        lab = torch.from_numpy(labels).to(device) if self.classes is not None else None
        return Latents(torch.from_numpy(z).to(device), lab)

    # --------------------------------------------------------------- synthesis
    @torch.no_grad()
    def synthesize(self, latents: Latents) -> torch.Tensor:
        """Images (N, 3, H, W) in ``output_range`` for ``latents``."""
        latents = latents.to(self.device)
        onehot = None
        if self.classes is not None:
            if latents.labels is None:
                raise PandaError(f"generator '{self.name}' is conditional: give class labels.")
            onehot = torch.nn.functional.one_hot(latents.labels, len(self.classes)).to(latents.z.dtype)
        return self.forward_fn(self.module, latents.z, onehot)

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """Map images from ``output_range`` to [0, 1] (clamped for display)."""
        lo, hi = self.output_range
        return ((images - lo) / (hi - lo)).clamp(0.0, 1.0)

    # ------------------------------------------------------------------ layers
    def layer_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Every named sub-module whose output is a feature map, with its (C, H, W)."""
        if self._layer_shapes is None:
            shapes: dict[str, tuple[int, int, int]] = {}
            handles = []
            for lname, sub in self.module.named_modules():
                if lname == "":
                    continue

                def record(_m, _inp, out, lname=lname):
                    if isinstance(out, torch.Tensor) and out.dim() == 4:
                        shapes[lname] = tuple(int(d) for d in out.shape[1:])

                handles.append(sub.register_forward_hook(record))
            try:
                self.synthesize(self.sample([0]))
            finally:
                for h in handles:
                    h.remove()
            self._layer_shapes = shapes
        return dict(self._layer_shapes)

    def layer_module(self, layer: str) -> nn.Module:
        """The sub-module named ``layer``; a clear error listing valid names otherwise."""
        shapes = self.layer_shapes()
        if layer not in shapes:
            valid = ", ".join(f"{n} ({'x'.join(map(str, s))})" for n, s in shapes.items())
            raise PandaError(f"unknown layer '{layer}' for generator '{self.name}'. Valid layers: {valid}.")
        return dict(self.module.named_modules())[layer]


# ====================================================================== built-in generators
class CelebaDCGAN(nn.Module):
    """generateme's DCGAN (100 -> 512x4x4 -> ... -> 3x64x64), with its functional ReLUs
    made into named modules (``relu1..4``) so every stage is hookable. The state-dict keys
    (``convTr1..5``, ``batchNorm1..4``) match generateme's file."""

    def __init__(self) -> None:
        super().__init__()
        widths = [100, 512, 256, 128, 64]
        for i in range(4):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            setattr(self, f"convTr{i + 1}", nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride, pad, bias=False))
            setattr(self, f"batchNorm{i + 1}", nn.BatchNorm2d(widths[i + 1]))
            setattr(self, f"relu{i + 1}", nn.ReLU())
        self.convTr5 = nn.ConvTranspose2d(64, 3, 4, 2, 1, bias=False)
        self.tanh = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 5):
            x = getattr(self, f"relu{i}")(getattr(self, f"batchNorm{i}")(getattr(self, f"convTr{i}")(x)))
        return self.tanh(self.convTr5(x))


class SequentialDCGAN(nn.Module):
    """The PyTorch-tutorial DCGAN as ``self.main = nn.Sequential(...)``: blocks of
    ConvTranspose2d (no bias), BatchNorm2d, ReLU, then ConvTranspose2d and Tanh.

    ``widths`` lists the channels from the input to the last hidden block;
    ``dropout_after_first`` inserts the Dropout the eye generator has at index 3, so that
    the state-dict indices match.
    """

    def __init__(self, widths: Sequence[int], out_channels: int = 3, dropout_after_first: float | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride, pad, bias=False),
                       nn.BatchNorm2d(widths[i + 1]), nn.ReLU()]
            if i == 0 and dropout_after_first is not None:
                layers.append(nn.Dropout(dropout_after_first))
        layers += [nn.ConvTranspose2d(widths[-1], out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


@dataclass(frozen=True)
class BuiltinSpec:
    """Where a built-in generator's weights live and how to build its module."""

    package: str
    requirement: str
    resource: str
    sha256: str
    build: Callable[[], nn.Module]
    latent_dim: int
    default_layer: str
    description: str
    state_key: str | None = None
    classes: tuple[str, ...] | None = None


INSTALL_HINT = "pip install --no-deps generateme==0.1.2 gan_face_generate==1.1.1 omniart_eye_generator==0.1"

BUILTIN: dict[str, BuiltinSpec] = {
    "dcgan-celeba": BuiltinSpec(
        package="generateme", requirement="generateme==0.1.2",
        resource="static/Models/dcGanGeneratorModel.pt",
        sha256="9837db49baa6f8ab5c36b138278218603ece4c0e69ea7202fb730834dd0992e8",
        build=CelebaDCGAN, latent_dim=100, default_layer="relu2",
        description="64x64 photo-like faces (CelebA-like DCGAN, generateme, MIT)",
    ),
    "dcgan-digiface": BuiltinSpec(
        package="gan_face_generate", requirement="gan_face_generate==1.1.1",
        resource="weights.tar",
        sha256="0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f",
        build=lambda: SequentialDCGAN([100, 512, 256, 128, 64]), latent_dim=100, default_layer="main.5",
        description="64x64 faces rendered from DigiFace1M (DCGAN, gan_face_generate, MIT)",
        state_key="netG_state_dict",
    ),
    "dcgan-eyes": BuiltinSpec(
        package="omniart_eye_generator", requirement="omniart_eye_generator==0.1",
        resource="generator_model_state.pth",
        sha256="dd486abbd738bfe3d28ddd46987bec11e3842ddcc8c28ccc5251b52c6ecf4da0",
        build=lambda: SequentialDCGAN([108, 1024, 512, 256, 128, 64], dropout_after_first=0.2),
        latent_dim=100, default_layer="main.6",
        description="128x128 eyes, class-conditional on 8 eye colours (omniart_eye_generator, MIT)",
        classes=("amber", "blue", "brown", "gray", "grayscale", "green", "hazel", "red"),
    ),
}
DEFAULT_GENERATOR = "dcgan-celeba"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``...; a clear error when CUDA is asked for but absent."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise PandaError(f"unknown device '{device}': use cpu, cuda or cuda:N.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PandaError(f"device '{device}' was asked for but CUDA is not available here: use --device cpu.")
    return dev


def weight_path(name: str):
    """Path of a built-in generator's weight file inside its installed wheel."""
    spec = _spec(name)
    # find_spec locates a top-level package without executing it; importlib.resources.files
    # would import it, and these packages' __init__ pulls in flask/torchvision or loads CUDA
    # weights.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise PandaError(f"generator '{name}' needs the package {spec.requirement}: install it with `{INSTALL_HINT}`.")
    return Path(list(found.submodule_search_locations)[0]) / spec.resource


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _spec(name: str) -> BuiltinSpec:
    if name not in BUILTIN:
        raise PandaError(f"unknown generator '{name}'. Valid generators: {', '.join(BUILTIN)}.")
    return BUILTIN[name]


def load_generator(name: str = DEFAULT_GENERATOR, device: str | torch.device = "cpu") -> GeneratorAdapter:
    """Build a built-in generator, check its weights' sha256 and load them.

    Raises :class:`PandaError` for an unknown name, a missing package (naming the install
    command) or a weight file whose hash differs from the one panda was checked against.
    """
    spec = _spec(name)
    path = weight_path(name)
    if not path.is_file():
        raise PandaError(f"weight file {path} of '{name}' is missing: reinstall it with `{INSTALL_HINT}`.")
    digest = sha256_of(path)
    if digest != spec.sha256:
        raise PandaError(
            f"weight file {path} has sha256 {digest}, expected {spec.sha256}: "
            f"reinstall {spec.requirement} with `pip install --force-reinstall --no-deps {spec.requirement}`."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if spec.state_key is not None:
        state = state[spec.state_key]
    module = spec.build()
    module.load_state_dict(state)
    adapter = GeneratorAdapter(
        module, name=name, latent_dim=spec.latent_dim, weight_hash=digest,
        forward_fn=_call_with_image_latent, classes=spec.classes,
        default_layer=spec.default_layer, description=spec.description,
    )
    return adapter.to(device)
