"""panda's own StyleGAN2 generator (Karras et al., CVPR 2020, configs E/F), written from the paper's maths.

Parameter and module names follow NVlabs' StyleGAN2-ADA / StyleGAN3 code (``mapping.fc0``,
``synthesis.b16.conv1``, ...), so their checkpoints load with ``load_state_dict`` and a layer has the
name users know. It runs in float32 everywhere (the reference runs its highest resolutions in float16 on
a GPU); on the CPU both agree to float32 rounding (``tests/test_zoo.py``).

The pieces:

* mapping: z -> 2nd-moment normalisation (and a normalised class embedding) -> fully connected layers with
  leaky ReLU -> w, broadcast to every layer; truncation ``w_avg + psi (w - w_avg)``.
* synthesis: a learnt 4x4 constant, then one block per resolution: two modulated 3x3 convolutions (the
  first upsampling by 2), each with per-sample weights ``W * s`` (style s = affine(w)) divided by their
  norm (demodulation), noise, bias, leaky ReLU x sqrt(2) and optional clamping; an RGB skip branch sums
  1x1 modulated ``torgb`` outputs, upsampled with the [1, 3, 3, 1] filter.

Editing a block's ``conv0``/``conv1`` output (a forward hook, as panda does) changes that block's later
layers, its ``torgb`` and every later block: exactly ``G[l:]``; earlier RGB contributions are kept.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


# ------------------------------------------------------------------------------------------ filters
def make_filter(taps: Sequence[float]) -> torch.Tensor:
    """A separable low-pass filter as a (k, k) kernel: the outer product of ``taps``, normalised to sum 1."""
    t = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(t, t) if t.ndim == 1 else t
    return f / f.sum()


def upfirdn(x: torch.Tensor, f: torch.Tensor, up: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0),
            gain: float = 1.0) -> torch.Tensor:
    """Upsample by inserting zeros, pad, then convolve each channel with the (k, k) filter ``f``.

    Parameters
    ----------
    x : torch.Tensor
        (N, C, H, W).
    f : torch.Tensor
        (k, k) filter; convolution (not correlation), so the filter is flipped.
    up : int
        Upsampling factor (zeros between samples).
    pad : (int, int, int, int)
        Padding (x before, x after, y before, y after); negative values crop.
    gain : float
        Scales the filter (up ** 2 keeps the signal's magnitude when upsampling).

    Returns
    -------
    torch.Tensor
        (N, C, H * up + pad_y - k + 1, W * up + pad_x - k + 1).
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0), max(-x0, 0):x.shape[3] - max(-x1, 0)]
    k = (f * gain).flip([0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Upsample (N, C, H, W) by 2 with the low-pass filter ``f`` -> (N, C, 2H, 2W)."""
    k = f.shape[-1]
    return upfirdn(x, f, up=2, pad=((k + 1) // 2, (k - 2) // 2, (k + 1) // 2, (k - 2) // 2), gain=4.0)


def bias_act(x: torch.Tensor, b: torch.Tensor | None, act: str = "linear", gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """x + b (over channels), then leaky ReLU (0.2) times sqrt(2) for ``act="lrelu"``, times ``gain``,
    clamped to +-``clamp`` when given."""
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2) * SQRT2
    elif act != "linear":
        raise ValueError(f"activation {act!r} is not supported")
    if gain != 1:
        x = x * gain
    return x if clamp is None else x.clamp(-clamp, clamp)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up: int = 1, padding: int = 0, f: torch.Tensor | None = None) -> torch.Tensor:
    """A convolution whose weights are scaled per sample by ``styles`` (and renormalised when demodulating).

    Parameters
    ----------
    x : torch.Tensor
        (N, I, H, W).
    weight : torch.Tensor
        (O, I, k, k).
    styles : torch.Tensor
        (N, I).
    up : int
        1, or 2 for a transposed convolution with stride 2 followed by the low-pass filter ``f``.
    padding : int
        Padding with respect to the (upsampled) output.

    Returns
    -------
    torch.Tensor
        (N, O, H * up, W * up).
    """
    n, _, h, w_ = x.shape
    o, i, kh, kw = weight.shape
    w = weight[None] * styles.reshape(n, 1, i, 1, 1)  # (N, O, I, k, k)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    x = x.reshape(1, n * i, h, w_)
    if up == 1:
        y = F.conv2d(x, w.reshape(n * o, i, kh, kw), padding=padding, groups=n)
        return y.reshape(n, o, *y.shape[2:])
    # transposed convolution: per group, weights (I, O, k, k)
    wt = w.transpose(1, 2).reshape(n * i, o, kh, kw)
    y = F.conv_transpose2d(x, wt, stride=up, groups=n)
    k = f.shape[-1]
    p0 = padding + (k + up - 1) // 2 - (kw - 1)
    p1 = padding + (k - up) // 2 - (kw - up)
    y = upfirdn(y, f, pad=(p0, p1, p0, p1), gain=up ** 2)
    return y.reshape(n, o, *y.shape[2:])


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row of (N, D) to unit mean square."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


# ------------------------------------------------------------------------------------------- layers
class FullyConnectedLayer(nn.Module):
    """y = act(x W^T g + b g_b), with the equalised learning rate's gains g = lr / sqrt(in), g_b = lr."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = None if self.bias is None else self.bias * self.bias_gain
        return bias_act(x @ (self.weight * self.weight_gain).t(), b, self.activation)


class MappingNetwork(nn.Module):
    """z (N, z_dim) and one-hot c (N, c_dim) -> w (N, num_ws, w_dim)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None, activation: str = "lrelu",
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.998) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        embed_features = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        layer_features = w_dim if layer_features is None else layer_features
        widths = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(widths[idx], widths[idx + 1], activation=activation,
                                                          lr_multiplier=lr_multiplier))
        if w_avg_beta is not None:  # the average w that truncation pulls towards
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        x = normalize_2nd_moment(z.float()) if self.z_dim > 0 else None
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.float()))
            x = y if x is None else torch.cat([x, y], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        return truncate(ws, self.w_avg, truncation_psi, truncation_cutoff)


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
    """w_avg + psi (w - w_avg) for the first ``cutoff`` layers of ws (N, num_ws, w_dim) (all when None)."""
    if psi == 1:
        return ws
    ws = ws.clone()
    n = ws.shape[1] if cutoff is None else cutoff
    ws[:, :n] = w_avg.lerp(ws[:, :n], psi)
    return ws


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling by 2), noise, bias, leaky ReLU: (N, I, r/up, r/up) -> (N, O, r, r)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu",
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None, **_unused) -> None:
        super().__init__()
        self.resolution, self.up, self.use_noise, self.activation, self.conv_clamp = resolution, up, use_noise, activation, conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const", gain: float = 1.0) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w), True, self.up, self.padding, self.resample_filter)
        if self.use_noise and noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        elif self.use_noise and noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device) * self.noise_strength
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, self.activation, gain, clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution without demodulation: features (N, I, r, r) -> colours (N, 3, r, r)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None, **_unused) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class Conv2dLayer(nn.Module):
    """The 'resnet' architecture's 1x1 skip: convolution, then upsampling by 2 with the low-pass filter."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, bias: bool = False, up: int = 2,
                 resample_filter: Sequence[float] = (1, 3, 3, 1), **_unused) -> None:
        super().__init__()
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        return upsample2d(F.conv2d(x, self.weight * self.weight_gain), self.resample_filter) * gain


class SynthesisBlock(nn.Module):
    """One resolution: (x, img) at r/2 -> (x (N, C, r, r), img (N, 3, r, r))."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, architecture: str = "skip", resample_filter: Sequence[float] = (1, 3, 3, 1),
                 conv_clamp: float | None = 256, **layer_kwargs) -> None:
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"architecture {architecture!r}")
        self.in_channels, self.resolution, self.architecture, self.is_last = in_channels, resolution, architecture, is_last
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.num_conv = self.num_torgb = 0
        layer_kwargs = {k: v for k, v in layer_kwargs.items() if k in ("kernel_size", "use_noise", "activation")}
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, resample_filter=resample_filter,
                                        conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, resample_filter=resample_filter)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: str = "const") -> tuple[torch.Tensor, torch.Tensor | None]:
        w = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, next(w), noise_mode)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w), noise_mode)
            x = y + self.conv1(x, next(w), noise_mode, gain=np.sqrt(0.5))
        else:
            x = self.conv0(x, next(w), noise_mode)
            x = self.conv1(x, next(w), noise_mode)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w))
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> images (N, img_channels, R, R), one block per resolution 4 .. R."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 4, **block_kwargs) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution {img_resolution} is not a power of 2 >= 4")
        self.w_dim, self.img_resolution = w_dim, img_resolution
        self.block_resolutions = [2 ** i for i in range(2, int(np.log2(img_resolution)) + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        self.num_ws = 0
        for r in self.block_resolutions:
            block = SynthesisBlock(channels[r // 2] if r > 4 else 0, channels[r], w_dim, r, img_channels,
                                   is_last=r == img_resolution, **block_kwargs)
            self.num_ws += block.num_conv + (block.num_torgb if r == img_resolution else 0)
            setattr(self, f"b{r}", block)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        x = img = None
        idx = 0
        for r in self.block_resolutions:
            block = getattr(self, f"b{r}")
            # a block's torgb shares its w with the next block's first convolution
            x, img = block(x, img, ws[:, idx:idx + block.num_conv + block.num_torgb].float(), noise_mode)
            idx += block.num_conv
        return img


class Generator(nn.Module):
    """z (N, z_dim), c (N, c_dim) -> images (N, img_channels, R, R) in about [-1, 1].

    Takes the constructor arguments NVlabs' pickles record (``mapping_kwargs``; synthesis arguments as keywords
    or, as StyleGAN2-ADA writes them, in ``synthesis_kwargs``).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, synthesis_kwargs: dict | None = None, **more_synthesis_kwargs) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution = z_dim, c_dim, w_dim, img_resolution
        kwargs = dict(synthesis_kwargs or {}) | more_synthesis_kwargs
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **dict(mapping_kwargs or {}))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "const") -> torch.Tensor:
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff), noise_mode)
