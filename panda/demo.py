"""``panda demo``: fit on a face generator and write every picture with an index.html."""

from __future__ import annotations

import html
import math
from pathlib import Path

from tqdm.auto import tqdm

from . import viz
from .editing import DEFAULT_ALPHAS
from .generators import load_generator
from .model import PandA


def _name_parts(model: PandA, generator) -> str:
    """Name the parts from independent face landmarks when MediaPipe is installed; say what happened."""
    import importlib.util

    if importlib.util.find_spec("mediapipe") is None or importlib.util.find_spec("facenet_pytorch") is None:
        return "Parts are not named: MediaPipe / facenet-pytorch are not installed (the Makefile installs them)."
    from .bench import name_model_parts

    try:
        names = name_model_parts(model, generator)
    except Exception as exc:  # naming is a nicety: the demo goes on without it
        return f"Parts are not named ({exc})."
    return ("Parts named after the face region (MediaPipe FaceMesh masks on 64 faces) they overlap most: "
            + "; ".join(f"part {k}: {v}" for k, v in sorted(names.items())) + ".")


def run_demo(generator_name: str = "dcgan-celeba", layer: str | None = None, rank_parts: int = 12,
             n_samples: int = 5000, seed: int = 0, out: str | Path = "out/demo", device: str = "cpu",
             progress: bool = True, n_show: int = 6, n_top: int = 6) -> Path:
    """Fit PandA (R_C = C) and write factors, parts, per-part edits, refinement, removal,
    localisation and an index.html into ``out``.

    The samples shown are seeds n_samples + seed ..., which the fit never saw.
    """
    folder = viz.check_writable(out)
    gen = load_generator(generator_name, device)
    model = PandA(None, rank_parts, random_state=seed, verbose=progress).fit(gen, layer, n_samples=n_samples, seed=seed)
    naming = _name_parts(model, gen)
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
        overview_labels.append(f"{model.part_label(k)} + app. {top[0]}")
    viz.save_png(viz.grid(overview_rows, overview_labels, [f"alpha {a:+g}" for a in alphas],
                          title=f"seed {shown[0]}: every part with its top appearance"), folder / "overview.png")

    # -- the paper's other applications
    from .removal import region_for

    from .refinement import refine

    once = refine(model, gen, shown, shift=(0, 2))  # the same refined parts serve every part's figure
    refined = [(k, *viz.refine_figure(model, gen, shown, k, model.top_appearances(k, 1)[0], 2.0, shift=(0, 2), refined=once))
               for k in tqdm(range(model.n_parts), desc="refinement per part", disable=not progress, leave=False)]
    improved = [r for r in refined if r[2]["roir_refined"] < r[2]["roir_global"]]
    # the part refinement helped most; an infinite global ROIR (a part that wrapped round to the other side)
    # would win that comparison but makes a confusing picture
    finite = [r for r in refined if math.isfinite(r[2]["roir_global"])] or refined
    refine_part, refine_img, refine_fig = max(finite, key=lambda r: r[2]["roir_global"] / max(r[2]["roir_refined"], 1e-12))
    viz.save_png(refine_img, folder / "refine.png")
    refine_rows = "".join(f"<tr><td>{html.escape(model.part_label(k))}</td><td>{f['roir_global']:.2f}</td>"
                          f"<td>{f['roir_refined']:.2f}</td></tr>" for k, _, f in refined)
    removals = []
    for k in range(model.n_parts):
        image, fig = viz.remove_figure(model, gen, shown[:3], region_for(model, part=k), 1.0, label=model.part_label(k))
        removals.append((k, image, fig))
    removals.sort(key=lambda item: item[2]["distance_after"] / max(item[2]["distance_before"], 1e-12))
    for rank, (k, image, fig) in enumerate(removals[:3]):
        viz.save_png(image, folder / f"remove_{rank}.png")
    best_k, _, best_fig = removals[0]
    viz.save_png(viz.candidates_figure(model, gen, shown[:3], region_for(model, part=best_k), best_fig["search"], 1.0,
                                       label=model.part_label(best_k)), folder / "remove_candidates.png")
    viz.save_png(viz.localize_top_figure(model, gen, shown[0], 6), folder / "localize_top.png")
    viz.save_png(viz.localize_figure(model, gen, shown, model.background_), folder / "localize_background.png")

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
                  "'all parts' colours each pixel by its strongest part. " + html.escape(naming),
         [("parts.png", "The parts over samples.")]),
        ("Every part at a glance", "One sample; each row adds the part's top appearance (by coefficient energy) at "
                                   "increasing strength.", [("overview.png", "Top edit of every part.")]),
    ]
    sections.append(("Refinement", (
        f"Sample-specific parts for images whose content is shifted (here the features are translated by 2 positions "
        f"to the right, periodically). Each image's refinement starts from the global parts translated by whichever "
        f"shift of up to 2 positions fits it best (the right one for {refine_fig['shift_found']:.0%} of these images), "
        f"then lets each part move one position beyond that start. Reconstruction error of these images: "
        f"{refine_fig['error_global']:.3f} with the global parts, {refine_fig['error_refined']:.3f} with the refined ones. "
        f"For every part, the median ROIR (lower is better) of its top edit against the shifted region (inf: the "
        f"global edit changed nothing there). Refinement lowered it for {len(improved)} of {model.n_parts} parts."
        f"<table border=1 cellpadding=3><tr><th>part</th><th>ROIR, global</th><th>ROIR, refined</th></tr>"
        f"{refine_rows}</table>"),
        [("refine.png", f"Part {refine_part}, where refinement helped most (ROIR {refine_fig['roir_global']:.2f} -> "
                        f"{refine_fig['roir_refined']:.2f}): global against refined parts on the shifted samples.")]))
    gain = "n/a" if model.background_gain_ != model.background_gain_ else f"{100 * model.background_gain_:.0f}%"
    sections.append(("Object removal", (
        f"Adding a 'background' appearance to a part fills it with what surrounds it. For each part panda picks the "
        f"appearance (and sign) among the 16 strongest that brings the part's mean colour closest to the band of "
        f"pixels around it on these images (<code>--background auto</code>); the fit's global choice is appearance "
        f"{model.background_} ({model.background_sign_:+g}), {gain} of the way on average over all parts. Below: the "
        f"three parts where removal moved the colour most towards the surroundings. On these small DCGANs expect a fill "
        f"that tones the region towards its surroundings rather than a clean inpainting; see "
        f"<code>examples/</code> for glasses removed on dcgan-digiface."),
        [(f"remove_{rank}.png", f"Remove {model.part_label(k)} with appearance {fig['background']} ({fig['sign']:+g}): colour "
                                f"distance to the surroundings {fig['distance_before']:.3f} -> {fig['distance_after']:.3f}.")
         for rank, (k, _, fig) in enumerate(removals[:3])]
        + [("remove_candidates.png", f"The six best-scoring fills for {model.part_label(best_k)}: the criterion is colour only, "
                                     f"so look, and pass another with --background J (or -J) if it removes better.")]))
    sections.append(("Concept localisation", "A^T Z: how much of each appearance is at each position (each map rescaled "
                     "to [0, 1]).", [("localize_top.png", f"Seed {shown[0]}: its six strongest concepts."),
                                     ("localize_background.png", f"Where the background appearance {model.background_} is.")]))
    for k, top, share in per_part:
        sections.append((f"Part {k}", f"Top appearances by coefficient energy: {', '.join(map(str, top))}.", [
            (f"edit_part{k}.png", f"Part {k} + appearance {top[0]} at alpha {', '.join(f'{a:+g}' for a in alphas)}; "
                                  f"{100 * share:.0f}% of the pixel change at |alpha| = 2 falls in the part."),
            (f"part{k}_appearances.png", f"Part {k}: its {len(top)} top appearances on two samples."),
        ]))
    return viz.write_index(folder, f"panda demo: {gen.name}", sections)
