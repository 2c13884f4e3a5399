"""panda's own BigGAN-deep generator (Brock et al., ICLR 2019), in the layout of ``pytorch-pretrained-biggan``
checkpoints (``config.json`` + ``pytorch_model.bin``), written from the paper's architecture.

* Input: ``cond = [z, E onehot(class)]``; a linear layer makes a 4x4 map; then residual "deep" blocks (1x1
  reduce, two 3x3, 1x1 expand; each convolution preceded by a class-conditional batch norm and ReLU; nearest
  2x upsampling inside some blocks; channel dropping on the skip), one self-attention block, batch norm, ReLU,
  a 3x3 convolution to RGB and tanh.
* Spectral normalisation as the checkpoints store it: ``weight_orig`` with the power-iteration vectors ``u``
  and ``v``; the weight used is ``weight_orig / (u . W v)``.
* Truncation t in (0, 1] does two things, as in the reference: z is drawn from a normal truncated to [-2, 2]
  and scaled by t (:func:`truncated_noise`), and every batch norm uses statistics stored for t (linearly
  interpolated between the 51 stored levels).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def truncated_noise(rng: np.random.RandomState, dim: int, truncation: float) -> np.ndarray:
    """z ~ N(0, 1) truncated to [-2, 2], times ``truncation``, drawn by inverting the CDF of ``dim`` uniforms
    from ``rng``: the same numbers as ``pytorch_pretrained_biggan.truncated_noise_sample(seed=s)`` for
    ``rng = RandomState(s)``."""
    u = torch.from_numpy(rng.uniform(size=dim))
    lo, hi = torch.special.ndtr(torch.tensor(-2.0, dtype=torch.float64)), torch.special.ndtr(torch.tensor(2.0, dtype=torch.float64))
    return (truncation * torch.special.ndtri(lo + u * (hi - lo))).numpy().astype(np.float32)


class _SpectralNorm(nn.Module):
    """Holds ``weight_orig``, ``weight_u``, ``weight_v``; :meth:`weight` divides by the spectral norm estimate."""

    def _init_sn(self, weight: torch.Tensor) -> None:
        self.weight_orig = nn.Parameter(weight)
        out = weight.shape[0]
        self.register_buffer("weight_u", F.normalize(torch.randn(out), dim=0))
        self.register_buffer("weight_v", F.normalize(torch.randn(weight[0].numel()), dim=0))

    def weight(self) -> torch.Tensor:
        w = self.weight_orig
        sigma = torch.dot(self.weight_u, w.reshape(w.shape[0], -1) @ self.weight_v)
        return w / sigma


class SNLinear(_SpectralNorm):
    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self._init_sn(torch.randn(out_features, in_features) / math.sqrt(in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)


class SNConv2d(_SpectralNorm):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        self._init_sn(torch.randn(out_channels, in_channels, kernel_size, kernel_size) / math.sqrt(in_channels * kernel_size ** 2))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, padding=self.padding)


class BatchNorm(nn.Module):
    """Inference batch norm with statistics stored per truncation level; class-conditional gain and bias."""

    def __init__(self, num_features: int, condition_dim: int | None = None, n_stats: int = 51, eps: float = 1e-4) -> None:
        super().__init__()
        self.eps, self.step = eps, 1.0 / (n_stats - 1)
        self.register_buffer("running_means", torch.zeros(n_stats, num_features))
        self.register_buffer("running_vars", torch.ones(n_stats, num_features))
        self.conditional = condition_dim is not None
        if self.conditional:
            self.scale = SNLinear(condition_dim, num_features, bias=False)
            self.offset = SNLinear(condition_dim, num_features, bias=False)
        else:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor, truncation: float, cond: torch.Tensor | None = None) -> torch.Tensor:
        coef, start = math.modf(truncation / self.step)
        start = int(start)
        if coef != 0.0:  # the reference weights the lower level by coef (sic): kept to match its outputs
            mean = self.running_means[start] * coef + self.running_means[start + 1] * (1 - coef)
            var = self.running_vars[start] * coef + self.running_vars[start + 1] * (1 - coef)
        else:
            mean, var = self.running_means[start], self.running_vars[start]
        if self.conditional:
            gain = 1 + self.scale(cond)[:, :, None, None]
            bias = self.offset(cond)[:, :, None, None]
            return (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps) * gain + bias
        return F.batch_norm(x, mean, var, self.weight, self.bias, training=False, eps=self.eps)


class SelfAttn(nn.Module):
    """Self-attention over positions (keys and values max-pooled by 2); out = x + gamma * attention."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.snconv1x1_theta = SNConv2d(channels, channels // 8, 1, bias=False)
        self.snconv1x1_phi = SNConv2d(channels, channels // 8, 1, bias=False)
        self.snconv1x1_g = SNConv2d(channels, channels // 2, 1, bias=False)
        self.snconv1x1_o_conv = SNConv2d(channels // 2, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        theta = self.snconv1x1_theta(x).reshape(n, c // 8, h * w)
        phi = F.max_pool2d(self.snconv1x1_phi(x), 2).reshape(n, c // 8, h * w // 4)
        attn = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (N, HW, HW/4)
        g = F.max_pool2d(self.snconv1x1_g(x), 2).reshape(n, c // 2, h * w // 4)
        out = (g @ attn.transpose(1, 2)).reshape(n, c // 2, h, w)
        return x + self.gamma * self.snconv1x1_o_conv(out)


class GenBlock(nn.Module):
    """A BigGAN-deep residual block: (N, in, r, r) -> (N, out, r or 2r, ...)."""

    def __init__(self, in_size: int, out_size: int, condition_dim: int, up_sample: bool, n_stats: int, eps: float,
                 reduction: int = 4) -> None:
        super().__init__()
        mid = in_size // reduction
        self.up_sample, self.drop_channels = up_sample, in_size != out_size
        for i, (a, b, k) in enumerate([(in_size, mid, 1), (mid, mid, 3), (mid, mid, 3), (mid, out_size, 1)]):
            setattr(self, f"bn_{i}", BatchNorm(a, condition_dim, n_stats, eps))
            setattr(self, f"conv_{i}", SNConv2d(a, b, k))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, truncation: float) -> torch.Tensor:
        skip = x
        for i in range(4):
            x = F.relu(getattr(self, f"bn_{i}")(x, truncation, cond))
            if i == 1 and self.up_sample:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = getattr(self, f"conv_{i}")(x)
        if self.drop_channels:
            skip = skip[:, :skip.shape[1] // 2]
        if self.up_sample:
            skip = F.interpolate(skip, scale_factor=2, mode="nearest")
        return x + skip


class Generator(nn.Module):
    def __init__(self, z_dim: int, channel_width: int, layers: Sequence[Sequence], attention_layer_position: int,
                 n_stats: int, eps: float) -> None:
        super().__init__()
        cond = 2 * z_dim
        self.channel_width = channel_width
        self.gen_z = SNLinear(cond, 4 * 4 * 16 * channel_width)
        blocks: list[nn.Module] = []
        for i, (up, a, b) in enumerate(layers):
            if i == attention_layer_position:
                blocks.append(SelfAttn(channel_width * a))
            blocks.append(GenBlock(channel_width * a, channel_width * b, cond, bool(up), n_stats, eps))
        self.layers = nn.ModuleList(blocks)
        self.bn = BatchNorm(channel_width, None, n_stats, eps)
        self.conv_to_rgb = SNConv2d(channel_width, channel_width, 3)

    def forward(self, cond: torch.Tensor, truncation: float) -> torch.Tensor:
        x = self.gen_z(cond).reshape(-1, 4, 4, 16 * self.channel_width).permute(0, 3, 1, 2)
        for layer in self.layers:
            x = layer(x, cond, truncation) if isinstance(layer, GenBlock) else layer(x)
        x = self.conv_to_rgb(F.relu(self.bn(x, truncation)))
        return torch.tanh(x[:, :3])


class BigGAN(nn.Module):
    """z (N, z_dim) and one-hot classes (N, num_classes) -> images (N, 3, R, R) in [-1, 1].

    Built from the keys of a ``config.json`` (z_dim, channel_width, num_classes, layers,
    attention_layer_position, n_stats, eps; output_dim and class_embed_dim are implied).
    """

    def __init__(self, z_dim: int = 128, channel_width: int = 128, num_classes: int = 1000,
                 layers: Sequence[Sequence] = (), attention_layer_position: int = 8, n_stats: int = 51,
                 eps: float = 1e-4, **_unused) -> None:
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.embeddings = nn.Linear(num_classes, z_dim, bias=False)
        self.generator = Generator(z_dim, channel_width, layers, attention_layer_position, n_stats, eps)

    def forward(self, z: torch.Tensor, onehot: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        if not 0 < truncation <= 1:
            raise ValueError(f"BigGAN truncation must be in (0, 1], got {truncation}")
        return self.generator(torch.cat([z, self.embeddings(onehot)], dim=1), truncation)
