"""panda's own StyleGAN3 generator (Karras et al., "Alias-Free Generative Adversarial Networks", NeurIPS 2021),
configs T and R, written from the paper's maths.

Names follow NVlabs' code (``synthesis.input``, ``synthesis.L3_52_512``, ...) so their checkpoints load with
``load_state_dict``; it runs in float32. The pieces:

* mapping: as StyleGAN2 (2 layers by default), truncation towards ``w_avg``.
* input: Fourier features ``sin(2 pi (x . f_c + phi_c))`` on a grid with a margin, rotated and translated by an
  affine function of the first w, then mixed by a learnt C x C matrix.
* each layer: a modulated convolution (weights and styles pre-normalised, then demodulated; the input scaled
  by the inverse RMS the training tracked), then bias and a *filtered* leaky ReLU: upsample with a windowed-sinc
  low-pass filter, apply the nonlinearity at the higher rate, low-pass and downsample again (Kaiser windows; a
  radially symmetric jinc filter for config R's downsampling). The last layer is a linear 1x1 "torgb".

Layer geometry (cutoffs, stopbands, sampling rates, sizes and widths) follows the paper's geometric progression
(Section 3.2, Appendix F) from the constructor's arguments, so a network is rebuilt from what a pickle records.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import FullyConnectedLayer, normalize_2nd_moment, truncate


# ------------------------------------------------------------------------------------------ filters
def kaiser_beta(numtaps: int, width: float) -> float:
    """Kaiser window shape for a filter of ``numtaps`` and transition ``width`` (a fraction of Nyquist):
    Kaiser's empirical formulas for the attenuation and the window parameter."""
    atten = 2.285 * (numtaps - 1) * math.pi * width + 7.95
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """A Kaiser-windowed low-pass filter, normalised to unit gain at DC.

    Parameters
    ----------
    numtaps : int
        Length; 1 means no filter (None).
    cutoff, width, fs : float
        Cutoff frequency, transition band width and sampling rate (same units).
    radial : bool
        A radially symmetric (jinc) 2-D filter instead of a separable 1-D one.

    Returns
    -------
    torch.Tensor or None
        (numtaps,) separable, or (numtaps, numtaps) radial.
    """
    if numtaps == 1:
        return None
    nyq = fs / 2
    beta = kaiser_beta(numtaps, width / nyq)
    window = torch.from_numpy(np.kaiser(numtaps, beta)).double()
    if not radial:
        m = torch.arange(numtaps, dtype=torch.float64) - (numtaps - 1) / 2
        h = (cutoff / nyq) * torch.sinc((cutoff / nyq) * m) * window
        return (h / h.sum()).float()
    x = (torch.arange(numtaps, dtype=torch.float64) - (numtaps - 1) / 2) / fs
    r = torch.hypot(x[:, None], x[None, :])
    f = torch.special.bessel_j1(2 * cutoff * math.pi * r) / (math.pi * r)
    f = f * torch.outer(window, window)
    return (f / f.sum()).float()


def _fir(x: torch.Tensor, f: torch.Tensor | None, gain: float) -> torch.Tensor:
    """Convolve each channel of (N, C, H, W) with a 1-D (separable, both axes) or 2-D filter, no padding."""
    c = x.shape[1]
    if f is None:
        return x * gain
    f = f.to(x.dtype).flip(list(range(f.ndim)))
    if f.ndim == 1:
        g = f * math.sqrt(gain)
        x = F.conv2d(x, g[None, None, None, :].repeat(c, 1, 1, 1), groups=c)
        return F.conv2d(x, g[None, None, :, None].repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, (f * gain)[None, None].repeat(c, 1, 1, 1), groups=c)


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None, b: torch.Tensor, up: int,
                   down: int, padding: tuple[int, int, int, int], gain: float, slope: float,
                   clamp: float | None) -> torch.Tensor:
    """Bias, then upsample (zeros + low-pass ``fu``), leaky ReLU times ``gain`` clamped, low-pass ``fd`` and keep
    every ``down``-th sample: the nonlinearity at ``up`` times the rate, so it aliases less."""
    x = x + b.reshape(1, -1, 1, 1)
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x0, x1, y0, y1 = padding
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0), max(-x0, 0):x.shape[3] - max(-x1, 0)]
    x = _fir(x, fu, up ** 2)
    x = F.leaky_relu(x, slope) * gain if slope != 1 else x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return _fir(x, fd, 1.0)[:, :, ::down, ::down]


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, padding: int,
                     input_gain: torch.Tensor | None = None) -> torch.Tensor:
    """StyleGAN3's modulated convolution: (N, I, H, W) -> (N, O, H + 2p - k + 1, ...); weights and styles are
    first scaled to unit RMS (their scale cancels under demodulation, and it keeps float16 in range)."""
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    w = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    if input_gain is not None:
        w = w * input_gain.expand(n, i)[:, None, :, None, None]
    y = F.conv2d(x.reshape(1, n * i, *x.shape[2:]), w.reshape(n * o, i, kh, kw), padding=padding, groups=n)
    return y.reshape(n, o, *y.shape[2:])


# ------------------------------------------------------------------------------------------- layers
class MappingNetwork(nn.Module):
    """z (N, z_dim), c (N, c_dim) -> w (N, num_ws, w_dim)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 2,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.998) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, w_dim)
        widths = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(widths[idx], widths[idx + 1], activation="lrelu",
                                                          lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        x = normalize_2nd_moment(z.float())
        if self.c_dim > 0:
            x = torch.cat([x, normalize_2nd_moment(self.embed(c.float()))], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        return truncate(x.unsqueeze(1).repeat(1, self.num_ws, 1), self.w_avg, truncation_psi, truncation_cutoff)


class SynthesisInput(nn.Module):
    """Fourier features of the first w: (N, w_dim) -> (N, C, size, size)."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float) -> None:
        super().__init__()
        self.channels, self.size, self.sampling_rate, self.bandwidth = channels, int(size), sampling_rate, bandwidth
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth  # uniform in a disc of radius bandwidth
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnectedLayer(w_dim, 4, bias_init=0)
        with torch.no_grad():  # starts as the identity transform: rotation (1, 0), translation (0, 0)
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0, 0, 0]))
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        n = w.shape[0]
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)  # (cos, sin, tx, ty)
        m_r = torch.eye(3, device=w.device).repeat(n, 1, 1)
        m_r[:, 0, 0], m_r[:, 0, 1], m_r[:, 1, 0], m_r[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        m_t = torch.eye(3, device=w.device).repeat(n, 1, 1)
        m_t[:, 0, 2], m_t[:, 1, 2] = -t[:, 2], -t[:, 3]
        transforms = m_r @ m_t @ self.transform[None]
        phases = self.phases[None] + (self.freqs[None] @ transforms[:, :2, 2:]).squeeze(2)
        freqs = self.freqs[None] @ transforms[:, :2, :2]
        # frequencies a user transform pushes beyond the band fade out rather than alias
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = theta[1, 1] = 0.5 * self.size / self.sampling_rate
        grid = F.affine_grid(theta[None], [1, 1, self.size, self.size], align_corners=False)  # (1, S, S, 2)
        x = torch.einsum("hwk,nck->nhwc", grid[0], freqs) + phases[:, None, None, :]
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(nn.Module):
    """Modulated convolution and filtered leaky ReLU between two sampling rates (or the linear torgb)."""

    def __init__(self, w_dim: int, is_torgb: bool, is_critically_sampled: bool, use_fp16: bool, in_channels: int,
                 out_channels: int, in_size: int, out_size: int, in_sampling_rate: float, out_sampling_rate: float,
                 in_cutoff: float, out_cutoff: float, in_half_width: float, out_half_width: float, conv_kernel: int = 3,
                 filter_size: int = 6, lrelu_upsampling: int = 2, use_radial_filters: bool = False,
                 conv_clamp: float | None = 256, magnitude_ema_beta: float = 0.999) -> None:
        super().__init__()
        self.is_torgb, self.conv_clamp, self.in_channels = is_torgb, conv_clamp, in_channels
        self.conv_kernel = 1 if is_torgb else conv_kernel
        tmp_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, self.conv_kernel, self.conv_kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.up_factor = int(round(tmp_rate / in_sampling_rate))
        self.down_factor = int(round(tmp_rate / out_sampling_rate))
        up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.register_buffer("up_filter", lowpass_filter(up_taps, in_cutoff, in_half_width * 2, tmp_rate))
        self.register_buffer("down_filter", lowpass_filter(down_taps, out_cutoff, out_half_width * 2, tmp_rate,
                                                           radial=use_radial_filters and not is_critically_sampled))
        # padding so the output lands on the symmetric sample positions (paper, Appendix C.3)
        total = (out_size - 1) * self.down_factor + 1 - (in_size + self.conv_kernel - 1) * self.up_factor + up_taps + down_taps - 2
        lo = (total + self.up_factor) // 2
        self.padding = (int(lo), int(total - lo), int(lo), int(total - lo))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles / math.sqrt(self.in_channels * self.conv_kernel ** 2)
        x = modulated_conv2d(x, self.weight, styles, not self.is_torgb, self.conv_kernel - 1, self.magnitude_ema.rsqrt())
        gain, slope = (1.0, 1.0) if self.is_torgb else (math.sqrt(2), 0.2)
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias, self.up_factor, self.down_factor,
                              self.padding, gain, slope, self.conv_clamp)


def layer_geometry(img_resolution: int, img_channels: int, channel_base: int, channel_max: int, num_layers: int,
                   num_critical: int, first_cutoff: float, first_stopband: float, last_stopband_rel: float,
                   margin_size: int) -> dict[str, np.ndarray]:
    """Cutoffs, stopbands, sampling rates, transition half-widths, sizes and channels of the input and every layer,
    (num_layers + 1,) each: a geometric progression from the first layer to the last critically sampled ones."""
    last_cutoff = img_resolution / 2
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_cutoff * last_stopband_rel / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    sizes = rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return {"cutoffs": cutoffs, "rates": rates, "half_widths": np.maximum(stopbands, rates / 2) - cutoffs,
            "sizes": sizes, "channels": channels}


class SynthesisNetwork(nn.Module):
    """ws (N, num_layers + 2, w_dim) -> images (N, img_channels, R, R)."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_layers: int = 14, num_critical: int = 2, first_cutoff: float = 2,
                 first_stopband: float = 2 ** 2.1, last_stopband_rel: float = 2 ** 0.3, margin_size: int = 10,
                 output_scale: float = 0.25, num_fp16_res: int = 4, **layer_kwargs) -> None:
        super().__init__()
        self.num_ws, self.output_scale, self.num_critical = num_layers + 2, output_scale, num_critical
        g = layer_geometry(img_resolution, img_channels, channel_base, channel_max, num_layers, num_critical,
                           first_cutoff, first_stopband, last_stopband_rel, margin_size)
        c, s, r, fc, fh = g["channels"], g["sizes"], g["rates"], g["cutoffs"], g["half_widths"]
        self.input = SynthesisInput(w_dim, int(c[0]), int(s[0]), r[0], fc[0])
        self.layer_names = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(w_dim, idx == num_layers, idx >= num_layers - num_critical, False, int(c[prev]),
                                   int(c[idx]), int(s[prev]), int(s[idx]), int(r[prev]), int(r[idx]), fc[prev], fc[idx],
                                   fh[prev], fh[idx], **layer_kwargs)
            name = f"L{idx}_{int(s[idx])}_{int(c[idx])}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        ws = ws.float().unbind(dim=1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:]):
            x = getattr(self, name)(x, w)
        return x * self.output_scale if self.output_scale != 1 else x


class Generator(nn.Module):
    """z (N, z_dim), c (N, c_dim) -> images (N, img_channels, R, R); takes NVlabs' recorded constructor arguments."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, **synthesis_kwargs) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution = z_dim, c_dim, w_dim, img_resolution
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **dict(mapping_kwargs or {}))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "const") -> torch.Tensor:
        # StyleGAN3 has no noise inputs: noise_mode is accepted for a uniform call and ignored
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff))
