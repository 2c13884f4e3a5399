"""``panda serve``: a local web app to explore a fitted factor file.

A small Starlette app (served by uvicorn) with a plain page: pick a sample (seed or random), a part
(or paint a region of your own), an appearance and alpha with sliders and see the edit live, the part's
map, where the appearance is (localisation), the part removed, the part as another sample has it
(transfer), and the samples that hold the most of the appearance there (retrieval); optionally with the
sample's own parts (refinement) instead of the global ones. Every picture is a PNG made on request.
Bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .drawing import overlay, png_bytes, to_pil
from .editing import Edit, check_alpha, edit_delta, part_profile, region_delta, synthesize_offset
from .errors import PandaError
from .fileio import backup, sha256_of
from .generators import GeneratorAdapter, Latents
from .localisation import RANKING_SEEDS, energy_maps, rank_for_region, signed
from .localisation import localisation as localisation_of
from .maps import normalise, upsample
from .model import PandA
from .pages import render_explorer
from .refinement import refine
from .removal import choose_fill, remove, removal_regions
from .retrieval import retrieve
from .transfer import transfer_offsets

MAX_SEED = 2**32 - 1
#: Samples "find the samples with the most of it" scores: seeds 0.. (or the first latents), a second or two on a
#: DCGAN's CPU; ``n`` may ask for fewer or more, up to :data:`MAX_RETRIEVE`.
RETRIEVE_SAMPLES = 1000
MAX_RETRIEVE = 10_000


def port_free(host: str, port: int) -> None:
    """Raise a clear error when ``host:port`` cannot be bound (in use, or not ours to use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PandaError(f"port {port} on {host} is in use: choose another with --port.") from exc
            raise PandaError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another --host or --port.") from exc


#: Most edits one request may stack, and most characters in a query (a 1 MB query is answered 414, not read): enough
#: for a full stack of painted regions on a 64x64 layer (1,024 hex digits each).
MAX_EDITS = 16
MAX_QUERY = 20_000
#: Requests allowed to wait for the generator at once; beyond them the server answers 503 at once, so clients that
#: gave up do not leave minutes of queued work behind them.
MAX_WAITING = 8
#: Auto removal fills remembered (one per sample, part and alpha): the page asks for a removal, then for its fill.
MAX_REMEMBERED = 256
#: Samples whose refined parts are remembered ("this sample's own parts"): S x R_S numbers each, 0.6 MiB at a 64 x 64
#: layer with 40 parts.
MAX_REFINED = 64
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_mask(text: str, grid: tuple[int, int]) -> torch.Tensor:
    """A region painted on the page: H*W cells of the layer's grid, row by row, as hex digits of four cells each
    (first cell in the highest bit) -> (H, W) of 0 and 1. Refused when empty, malformed or of another size."""
    h, w = grid
    digits = -(-h * w // 4)
    if len(text) != digits or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise PandaError(f"mask must be {digits} hex digits (the {h}x{w} grid's cells, four per digit).")
    bits = torch.tensor([int(c, 16) >> (3 - b) & 1 for c in text for b in range(4)][:h * w], dtype=torch.float32)
    if not bits.any():
        raise PandaError("the painted region is empty: paint at least one cell.")
    return bits.view(h, w)


@dataclass(frozen=True)
class Taken:
    """A stacked transfer: the part (or painted region) as sample ``source`` has it, at ``alpha``."""

    source: int
    part: int | None
    mask: torch.Tensor | None
    alpha: float


def parse_edits(text: str, grid: tuple[int, int],
                limit: int = MAX_EDITS) -> list[Edit | tuple[torch.Tensor, int, float] | Taken]:
    """'k,j,a;mHEX,j,a;tS,k,a;tS,mHEX,a' -> the explorer's stack of edits (at most ``limit``): a part's (``Edit``), a
    painted region's (mask (H, W), appearance, alpha) where the first field is ``m`` and the mask's hex digits, or
    a transfer (:class:`Taken`) of a part or painted region from sample S, where the first field is ``t`` and S."""
    pieces = [p for p in text.split(";") if p.strip()]
    if len(pieces) > limit:
        raise PandaError(f"{len(pieces)} stacked edits: at most {limit}.")
    out: list[Edit | tuple[torch.Tensor, int, float] | Taken] = []
    for p in pieces:
        if p.strip().startswith("t"):
            fields = p.strip()[1:].split(",")
            try:
                if len(fields) != 3:
                    raise ValueError(p)
                source, alpha = int(fields[0]), float(fields[2])
                part = None if fields[1].startswith("m") else int(fields[1])
            except ValueError as exc:
                raise PandaError(f"cannot read the stacked transfer '{p}': write it as tSOURCE,PART,ALPHA or "
                                 f"tSOURCE,mHEX,ALPHA.") from exc
            out.append(Taken(source, part, None if part is not None else parse_mask(fields[1][1:], grid),
                             check_alpha(alpha)))
        elif p.strip().startswith("m"):
            fields = p.strip()[1:].split(",")
            if len(fields) != 3:
                raise PandaError(f"cannot read the painted edit '{p}': write it as mHEX,APPEARANCE,ALPHA.")
            rest = Edit.parse(f"0,{fields[1]},{fields[2]}")  # the appearance and alpha read as a part's are
            out.append((parse_mask(fields[0], grid), rest.appearance, rest.alpha))
        else:
            e = Edit.parse(p)
            if isinstance(e.part, str):  # names clash with the m and t prefixes here: the explorer sends indices
                raise PandaError(f"cannot read the stacked edit '{p}': write it as PART,APPEARANCE,ALPHA with the "
                                 f"part's index.")
            out.append(e)
    return out


class _Guard:
    """ASGI middleware: refuse a Host header other than the served address (DNS rebinding: a web page elsewhere
    that renames itself to 127.0.0.1 must not reach the explorer) and over-long queries."""

    def __init__(self, app, allowed_hosts: Sequence[str] | None) -> None:
        self.app, self.allowed = app, None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            problem = None
            if len(scope.get("query_string", b"")) > MAX_QUERY:
                problem = (414, f"query longer than {MAX_QUERY} characters")
            elif self.allowed is not None:
                host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
                if host not in self.allowed:
                    problem = (400, "unexpected Host header: open the explorer at the address panda serve printed")
            if problem is not None:
                await PlainTextResponse(problem[1], status_code=problem[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)


def allowed_hosts(host: str, port: int) -> list[str]:
    """The Host headers a browser sends for ``host:port`` (for loopback, each loopback name)."""
    names = list(LOOPBACK) + ["[::1]"] if host in LOOPBACK else [host, f"[{host}]"]
    return [f"{n}:{port}" for n in names] + (names if port == 80 else [])


def create_app(model: PandA, generator: GeneratorAdapter, seed: int = 0, latents: Latents | None = None,
               hosts: Sequence[str] | None = None, max_waiting: int = MAX_WAITING,
               factors: str | os.PathLike | None = None, command: str | None = None):
    """The Starlette app for ``model`` on ``generator`` (checked to match); the page opens on ``seed``.

    latents: latents to explore instead of seeds (``--latent``: a file of the user's own, or the one ``panda
    project`` wrote): the page's sample number is then an index into them, and ``seed`` the one it opens on.
    hosts: the Host headers to accept (:func:`allowed_hosts`; None: any, for tests). max_waiting: requests that may
    wait for the generator before the rest are answered 503. factors: the file ``model`` was loaded from: names
    given to parts on the page are saved into it (as ``panda name-parts --name`` does; its first state is kept as
    ``<file>.bak``); without it the page cannot name parts. command: ``panda edit`` with the factor file and the
    generator options the explorer was started with: the page shows its stack of part edits as that command.
    """
    model.check_compatible(generator)
    factors = None if factors is None else Path(factors)
    # the file's hash when the page was served, and after each name saved: a file changed by anything else (a refit)
    # is not overwritten with this model's parts; the backup is made once, of the file as it was
    saved = {"sha256": None if factors is None else sha256_of(factors), "backup": None}
    if latents is not None and not 0 <= seed < len(latents):
        raise PandaError(f"--seed {seed} is no index into the {len(latents)} latents: give 0..{len(latents) - 1}.")
    lock = threading.Lock()  # hooks are registered on the shared module: one generation at a time
    slots = threading.BoundedSemaphore(max_waiting + 1)  # the one generating and those waiting
    scale = max(1, 256 // generator.image_size)
    _, h, w = model.layer_shape_
    # which part is strongest at each grid position: the page maps a click to a part with it
    strongest = model.part_maps().argmax(0).tolist()

    def ints(request, *names):
        try:
            return [int(request.query_params[n]) for n in names]
        except (KeyError, ValueError) as exc:
            raise PandaError(f"give integer query parameters {', '.join(names)}.") from exc

    def alpha_of(request, default: float) -> float:
        text = request.query_params.get("alpha")
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError as exc:
            raise PandaError("alpha must be a number.") from exc
        return check_alpha(value)

    def sample_of(request, name: str = "seed") -> Latents:
        """The request's sample (``seed``, or another such parameter): its seed's latent, or with ``latents`` the one
        the seed indexes."""
        (seed,) = ints(request, name)
        return latent_at(seed, name)

    def latent_at(seed: int, name: str = "seed") -> Latents:
        if latents is not None:
            if not 0 <= seed < len(latents):
                raise PandaError(f"{name} must be an index into the {len(latents)} latents: 0..{len(latents) - 1}.")
            return latents[seed:seed + 1]
        if not 0 <= seed <= MAX_SEED:
            raise PandaError(f"{name} must be in 0..{MAX_SEED}.")
        return generator.sample([seed])

    refined: OrderedDict[int, torch.Tensor] = OrderedDict()  # sample number -> its own parts (S, R_S), least recent first

    def refining(request) -> bool:
        """``refine=1``: each sample's own parts (refinement) stand in for the global ones; ``refine=0`` (default):
        the global parts."""
        text = request.query_params.get("refine", "0")
        if text not in ("0", "1"):
            raise PandaError(f"refine={text!r}: give refine=1 (each sample's own parts) or refine=0 (the global parts).")
        return text == "1"

    def own_parts(request, number: int | None = None, name: str = "seed") -> torch.Tensor | None:
        """With ``refine=1``, the parts (S, R_S) refined for sample ``number`` (default: the request's ``name``):
        the global parts' best translation for it, then 100 steps (:func:`panda.refinement.refine`, 25-50 ms at
        8 x 8 on a CPU), remembered for the :data:`MAX_REFINED` samples asked for last; else None (the global parts)."""
        if not refining(request):
            return None
        if number is None:
            (number,) = ints(request, name)
        if number not in refined:
            refined[number] = refine(model, generator, latent_at(number, name))[1].parts[0]
            if len(refined) > MAX_REFINED:
                refined.popitem(last=False)
        refined.move_to_end(number)  # the least recently asked for goes first
        return refined[number]

    def mask_of(request) -> torch.Tensor | None:
        """The painted region (``mask=HEX``, :func:`parse_mask`), (H, W), or None."""
        text = request.query_params.get("mask")
        return None if text is None else parse_mask(text, (h, w))

    def offset_of(request, lat: Latents) -> torch.Tensor | None:
        """The stacked edits (``edits=k,j,a;mHEX,j,a;tS,k,a;...``) plus the current one (``part`` or ``mask``, with
        ``appearance`` and ``alpha``), summed into one offset (C, H, W) for the sample ``lat``; None when there is
        none."""
        stack = parse_edits(request.query_params.get("edits", ""), (h, w))
        mask = mask_of(request)
        if mask is not None:
            (appearance,) = ints(request, "appearance")
            stack.append((mask, appearance, alpha_of(request, 1.0)))
        elif "part" in request.query_params:
            part, appearance = ints(request, "part", "appearance")
            stack.append(Edit(part, appearance, alpha_of(request, 1.0)))
        if not stack:
            return None
        parts = [e for e in stack if isinstance(e, Edit)]
        delta = edit_delta(model, parts, own_parts(request)) if parts else torch.zeros(model.layer_shape_)
        for e in stack:
            if isinstance(e, Taken):  # what the source holds there replaces what this sample holds
                name = "a stacked transfer's source"
                own = None if e.part is None else (own_parts(request), own_parts(request, e.source, name))
                delta += taken_offset(lat, latent_at(e.source, name), e.part, e.mask, e.alpha, own)
            elif not isinstance(e, Edit):
                m, j, a = e
                delta += region_delta(model, j, m, check_alpha(a))
        return delta

    def taken_offset(lat: Latents, source: Latents, part: int | None, mask: torch.Tensor | None,
                     alpha: float, own: tuple[torch.Tensor | None, torch.Tensor | None] | None = None) -> torch.Tensor:
        """The offset (C, H, W) that gives ``lat`` what ``source`` holds in the part or the painted region; ``own``:
        (target's, source's) own parts (S, R_S) for a part, None for the global ones."""
        region = {"parts": [part]} if mask is None else {"region": mask}
        if own is not None and own[0] is not None:
            region |= {"target_parts": own[0][None], "source_parts": own[1][None]}
        return transfer_offsets(model, generator, lat, source, alpha=alpha, **region)[0, 0]

    def mask_image(request):
        """The painted region at the generator's resolution, white on black: a file for ``--mask``."""
        mask = mask_of(request)
        if mask is None:
            raise PandaError("give the painted region: mask=HEX.")
        size = generator.image_size
        return torch.nn.functional.interpolate(mask[None, None], size=(size, size), mode="nearest")[0].expand(3, -1, -1)

    energy: list[torch.Tensor] = []  # RANKING_SEEDS' energy maps, computed for the first painted region

    def region_top(request) -> dict:
        """The painted region's top appearances, ranked on ``RANKING_SEEDS`` as a part's are (one image alone would
        rank noise first)."""
        mask = mask_of(request)
        if mask is None:
            raise PandaError("give the painted region: mask=HEX.")
        if not energy:
            energy.append(energy_maps(model, generator, RANKING_SEEDS))
        return {"top": rank_for_region(energy[0], mask, 8)}

    def guarded(fn, request):
        """fn(request) under the generator's lock -> (result, None), or (None, the response refusing it): 503 when
        ``max_waiting`` requests already wait, 400 for bad input."""
        if not slots.acquire(blocking=False):
            return None, PlainTextResponse("the explorer is busy: try again in a moment", status_code=503,
                                           headers={"Retry-After": "1"})
        try:
            with lock, torch.no_grad():
                return fn(request), None
        except PandaError as exc:
            return None, PlainTextResponse(str(exc), status_code=400)
        finally:
            slots.release()

    def picture(fn, name: str):
        """Wrap an endpoint that returns an (H, W, 3) or (3, H, W) image in [0, 1] into a PNG response
        (``full=1``: at the generator's resolution, as a download)."""

        def endpoint(request):
            image, refused = guarded(fn, request)
            if refused is not None:
                return refused
            full = request.query_params.get("full") == "1"
            headers = {"Cache-Control": "no-store"}
            if full:
                headers["Content-Disposition"] = f'attachment; filename="panda-{name}.png"'
            return Response(png_bytes(to_pil(image, 1 if full else scale)), media_type="image/png", headers=headers)

        return endpoint

    def data(fn):
        """Wrap an endpoint that returns a dict into a JSON response."""

        def endpoint(request):
            value, refused = guarded(fn, request)
            return refused if refused is not None else JSONResponse(value, headers={"Cache-Control": "no-store"})

        return endpoint

    def original(request):
        return generator.render(sample_of(request))[0]

    def edited(request):
        lat = sample_of(request)
        delta = offset_of(request, lat)
        if delta is None:
            return generator.render(lat)[0]
        return generator.to_unit(synthesize_offset(generator, model.layer_, lat, delta[None])).cpu()[0]

    def part_map(request):
        """The part's map over the image, or the painted region's (``mask``)."""
        lat, mask = sample_of(request), mask_of(request)
        if mask is None:
            (part,) = ints(request, "part")
            mask = part_profile(model, part, own_parts(request))
        image = generator.render(lat)[0]
        return overlay(image, upsample(mask[None], image.shape[-1])[0])

    def localisation(request):
        lat = sample_of(request)
        (appearance,) = ints(request, "appearance")
        model.check_appearance(appearance)
        found = localisation_of(model, generator, lat)  # the image and its maps from one generator pass
        image, maps = found.images[0], signed(model, appearance, found.maps[0, appearance])
        return overlay(image, upsample(normalise(maps[None]), image.shape[-1])[0] ** 2)

    def transferred(request):
        """The sample with what another one (``source``) holds in the part or the painted region, at ``alpha``
        (:func:`panda.transfer.transfer_offsets`; the edit stack is not applied: add the transfer to it to combine)."""
        lat, source, mask = sample_of(request), sample_of(request, "source"), mask_of(request)
        part = None if mask is not None else ints(request, "part")[0]
        own = None if part is None else (own_parts(request), own_parts(request, name="source"))
        delta = taken_offset(lat, source, part, mask, alpha_of(request, 1.0), own)
        return generator.to_unit(synthesize_offset(generator, model.layer_, lat, delta[None])).cpu()[0]

    def retrieved(request) -> dict:
        """The samples with the most of the appearance in the part or the painted region, among the first ``n``
        (default :data:`RETRIEVE_SAMPLES`): their numbers (seeds, or indices into the latents), best first, and
        scores (:func:`panda.retrieval.retrieve`)."""
        mask = mask_of(request)
        (appearance,) = ints(request, "appearance")
        region = mask if mask is not None else part_profile(model, ints(request, "part")[0])
        limit = MAX_RETRIEVE if latents is None else min(MAX_RETRIEVE, len(latents))
        text = request.query_params.get("n", str(min(RETRIEVE_SAMPLES, limit)))
        if not text.isdigit() or not 2 <= int(text) <= limit:
            raise PandaError(f"n must be a whole number of samples in 2..{limit}.")
        n = int(text)
        result = retrieve(model, generator, range(n) if latents is None else latents[:n], appearance, region)
        top = result.top(8)
        return {"most": top, "scores": [round(float(result.scores[i]), 4) for i in top], "n": n}

    searches: OrderedDict[tuple, tuple[int, float, float]] = OrderedDict()  # (sample, part, alpha) -> auto fill

    def fill_of(request) -> tuple[Latents, torch.Tensor, float, dict]:
        """A removal request's sample, region (H, W), alpha and fill {"fill", "appearance", "sign", "gain"}.

        ``fill=auto`` (default): the fill that brings this part's colour closest to its surroundings in this image,
        among the 16 strongest appearances and both signs (32 generator passes, batched); "gain" is how far it gets
        there (1: all the way). It is searched once per sample, part and alpha and remembered: the page asks for the
        picture, then for the fill it used. ``fill=global``: the fit's background appearance ("gain" None); a fill
        chosen on other images moves new images' parts' colour much less towards their surroundings (3-21% of the
        way against 63-76%: ``benchmarks/background_search.md``). A file fitted without the search has only auto.
        """
        lat, mask = sample_of(request), mask_of(request)
        if mask is None:
            (part,) = ints(request, "part")
        own = None if mask is not None else own_parts(request)
        region, alpha = part_profile(model, part, own) if mask is None else mask, alpha_of(request, 1.0)
        fill = request.query_params.get("fill", "auto")
        if fill not in ("auto", "global"):
            raise PandaError(f"fill={fill!r}: give fill=auto (the best for this image) or fill=global (the fit's).")
        if fill == "global" and model.background_ is not None:
            return lat, region, alpha, {"fill": "global", "appearance": model.background_,
                                        "sign": model.background_sign_, "gain": None}
        key = (int(request.query_params["seed"]), part if mask is None else request.query_params["mask"].lower(), alpha,
               own is not None)
        if key not in searches:
            regions, _, masks = removal_regions(region, None, 1, generator.image_size)
            found = choose_fill(model, generator, lat, regions, masks, alpha)
            searches[key] = (found.appearance, found.sign, found.gain)
            if len(searches) > MAX_REMEMBERED:
                searches.popitem(last=False)
        j, sign, gain = searches[key]
        return lat, region, alpha, {"fill": "auto", "appearance": j, "sign": sign, "gain": gain}

    def removed(request):
        lat, region, alpha, fill = fill_of(request)
        return generator.to_unit(remove(model, generator, lat, region, alpha, fill["appearance"], fill["sign"])).cpu()[0]

    def strongest_of(request) -> dict:
        """Which part is strongest at each grid position, {"strongest": (H, W) lists}: the page maps a click to a
        part with it; with ``refine=1`` this sample's own parts'."""
        own = own_parts(request)
        return {"strongest": strongest if own is None else own.argmax(1).reshape(h, w).tolist()}

    def name_of(payload) -> dict:
        """Name a part (``{"part": K, "name": "left eye"}``; an empty name removes it) in ``model`` and in the file."""
        part, name = (payload.get("part"), payload.get("name")) if isinstance(payload, dict) else (None, None)
        if not isinstance(part, int) or isinstance(part, bool) or not isinstance(name, str):
            raise PandaError('send {"part": INDEX, "name": TEXT} (an empty name removes the part\'s name).')
        if not factors.is_file() or sha256_of(factors) != saved["sha256"]:
            raise PandaError(f"'{factors}' changed on disk since the explorer read it: restart panda serve to name "
                             f"the parts of the file as it is now.")
        on_disk = PandA.load(factors)  # the file, not the live model (which may sit on a GPU), is what gets saved
        on_disk.name_part(part, name.strip() or None)
        if saved["backup"] is None:
            saved["backup"] = backup(factors)
        on_disk.save(factors)
        saved["sha256"] = sha256_of(factors)
        model.part_names_, model.hand_named_ = dict(on_disk.part_names_), on_disk.hand_named_
        return {"labels": [model.part_label(k) for k in range(model.n_parts)], "file": str(factors),
                "backup": str(saved["backup"])}

    async def named(request):
        """POST /api/name: a cross-site page may send a form to this address, so a name is taken only as JSON
        from the explorer's own page (its Origin is the address served)."""
        if factors is None:
            return PlainTextResponse("this explorer was started without a factor file to save names into",
                                     status_code=404)
        if request.headers.get("origin") != f"http://{request.headers.get('host', '')}":
            return PlainTextResponse("parts are named only from the explorer's own page", status_code=403)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return PlainTextResponse("send the name as application/json", status_code=415)
        try:
            payload = await request.json()
        except ValueError:
            return PlainTextResponse("the request is not JSON", status_code=400)
        value, refused = await run_in_threadpool(guarded, name_of, payload)
        return refused if refused is not None else JSONResponse(value, headers={"Cache-Control": "no-store"})

    def describe() -> dict:
        return {"generator": generator.name, "layer": model.layer_, "shape": list(model.layer_shape_),
                "n_parts": model.n_parts, "n_appearances": model.n_appearances, "background": model.background_,
                "background_sign": model.background_sign_,
                "top": [model.top_appearances(k, 8, by="specific") for k in range(model.n_parts)],
                "labels": [model.part_label(k) for k in range(model.n_parts)], "grid": [h, w],
                "names": {k: model.part_names_.get(k, "") for k in range(model.n_parts)}, "can_name": factors is not None,
                "command": command,
                "strongest": strongest, "latents": 0 if latents is None else len(latents), "max_edits": MAX_EDITS}

    def info(_request):
        return JSONResponse(describe())

    def page(_request):
        return HTMLResponse(render_explorer(f"panda: {generator.name} layer {model.layer_}", describe(), seed))

    app = Starlette(routes=[
        Route("/", page), Route("/api/info", info),
        Route("/api/original.png", picture(original, "original")), Route("/api/edit.png", picture(edited, "edit")),
        Route("/api/part.png", picture(part_map, "part")), Route("/api/localize.png", picture(localisation, "localize")),
        Route("/api/remove.png", picture(removed, "remove")), Route("/api/remove.json", data(lambda r: fill_of(r)[3])),
        Route("/api/region.json", data(region_top)), Route("/api/mask.png", picture(mask_image, "mask")),
        Route("/api/source.png", picture(lambda r: generator.render(sample_of(r, "source"))[0], "source")),
        Route("/api/transfer.png", picture(transferred, "transfer")), Route("/api/retrieve.json", data(retrieved)),
        Route("/api/strongest.json", data(strongest_of)), Route("/api/name", named, methods=["POST"]),
    ])
    return _Guard(app, hosts)


def serve(model: PandA, generator: GeneratorAdapter, host: str = "127.0.0.1", port: int = 8000, seed: int = 0,
          latents: Latents | None = None, factors: str | os.PathLike | None = None, command: str | None = None,
          allow_naming: bool = False) -> None:
    """Serve the explorer for ``model`` on ``generator`` (on seeds, or on ``latents``) until interrupted; its edits
    are shown as ``command`` (:func:`create_app`). Names given to parts on the page are saved into ``factors`` (the
    file ``model`` was loaded from): on this machine's own address, or elsewhere with ``allow_naming`` (else anyone
    who reaches the address could write into the file)."""
    port_free(host, port)
    wildcard = host in ("0.0.0.0", "::", "")  # every interface: the Host a browser sends cannot be known here
    shared = host not in LOOPBACK
    writable = factors if (not shared or allow_naming) else None
    app = create_app(model, generator, seed, latents, hosts=None if wildcard else allowed_hosts(host, port),
                     factors=writable, command=command)
    if shared:
        naming = (f", and name the parts in {factors}" if writable else
                  ", not name parts: --allow-naming lets it write names into the file" if factors else "")
        print(f"warning: listening on {host}, not on this machine alone: anyone who can reach it can use the explorer "
              f"(and its CPU/GPU{naming}). Use --host 127.0.0.1 unless you mean to share it.", file=sys.stderr,
              flush=True)
    print(f"panda explorer on http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
    uvicorn.Server(server_config(app, host, port)).run()


def server_config(app, host: str, port: int) -> uvicorn.Config:
    """How the explorer is served: a larger h11 buffer than uvicorn's 16 KiB lets an over-long request line reach
    the app and be answered 414 instead of a reset connection."""
    return uvicorn.Config(app, host=host, port=port, log_level="warning", h11_max_incomplete_event_size=2 << 20)
