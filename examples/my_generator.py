"""A generator of your own on every panda command: one registration, then `--generator my-dcgan` names it.

    panda layers my-dcgan --generators-from examples/my_generator.py
    panda fit --generators-from examples/my_generator.py --generator my-dcgan -rs 12 --out mine.safetensors
    panda edit mine.safetensors --generators-from examples/my_generator.py --part 3      (and serve, remove, ...)

panda needs three things from your network: how to build it (``build``, any ``torch.nn.Module``), where its
weights are (``LocalWeights``: a ``torch.save``d state dict, read without running code from it) and how to call it
on latents z (``forward``). Its layers are found with forward hooks, so no forward pass is split by hand: every
module's output is a layer (`panda layers` lists them). Here the network is the DCGAN of PyTorch's tutorial, written
as you would write it, and the checkpoint is the one the `gan_face_generate` wheel ships (a DigiFace DCGAN of that
shape, its generator's state dict under "netG_state_dict"): put your own network and your checkpoint's path instead.

Installed as a package, the same spec reaches every command without --generators-from: name it in your
pyproject.toml's entry points, group "panda.generators" (``my-dcgan = "my_package.my_generator:SPEC"``), and leave
out the last line, since panda registers what the entry point names.
"""

import importlib.util
from pathlib import Path

import torch
from torch import nn

import panda


class Generator(nn.Module):
    """z (N, 100, 1, 1) -> images (N, 3, 64, 64) in [-1, 1]."""

    def __init__(self, nz: int = 100, ngf: int = 64) -> None:
        super().__init__()
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
        layers: list[nn.Module] = []
        for i in range(4):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride, pad, bias=False),
                       nn.BatchNorm2d(widths[i + 1]), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


def call(module: nn.Module, z: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
    """How panda calls the network: z (N, 100), a one-hot class (N, n_classes) for a conditional one, else None."""
    return module(z[:, :, None, None])


def checkpoint() -> Path:
    """Your checkpoint's path, e.g. ``Path(__file__).parent / "netG.pt"`` (beside this file, wherever panda runs).
    Here: the wheel's file, found without importing the package."""
    found = importlib.util.find_spec("gan_face_generate")
    if found is None:
        raise panda.PandaError("this example reads gan_face_generate's weights: "
                               "pip install --no-deps gan_face_generate==1.1.1")
    return Path(list(found.submodule_search_locations)[0]) / "weights.tar"


SPEC = panda.GeneratorSpec(
    name="my-dcgan",
    description="PyTorch's tutorial DCGAN with a DigiFace checkpoint (examples/my_generator.py)",
    build=Generator,
    weights=panda.LocalWeights(checkpoint(), state_key="netG_state_dict"),
    latent_dim=100,
    forward=call,
    default_layer="main.5",  # 256 x 8 x 8; `panda layers my-dcgan` lists the others
    output_range=(-1.0, 1.0),  # the images' range: tanh here; (0, 1) for a sigmoid output
    ganspace_layer="main.2",  # optional: what GANSpace and SeFa need, for `panda bench roir`
    sefa_weight=lambda module: module.main[0].weight,
)

panda.register_generator(SPEC)  # in a package, leave this out: the entry point names SPEC and panda registers it
