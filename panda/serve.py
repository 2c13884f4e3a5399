"""``panda serve``: a local web app to explore a fitted factor file.

A small Starlette app (served by uvicorn) with a plain page: pick a sample (seed or random), a part,
an appearance and alpha with sliders and see the edit live, the part's map, where the appearance
is (localisation), and the part removed. Every picture is a PNG made on request.
Bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import errno
import socket
import threading

import torch
import uvicorn
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .drawing import overlay, png_bytes, to_pil
from .editing import Edit, edit, part_profile
from .errors import PandaError
from .generators import GeneratorAdapter, Latents
from .localisation import localize, signed
from .maps import normalise, upsample
from .model import PandA
from .pages import render_explorer
from .removal import remove, removal

MAX_SEED = 2**32 - 1


def port_free(host: str, port: int) -> None:
    """Raise a clear error when ``host:port`` cannot be bound (in use, or not ours to use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PandaError(f"port {port} on {host} is in use: choose another with --port.") from exc
            raise PandaError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another --host or --port.") from exc


def create_app(model: PandA, generator: GeneratorAdapter, seed: int = 0, latents: Latents | None = None):
    """The Starlette app for ``model`` on ``generator`` (checked to match); the page opens on ``seed``.

    latents: a projected latent (``panda project``) to explore instead of seeds: every picture shows it and the
    page's seed controls are disabled.
    """
    model.check_compatible(generator)
    lock = threading.Lock()  # hooks are registered on the shared module: one generation at a time
    scale = max(1, 256 // generator.image_size)

    def ints(request, *names):
        try:
            return [int(request.query_params[n]) for n in names]
        except (KeyError, ValueError) as exc:
            raise PandaError(f"give integer query parameters {', '.join(names)}.") from exc

    def alpha_of(request) -> float:
        try:
            return float(request.query_params.get("alpha", "0"))
        except ValueError as exc:
            raise PandaError("alpha must be a number.") from exc

    def sample_of(request) -> Latents:
        """The request's sample: the projected latent, or its seed's latent."""
        if latents is not None:
            return latents[:1]
        (seed,) = ints(request, "seed")
        if not 0 <= seed <= MAX_SEED:
            raise PandaError(f"seed must be in 0..{MAX_SEED}.")
        return generator.sample([seed])

    def picture(fn):
        """Wrap an endpoint that returns an (H, W, 3) or (3, H, W) image in [0, 1] into a PNG response."""

        def endpoint(request):
            try:
                with lock, torch.no_grad():
                    image = fn(request)
            except PandaError as exc:
                return PlainTextResponse(str(exc), status_code=400)
            return Response(png_bytes(to_pil(image, scale)), media_type="image/png",
                            headers={"Cache-Control": "no-store"})

        return endpoint

    def original(request):
        return generator.render(sample_of(request))[0]

    def edited(request):
        lat = sample_of(request)
        part, appearance = ints(request, "part", "appearance")
        return generator.to_unit(edit(model, generator, lat, [Edit(part, appearance, alpha_of(request))])).cpu()[0]

    def part_map(request):
        lat = sample_of(request)
        (part,) = ints(request, "part")
        image = generator.render(lat)[0]
        return overlay(image, upsample(part_profile(model, part)[None], image.shape[-1])[0])

    def localisation(request):
        lat = sample_of(request)
        (appearance,) = ints(request, "appearance")
        model.check_appearance(appearance)
        image = generator.render(lat)[0]
        maps = signed(model, appearance, localize(model, generator, lat)[0, appearance])
        return overlay(image, upsample(normalise(maps[None]), image.shape[-1])[0] ** 2)

    def removed(request):
        lat = sample_of(request)
        (part,) = ints(request, "part")
        alpha = alpha_of(request) or 1.0
        if model.background_ is None:  # fitted without the background search: choose the fill for this part and image
            return removal(model, generator, lat, part_profile(model, part), alpha, "auto").removed[0]
        return generator.to_unit(remove(model, generator, lat, part_profile(model, part), alpha)).cpu()[0]

    def info(_request):
        return JSONResponse({
            "generator": generator.name, "layer": model.layer_, "shape": list(model.layer_shape_),
            "n_parts": model.n_parts, "n_appearances": model.n_appearances, "background": model.background_,
            "top": [model.top_appearances(k, 8) for k in range(model.n_parts)],
        })

    def page(_request):
        return HTMLResponse(render_explorer(f"panda: {generator.name} layer {model.layer_}", {
            "n_parts": model.n_parts, "n_appearances": model.n_appearances,
            "top": [model.top_appearances(k, 8) for k in range(model.n_parts)], "latent": latents is not None,
        }, seed))

    return Starlette(routes=[
        Route("/", page), Route("/api/info", info),
        Route("/api/original.png", picture(original)), Route("/api/edit.png", picture(edited)),
        Route("/api/part.png", picture(part_map)), Route("/api/localize.png", picture(localisation)),
        Route("/api/remove.png", picture(removed)),
    ])


def serve(model: PandA, generator: GeneratorAdapter, host: str = "127.0.0.1", port: int = 8000, seed: int = 0,
          latents: Latents | None = None) -> None:
    """Serve the explorer for ``model`` on ``generator`` (or one projected latent) until interrupted."""
    port_free(host, port)
    app = create_app(model, generator, seed, latents)
    print(f"panda explorer on http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
