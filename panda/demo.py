"""``panda demo`` and ``panda report``: the page of everything a fit does (every picture, with an index.html), for a
fresh fit on a face generator or for factors you already have."""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

from markupsafe import Markup, escape

from . import figures
from .figures import sample_label
from .drawing import save_png
from .errors import PandaError
from .editing import DEFAULT_ALPHAS, measured_region_sweep, measured_sweep, sweep
from .features import FeatureSource
from .fileio import file_label, publish_folder, staging_folder
from .fitting import fit_factors
from .checkpoints import load_generator
from .generators import DEFAULT_GENERATOR, GeneratorAdapter, Latents
from .localisation import localisation
from .retrieval import ends, retrieve
from .model import PandA
from .landmarks import REGIONS, FaceMeshMasker, face_set, load_onet
from .naming import CALIB_SEED_START, name_model_parts
from .pages import Section, write_index
from .progress import progress_bar
from .refinement import compare_refinement, refine
from .regions import calibrated_appearance, face_regions, region_for
from .removal import candidate_fills, removal
from .selection import SEMANTIC_PURITY, default_ranks, rank_sweep
from .transfer import transfer

log = logging.getLogger(__name__)


def _name_parts(model: PandA, generator) -> str:
    """Name the parts from independent face landmarks when MediaPipe is installed; say what happened."""
    if importlib.util.find_spec("mediapipe") is None or importlib.util.find_spec("facenet_pytorch") is None:
        return "Parts are not named: MediaPipe / facenet-pytorch are not installed (the Makefile installs them)."
    try:
        names = name_model_parts(model, generator)
    except Exception as exc:  # naming is a nicety: the demo goes on without it
        return f"Parts are not named ({exc})."
    return ("Parts named after the face region (MediaPipe FaceMesh masks on 64 faces) where they are densest, relative "
            "to the region's area, of eyes, nose, mouth, the rest of the face and the background: "
            + ("; ".join(f"part {k}: {v}" for k, v in sorted(names.items())) if names else "none sits most on a region")
            + ".")


#: The most samples a report draws (rows of its pictures).
MAX_SHOWN = 16

#: Training samples of the demo's rank sweep (at most): enough for its parts, a few seconds for eight ranks.
RANK_SWEEP_SAMPLES = 2000


def _ranks(model: PandA, gen, folder: Path, progress: bool | None) -> Section:
    """How many parts: the layer fitted at several R_S on the first training samples (``panda ranks``), its parts
    measured on the faces that named the demo's when MediaPipe is there."""
    seed = model.seed_  # the training seeds' first: the sweep refits on them, its other set follows them
    ranks = sorted(set(default_ranks(model.layer_shape_)) | {model.n_parts})
    n = min(model.n_samples_, RANK_SWEEP_SAMPLES)
    faces = None
    if importlib.util.find_spec("mediapipe") is not None and importlib.util.find_spec("facenet_pytorch") is not None:
        try:
            faces = face_set(gen, CALIB_SEED_START, 64, FaceMeshMasker(), load_onet())
        except Exception as exc:  # a nicety, as the naming: the sweep goes on without faces
            log.info("rank sweep without faces (%s)", exc)
        faces = faces if faces is not None and len(faces.seeds) else None
    result = rank_sweep(FeatureSource(gen, model.layer_, range(seed, seed + n), progress=progress), ranks,
                        FeatureSource.heldout(gen, model.layer_, 256), faces,
                        FeatureSource(gen, model.layer_, range(seed + n, seed + 2 * n), progress=progress),
                        random_state=seed, progress=progress)
    save_png(figures.ranks_plot(result), folder / "errors.png")
    shown = list(range(seed, seed + 3))
    save_png(figures.ranks_figure(result, gen.render(shown), shown), folder / "ranks.png")
    choice = result.semantic_choice()
    found = ("" if faces is None else
             f" On {len(faces.seeds)} faces, the smallest R_S that gives the eyes, nose and mouth each a part of its own "
             f"(at least {SEMANTIC_PURITY:.0%} of its mass inside the region, FaceMesh): "
             + (f"<b>{choice}</b>." if choice is not None else "none of these."))
    back = ", ".join(f"{b} of {r}" for b, r in zip(result.stable_parts(), ranks))
    return Section("How many parts", Markup(
        f"The layer fitted at R_S = {', '.join(map(str, ranks))} on {n:,} training samples, all on one shared pass of "
        f"statistics (<code>panda ranks --stability</code>); this page's fit has R_S = {model.n_parts}. The held-out "
        f"error falls with every part added, so it cannot choose by itself; where the parts fall can.{found} Fitted "
        f"again on {n:,} other samples from other random starts, the parts that come back (similarity 0.9 or more): "
        f"{back}."),
        [("errors.png", "Reconstruction error, the share of parts that come back on other samples and, on faces, "
                        "each region's purity against R_S."),
         ("ranks.png", "Each rank's parts (colour: the strongest part at each pixel; borders in white). A part "
                       "that the next rank keeps keeps its colour; the new ones show which regions it splits.")])


def _seed_text(seeds: list[int]) -> str:
    """'5000-5005' for a run of seeds, else '3, 9, 12'."""
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ", ".join(map(str, seeds))


#: Samples the demo's retrieval scores (seeds after the training ones and those shown).
RETRIEVAL_SAMPLES = 3000


def _retrieval(model: PandA, gen, start: int, folder: Path) -> Section:
    """The samples with the most and the least of the mouth's (else part 0's) most specific appearance in it."""
    mouths = model.parts_named("mouth") if "mouth" in model.part_names_.values() else [0]
    k = mouths[0]
    j = model.top_appearances(k, 1, by="specific")[0]
    seeds = list(range(start, start + RETRIEVAL_SAMPLES))
    result = retrieve(model, gen, seeds, j, region_for(model, part=k))
    most, least, most_loc, least_loc = ends(model, gen, seeds, result, 6)
    save_png(figures.retrieval_figure(model, result, most_loc, least_loc, [seeds[i] for i in most],
                                      [seeds[i] for i in least], model.part_label(k), len(seeds)),
             folder / "retrieve.png")
    return Section("Retrieval", Markup(
        f"Appearance j's mean over a region, <code>a_j^T Z_i r / sum(r)</code>, scores every sample by how much of it "
        f"the sample holds there (<code>panda retrieve</code>; <code>--save-arrays</code> writes a score for each of "
        f"your own latents). Here {len(seeds):,} new samples ranked by appearance {j}, the most specific to "
        f"{escape(model.part_label(k))}, in that part: the two ends show what the appearance is."),
        [("retrieve.png", f"The six samples with the most of appearance {j} in {model.part_label(k)}, and the six with "
                          f"the least.")])


def _region_edit(model: PandA, gen, latents, shown: list[int], alphas: list[float], folder: Path) -> Section:
    """Edits are not bound to the parts: the mouth FaceMesh finds in each image, with the appearance most particular
    to it on the calibration faces (``panda edit --region mouth``); said plainly when FaceMesh is not there."""
    title = "Your own regions"
    if importlib.util.find_spec("mediapipe") is None:
        return Section(title, "Not drawn: MediaPipe is not installed (the Makefile installs it).")
    try:
        faces = face_regions(model, gen, latents, "mouth", dilate=2)
        keep = faces.found.nonzero().flatten()
        if len(keep) == 0:
            return Section(title, "Not drawn: FaceMesh found no face in the samples shown.")
        j, ranked_on = calibrated_appearance(model, gen, region="mouth", dilate=2)
    except Exception as exc:  # like the naming, a nicety: the demo goes on without it
        return Section(title, f"Not drawn ({exc}).")
    seeds = [shown[i] for i in keep.tolist()]
    result = measured_region_sweep(model, gen, latents[keep], faces.grid[keep], j, alphas, faces.masks[keep], "mouth",
                                   faces.images[keep])
    save_png(figures.sweep_figure(model, result, seeds), folder / "edit_region.png")
    return Section(title, Markup(
        "Any region takes an appearance the way a part does, <code>alpha a_j r^T</code> for a map r on the layer's "
        "grid: a mask you draw (<code>panda edit --mask FILE.png</code>, or paint it in <code>panda serve</code>) or a "
        f"face region found in each image. Here the mouth, as FaceMesh finds it in each image, with appearance {j}, the "
        f"most particular to it on {ranked_on} calibration faces (<code>panda edit --region mouth</code>)."),
        [("edit_region.png", f"The mouth + appearance {j}: {100 * result.share:.0f}% of the pixel change at |alpha| = 2 "
                             f"falls in it.")])


def _transfer(model: PandA, gen, latents, shown: list[int], sources: list[int], folder: Path, faces: bool) -> Section:
    """Appearance transfer of the named eyes and mouth parts (``panda transfer --part eyes``), else of the first
    part, from new samples to the samples shown; with ``faces``, of each face's own mouth too."""
    title = "Appearance transfer"
    intro = ("Each target (left) gets what each source (top) holds in a region, and nothing else: its coefficients "
             "<code>A^T Z P</code> in the region's parts replace the target's (<code>panda transfer --part eyes</code>, "
             "<code>--region mouth</code> for FaceMesh's region in each image, <code>--alpha 0.5</code> half way).")
    names = [name for name in ("eyes", "mouth") if name in model.part_names_.values()] or list(
        dict.fromkeys(model.part_names_[k] for k in sorted(model.part_names_)))[:2]  # else names of the user's own
    chosen = {name: model.parts_named(name) for name in names} or {model.part_label(0): [0]}  # else: the first part
    items = []
    targets, source_latents = latents[:4], gen.sample(sources)
    for name, parts in chosen.items():
        result = transfer(model, gen, targets, source_latents, parts=parts, label=name)
        file = f"transfer_{file_label(name)}.png"
        save_png(figures.transfer_figure(model, result, shown[:4], sources), folder / file)
        what = f"The {name} ({', '.join(model.part_label(k) for k in parts)})" if names else name.capitalize()
        items.append((file, f"{what}: {100 * result.share:.0f}% of the pixel change inside "
                            f"{'them' if len(parts) > 1 else 'it'}, {100 * result.closer:.0f}% closer there to the "
                            f"source."))
    if not faces or importlib.util.find_spec("mediapipe") is None:
        return Section(title, Markup(intro), items)
    t_faces, s_faces = face_regions(model, gen, targets, "mouth"), face_regions(model, gen, source_latents, "mouth")
    if bool(t_faces.found.all()) and bool(s_faces.found.all()):  # each face's own mouth, as FaceMesh finds it
        result = transfer(model, gen, targets, source_latents, region=t_faces.grid, source_region=s_faces.grid,
                          masks=t_faces.masks, source_masks=s_faces.masks, label="mouth (FaceMesh)",
                          originals=(t_faces.images, s_faces.images))
        save_png(figures.transfer_figure(model, result, shown[:4], sources), folder / "transfer_mouth_region.png")
        items.append(("transfer_mouth_region.png", f"Each face's own mouth as FaceMesh finds it, spanned by the parts "
                                                   f"inside it (panda transfer --region mouth): "
                                                   f"{100 * result.share:.0f}% of the pixel change inside it, "
                                                   f"{100 * result.closer:.0f}% closer there to the source."))
    return Section(title, Markup(intro), items)


def run_demo(generator: GeneratorAdapter | str = DEFAULT_GENERATOR, layer: str | None = None, rank_parts: int | None = None,
             n_samples: int = 5000, seed: int = 0, out: str | Path = "out/demo", device: str = "cpu",
             progress: bool | None = None, n_show: int = 6, n_top: int = 6) -> Path:
    """Fit PandA (R_C = C), name its parts after the face regions, and write factors, parts, per-part edits,
    refinement, removal, localisation and an index.html into ``out`` (:func:`write_report`, with a rank sweep).

    The samples shown are seeds n_samples + seed ..., which the fit never saw. Everything is written to a hidden
    folder beside ``out`` that replaces it only when complete: an interrupted demo leaves the previous one whole.
    ``progress``: bars (None: where stderr is a terminal, :mod:`panda.progress`).
    """
    gen = load_generator(generator, device) if isinstance(generator, str) else generator
    model = fit_factors(gen, layer, None, rank_parts, n_samples, seed, progress=progress)
    log.info("naming the parts")
    naming = _name_parts(model, gen)
    return write_report(model, gen, out, unseen_seeds(model, n_show), progress, n_top,
                        naming=naming, ranks=True, faces=True, title=f"panda demo: {gen.name}")


def training_seeds(model: PandA) -> range:
    """The seeds ``model`` was fitted on (none for factors fitted on latents or feature maps)."""
    return range(model.seed_, model.seed_ + model.n_samples_) if model.data_ == "seeds" else range(0)


def unseen_seeds(model: PandA, n: int) -> list[int]:
    """``n`` seeds ``model`` was not fitted on: those after its training seeds (from 0 where it used none)."""
    start = training_seeds(model).stop
    return list(range(start, start + n))


def write_report(model: PandA, gen: GeneratorAdapter, out: str | Path, shown: list[int] | None = None,
                 progress: bool | None = None, n_top: int = 6, naming: str | None = None, ranks: bool = False,
                 faces: bool | None = None, title: str | None = None, latents: Latents | None = None) -> Path:
    """Write the page of everything a fit does (its parts, each part's top edits, refinement, removal, region edits,
    transfer, localisation, retrieval) with ``model`` on ``gen`` into ``out``, a copy of the factors beside it;
    returns the index.html. This is the demo's page for factors you already have (``panda report``).

    shown: the seeds drawn (default: 6 the fit never saw, :func:`unseen_seeds`). latents: draw these instead (your
    own, or a photo `panda project` found; at most the first 16), labelled 'latent i'; transfer's sources and
    retrieval's samples are then seeds the fit never saw. naming: what the "Parts" section
    says of the part names (default: the names the file holds). ranks: add "How many parts", the layer fitted again
    at several R_S (needs factors fitted on seeds). faces: draw FaceMesh's regions (a face's own mouth edited and
    transferred); default: where a part is named after a face region (``panda name-parts`` on a face generator).
    Written to a hidden folder beside ``out`` that replaces it only when complete.
    """
    model.check_compatible(gen)
    if latents is not None and shown is not None:
        raise PandaError("give the seeds or the latents a report draws, not both.")
    if latents is not None:
        latents = latents[:MAX_SHOWN]
        shown = [f"latent {i}" for i in range(len(latents))]
        fresh = unseen_seeds(model, 1)[0]  # seeds for transfer's sources and retrieval
    else:
        shown = unseen_seeds(model, 6) if shown is None else list(shown)
        if len(shown) > MAX_SHOWN:
            raise PandaError(f"a report draws at most {MAX_SHOWN} samples, got {len(shown)}: give fewer seeds.")
        fresh = max(shown) + 1
    if len(shown) < 2:
        raise PandaError(f"a report draws at least 2 samples, got {len(shown)}: give more seeds (or latents).")
    if ranks and model.data_ != "seeds":
        raise PandaError(f"'How many parts' fits the layer again on the training seeds, and these factors were fitted "
                         f"on {model.data_}: leave out the rank sweep.")
    if faces is None:
        faces = any(name in REGIONS for name in model.part_names_.values())
    if naming is None:
        naming = ("Part names (panda name-parts, or the explorer): " + "; ".join(
            f"part {k}: {v}" for k, v in sorted(model.part_names_.items())) + "." if model.part_names_ else
            "No part is named (panda name-parts names them after face regions, or as you say).")
    folder = staging_folder(out)
    model.save(folder / "factors.safetensors")
    latents = gen.sample(shown) if latents is None else latents
    n_top = min(n_top, model.n_appearances)
    alphas = list(DEFAULT_ALPHAS)

    save_png(figures.parts_figure(model, gen.render(latents), shown), folder / "parts.png")
    ranks_section = None
    if ranks:
        log.info("how many parts: fits at several R_S")
        ranks_section = _ranks(model, gen, folder, progress)
    overview, per_part = [], []
    log.info("edits: the top %d appearances of each of %d parts", n_top, model.n_parts)
    for k in progress_bar(range(model.n_parts), desc="edits per part", progress=progress):
        top = model.top_appearances(k, n_top, by="specific")  # what is particular to the part, not the mean direction
        result = measured_sweep(model, gen, latents, k, top[0], alphas)
        save_png(figures.sweep_figure(model, result, shown), folder / f"edit_part{k}.png")
        sheets = list(zip(top, gen.to_unit(sweep(model, gen, latents[:2], k, top, alphas)).cpu()))
        save_png(figures.contact_sheet(model, k, sheets, alphas, shown[:2], "(most specific to it first)"), folder / f"part{k}_appearances.png")
        per_part.append((k, top, result.share))
        overview.append((k, top[0], result.images[0]))
    save_png(figures.overview_figure(model, overview, alphas, shown[0]), folder / "overview.png")

    # -- the paper's other applications
    log.info("refinement on shifted samples")
    once = refine(model, gen, latents, shift=(0, 2))  # the same refined parts serve every part's comparison
    refined = [compare_refinement(model, gen, latents, k, model.top_appearances(k, 1)[0], 2.0, shift=(0, 2), refined=once)
               for k in progress_bar(range(model.n_parts), desc="refinement per part", progress=progress)]
    improved = [r for r in refined if r.roir_refined < r.roir_global]
    # the part refinement helped most; an infinite global ROIR (a part that wrapped round to the other side)
    # would win that comparison but makes a confusing picture
    finite = [r for r in refined if math.isfinite(r.roir_global)] or refined
    best = max(finite, key=lambda r: r.roir_global / max(r.roir_refined, 1e-12))
    save_png(figures.refine_figure(model, best, shown, 100), folder / "refine.png")
    log.info("removal: a fill searched for each part")
    removals = [(k, removal(model, gen, latents[:3], region_for(model, part=k), 1.0))
                for k in progress_bar(range(model.n_parts), desc="removal per part", progress=progress)]
    removals.sort(key=lambda item: item[1].distance_after / max(item[1].distance_before, 1e-12))
    for rank, (k, result) in enumerate(removals[:3]):
        save_png(figures.remove_figure(result, shown[:3], model.part_label(k)), folder / f"remove_{rank}.png")
    best_k, best_removal = removals[0]
    fills = candidate_fills(model, gen, latents[:3], best_removal.regions, best_removal.search, 1.0)
    save_png(figures.candidates_figure(best_removal, fills, shown[:3], model.part_label(best_k)), folder / "remove_candidates.png")
    if faces:
        log.info("an edit of a face region")
        region_section = _region_edit(model, gen, latents, shown, alphas, folder)
    else:
        region_section = Section("Your own regions", Markup(
            "Any region takes an appearance the way a part does: a mask you draw (<code>panda edit --mask FILE.png"
            "</code>, or paint it in <code>panda serve</code>). Face regions found in each image (<code>--region mouth"
            "</code>) are drawn here where a part is named after one (<code>panda name-parts</code>, on faces)."))
    log.info("appearance transfer")
    sources = list(range(fresh, fresh + 5))
    transfer_section = _transfer(model, gen, latents, shown, sources, folder, faces)
    log.info("retrieval: samples ranked by an appearance in a part")
    retrieval_section = _retrieval(model, gen, fresh + 5, folder)
    log.info("localisation maps")
    save_png(figures.localize_top_figure(model, localisation(model, gen, latents[:1]), 6, shown[0]), folder / "localize_top.png")
    # the fit's background appearance; a fit without one (--background-samples 0): the fill that removed best here
    fill = model.background_ if model.background_ is not None else best_removal.appearance
    save_png(figures.localize_figure(model, localisation(model, gen, latents), fill, shown),
             folder / "localize_background.png")

    trained = training_seeds(model)
    unseen = not any(seed in trained for seed in shown)
    summary = Markup(
        f"Generator <b>{escape(gen.name)}</b> ({escape(gen.description)}), layer <b>{escape(model.layer_)}</b> "
        f"({'x'.join(map(str, model.layer_shape_))}), R_C = {model.n_appearances}, R_S = {model.n_parts}, "
        f"{model.n_samples_} training samples. Feature extraction {model.extract_time_:.2f} s, fit "
        f"{model.fit_time_:.2f} s ({model.n_iter_} iteration(s), {model.n_passes_} passes). Relative "
        f"reconstruction error: training {model.train_error_:.4f}, " + (
            f"held-out {model.heldout_error_:.4f} ({model.n_heldout_} samples)"
            if model.heldout_error_ == model.heldout_error_ else "held-out: not measured (PandA.score)")
        + ". Factors: <code>factors.safetensors</code>. Samples shown: "
        + (f"the {len(shown)} latents given" if isinstance(shown[0], str) else f"seeds {_seed_text(shown)}"
           + (", not used for fitting" if unseen else " (among them training samples)"))
        + ". Alpha is in units of the layer's typical activation norm.")
    sections = [
        Section("Summary", summary),
        Section("Parts", "Each part is a non-negative map over the layer's grid, shared by all images; "
                         "'all parts' colours each pixel by its strongest part. " + naming,
                [("parts.png", "The parts over samples.")]),
        *([ranks_section] if ranks_section is not None else []),
        Section("Every part at a glance", "One sample; each row adds the appearance most specific to the part (strong "
                                          "there, and more there than elsewhere; appearance 0, the mean direction that "
                                          "is strong in every part, is one `panda edit --appearance 0` away) "
                                          "at increasing strength.", [("overview.png", "Top edit of every part.")]),
    ]
    refine_rows = Markup("").join(Markup("<tr><td>{}</td><td>{:.2f}</td><td>{:.2f}</td></tr>").format(
        model.part_label(r.part), r.roir_global, r.roir_refined) for r in refined)
    sections.append(Section("Refinement", Markup(
        f"Sample-specific parts for images whose content is shifted (here the features are translated by 2 positions "
        f"to the right, periodically). Each image's refinement starts from the global parts translated by whichever "
        f"shift of up to 2 positions fits it best (the right one for {best.shift_found:.0%} of these images), "
        f"then lets each part move one position beyond that start. Reconstruction error of these images: "
        f"{best.error_global:.3f} with the global parts, {best.error_refined:.3f} with the refined ones. "
        f"For every part, the median ROIR (lower is better) of its top edit against the shifted region (inf: the "
        f"global edit changed nothing there). Refinement lowered it for {len(improved)} of {model.n_parts} parts."
        f"<table><tr><th>part</th><th>ROIR, global</th><th>ROIR, refined</th></tr>") + refine_rows + Markup("</table>"),
        [("refine.png", f"Part {best.part}, where refinement helped most (ROIR {best.roir_global:.2f} -> "
                        f"{best.roir_refined:.2f}): global against refined parts on the shifted samples.")]))
    gain = "n/a" if model.background_gain_ != model.background_gain_ else f"{100 * model.background_gain_:.0f}%"
    global_choice = ("it has none (fitted with <code>--background-samples 0</code>)" if model.background_ is None else
                     f"appearance {model.background_} ({model.background_sign_:+g}), {gain} of the way on average over "
                     f"all parts")
    sections.append(Section("Object removal", Markup(
        f"Adding a 'background' appearance to a part fills it with what surrounds it. For each part panda picks the "
        f"appearance (and sign) among the 16 strongest that brings the part's mean colour closest to the band of "
        f"pixels around it on these images (<code>--background auto</code>); the fit's global choice: "
        f"{global_choice}. Below: the "
        f"three parts where removal moved the colour most towards the surroundings. On small generators (the bundled "
        f"DCGANs) expect a fill that tones the region towards its surroundings rather than a clean inpainting; see "
        f"<code>examples/</code> for glasses removed on dcgan-digiface."),
        [(f"remove_{rank}.png", f"Remove {model.part_label(k)} with appearance {r.appearance} ({r.sign:+g}): colour "
                                f"distance to the surroundings {r.distance_before:.3f} -> {r.distance_after:.3f}.")
         for rank, (k, r) in enumerate(removals[:3])]
        + [("remove_candidates.png", f"The six best-scoring fills for {model.part_label(best_k)}: the criterion is colour only, "
                                     f"so look, and pass another with --background J (or -J) if it removes better.")]))
    sections.append(region_section)
    sections.append(transfer_section)
    sections.append(Section("Concept localisation", "A^T Z: how much of each appearance is at each position (each map "
                            "rescaled to [0, 1]).", [("localize_top.png", f"{sample_label(shown[0]).capitalize()}: its six strongest concepts."),
                                                     ("localize_background.png",
                                                      f"Where the background appearance {fill} is" + (
                                                          "" if model.background_ is not None else
                                                          f" (the fill that removed {model.part_label(best_k)} best "
                                                          f"here: the fit has no global one)") + ".")]))
    sections.append(retrieval_section)
    # named parts (eyes, nose, mouth) first: with tens of parts they are the ones a reader looks for
    for k, top, share in sorted(per_part, key=lambda item: item[0] not in model.part_names_):
        label = model.part_label(k)
        sections.append(Section(label[0].upper() + label[1:], f"Appearances most specific to the part: {', '.join(map(str, top))}.", [
            (f"edit_part{k}.png", f"Part {k} + appearance {top[0]} at alpha {', '.join(f'{a:+g}' for a in alphas)}; "
                                  f"{100 * share:.0f}% of the pixel change at |alpha| = 2 falls in the part."),
            (f"part{k}_appearances.png", f"Part {k}: its {len(top)} top appearances on two samples."),
        ], folded=True))
    index = write_index(folder, title or f"panda report: {gen.name}, layer {model.layer_}", sections)
    return publish_folder(folder, out) / index.name
