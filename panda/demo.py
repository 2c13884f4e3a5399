"""``panda demo``: fit on a face generator and write every picture with an index.html."""

from __future__ import annotations

import html
from pathlib import Path

from tqdm.auto import tqdm

from . import viz
from .cli import DEFAULT_ALPHAS
from .generators import load_generator
from .model import PandA


def run_demo(generator_name: str = "dcgan-celeba", layer: str | None = None, rank_parts: int = 12,
             n_samples: int = 5000, seed: int = 0, out: str | Path = "out/demo", device: str = "cpu",
             progress: bool = True, n_show: int = 6, n_top: int = 6) -> Path:
    """Fit PandA (R_C = C) and write factors, parts, per-part edits and index.html into ``out``.

    The samples shown are seeds n_samples + seed ..., which the fit never saw.
    """
    folder = viz.check_writable(out)
    gen = load_generator(generator_name, device)
    model = PandA(None, rank_parts, random_state=seed, verbose=progress).fit(gen, layer, n_samples=n_samples, seed=seed)
    model.save(folder / "factors.safetensors")
    shown = list(range(seed + n_samples, seed + n_samples + n_show))
    latents = gen.sample(shown)
    alphas = list(DEFAULT_ALPHAS)

    viz.save_png(viz.parts_figure(model, gen, shown, latents), folder / "parts.png")
    overview_rows, overview_labels, per_part = [], [], []
    one = latents[:1]
    for k in tqdm(range(model.n_parts), desc="edits per part", disable=not progress, leave=False):
        top = model.top_appearances(k, n_top)
        image, share = viz.sweep_figure(model, gen, shown, k, top[0], alphas, latents)
        viz.save_png(image, folder / f"edit_part{k}.png")
        viz.save_png(viz.contact_sheet(model, gen, shown[:2], k, top, alphas, latents[:2]), folder / f"part{k}_appearances.png")
        per_part.append((k, top, share))
        from .editing import sweep
        row = gen.to_unit(sweep(model, gen, one, k, top[0], alphas))[0].cpu()
        overview_rows.append([viz.to_pil(x, viz._scale_for(row)) for x in row])
        overview_labels.append(f"part {k} + app. {top[0]}")
    viz.save_png(viz.grid(overview_rows, overview_labels, [f"alpha {a:+g}" for a in alphas],
                          title=f"seed {shown[0]}: every part with its top appearance"), folder / "overview.png")

    summary = (f"Generator <b>{html.escape(gen.name)}</b> ({html.escape(gen.description)}), layer <b>{model.layer_}</b> "
               f"({'x'.join(map(str, model.layer_shape_))}), R_C = {model.n_appearances}, R_S = {model.n_parts}, "
               f"{model.n_samples_} training samples. Feature extraction {model.extract_time_:.2f} s, fit "
               f"{model.fit_time_:.2f} s ({model.n_iter_} iteration(s), {model.n_passes_} passes). Relative "
               f"reconstruction error: training {model.train_error_:.4f}, held-out {model.heldout_error_:.4f} "
               f"({model.n_heldout} samples). Factors: <code>factors.safetensors</code>. Samples shown: seeds "
               f"{shown[0]}-{shown[-1]}, not used for fitting. Alpha is in units of the layer's typical activation norm.")
    sections = [
        ("Summary", summary, []),
        ("Parts", "Each part is a non-negative map over the layer's grid, shared by all images; "
                  "'all parts' colours each pixel by its strongest part.", [("parts.png", "The parts over samples.")]),
        ("Every part at a glance", "One sample; each row adds the part's top appearance (by coefficient energy) at "
                                   "increasing strength.", [("overview.png", "Top edit of every part.")]),
    ]
    for k, top, share in per_part:
        sections.append((f"Part {k}", f"Top appearances by coefficient energy: {', '.join(map(str, top))}.", [
            (f"edit_part{k}.png", f"Part {k} + appearance {top[0]} at alpha {', '.join(f'{a:+g}' for a in alphas)}; "
                                  f"{100 * share:.0f}% of the pixel change at |alpha| = 2 falls in the part."),
            (f"part{k}_appearances.png", f"Part {k}: its {len(top)} top appearances on two samples."),
        ]))
    return viz.write_index(folder, f"panda demo: {gen.name}", sections)
