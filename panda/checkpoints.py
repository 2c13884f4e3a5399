"""Generators from the checkpoint files users already have, loaded without running code from the file.

Formats (see :data:`FORMATS`):

* ``nvlabs-pickle``: NVlabs StyleGAN2-ADA (PyTorch) and StyleGAN3-repository pickles of a StyleGAN2 or
  StyleGAN3 generator (``G_ema`` in the pickle's dict). These pickles embed the Python source of their networks and
  the reference loader executes it. panda never does: :class:`SafeUnpickler` accepts only tensors, numpy
  arrays and plain containers, and reads each network object's class name, constructor arguments and
  state without touching its embedded source; panda's own network (:mod:`panda.stylegan2`,
  :mod:`panda.stylegan3`) is then built
  from those arguments and filled with that state. ``trust_pickle=True`` instead unpickles the file with
  the user's own clone of the reference code (it must be importable), which runs whatever the file holds.
* ``biggan``: ``pytorch-pretrained-biggan`` folders (``config.json`` + ``pytorch_model.bin``; give the folder or
  the ``.bin``), read with ``torch.load(weights_only=True)`` into :mod:`panda.biggan`; seeds draw truncated noise.
* ``genforce``: genforce ``.pth`` checkpoints of ProGAN or StyleGAN (``generator_smooth`` or ``generator`` state
  dict; the format the PandA authors' code loads for them), read with ``torch.load(weights_only=True)`` into
  :mod:`panda.genforce`; sizes come from the state dict.
* ``rosinality-stylegan2``: ``stylegan2-pytorch`` checkpoints (``g_ema`` state dict, ``latent_avg``), read
  with ``torch.load(weights_only=True)`` and renamed into the same network.

A loaded generator is a :class:`panda.generators.GeneratorAdapter` whose ``weight_hash`` is the file's
sha256 and whose ``source`` records the format and file name; factor files record both.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .biggan import BigGAN, truncated_noise
from .errors import PandaError
from .fileio import load_tensors, sha256_of
from .genforce import ProGAN, StyleGAN, progan_config, stylegan_config
from .generators import DEFAULT_GENERATOR, GENERATORS, PLUGIN_GROUP, GeneratorAdapter, is_registered, load_registered
from .registry import Registry
from .stylegan2 import Generator as StyleGAN2
from .stylegan3 import Generator as StyleGAN3

NOISE_MODES = ("const", "random", "none")


# ------------------------------------------------------------------------------ the safe unpickler
@dataclass
class PersistentObject:
    """What an NVlabs persistent object holds, read without running its embedded source.

    Attributes
    ----------
    class_name : str
        The network class ('Generator', 'SynthesisBlock', ...).
    state : dict
        Its ``__dict__``: ``_init_args``/``_init_kwargs`` (constructor arguments), ``_parameters``,
        ``_buffers`` and ``_modules`` (nested objects).
    """

    class_name: str
    state: dict

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    def children(self) -> dict:
        return dict(self.state.get("_modules") or {})

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and buffers of this object and its children, with dotted names."""
        out = {}
        for group in ("_parameters", "_buffers"):
            for name, t in (self.state.get(group) or {}).items():
                if t is not None:
                    out[prefix + name] = t
        for name, child in self.children().items():
            if isinstance(child, PersistentObject):
                out |= child.state_dict(f"{prefix}{name}.")
        return out

    def class_names(self) -> set[str]:
        """Every class name in this object's tree."""
        names = {self.class_name}
        for child in self.children().values():
            if isinstance(child, PersistentObject):
                names |= child.class_names()
        return names


class _EasyDict(dict):
    """Stands in for ``dnnlib.EasyDict`` (a dict with attribute access) inside a pickle."""


def _persistent(meta: dict) -> PersistentObject:
    # meta: type, version, module_src, class_name, state. module_src is never read.
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise PandaError("a persistent object in the pickle is malformed: the file is damaged or not an NVlabs pickle.")
    return PersistentObject(meta["class_name"], dict(meta.get("state") or {}))


def _tensor_from_bytes(data: bytes) -> Any:
    # torch pickles a storage as the bytes of torch.save(storage); weights_only reads them without code
    return torch.load(io.BytesIO(data), weights_only=True)


def _parameter(data: torch.Tensor, *_args) -> torch.Tensor:
    return data


def _allowed() -> dict[tuple[str, str], Callable]:
    allowed: dict[tuple[str, str], Callable] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _parameter,
        ("torch.storage", "_load_from_bytes"): _tensor_from_bytes,
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("dnnlib", "EasyDict"): _EasyDict,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    for name in ("float16", "float32", "float64", "bfloat16", "int64", "int32", "uint8", "bool"):
        allowed[("torch", name)] = getattr(torch, name)
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """Unpickles tensors, numpy arrays, plain containers and NVlabs persistent objects (as
    :class:`PersistentObject`); any other global is refused, so nothing from the file is imported or run."""

    ALLOWED = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        fn = self.ALLOWED.get((module, name))
        if fn is None:
            raise PandaError(f"the pickle asks for {module}.{name}, which panda's safe loader does not allow: it is not "
                             f"an NVlabs generator pickle, or it carries code. Load it with trust_pickle=True "
                             f"(--trust-pickle) only if you trust the file and have the reference code importable.")
        return fn


def safe_unpickle(path: Path) -> Any:
    """The pickle's content with :class:`SafeUnpickler`; one clear error for a damaged or foreign file."""
    try:
        with open(path, "rb") as fh:
            return SafeUnpickler(fh).load()
    except PandaError:
        raise
    except Exception as exc:  # a truncated or corrupt pickle raises many types
        raise PandaError(f"'{path}' is not a readable pickle ({type(exc).__name__}: {exc}): the file is damaged or "
                         f"incomplete; download it again.") from exc


# ------------------------------------------------------------------------------------------- formats
@dataclass
class LoadedNetwork:
    """A checkpoint's network, ready to wrap.

    Attributes
    ----------
    module : nn.Module
        panda's network with the file's weights.
    z_dim, c_dim : int
        Latent and class sizes.
    resolution : int
        Image side.
    kind : str
        Architecture family, for descriptions ('StyleGAN2').
    default_layer : str
        The layer factorised when none is given.
    """

    module: nn.Module
    z_dim: int
    c_dim: int
    resolution: int
    kind: str
    default_layer: str


@dataclass(frozen=True)
class CheckpointFormat:
    """A checkpoint format: how to recognise a file of it and how to read it.

    Attributes
    ----------
    name : str
    description : str
    recognise : callable
        ``recognise(path) -> bool``, from the file's structure only (cheap).
    read : callable
        ``read(path, trust_pickle) -> LoadedNetwork``.
    """

    name: str
    description: str
    recognise: Callable[[Path], bool]
    read: Callable[[Path, bool], LoadedNetwork]


FORMATS: Registry = Registry("checkpoint format")


def _is_zip(path: Path) -> bool:
    return path.is_file() and zipfile.is_zipfile(path)


def _is_plain_pickle(path: Path) -> bool:
    if not path.is_file() or _is_zip(path):
        return False
    with open(path, "rb") as fh:
        head = fh.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # PROTO opcode


def _build(cls: type[nn.Module], kwargs: dict, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    try:
        module = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise PandaError(f"'{path}': the generator's constructor arguments are not ones panda's network takes ({exc}).") from exc
    try:
        module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[1:4]) or first[0]
        raise PandaError(f"'{path}': its weights do not fit the network its arguments describe ({detail}).") from exc
    return module.eval().requires_grad_(False)


def _read_nvlabs(path: Path, trust_pickle: bool) -> LoadedNetwork:
    data = _trusted_unpickle(path) if trust_pickle else safe_unpickle(path)
    if not isinstance(data, dict) or not any(k in data for k in ("G_ema", "G")):
        keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise PandaError(f"'{path}' holds {keys}, not an NVlabs training snapshot (a dict with G_ema): "
                         f"give the network pickle written by StyleGAN2-ADA or StyleGAN3.")
    g = data.get("G_ema", data.get("G"))
    if trust_pickle:  # the reference object itself: copy its state into panda's network
        kwargs, state, names = dict(g.init_kwargs), g.state_dict(), {type(m).__name__ for m in g.modules()}
    else:
        if not isinstance(g, PersistentObject):
            raise PandaError(f"'{path}': G_ema is a {type(g).__name__}, not a network object.")
        kwargs, state, names = g.init_kwargs, g.state_dict(), g.class_names()
    if "SynthesisInput" in names:
        cls, kind = StyleGAN3, "StyleGAN3"
    elif "SynthesisBlock" in names:
        cls, kind = StyleGAN2, "StyleGAN2"
    else:
        raise PandaError(f"'{path}': G_ema has the classes {sorted(names)}, not a StyleGAN2 or StyleGAN3 generator.")
    if not {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"} <= kwargs.keys():
        raise PandaError(f"'{path}': G_ema's constructor arguments lack z_dim, c_dim, w_dim, img_resolution or "
                         f"img_channels: the file is damaged or not a {kind} generator.")
    module = _build(cls, kwargs, state, path)
    res = int(kwargs["img_resolution"])
    return LoadedNetwork(module, int(kwargs["z_dim"]), int(kwargs["c_dim"]), res, kind, default_layer(module, res))


def _trusted_unpickle(path: Path) -> Any:
    # Runs the file's code through the user's own reference checkout: only on explicit request.
    if importlib.util.find_spec("dnnlib") is None or importlib.util.find_spec("torch_utils") is None:
        raise PandaError("trust_pickle needs the reference StyleGAN code importable (put your clone of "
                         "stylegan2-ada-pytorch or stylegan3 on PYTHONPATH).")
    with open(path, "rb") as fh:
        return pickle.load(fh)


def _rosinality_kwargs(state: dict[str, torch.Tensor], path: Path) -> tuple[dict, int]:
    """Constructor arguments of the equivalent NVlabs-layout network, from a rosinality g_ema state dict."""
    try:
        z_dim = state["style.1.weight"].shape[1]
        n_mlp = max(int(m.group(1)) for k in state if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
        const = state["input.input"]
        n_up = max((int(m.group(1)) for k in state if (m := re.fullmatch(r"convs\.(\d+)\.conv\.weight", k))), default=-1) + 1
    except (KeyError, ValueError) as exc:
        raise PandaError(f"'{path}': g_ema lacks the rosinality StyleGAN2 layers (style.*, input.input, convs.*): "
                         f"not a stylegan2-pytorch checkpoint.") from exc
    resolution = 4 * 2 ** (n_up // 2)
    widths = {4: const.shape[1]} | {4 * 2 ** (i // 2 + 1): state[f"convs.{i}.conv.weight"].shape[1] for i in range(0, n_up, 2)}
    kwargs = dict(z_dim=z_dim, c_dim=0, w_dim=z_dim, img_resolution=resolution, img_channels=3,
                  mapping_kwargs=dict(num_layers=n_mlp), conv_clamp=None)
    return kwargs, widths


def _read_rosinality(path: Path, trust_pickle: bool) -> LoadedNetwork:
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict) or "g_ema" not in ckpt:
        raise PandaError(f"'{path}' has no 'g_ema': not a stylegan2-pytorch checkpoint.")
    src = ckpt["g_ema"]
    kwargs, widths = _rosinality_kwargs(src, path)
    module = _build_with_widths(kwargs, widths)
    try:
        state = _rename_rosinality(src, module, ckpt.get("latent_avg"))
        module.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError) as exc:
        raise PandaError(f"'{path}': its weights do not fit a StyleGAN2 of these sizes "
                         f"({str(exc).strip().splitlines()[0][:200]}).") from exc
    module = module.eval().requires_grad_(False)
    if ckpt.get("latent_avg") is None:
        # training checkpoints do not store the average w; rosinality's scripts estimate it from 4096 random z
        # each run. panda estimates it once, reproducibly, from 10,000 z drawn with a fixed seed.
        z = torch.randn(10_000, kwargs["z_dim"], generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            module.mapping.w_avg.copy_(module.mapping(z, None)[:, 0].mean(0))
    res = kwargs["img_resolution"]
    return LoadedNetwork(module, kwargs["z_dim"], 0, res, "StyleGAN2", default_layer(module, res))


def _build_with_widths(kwargs: dict, widths: dict[int, int]) -> StyleGAN2:
    """A StyleGAN2 with rosinality's channel widths (512 up to 64 px, then 256 x multiplier, ...): NVlabs'
    channel_base // r capped at channel_max reproduces any width table that halves with resolution once below the
    cap, so find the pair that gives this table exactly."""
    cap = max(widths.values())
    for base in sorted({w * r for r, w in widths.items()}):
        if all(min(base // r, cap) == w for r, w in widths.items()):
            return StyleGAN2(**kwargs, channel_base=base, channel_max=cap)
    raise PandaError(f"channel widths {widths} do not halve with resolution: panda cannot rebuild this network.")


def _rename_rosinality(src: dict, module: StyleGAN2, latent_avg) -> dict[str, torch.Tensor]:
    """rosinality's g_ema keys -> panda's (NVlabs layout), converting the conventions that differ."""
    out: dict[str, torch.Tensor] = {}
    syn = module.synthesis
    n_mlp = module.mapping.num_layers
    for i in range(n_mlp):  # style.0 is PixelNorm; style.1.. are EqualLinear(lr_mul=0.01) with fused lrelu
        out[f"mapping.fc{i}.weight"] = src[f"style.{i + 1}.weight"]
        out[f"mapping.fc{i}.bias"] = src[f"style.{i + 1}.bias"]
    out["mapping.w_avg"] = latent_avg.reshape(-1) if latent_avg is not None else torch.zeros(module.w_dim)
    names = ["synthesis.b4.conv1"] + [f"synthesis.b{r}.conv{j}" for r in syn.block_resolutions[1:] for j in (0, 1)]
    noise_index = {n: i for i, n in enumerate(names)}  # rosinality numbers its noise buffers in layer order

    def conv(prefix_src: str, prefix_dst: str, res: int) -> None:
        out[f"{prefix_dst}.weight"] = src[f"{prefix_src}.conv.weight"][0]
        out[f"{prefix_dst}.affine.weight"] = src[f"{prefix_src}.conv.modulation.weight"]
        out[f"{prefix_dst}.affine.bias"] = src[f"{prefix_src}.conv.modulation.bias"]
        out[f"{prefix_dst}.bias"] = src[f"{prefix_src}.activate.bias"]
        out[f"{prefix_dst}.noise_strength"] = src[f"{prefix_src}.noise.weight"].reshape([])
        out[f"{prefix_dst}.noise_const"] = src[f"noises.noise_{noise_index[prefix_dst]}"].reshape(res, res)
        out[f"{prefix_dst}.resample_filter"] = module.state_dict()[f"{prefix_dst}.resample_filter"]

    def torgb(prefix_src: str, prefix_dst: str) -> None:
        # rosinality scales the modulated weight by 1/sqrt(fan_in) inside the conv; NVlabs scales the style
        out[f"{prefix_dst}.weight"] = src[f"{prefix_src}.conv.weight"][0]
        out[f"{prefix_dst}.affine.weight"] = src[f"{prefix_src}.conv.modulation.weight"]
        out[f"{prefix_dst}.affine.bias"] = src[f"{prefix_src}.conv.modulation.bias"]
        out[f"{prefix_dst}.bias"] = src[f"{prefix_src}.bias"].reshape(-1)

    conv("conv1", "synthesis.b4.conv1", 4)
    out["synthesis.b4.const"] = src["input.input"][0]
    torgb("to_rgb1", "synthesis.b4.torgb")
    for i, r in enumerate(syn.block_resolutions[1:]):
        conv(f"convs.{2 * i}", f"synthesis.b{r}.conv0", r)
        conv(f"convs.{2 * i + 1}", f"synthesis.b{r}.conv1", r)
        torgb(f"to_rgbs.{i}", f"synthesis.b{r}.torgb")
    for r in syn.block_resolutions:
        out[f"synthesis.b{r}.resample_filter"] = module.state_dict()[f"synthesis.b{r}.resample_filter"]
    return {k: v.float() for k, v in out.items()}


def _zip_keys(path: Path) -> set[str]:
    """Top-level keys of a torch zip checkpoint (tensors memory-mapped, not read), or an empty set."""
    if not _is_zip(path):
        return set()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch checkpoint, or one with objects: the reader says which
        return set()
    return set(obj) if isinstance(obj, dict) else set()


def _read_genforce(path: Path, trust_pickle: bool) -> LoadedNetwork:
    ckpt = _torch_load(path)
    state = ckpt.get("generator_smooth", ckpt.get("generator"))
    if not isinstance(state, dict):
        raise PandaError(f"'{path}' has no generator state dict: not a genforce checkpoint.")
    try:
        if "mapping.dense0.weight" in state:
            config, cls, kind = stylegan_config(state), StyleGAN, "StyleGAN"
        else:
            config, cls, kind = progan_config(state), ProGAN, "ProGAN"
    except (KeyError, ValueError) as exc:
        raise PandaError(f"'{path}': the generator lacks the layers of a genforce ProGAN or StyleGAN ({exc}).") from exc
    module = _build(cls, config, state, path)
    res = 4 * 2 ** (len(config["widths"]) - 1)
    prefix = "synthesis." if kind == "StyleGAN" else ""
    block = min(2, len(config["widths"]) - 1)  # the 16x16 block's second layer, as for StyleGAN2
    return LoadedNetwork(module, config["z_dim"], config.get("label_size", 0), res, kind, f"{prefix}layer{2 * block + 1}")


def _torch_load(path: Path) -> Any:
    return load_tensors(path, "the file is damaged or incomplete, or not a checkpoint of this format")


BIGGAN_KEYS = ("z_dim", "channel_width", "num_classes", "layers", "attention_layer_position", "n_stats", "eps")


def _biggan_files(path: Path) -> tuple[Path, Path] | None:
    folder = path if path.is_dir() else path.parent
    weights = path if path.is_file() else folder / "pytorch_model.bin"
    config = folder / "config.json"
    return (config, weights) if config.is_file() and weights.is_file() and weights.suffix == ".bin" else None


def _read_biggan(path: Path, trust_pickle: bool) -> LoadedNetwork:
    config_path, weights = _biggan_files(path)
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise PandaError(f"'{config_path}' is not readable JSON ({exc}): the BigGAN config is damaged.") from exc
    missing = [k for k in BIGGAN_KEYS if k not in config]
    if missing:
        raise PandaError(f"'{config_path}' lacks {missing}: not a pytorch-pretrained-biggan config.")
    module = _build(BigGAN, {k: config[k] for k in BIGGAN_KEYS}, _torch_load(weights), weights)
    blocks = [f"generator.layers.{i}" for i, m in enumerate(module.generator.layers) if type(m).__name__ == "GenBlock"]
    res = 4 * 2 ** sum(bool(up) for up, _, _ in config["layers"])
    return LoadedNetwork(module, int(config["z_dim"]), int(config["num_classes"]), res, "BigGAN-deep",
                         blocks[len(blocks) // 2])


FORMATS.add("nvlabs-pickle", CheckpointFormat(
    "nvlabs-pickle", "NVlabs StyleGAN2-ADA / StyleGAN3 network pickle (.pkl) of a StyleGAN2 or StyleGAN3",
    _is_plain_pickle, _read_nvlabs))
FORMATS.add("biggan", CheckpointFormat(
    "biggan", "pytorch-pretrained-biggan folder (config.json + pytorch_model.bin)",
    lambda p: _biggan_files(p) is not None, _read_biggan))
FORMATS.add("genforce", CheckpointFormat(
    "genforce", "genforce ProGAN or StyleGAN checkpoint (.pth with generator_smooth or generator)",
    lambda p: bool(_zip_keys(p) & {"generator_smooth", "generator"}), _read_genforce))
FORMATS.add("rosinality-stylegan2", CheckpointFormat(
    "rosinality-stylegan2", "rosinality stylegan2-pytorch checkpoint (.pt with g_ema)", _is_zip, _read_rosinality))


# ---------------------------------------------------------------------------------------- loading
def _biggan_forward(truncation: float) -> Callable:
    def forward(module: nn.Module, z: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        return module(z, onehot, truncation)
    return forward


def _forward(psi: float, noise_mode: str) -> Callable:
    def forward(module: nn.Module, z: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        return module(z, onehot, truncation_psi=psi, noise_mode=noise_mode)
    return forward


def default_layer(module: nn.Module, resolution: int) -> str:
    """StyleGAN2: the paper's choice, the 16x16 block's output (or the largest block below it). StyleGAN3: the
    middle of its non-critically sampled layers (a mid-resolution layer, with its margin)."""
    if isinstance(module, StyleGAN3):
        syn = module.synthesis
        return "synthesis." + syn.layer_names[(len(syn.layer_names) - 1 - syn.num_critical) // 2]
    return f"synthesis.b{min(16, resolution)}.conv1"


def check_options(truncation_psi: float, noise_mode: str) -> None:
    if not isinstance(truncation_psi, (int, float)) or not math.isfinite(truncation_psi):
        raise PandaError(f"truncation psi must be a finite number, got {truncation_psi!r}.")
    if noise_mode not in NOISE_MODES:
        raise PandaError(f"noise mode {noise_mode!r}: use one of {', '.join(NOISE_MODES)}.")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", truncation_psi: float = 1.0,
                    noise_mode: str = "const", trust_pickle: bool = False) -> GeneratorAdapter:
    """A generator from a checkpoint file of a supported format (:data:`FORMATS`).

    Parameters
    ----------
    path : path-like
        The checkpoint.
    truncation_psi : float
        StyleGAN truncation: w_avg + psi (w - w_avg); 1 disables it.
    noise_mode : str
        'const' (the stored noise: the same image every time), 'random' or 'none'.
    trust_pickle : bool
        Unpickle an NVlabs pickle with the reference code, running what the file holds (never the default).

    Returns
    -------
    GeneratorAdapter
        ``weight_hash`` is the file's sha256; ``source`` names the format and file.
    """
    check_options(truncation_psi, noise_mode)
    path = Path(path)
    if not path.exists():
        raise PandaError(f"checkpoint '{path}' does not exist: give the path of a generator checkpoint.")
    fmt = next((f for f in FORMATS.values() if f.recognise(path)), None)
    if fmt is None and path.is_dir():
        raise PandaError(f"'{path}' is a folder without a BigGAN config.json and pytorch_model.bin: give a checkpoint file.")
    if fmt is None:
        raise PandaError(f"'{path}' is not a checkpoint panda can read. Supported: "
                         + "; ".join(f"{f.name} ({f.description})" for f in FORMATS.values()) + ".")
    net = fmt.read(path, trust_pickle)
    psi = float(truncation_psi)
    if isinstance(net.module, ProGAN) and (psi != 1 or noise_mode != "const"):
        raise PandaError("a ProGAN has no truncation or noise inputs: leave psi at 1 and the noise mode at const.")
    if isinstance(net.module, BigGAN):
        if not 0 < psi <= 1:
            raise PandaError(f"BigGAN truncation must be in (0, 1], got {psi}.")
        forward, noise = _biggan_forward(psi), lambda rng, dim: truncated_noise(rng, dim, psi)
    else:
        forward, noise = _forward(psi, noise_mode), None
    weights = _biggan_files(path)[1] if fmt.name == "biggan" else path
    adapter = GeneratorAdapter(
        net.module, name=path.name, latent_dim=net.z_dim, weight_hash=sha256_of(weights), forward_fn=forward, noise_fn=noise,
        classes=[str(i) for i in range(net.c_dim)] if net.c_dim else None,
        default_layer=net.default_layer,
        description=f"{net.kind} {net.resolution}x{net.resolution} ({fmt.description}), psi {truncation_psi:g}, noise {noise_mode}",
        source={"format": fmt.name, "file": path.name, "truncation_psi": float(truncation_psi), "noise_mode": noise_mode},
    )
    return adapter.to(device)


def load_generator(name_or_path: str | Path = DEFAULT_GENERATOR, device: str | torch.device = "cpu",
                   truncation_psi: float = 1.0, noise_mode: str = "const", trust_pickle: bool = False,
                   class_: int | str | None = None) -> GeneratorAdapter:
    """The one way to get a generator: a registered name (:data:`panda.generators.GENERATORS`) or a checkpoint
    file of a supported format (:data:`FORMATS`).

    Parameters
    ----------
    name_or_path : str or path-like
        'dcgan-celeba', ..., or the path of a checkpoint.
    truncation_psi, noise_mode, trust_pickle
        For checkpoints (see :func:`load_checkpoint`); a registered DCGAN has neither truncation nor noise.
    class_ : int or str, optional
        For a conditional generator, the class every seed draws (index or name); default: drawn per seed.
    """
    check_options(truncation_psi, noise_mode)
    name = str(name_or_path)
    # an installed package's generators are looked for only where a name is neither a built-in one nor a file
    if name in GENERATORS or (not Path(name).exists() and is_registered(name)):
        if truncation_psi != 1 or noise_mode != "const":
            raise PandaError(f"generator '{name_or_path}' has no truncation or noise inputs: leave psi at 1 and the "
                             f"noise mode at const.")
        g = load_registered(name, device)
    elif Path(name).exists() or any(c in name for c in "/\\."):
        g = load_checkpoint(name_or_path, device, truncation_psi, noise_mode, trust_pickle)
    else:
        raise PandaError(f"unknown generator '{name_or_path}': give a registered name ({', '.join(GENERATORS)}) or the "
                         f"path of a checkpoint file; your own architecture: register it (GeneratorSpec: a file of "
                         f"yours that --generators-from runs, or a package's '{PLUGIN_GROUP}' entry point).")
    if class_ is not None:
        g.set_class(class_)
    return g


def random_stylegan2(resolution: int = 256, seed: int = 0) -> GeneratorAdapter:
    """A StyleGAN2 with config-f widths (512-d z and w) and random weights, for timing at StyleGAN scale where no
    trained weights can be had (weights do not change the cost)."""
    if resolution not in (2 ** k for k in range(3, 11)):
        raise PandaError(f"resolution {resolution}: give a power of 2 from 8 to 1024.")
    torch.manual_seed(seed)
    module = StyleGAN2(512, 0, 512, resolution, 3).eval()
    return GeneratorAdapter(module, f"stylegan2-{resolution}-random", 512, forward_fn=lambda m, z, c: m(z, c),
                            default_layer=default_layer(module, resolution),
                            description=f"StyleGAN2, {resolution} px, config-f widths, random weights")
