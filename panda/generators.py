"""Generator adapters and the generator registry: one seam for every architecture.

A :class:`GeneratorAdapter` wraps any ``torch.nn.Module`` generator with what panda needs
to know about it: how to turn seeds into latents (reproducibly), optional class
conditioning, the output range, and where its layers are. Features at a layer are read and
replaced with forward hooks (see :mod:`panda.features`), so ``G[l:](Z')`` needs no
per-architecture forward splitting: a StyleGAN or BigGAN adapter only has to say how to
call its module.

A :class:`GeneratorSpec` carries everything generator-specific (how to build and load it, how
to call it, how seeds become latents, its default layer, what each baseline needs from it);
:func:`register_generator` adds one to :data:`GENERATORS`, and every front end takes its
choices from there. Adding a generator means adding one spec here, or, for your own, one spec in a file
(``panda ... --generators-from FILE.py``) or in an installed package (entry-point group :data:`PLUGIN_GROUP`).

Registered are three real pretrained DCGANs that ship inside PyPI wheels. Their weight files
are read directly (``weights_only=True``), never their packages' code.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import PandaError
from .fileio import load_tensors, sha256_of
from .registry import Registry

#: How a wrapped module is called: ``forward_fn(module, z, onehot) -> images``.
#: ``z`` is (N, latent_dim); ``onehot`` is (N, n_classes) or None; images are (N, 3, H, W).
ForwardFn = Callable[[nn.Module, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass
class Latents:
    """A batch of generator inputs.

    Attributes
    ----------
    z : torch.Tensor
        (N, latent_dim) float.
    labels : torch.Tensor or None
        (N,) long class indices for a conditional generator, else None.
    ws : torch.Tensor or None
        StyleGANs: the intermediate latents to use instead of mapping z, (N, w_dim) (W: the same w for every
        layer) or (N, num_ws, w_dim) (W+). They are used as given: no truncation is applied to them.
    """

    z: torch.Tensor
    labels: torch.Tensor | None = None
    ws: torch.Tensor | None = None

    @classmethod
    def from_w(cls, ws: torch.Tensor, labels: torch.Tensor | None = None, latent_dim: int = 1) -> "Latents":
        """Latents given in W (N, w_dim) or W+ (N, num_ws, w_dim); z is a placeholder of zeros."""
        return cls(torch.zeros(ws.shape[0], latent_dim, device=ws.device), labels, ws)

    def __len__(self) -> int:
        return self.z.shape[0]

    def __getitem__(self, index) -> "Latents":
        labels = None if self.labels is None else self.labels[index]
        ws = None if self.ws is None else self.ws[index]
        return Latents(self.z[index], labels, ws)

    def to(self, device) -> "Latents":
        labels = None if self.labels is None else self.labels.to(device)
        ws = None if self.ws is None else self.ws.to(device)
        return Latents(self.z.to(device), labels, ws)


def state_hash(module: nn.Module) -> str:
    """sha256 of a module's state: every parameter's and buffer's name, shape, dtype and bytes, in order."""
    digest = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "state:" + digest.hexdigest()


def _call_with_image_latent(module: nn.Module, z: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
    """DCGAN convention: the latent (and one-hot class, concatenated) is a 1x1 'image'."""
    x = z if onehot is None else torch.cat([z, onehot], dim=1)
    return module(x[:, :, None, None])


#: R_S when neither the user nor the generator's spec chooses one.
DEFAULT_RANK_PARTS = 12


#: The error for an empty list of samples (seeds or latents).
NO_IMAGES = "no images asked for: give at least one seed."


class GeneratorAdapter:
    """A pretrained generator with everything panda needs to sample, hook and edit it.

    Parameters
    ----------
    module : nn.Module
        The generator; put in eval mode, its parameters frozen.
    name : str
        Identifier written into factor files (e.g. ``"dcgan-celeba"``).
    latent_dim : int
        Size of z.
    weight_hash : str
        sha256 of the weight file, written into factor files so that a factor file is never used with another
        generator by mistake; default: :func:`state_hash` of the module.
    forward_fn : ForwardFn, optional
        How to call ``module``; default ``module(z)``.
    classes : sequence of str, optional
        Class names of a conditional generator.
    output_range : (float, float)
        The range of the images the module returns.
    default_layer : str, optional
        The layer used when none is given.
    description : str
        One line for listings.
    spec : GeneratorSpec, optional
        The spec it was loaded from (None for a hand-wrapped module): baselines read what they need from it.
    source : dict, optional
        Where it came from, recorded in factor files: ``format`` ('registered', 'module' or a checkpoint
        format), and for checkpoints ``file``, ``truncation_psi`` and ``noise_mode``.
    noise_fn : callable, optional
        ``noise_fn(rng, latent_dim) -> z`` for a seed's RandomState; default ``rng.randn(latent_dim)`` (NVlabs'
        convention). BigGAN draws truncated noise.
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
        spec: "GeneratorSpec | None" = None,
        source: dict | None = None,
        noise_fn: "Callable[[np.random.RandomState, int], np.ndarray] | None" = None,
    ) -> None:
        self.module = module.eval().requires_grad_(False)
        self.name = name
        self.latent_dim = latent_dim
        # A module without a file still gets a hash, of its weights: a factor file must never be used with another
        # generator that merely has the same name (two random StyleGANs, say).
        self.weight_hash = weight_hash or state_hash(module)
        self.forward_fn = forward_fn or (lambda m, z, onehot: m(z))
        self.classes = tuple(classes) if classes else None
        self.output_range = output_range
        self.default_layer = default_layer
        self.description = description
        self.spec = spec
        self.noise_fn = noise_fn
        self.class_index: int | None = None  # the class every seed draws; None: drawn per seed
        self.source = dict(source) if source else {"format": "registered" if spec is not None else "module"}
        self._layer_shapes: dict[str, tuple[int, int, int]] | None = None

    def rank_parts_for(self, layer: str | None) -> int:
        """R_S to use at ``layer`` when none is given: the spec's choice at its default layer, else
        :data:`DEFAULT_RANK_PARTS`; at most the layer's positions."""
        layer = layer or self.default_layer
        chosen = self.spec is not None and layer == self.default_layer
        rank = self.spec.default_rank_parts if chosen else DEFAULT_RANK_PARTS
        shape = self.layer_shapes().get(layer) if layer else None
        return min(rank, shape[1] * shape[2]) if shape else rank

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
        same RandomState after z unless ``class_index`` (or :meth:`set_class`) fixes it.
        """
        seeds = check_seeds(seeds)
        class_index = self.class_index if class_index is None else class_index
        if class_index is not None:
            if self.classes is None:
                raise PandaError(f"generator '{self.name}' is unconditional: give no class.")
            if not 0 <= class_index < len(self.classes):
                raise PandaError(
                    f"class {class_index} is out of range for '{self.name}': "
                    f"use 0..{len(self.classes) - 1} ({', '.join(self.classes)})."
                )
        z = np.empty((len(seeds), self.latent_dim), dtype=np.float32)
        labels = np.empty(len(seeds), dtype=np.int64)
        # one RandomState re-seeded per seed draws the same numbers as a new RandomState(seed), about 20x faster
        rng = np.random.RandomState()
        for row, seed in enumerate(seeds):
            rng.seed(seed)
            z[row] = rng.randn(self.latent_dim) if self.noise_fn is None else self.noise_fn(rng, self.latent_dim)
            if self.classes is not None:
                labels[row] = rng.randint(len(self.classes)) if class_index is None else class_index
        device = self.device
        lab = torch.from_numpy(labels).to(device) if self.classes is not None else None
        return Latents(torch.from_numpy(z).to(device), lab)

    def set_class(self, class_: int | str) -> int:
        """Make every seed draw class ``class_`` (an index, or a name of ``classes``); returns the index."""
        self.class_index = self.class_index_of(class_)
        return self.class_index

    def class_index_of(self, class_: int | str) -> int:
        """The index of class ``class_`` (an index, or a name of ``classes``), checked."""
        if self.classes is None:
            raise PandaError(f"generator '{self.name}' is unconditional: give no class.")
        if isinstance(class_, str) and not class_.lstrip("-").isdigit():
            if class_ not in self.classes:
                raise PandaError(f"unknown class '{class_}' for '{self.name}': use one of {', '.join(self.classes)} "
                                 f"(or an index 0..{len(self.classes) - 1}).")
            index = self.classes.index(class_)
        else:
            index = int(class_)
        if not 0 <= index < len(self.classes):
            raise PandaError(f"class {index} is out of range for '{self.name}': use 0..{len(self.classes) - 1} "
                             f"({', '.join(self.classes)}).")
        return index

    def latents(self, latents_or_seeds: "Latents | Sequence[int]") -> Latents:
        """Latents as given, or sampled from a list of seeds (see :meth:`sample`)."""
        if isinstance(latents_or_seeds, Latents):
            return latents_or_seeds
        seeds = list(latents_or_seeds)
        if not seeds:
            raise PandaError(NO_IMAGES)
        return self.sample(seeds)

    # --------------------------------------------------------------- synthesis
    def synthesize(self, latents: Latents, grad: bool = False) -> torch.Tensor:
        """Images (N, 3, H, W) in ``output_range`` for ``latents``.

        grad: keep the autograd graph, so that a latent (z or ``ws``) can be optimised through the generator
        (its own weights stay frozen); by default no graph is built.
        """
        with torch.set_grad_enabled(grad):
            return self._synthesize(latents)

    def _synthesize(self, latents: Latents) -> torch.Tensor:
        latents = latents.to(self.device)
        onehot = None
        if self.classes is not None:
            if latents.labels is None:
                raise PandaError(f"generator '{self.name}' is conditional: give class labels.")
            onehot = torch.nn.functional.one_hot(latents.labels, len(self.classes)).to(latents.z.dtype)
        if latents.ws is None:
            return self.forward_fn(self.module, latents.z, onehot)
        mapping = self.w_module()
        ws = latents.ws
        z = latents.z
        if z.shape[1] != self.latent_dim:  # a placeholder: the mapping's output is replaced anyway
            z = torch.zeros(len(latents), self.latent_dim, device=self.device)

        def replace(_m, _i, out: torch.Tensor) -> torch.Tensor:
            if ws.dim() == 2:
                return ws[:, None].to(out).expand_as(out)
            if ws.shape[1:] != out.shape[1:]:
                raise PandaError(f"W+ latents of shape {tuple(ws.shape)}: '{self.name}' takes (N, {out.shape[1]}, {out.shape[2]}).")
            return ws.to(out)

        handle = mapping.register_forward_hook(replace)
        try:
            return self.forward_fn(self.module, z, onehot)
        finally:
            handle.remove()

    @property
    def has_w(self) -> bool:
        """Whether the module is a StyleGAN: a mapping network, so an intermediate latent space W (and W+)."""
        return isinstance(getattr(self.module, "mapping", None), nn.Module)

    def w_module(self) -> nn.Module:
        """The sub-module whose output is W+ (N, num_ws, w_dim), truncated: a StyleGAN's mapping network (genforce's
        StyleGAN truncates in a separate ``truncation`` module after it)."""
        if not self.has_w:
            raise PandaError(f"generator '{self.name}' has no mapping network: give z latents, not W.")
        truncation = getattr(self.module, "truncation", None)
        return truncation if isinstance(truncation, nn.Module) else self.module.mapping

    def to_w(self, latents_or_seeds: "Latents | Sequence[int]") -> torch.Tensor:
        """W+ latents (N, num_ws, w_dim) of a StyleGAN for latents or seeds: z through the mapping network, with
        the truncation the generator was loaded with. ``Latents.from_w`` takes them back (e.g. after editing)."""
        latents = self.latents(latents_or_seeds).to(self.device)
        mapping = self.w_module()
        seen: list[torch.Tensor] = []

        class _Stop(Exception):
            pass

        def keep(_m, _i, out):
            seen.append(out.detach())
            raise _Stop

        handle = mapping.register_forward_hook(keep)
        try:
            self.synthesize(latents)
        except _Stop:
            pass
        finally:
            handle.remove()
        return seen[0]

    def render(self, latents_or_seeds: "Latents | Sequence[int]") -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1] on the CPU, for latents or seeds: what pictures and metrics use."""
        return self.to_unit(self.synthesize(self.latents(latents_or_seeds))).cpu()

    @property
    def default_batch(self) -> int:
        """A generator batch size that keeps activations near what 256 images of 64 x 64 take: 256 at 64 px, 16 at
        256 px, 1 at 1024 px on a CPU (memory grows with the pixel count); on a GPU, one more image-size unit per
        4 GiB of its memory (at most 32), since batch 1 would leave it waiting on kernel launches."""
        scale = 1
        if self.device.type == "cuda":
            scale = max(1, min(32, torch.cuda.get_device_properties(self.device).total_memory // (4 << 30)))
        return max(1, min(256, (64 * 64 * 256 * scale) // self.image_size ** 2))

    @property
    def image_size(self) -> int:
        """The side of the images the generator makes (measured once, with the layer shapes)."""
        self.layer_shapes()
        return self._image_size

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
                image = self.synthesize(self.sample([0]))
                self._image_size, self._image_channels = int(image.shape[-1]), int(image.shape[1])
            finally:
                for h in handles:
                    h.remove()
            self._layer_shapes = shapes
        return dict(self._layer_shapes)

    def feature_layers(self) -> dict[str, tuple[int, int, int]]:
        """The layers a user means by "a layer": hookable outputs other than RGB images (as many channels as the
        image) and other than sub-layers of a layer already listed (editing those edits part of it). Modules that
        return several tensors (a StyleGAN2 block returns ``(x, img)``) cannot be hooked as a whole: their
        convolutions are listed instead. Every name of :meth:`layer_shapes` stays usable."""
        shapes = self.layer_shapes()
        image_channels = self._image_channels  # measured with the shapes, by the same probe
        features = {n: s for n, s in shapes.items() if s[0] != image_channels or n == self.default_layer}
        return {n: s for n, s in features.items()
                if n == self.default_layer or not any(n.startswith(parent + ".") for parent in features)}

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


def first_weight(module: nn.Module, latent_dim: int) -> torch.Tensor:
    """SeFa's W for a DCGAN: the first ConvTranspose2d's weight (in = latent_dim [+ classes], out, 4, 4)
    with the class rows dropped, (latent_dim, out, 4, 4)."""
    for sub in module.modules():
        if isinstance(sub, nn.ConvTranspose2d):
            return sub.weight[:latent_dim]
    raise PandaError("no ConvTranspose2d acts on the latent: SeFa is not available for this generator.")


@dataclass(frozen=True)
class WeightFile:
    """A weight file inside an installed wheel, checked against its sha256 and read with ``weights_only``."""

    package: str
    requirement: str
    resource: str
    sha256: str
    state_key: str | None = None

    def path(self) -> Path:
        """The file's path; a clear error naming the install command when the package is missing."""
        # find_spec locates a top-level package without executing it; importlib.resources.files
        # would import it, and these packages' __init__ pulls in flask/torchvision or loads CUDA weights.
        found = importlib.util.find_spec(self.package)
        if found is None or not found.submodule_search_locations:
            raise PandaError(f"this generator needs the package {self.requirement}: install it with `{INSTALL_HINT}`.")
        return Path(list(found.submodule_search_locations)[0]) / self.resource

    def state_dict(self) -> tuple[dict, str]:
        """(the state dict, the file's sha256), after checking the hash."""
        path = self.path()
        if not path.is_file():
            raise PandaError(f"weight file {path} is missing: reinstall it with `{INSTALL_HINT}`.")
        digest = sha256_of(path)
        if digest != self.sha256:
            raise PandaError(f"weight file {path} has sha256 {digest}, expected {self.sha256}: reinstall it with "
                             f"`pip install --force-reinstall --no-deps {self.requirement}`.")
        return _read_state(path, self.state_key), digest


def _read_state(path: Path, state_key: str | None) -> dict:
    """A state dict saved with ``torch.save``, read with ``weights_only`` (no code runs), or the one under
    ``state_key`` where the file holds more."""
    state = load_tensors(path, "save it with torch.save(module.state_dict(), path)")
    if state_key is None:
        return state
    if not isinstance(state, dict) or state_key not in state:
        keys = ", ".join(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise PandaError(f"weight file {path} has no '{state_key}' (it holds {keys}): give the key the "
                         f"generator's state dict is under, or none.")
    return state[state_key]


@dataclass(frozen=True)
class LocalWeights:
    """A weight file of your own, for a generator you register (``--generators-from``, :data:`PLUGIN_GROUP`), read
    as a bundled one is (:func:`_read_state`). Its sha256 goes into every factor file fitted on it, so that they refuse
    other weights; with ``sha256`` given, a file with another hash is refused before it is read."""

    path: str | Path
    sha256: str | None = None
    state_key: str | None = None

    def state_dict(self) -> tuple[dict, str]:
        """(the state dict, the file's sha256)."""
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise PandaError(f"weight file {path} does not exist: give LocalWeights the path of your checkpoint.")
        digest = sha256_of(path)
        if self.sha256 is not None and digest != self.sha256:
            raise PandaError(f"weight file {path} has sha256 {digest}, expected {self.sha256}: give the checkpoint "
                             f"the generator was registered with, or its new hash.")
        return _read_state(path, self.state_key), digest


@dataclass(frozen=True)
class GeneratorSpec:
    """Everything generator-specific, in one place.

    Attributes
    ----------
    name : str
        The registry key (``--generator NAME``).
    description : str
        One line for listings and help.
    build : callable
        ``build() -> nn.Module``: the architecture, with freshly initialised weights.
    weights : WeightFile
        Where its weights are (any object with ``state_dict() -> (state dict, sha256)`` will do).
    latent_dim : int
        Size of z; seeds become z as ``np.random.RandomState(seed).randn(1, latent_dim)``.
    default_layer : str
        The layer used when none is given.
    forward : ForwardFn
        How the module is called with z (N, latent_dim) and a one-hot class (N, n_classes) or None.
    classes : tuple of str or None
        Class names of a conditional generator.
    latent_spaces : tuple of str
        The latent spaces edits and projections may use (a DCGAN has only ``"z"``).
    ganspace_layer : str or None
        The early activation GANSpace runs PCA on; None: GANSpace is not available.
    sefa_weight : callable or None
        ``sefa_weight(module) -> W`` (latent_dim, ...): the first weight acting on the latent; None: SeFa is
        not available.
    style_space : bool
        Whether the generator has a StyleGAN style space (StyleSpace's edits).
    default_rank_parts : int
        R_S used at ``default_layer`` when none is given: chosen by ``benchmarks/semantic_parts.py`` as the smallest
        at which the eyes, nose and mouth each have a part named after them with a purity of at least 0.2.
    output_range : (float, float)
        The range of the images the module returns ((-1, 1) for a tanh output; (0, 1) for a sigmoid one).
    """

    name: str
    description: str
    build: Callable[[], nn.Module]
    weights: WeightFile
    latent_dim: int
    default_layer: str
    forward: ForwardFn = _call_with_image_latent
    classes: tuple[str, ...] | None = None
    latent_spaces: tuple[str, ...] = ("z",)
    ganspace_layer: str | None = None
    sefa_weight: Callable[[nn.Module], torch.Tensor] | None = None
    style_space: bool = False
    default_rank_parts: int = 12
    output_range: tuple[float, float] = (-1.0, 1.0)

    def load(self, device: str | torch.device = "cpu") -> GeneratorAdapter:
        """Build the module, load the checked weights and wrap it."""
        state, digest = self.weights.state_dict()
        module = self.build()
        try:
            module.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:  # a registered spec of the user's: keys or shapes
            raise PandaError(f"the weights of generator '{self.name}' do not fit the module its build() makes: "
                             f"{str(exc).strip()}") from exc
        adapter = GeneratorAdapter(module, name=self.name, latent_dim=self.latent_dim, weight_hash=digest,
                                   forward_fn=self.forward, classes=self.classes, default_layer=self.default_layer,
                                   description=self.description, spec=self, output_range=self.output_range)
        return adapter.to(device)


INSTALL_HINT = "pip install --no-deps generateme==0.1.2 gan_face_generate==1.1.1 omniart_eye_generator==0.1"

#: The generator registry: name -> spec. Filled by :func:`register_generator`.
GENERATORS: Registry = Registry("generator")


def register_generator(spec: GeneratorSpec) -> GeneratorSpec:
    """Add ``spec`` to :data:`GENERATORS` (a name can be registered once)."""
    return GENERATORS.add(spec.name, spec)


#: The entry-point group through which an installed package gives every panda command generators of its own: each
#: entry point names a :class:`GeneratorSpec`, or a function without arguments that returns one. In the package's
#: pyproject.toml:  [project.entry-points."panda.generators"]  my-gan = "my_package.panda_spec:SPEC"
PLUGIN_GROUP = "panda.generators"
_plugins_loaded = False


def load_plugins() -> list[str]:
    """Register the generators installed packages declare under :data:`PLUGIN_GROUP`, once a process (importing a
    package runs its code, so it happens only where a name is not among those registered already). Returns the
    names registered now."""
    global _plugins_loaded
    if _plugins_loaded:
        return []
    _plugins_loaded = True
    added = []
    for point in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        where = f"the generator plugin '{point.name}' ({point.value}" + (
            f", package {point.dist.name})" if point.dist is not None else ")")
        try:
            found = point.load()
            spec = found if isinstance(found, GeneratorSpec) else found() if callable(found) else found
        except Exception as exc:  # the package's code: one line, with what to do
            raise PandaError(f"{where} failed to load: {type(exc).__name__}: {exc}: fix or uninstall that "
                             f"package.") from exc
        if not isinstance(spec, GeneratorSpec):
            raise PandaError(f"{where} gives a {type(spec).__name__}, not a GeneratorSpec: point the entry point at "
                             f"a GeneratorSpec or a function returning one.")
        if spec.name in GENERATORS:
            raise PandaError(f"{where} registers '{spec.name}', which is registered already: give it a name of its "
                             f"own.")
        register_generator(spec)
        added.append(spec.name)
    return added


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered generator, the installed packages' (:func:`load_plugins`) included."""
    if name not in GENERATORS:
        load_plugins()
    return name in GENERATORS


register_generator(GeneratorSpec(
    name="dcgan-celeba", description="64x64 photo-like faces (CelebA-like DCGAN, generateme, MIT)",
    build=CelebaDCGAN, latent_dim=100, default_layer="relu2", ganspace_layer="relu1", default_rank_parts=40,
    weights=WeightFile("generateme", "generateme==0.1.2", "static/Models/dcGanGeneratorModel.pt",
                       "9837db49baa6f8ab5c36b138278218603ece4c0e69ea7202fb730834dd0992e8"),
    sefa_weight=lambda m: first_weight(m, 100),
))
register_generator(GeneratorSpec(
    name="dcgan-digiface", description="64x64 faces rendered from DigiFace1M (DCGAN, gan_face_generate, MIT)",
    build=lambda: SequentialDCGAN([100, 512, 256, 128, 64]), latent_dim=100, default_layer="main.5",
    ganspace_layer="main.2", default_rank_parts=24,
    weights=WeightFile("gan_face_generate", "gan_face_generate==1.1.1", "weights.tar",
                       "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f", state_key="netG_state_dict"),
    sefa_weight=lambda m: first_weight(m, 100),
))
register_generator(GeneratorSpec(
    name="dcgan-eyes", description="128x128 eyes, class-conditional on 8 eye colours (omniart_eye_generator, MIT)",
    build=lambda: SequentialDCGAN([108, 1024, 512, 256, 128, 64], dropout_after_first=0.2), latent_dim=100,
    default_layer="main.6", ganspace_layer="main.2",
    weights=WeightFile("omniart_eye_generator", "omniart_eye_generator==0.1", "generator_model_state.pth",
                       "dd486abbd738bfe3d28ddd46987bec11e3842ddcc8c28ccc5251b52c6ecf4da0"),
    classes=("amber", "blue", "brown", "gray", "grayscale", "green", "hazel", "red"),
    sefa_weight=lambda m: first_weight(m, 100),
))
DEFAULT_GENERATOR = "dcgan-celeba"


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """Seeds as Python ints, each a whole number in [0, 2**32) (NumPy's RandomState range); one clear error
    otherwise (a float seed would be truncated silently: 0.7 -> seed 0)."""
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise PandaError(f"seed {s!r} is not a whole number: seeds are integers in [0, 2**32).")
    seeds = [int(s) for s in seeds]
    for s in seeds:
        if not 0 <= s < 2**32:
            raise PandaError(f"seed {s} is out of range: seeds must be in [0, 2**32).")
    return seeds


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``...; a clear error when CUDA is asked for but absent."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise PandaError(f"unknown device '{device}': use cpu, cuda or cuda:N.") from exc
    if dev.type not in ("cpu", "cuda", "mps"):  # meta, xla...: tensors there hold no values to draw
        raise PandaError(f"device '{device}' cannot run a generator for pictures: use cpu, cuda or cuda:N.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PandaError(f"device '{device}' was asked for but CUDA is not available here: use the cpu.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise PandaError(f"device '{device}': this machine has {torch.cuda.device_count()} CUDA device(s): use cuda:0 .. "
                         f"cuda:{torch.cuda.device_count() - 1}.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise PandaError(f"device '{device}' was asked for but MPS is not available here: use the cpu.")
    return dev


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued kernels (CUDA runs them asynchronously): call before reading a clock."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def get_spec(name: str) -> GeneratorSpec:
    """The registered spec called ``name``; a clear error listing the registered ones otherwise."""
    if not is_registered(name):
        raise PandaError(f"unknown generator '{name}'. Registered generators: {', '.join(GENERATORS)}.")
    return GENERATORS[name]


def load_registered(name: str = DEFAULT_GENERATOR, device: str | torch.device = "cpu") -> GeneratorAdapter:
    """Build a registered generator, check its weights' sha256 and load them (``panda.load_generator`` also
    takes checkpoint files).

    Raises :class:`PandaError` for an unknown name, a missing package (naming the install
    command) or a weight file whose hash differs from the one panda was checked against.
    """
    return get_spec(name).load(device)
