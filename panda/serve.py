"""``panda serve``: a local web app to explore a fitted factor file.

A small Starlette app (served by uvicorn) with a plain page: pick a sample (seed or random), a part,
an appearance and alpha with sliders and see the edit live, the part's map, where the appearance
is (localisation), and the part removed. Every picture is a PNG made on request.
Bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import errno
import html
import io
import json
import socket
import threading

import torch

from . import viz
from .errors import PandaError
from .generators import GeneratorAdapter
from .model import PandA

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


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def create_app(model: PandA, generator: GeneratorAdapter, seed: int = 0):
    """The Starlette app for ``model`` on ``generator`` (checked to match); the page opens on ``seed``."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from .editing import Edit, edit, part_profile
    from .localisation import localize, signed
    from .removal import remove

    model.check_compatible(generator)
    lock = threading.Lock()  # hooks are registered on the shared module: one generation at a time
    scale = max(1, 256 // generator.layer_shapes()[next(reversed(generator.layer_shapes()))][-1])

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

    def seed_of(request) -> int:
        (seed,) = ints(request, "seed")
        if not 0 <= seed <= MAX_SEED:
            raise PandaError(f"seed must be in 0..{MAX_SEED}.")
        return seed

    def picture(fn):
        """Wrap an endpoint that returns an (H, W, 3) or (3, H, W) image in [0, 1] into a PNG response."""

        def endpoint(request):
            try:
                with lock, torch.no_grad():
                    image = fn(request)
            except PandaError as exc:
                return PlainTextResponse(str(exc), status_code=400)
            return Response(_png(viz.to_pil(image, scale)), media_type="image/png",
                            headers={"Cache-Control": "no-store"})

        return endpoint

    def original(request):
        seed = seed_of(request)
        return generator.to_unit(generator.synthesize(generator.sample([seed]))).cpu()[0]

    def edited(request):
        seed = seed_of(request)
        part, appearance = ints(request, "part", "appearance")
        return generator.to_unit(edit(model, generator, [seed], [Edit(part, appearance, alpha_of(request))])).cpu()[0]

    def part_map(request):
        seed = seed_of(request)
        (part,) = ints(request, "part")
        image = generator.to_unit(generator.synthesize(generator.sample([seed]))).cpu()[0]
        return viz.overlay(image, viz.upsample(part_profile(model, part)[None], image.shape[-1])[0])

    def localisation(request):
        seed = seed_of(request)
        (appearance,) = ints(request, "appearance")
        model.check_appearance(appearance)
        lat = generator.sample([seed])
        image = generator.to_unit(generator.synthesize(lat)).cpu()[0]
        maps = signed(model, appearance, localize(model, generator, lat)[0, appearance])
        return viz.overlay(image, viz.upsample(viz.normalise(maps[None]), image.shape[-1])[0] ** 2)

    def removed(request):
        seed = seed_of(request)
        (part,) = ints(request, "part")
        alpha = alpha_of(request) or 1.0
        return generator.to_unit(remove(model, generator, [seed], part_profile(model, part), alpha)).cpu()[0]

    def info(_request):
        return JSONResponse({
            "generator": generator.name, "layer": model.layer_, "shape": list(model.layer_shape_),
            "n_parts": model.n_parts, "n_appearances": model.n_appearances, "background": model.background_,
            "top": [model.top_appearances(k, 8) for k in range(model.n_parts)],
        })

    def page(_request):
        return HTMLResponse(PAGE.replace("__INFO__", html.escape(json.dumps({
            "n_parts": model.n_parts, "n_appearances": model.n_appearances,
            "top": [model.top_appearances(k, 8) for k in range(model.n_parts)],
        }), quote=True)).replace("__TITLE__", html.escape(f"panda: {generator.name} layer {model.layer_}")).replace("__SEED__", str(int(seed))))

    return Starlette(routes=[
        Route("/", page), Route("/api/info", info),
        Route("/api/original.png", picture(original)), Route("/api/edit.png", picture(edited)),
        Route("/api/part.png", picture(part_map)), Route("/api/localize.png", picture(localisation)),
        Route("/api/remove.png", picture(removed)),
    ])


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
 body{font-family:sans-serif;margin:1.5em;max-width:1300px}
 label{display:inline-block;min-width:7em} .row{margin:.4em 0}
 figure{display:inline-block;margin:0 1em 1em 0;text-align:center} img{image-rendering:pixelated;border:1px solid #ccc}
 #error{color:#b00}
</style></head>
<body data-info="__INFO__">
<h1>__TITLE__</h1>
<div class="row"><label for="seed">sample (seed)</label><input id="seed" type="number" min="0" value="__SEED__">
  <button id="random">random</button></div>
<div class="row"><label for="part">part <b id="part-v"></b></label><input id="part" type="range" min="0" value="0"></div>
<div class="row"><label for="appearance">appearance <b id="appearance-v"></b></label>
  <input id="appearance" type="range" min="0" value="0" style="width:40em">
  <span>top in this part: <span id="tops"></span></span></div>
<div class="row"><label for="alpha">alpha <b id="alpha-v"></b></label>
  <input id="alpha" type="range" min="-3" max="3" step="0.1" value="1"></div>
<div class="row"><button id="remove">remove this part</button> <span id="error"></span></div>
<figure><img id="original" width="256" height="256" alt="original"><figcaption>original</figcaption></figure>
<figure><img id="edited" width="256" height="256" alt="edited"><figcaption>edited: part + appearance x alpha</figcaption></figure>
<figure><img id="partmap" width="256" height="256" alt="part"><figcaption>the part</figcaption></figure>
<figure><img id="localize" width="256" height="256" alt="localisation"><figcaption>where the appearance is</figcaption></figure>
<figure><img id="removed" width="256" height="256" alt="removed"><figcaption>part removed (background appearance)</figcaption></figure>
<script>
const info = JSON.parse(document.body.dataset.info);
const $ = id => document.getElementById(id);
$("part").max = info.n_parts - 1; $("appearance").max = info.n_appearances - 1;
function showTops() {
  const k = +$("part").value;
  $("tops").innerHTML = info.top[k].map(j => `<a href="#" data-j="${j}">${j}</a>`).join(" ");
  for (const a of $("tops").querySelectorAll("a")) a.onclick = e => { e.preventDefault(); $("appearance").value = a.dataset.j; update(); };
}
function q(extra) { return new URLSearchParams(Object.assign({seed: $("seed").value}, extra)).toString(); }
function update() {
  const s = {part: $("part").value, appearance: $("appearance").value, alpha: $("alpha").value};
  $("part-v").textContent = s.part; $("appearance-v").textContent = s.appearance; $("alpha-v").textContent = s.alpha;
  $("original").src = "/api/original.png?" + q({});
  $("edited").src = "/api/edit.png?" + q(s);
  $("partmap").src = "/api/part.png?" + q({part: s.part});
  $("localize").src = "/api/localize.png?" + q({appearance: s.appearance});
  showTops();
}
for (const id of ["seed", "part", "appearance", "alpha"]) $(id).addEventListener("input", update);
$("random").onclick = () => { $("seed").value = Math.floor(Math.random() * 100000); update(); };
$("remove").onclick = () => { $("removed").src = "/api/remove.png?" + q({part: $("part").value}); };
for (const img of document.images) img.onerror = () => { $("error").textContent = "could not draw " + img.alt; };
$("appearance").value = info.top[0][0];
update();
</script></body></html>
"""


def serve(factors: str, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
          generator_name: str | None = None, seed: int = 0) -> None:
    """Load ``factors`` and serve the explorer until interrupted."""
    import uvicorn

    from .generators import load_generator

    model = PandA.load(factors)
    generator = load_generator(generator_name or model.generator_name_, device)
    port_free(host, port)
    app = create_app(model, generator, seed)
    print(f"panda explorer on http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
