"""Drawing primitives for every picture panda writes: colour maps, tiles, labelled grids, PNG files.

Pillow lays the pictures out; colour maps come from matplotlib. Nothing here computes a result: the
figure functions in :mod:`panda.figures` hand these primitives data that was computed elsewhere.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .fileio import atomic_write, check_writable

#: Distinct colours for parts and methods (matplotlib's tab10, then a few more), (16, 3) in [0, 1].
PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (0, 0, 128), (128, 128, 0), (0, 128, 128), (128, 0, 128), (255, 215, 0), (0, 0, 0),
], dtype=np.float32) / 255.0


def font(size: int) -> ImageFont.ImageFont:
    """Pillow's default font at ``size`` pixels (a fixed bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def hot(x: np.ndarray) -> np.ndarray:
    """matplotlib's 'hot' colour map: values (...) in [0, 1] -> (..., 3) RGB in [0, 1]."""
    from matplotlib import colormaps  # here, not above: importing matplotlib costs every command 0.5 s

    return colormaps["hot"](np.clip(x, 0.0, 1.0))[..., :3]


def scale_for(images: torch.Tensor) -> int:
    """How many times to enlarge (N, 3, H, W) images so a tile is about 128 px (a 64x64 face is readable)."""
    return max(1, 128 // images.shape[-1])


def to_pil(image: torch.Tensor | np.ndarray, scale: int = 1) -> Image.Image:
    """(3, H, W) tensor or (H, W, 3) array in [0, 1] -> PIL image, enlarged ``scale`` times (nearest)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float().permute(1, 2, 0).numpy()
    arr = (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    pil = Image.fromarray(arr)
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST) if scale != 1 else pil


def overlay(image: torch.Tensor, heat: torch.Tensor, strength: float = 0.6) -> np.ndarray:
    """Blend a (H, W) heat map in [0, 1] (colour map 'hot') over a (3, H, W) image in [0, 1].
    Returns (H, W, 3) in [0, 1]; where the map is 0 the image shows through unchanged."""
    img = image.detach().cpu().float().permute(1, 2, 0).numpy()
    h = heat.detach().cpu().float().numpy()
    w = strength * h[..., None]
    return (1 - w) * img + w * hot(h)


def segmentation(image: torch.Tensor, maps: torch.Tensor, strength: float = 0.55, edges: bool = False) -> np.ndarray:
    """Colour each pixel of a (3, H, W) image by its strongest map of (K, H, W) (argmax); with ``edges``, pixels
    whose right or lower neighbour belongs to another map are white, so that two regions sharing a colour (more
    than 16 maps) stay apart. Returns (H, W, 3) in [0, 1]."""
    img = image.detach().cpu().float().permute(1, 2, 0).numpy()
    labels = maps.argmax(0).cpu().numpy()
    colours = PALETTE[labels % len(PALETTE)]
    out = (1 - strength) * img + strength * colours
    if edges:
        edge = np.zeros(labels.shape, dtype=bool)
        edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
        edge[:-1] |= labels[:-1] != labels[1:]
        out[edge] = 1.0
    return out


def heat_tile(change: torch.Tensor, top: float | None = None, scale: int = 1) -> Image.Image:
    """A (H, W) non-negative map drawn with 'hot', divided by ``top`` (default its maximum)."""
    top = float(change.max()) if top is None else top
    return to_pil(hot((change / max(top, 1e-12)).cpu().numpy()), scale)


def outline(image: torch.Tensor, masks: Sequence[torch.Tensor], scale: int, colours=((0, 255, 0),)) -> Image.Image:
    """The (3, H, W) image enlarged ``scale`` times with each (H, W) mask's boundary drawn in its colour."""
    arr = np.array(to_pil(image, scale))
    for mask, colour in zip(masks, colours):
        m = F.interpolate(mask[None, None].float(), scale_factor=scale, mode="nearest")[0, 0] > 0
        eroded = -F.max_pool2d(-m[None, None].float(), 3, 1, 1)[0, 0] > 0
        arr[(m & ~eroded).numpy()] = colour
    return Image.fromarray(arr)


def grid(
    tiles: Sequence[Sequence[Image.Image]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    pad: int = 4,
    font_size: int = 14,
) -> Image.Image:
    """Lay out rows of equally sized tiles on white with optional row/column labels and a title."""
    if not tiles or not tiles[0]:
        raise ValueError("grid needs at least one tile")
    tw, th = tiles[0][0].size
    fnt = font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_w(s: str) -> int:
        return max(int(probe.textlength(line, font=fnt)) for line in s.split("\n"))

    def put(x: int, y: int, s: str, centred: bool) -> None:
        """Draw possibly multi-line text from top y, centred on x or left-aligned at x."""
        for i, line in enumerate(s.split("\n")):
            dx = -int(probe.textlength(line, font=fnt)) // 2 if centred else 0
            draw.text((x + dx, y + i * (font_size + 2)), line, fill="black", font=fnt)

    left = (max(text_w(s) for s in row_labels) + 2 * pad) if row_labels else 0
    top_title = font_size + 2 * pad if title else 0
    top_cols = (font_size + 2) * (max(s.count("\n") for s in col_labels) + 1) + 2 * pad if col_labels else 0
    ncols = max(len(r) for r in tiles)
    width = left + ncols * (tw + pad) + pad
    height = top_title + top_cols + len(tiles) * (th + pad) + pad
    if title:
        width = max(width, text_w(title) + 2 * pad)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad), title, fill="black", font=fnt)
    y0 = top_title + top_cols
    if col_labels:
        for c, label in enumerate(col_labels):
            x = left + pad + c * (tw + pad)
            put(x + tw // 2, top_title + pad, label, centred=True)
    for r, row in enumerate(tiles):
        y = y0 + pad + r * (th + pad)
        if row_labels:
            lines = row_labels[r].count("\n") + 1
            put(pad, y + th // 2 - lines * (font_size + 2) // 2, row_labels[r], centred=False)
        for c, tile in enumerate(row):
            canvas.paste(tile, (left + pad + c * (tw + pad), y))
    return canvas


def stack(images: Sequence[Image.Image], pad: int = 8) -> Image.Image:
    """Pictures one above the other on white, left-aligned, ``pad`` pixels apart."""
    width = max(im.width for im in images)
    canvas = Image.new("RGB", (width, sum(im.height for im in images) + pad * (len(images) - 1)), "white")
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height + pad
    return canvas


#: zlib level of every PNG panda writes. Pillow's default (6) spends 3x the time of level 3 for files 12% smaller:
#: a demo contact sheet (1429 x 858) takes 127 ms against 43 ms, and the demo's 80 sheets 5.5 s against about 2.
PNG_COMPRESS_LEVEL = 3


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` as PNG atomically (see :func:`panda.fileio.atomic_write`)."""
    return atomic_write(path, lambda fh: image.save(fh, format="PNG", compress_level=PNG_COMPRESS_LEVEL))


def save_gif(frames: Sequence[Image.Image], path: str | os.PathLike, frame_ms: int = 90) -> Path:
    """Write ``frames`` as a looping animated GIF, atomically; each frame gets its own 256-colour palette."""
    if not frames:
        raise ValueError("an animation needs at least one frame")
    return atomic_write(path, lambda fh: frames[0].save(fh, format="GIF", save_all=True, append_images=list(frames[1:]),
                                                        duration=frame_ms, loop=0))


def png_bytes(image: Image.Image) -> bytes:
    """The PNG encoding of ``image`` (for a web response)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def save_images(images: torch.Tensor, folder: str | Path, names: Sequence[str]) -> list[Path]:
    """One PNG per image at its own resolution (no grid, no enlargement): ``images`` (N, 3, H, W) in [0, 1],
    written as ``folder/NAME.png`` for each of ``names``."""
    if len(names) != len(images):
        raise ValueError(f"{len(names)} names for {len(images)} images")
    folder = check_writable(folder)  # created when missing
    return [save_png(to_pil(image), folder / f"{name}.png") for image, name in zip(images, names)]
