"""Region masks from landmark models that have nothing to do with PandA.

Primary: MediaPipe FaceMesh (``mediapipe==0.10.21``, the last release bundling its models): 478
points with index sets for the eyes, nose, lips and face oval. Faces are upsampled to 256 x 256 for
detection; each region is the convex hull of its points drawn back at image resolution, dilated by
``dilate`` pixels.

Cross-check: MTCNN's ONet (``facenet-pytorch==2.6.0``'s ``data/onet.pt``, read with weights_only; our
own module matches its keys): 5 points (eyes, nose, mouth corners) for the whole face resized to 48 x 48.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import PandaError
from .fileio import sha256_of
from .generators import GeneratorAdapter, Latents

REGIONS = ("eyes", "nose", "mouth")  # the ROIR benchmark's regions
#: The face oval, kept with every face set: it splits "the rest of the face" from the background.
FACE = "face"
#: The disjoint cells an edit's change is split over (:func:`face_cells`): the regions, the rest of the face oval,
#: and everything outside it.
CELLS = REGIONS + ("rest of face", "background")
#: Regions ``panda remove --region`` can fill: the benchmark's, and the forehead (hair over it, a hat's brim).
REMOVAL_REGIONS = REGIONS + ("forehead",)
#: The top arc of FaceMesh's face oval, temple to temple through the hairline (point 10).
_OVAL_TOP = [21, 54, 103, 67, 109, 10, 338, 297, 332, 284, 251]
MEDIAPIPE_HINT = ('pip install --no-deps mediapipe==0.10.21 && pip install absl-py attrs flatbuffers '
                  '"protobuf>=4.25.3,<5" opencv-python-headless matplotlib')
ONET_HINT = "pip install --no-deps facenet-pytorch==2.6.0"
ONET_SHA256 = "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"
#: What MediaPipe's C++ graph writes when it starts: TensorFlow Lite's delegate notice, absl's note that logging is
#: not initialised, and glog-style info and warning lines (I/W + date) about features panda does not use.
_MEDIAPIPE_CHATTER = re.compile(r"^(INFO: Created TensorFlow Lite |WARNING: All log messages before absl::|[IW]\d{4} )")
_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _without_mediapipe_chatter() -> Iterator[None]:
    """Catch file descriptor 2 while MediaPipe runs and pass on all but its start-up chatter.

    Its C++ code writes straight to the descriptor, and no environment variable quiets it (GLOG_minloglevel,
    TF_CPP_MIN_LOG_LEVEL: tried). Errors (E/F lines) and everything else written meanwhile are passed on after
    the call, so nothing is lost; the lock keeps two threads from swapping the descriptor at once.
    """
    with _STDERR_LOCK, tempfile.TemporaryFile() as caught:
        try:
            saved = os.dup(2)
        except OSError:  # no descriptor 2 (a daemon's closed stderr): nothing to quiet
            yield
            return
        _flush(sys.stderr)
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            _flush(sys.stderr)
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode(errors="replace").splitlines(keepends=True)
                    if not _MEDIAPIPE_CHATTER.match(line)]
            if kept and sys.stderr is not None:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _flush(stream) -> None:
    if stream is not None:  # None under pythonw
        stream.flush()


@dataclass
class RegionMasks:
    """What :class:`FaceMeshMasker` found.

    Attributes
    ----------
    found : torch.Tensor
        (N,) bool, a face was found.
    masks : dict of str to torch.Tensor
        Region name -> (N, H, W) bool (all False where not found).
    boxes : torch.Tensor or None
        (N, 4) face boxes (x0, y0, x1, y1) in pixels, the face oval's bounds made square and grown by 10%.
    """

    found: torch.Tensor
    masks: dict[str, torch.Tensor]
    boxes: torch.Tensor | None = None


def _region_indices() -> dict[str, list[int]]:
    import mediapipe as mp

    c = mp.solutions.face_mesh_connections

    def idx(*sets):
        return sorted({i for s in sets for pair in s for i in pair})

    return {
        "eyes": [idx(c.FACEMESH_LEFT_EYE), idx(c.FACEMESH_RIGHT_EYE)],
        "nose": [idx(c.FACEMESH_NOSE)],
        "mouth": [idx(c.FACEMESH_LIPS)],
        "face": [idx(c.FACEMESH_FACE_OVAL)],
        # between the eyebrows and the oval's top arc; FaceMesh fits the skull, so this reaches under hair
        "forehead": [sorted(set(idx(c.FACEMESH_LEFT_EYEBROW, c.FACEMESH_RIGHT_EYEBROW)) | set(_OVAL_TOP))],
    }


class FaceMeshMasker:
    """Eyes, nose, mouth and forehead masks for batches of face images, from MediaPipe FaceMesh.

    Parameters
    ----------
    dilate : int
        Pixels by which each hull is grown at image resolution (thin eye hulls at 64 x 64 need it).
    detect_size : int
        Faces are upsampled to this side for detection.
    """

    def __init__(self, dilate: int = 2, detect_size: int = 256) -> None:
        if importlib.util.find_spec("mediapipe") is None:
            raise PandaError(f"region masks need MediaPipe FaceMesh: install it with `{MEDIAPIPE_HINT}`.")
        import mediapipe as mp

        self.dilate, self.detect_size = dilate, detect_size
        with _without_mediapipe_chatter():
            self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1)
            # the graph starts on threads of its own and logs when they get to it: a first image waits for them
            self.mesh.process(np.zeros((detect_size, detect_size, 3), np.uint8))
        # the first image with a face logs one more warning (landmark projection): descriptor 2 is caught until
        # then, and not after, so that other threads' output is held only while the graph settles
        self.settled = False
        self.indices = _region_indices()

    def landmarks(self, images: torch.Tensor) -> list[np.ndarray | None]:
        """(N, 3, H, W) images in [0, 1] -> per image a (478, 2) array of (x, y) in pixels of the
        original resolution, or None where no face was found."""
        h, w = images.shape[-2:]
        up = F.interpolate(images.float().cpu(), size=self.detect_size, mode="bilinear", align_corners=False)
        arr = (up.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        out = []
        with contextlib.nullcontext() if self.settled else _without_mediapipe_chatter():
            results = [self.mesh.process(a) for a in arr]
        self.settled = self.settled or any(res.multi_face_landmarks is not None for res in results)
        for res in results:
            if res.multi_face_landmarks is None:
                out.append(None)
                continue
            pts = res.multi_face_landmarks[0].landmark
            out.append(np.array([(p.x * w, p.y * h) for p in pts], dtype=np.float32))
        return out

    def __call__(self, images: torch.Tensor, regions=REGIONS) -> RegionMasks:
        import cv2

        n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
        masks = {r: torch.zeros(n, h, w, dtype=torch.bool) for r in regions}
        found = torch.zeros(n, dtype=torch.bool)
        boxes = torch.zeros(n, 4)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * self.dilate + 1,) * 2) if self.dilate > 0 else None
        for i, pts in enumerate(self.landmarks(images)):
            if pts is None:
                continue
            found[i] = True
            oval = pts[self.indices["face"][0]]
            (x0, y0), (x1, y1) = oval.min(0), oval.max(0)
            cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.55 * max(x1 - x0, y1 - y0)
            boxes[i] = torch.tensor([cx - half, cy - half, cx + half, cy + half])
            for r in regions:
                canvas = np.zeros((h, w), dtype=np.uint8)
                for group in self.indices[r]:
                    hull = cv2.convexHull((pts[group] * 16).round().astype(np.int32))  # 4 bits of sub-pixel
                    cv2.fillConvexPoly(canvas, hull, 1, lineType=cv2.LINE_8, shift=4)
                if kernel is not None:
                    canvas = cv2.dilate(canvas, kernel)
                masks[r][i] = torch.from_numpy(canvas.astype(bool))
        return RegionMasks(found, masks, boxes)


class ONet(nn.Module):
    """MTCNN's output network (keys as in facenet-pytorch's onet.pt). Input (N, 3, 48, 48), values
    (v - 127.5) / 128 for v in [0, 255]. Returns (face probability (N,), box (N, 4), points (N, 10):
    5 x then 5 y, relative to the input box)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return F.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def load_onet() -> ONet:
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise PandaError(f"the ONet cross-check needs facenet-pytorch's weights: install them with `{ONET_HINT}`.")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "onet.pt"
    if not path.is_file() or sha256_of(path) != ONET_SHA256:
        raise PandaError(f"{path} is missing or not the expected file: reinstall with `{ONET_HINT} --force-reinstall`.")
    net = ONet()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval().requires_grad_(False)


@torch.no_grad()
def onet_points(net: ONet, images: torch.Tensor, boxes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ONet's face probability and five points.

    Parameters
    ----------
    images : torch.Tensor
        (N, 3, H, W) in [0, 1].
    boxes : torch.Tensor, optional
        (N, 4) face boxes (x0, y0, x1, y1) to crop (ONet's usual input, the previous MTCNN stages' boxes);
        None runs it on the whole image.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Face probability (N,) and points (N, 5, 2) as (x, y) pixels: left eye, right eye, nose, left and
        right mouth corner.
    """
    n, _, h, w = images.shape
    if boxes is None:
        boxes = torch.tensor([0.0, 0.0, float(w), float(h)]).expand(n, 4)
    boxes = boxes.float()
    # an affine sampling grid crops (and pads with edge pixels) any box, also one leaving the image
    sx, sy = (boxes[:, 2] - boxes[:, 0]) / w, (boxes[:, 3] - boxes[:, 1]) / h
    tx, ty = (boxes[:, 0] + boxes[:, 2]) / w - 1, (boxes[:, 1] + boxes[:, 3]) / h - 1
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    grid = F.affine_grid(theta, (n, 3, 48, 48), align_corners=False)
    crops = F.grid_sample(images.float().cpu(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    prob, _, pts = net((crops * 255 - 127.5) / 128)
    bw, bh = (boxes[:, 2] - boxes[:, 0])[:, None], (boxes[:, 3] - boxes[:, 1])[:, None]
    xy = torch.stack([boxes[:, :1] + pts[:, :5] * bw, boxes[:, 1:2] + pts[:, 5:] * bh], dim=-1)
    return prob, xy


def cross_check(masks: RegionMasks, prob: torch.Tensor, points: torch.Tensor, threshold: float = 0.9) -> dict:
    """How often ONet's points fall inside FaceMesh's masks, on samples both models accept.

    Returns {"kept": bool (N,), "n_kept": int, "eyes": share, "nose": share, "mouth": share}: the share of
    kept samples whose two eye points (nose point; both mouth corners) lie inside the eyes (nose; mouth) mask.
    """
    kept = masks.found & (prob > threshold)
    h, w = next(iter(masks.masks.values())).shape[-2:]
    ix = points[..., 0].round().long().clamp(0, w - 1)
    iy = points[..., 1].round().long().clamp(0, h - 1)
    rows = torch.arange(points.shape[0])[:, None]
    out = {"kept": kept, "n_kept": int(kept.sum())}
    for region, which in (("eyes", [0, 1]), ("nose", [2]), ("mouth", [3, 4])):
        if region not in masks.masks:
            continue
        inside = masks.masks[region][rows, iy[:, which], ix[:, which]].all(1)
        out[region] = float(inside[kept].float().mean()) if kept.any() else float("nan")
    return out


@dataclass
class FaceSet:
    """Samples both landmark models accept, with their images and region masks.

    Attributes
    ----------
    seeds : list of int
        The kept seeds.
    latents : Latents
        Their latents.
    images : torch.Tensor
        (N, 3, H, W) in [0, 1].
    masks : dict of str to torch.Tensor
        Region name -> (N, H, W) bool.
    n_tried : int
        Seeds tried.
    check : dict
        :func:`cross_check`'s shares, and ONet's "points" (N, 5, 2) of the kept samples.
    """

    seeds: list[int]
    latents: Latents
    images: torch.Tensor
    masks: dict[str, torch.Tensor]
    n_tried: int
    check: dict = field(default_factory=dict)


class BoxMasker:
    """Fixed boxes as region masks, the same for every image: for running the benchmark's pipeline on generators
    that do not draw faces (random-weight fixtures), where no landmark model applies.

    Parameters
    ----------
    boxes : dict of str to (float, float, float, float)
        Region -> (x0, y0, x1, y1) as fractions of the image side; default eyes, nose and mouth where an
        aligned face has them.
    """

    DEFAULT = {"eyes": (0.25, 0.3, 0.75, 0.45), "nose": (0.4, 0.45, 0.6, 0.62), "mouth": (0.32, 0.65, 0.68, 0.8),
               FACE: (0.15, 0.15, 0.85, 0.95)}

    def __init__(self, boxes: dict[str, tuple[float, float, float, float]] | None = None) -> None:
        self.boxes = dict(boxes or self.DEFAULT)

    def __call__(self, images: torch.Tensor, regions=REGIONS) -> RegionMasks:
        n, size = images.shape[0], images.shape[-1]
        masks = {}
        for r in regions:
            x0, y0, x1, y1 = (round(v * size) for v in self.boxes[r])
            m = torch.zeros(n, size, size, dtype=torch.bool)
            m[:, y0:y1, x0:x1] = True
            masks[r] = m
        return RegionMasks(torch.ones(n, dtype=torch.bool), masks, torch.tensor([0.0, 0.0, size, size]).expand(n, 4))


def face_set(generator: GeneratorAdapter, start: int, n: int, masker, onet: ONet | None,
             batch: int = 256) -> FaceSet:
    """Seeds ``start .. start + n - 1``, kept where the masker (FaceMesh) finds a face, ONet (on its face box) gives
    probability > 0.9 and every region mask is non-empty. With ``onet`` None there is no cross-check. The masks are
    the regions' and the face oval's (:data:`FACE`)."""
    names = REGIONS + (FACE,)
    seeds, images, masks, found, probs, points = list(range(start, start + n)), [], {r: [] for r in names}, [], [], []
    for i in range(0, n, batch):
        x = generator.render(seeds[i:i + batch])
        rm = masker(x, regions=names)
        if onet is not None:
            p, pts = onet_points(onet, x, rm.boxes)
        else:  # no cross-check: every sample passes, with no points
            p, pts = torch.ones(x.shape[0]), torch.full((x.shape[0], 5, 2), float("nan"))
        images.append(x), found.append(rm.found), probs.append(p), points.append(pts)
        for r in names:
            masks[r].append(rm.masks[r])
    images = torch.cat(images)
    masks = {r: torch.cat(m) for r, m in masks.items()}
    if onet is None:
        check = {"kept": torch.cat(found), "n_kept": int(torch.cat(found).sum())}
    else:
        check = cross_check(RegionMasks(torch.cat(found), masks), torch.cat(probs), torch.cat(points))
    keep = check["kept"] & torch.stack([m.flatten(1).any(1) for m in masks.values()]).all(0)
    idx = torch.nonzero(keep).flatten()
    kept_seeds = [seeds[i] for i in idx.tolist()]
    check = {k: v for k, v in check.items() if k != "kept"} | {"points": torch.cat(points)[idx]}
    return FaceSet(kept_seeds, generator.sample(kept_seeds), images[idx], {r: m[idx] for r, m in masks.items()}, n, check)


def face_cells(masks: dict[str, torch.Tensor], first: str | None = None) -> dict[str, torch.Tensor]:
    """Split every pixel into one of :data:`CELLS`: eyes, nose, mouth, the rest of the face oval, the background.

    Dilated region masks can overlap (the nose's top and the eyes); a pixel goes to the first region in order, and
    ``first`` (a region) comes before the others, so a target region keeps its whole mask.

    Parameters
    ----------
    masks : dict of str to torch.Tensor
        :data:`REGIONS` and :data:`FACE`, each (N, H, W) bool.

    Returns
    -------
    dict of str to torch.Tensor
        Cell name -> (N, H, W) bool; disjoint, covering every pixel; in :data:`CELLS` order.
    """
    order = ([first] if first else []) + [r for r in REGIONS if r != first]
    taken = torch.zeros_like(masks[REGIONS[0]], dtype=torch.bool)
    cells = {}
    for r in order:
        cells[r] = masks[r].bool() & ~taken
        taken = taken | cells[r]
    cells["rest of face"] = masks[FACE].bool() & ~taken
    cells["background"] = ~(taken | cells["rest of face"])
    return {c: cells[c] for c in CELLS}

