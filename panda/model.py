"""The :class:`PandA` estimator: fit, inspect, save and load parts and appearances."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch

from . import __version__
from .errors import PandaError
from .factorisation import DataStats, border_mask, check_ranks, data_stats, panda_factorise, relative_error
from .features import FeatureSource
from .generators import GeneratorAdapter

#: Held-out error is measured on seeds from here on, far from the training seeds' usual range.
HELDOUT_SEED_START = 1_000_000_000
FORMAT = "panda-factors"
FORMAT_VERSION = 1
#: Calibration samples for choosing the background appearance (see panda.removal.find_background).
BACKGROUND_SEED_START = 2_000_000_000


class PandA:
    """Parts and appearances of a generator's feature maps at one layer (scikit-learn style).

    Parameters
    ----------
    rank_appearance: R_C, number of appearances; None means all C channels (the paper's choice).
    rank_parts:      R_S, number of parts.
    max_iter:        at most this many alternating iterations.
    tol:             stop when the relative training error falls by less than this (relative).
    random_state:    seed of the random start of P.
    batch_size:      generator batch size while extracting features.
    memory_budget:   bytes of feature maps kept in memory; above it every pass re-generates them.
    n_heldout:       samples (seeds from ``HELDOUT_SEED_START``) for the held-out error; 0 skips it.
    n_init:          random starts of the parts; the best is kept (each costs an S x S solve, not a data pass).
    background_samples: calibration samples for finding the background appearance (object removal); 0 skips it.
    verbose:         progress bars.

    Attributes (after ``fit``)
    --------------------------
    appearances_:    A, (C, R_C), orthonormal columns.
    parts_:          P, (S, R_S), non-negative; column k reshaped to (H, W) is part k.
    layer_shape_:    (C, H, W).
    feature_scale_:  the layer's typical activation norm (mean ||z_{:, s}|| over samples and positions).
    appearance_energy_: share of sum_i ||Z_i||^2 along each appearance, (R_C,).
    background_scores_: each appearance's energy share on the grid's outer ring / the ring's area, (R_C,).
    background_, background_sign_, background_gain_: the appearance (and sign) that acts as "background"
                     for object removal, and how far it brings regions towards their surroundings' colour
                     (see ``panda.removal.find_background``); None when not searched.
    coef_mean_:      mean over training samples of Lambda_i = A^T Z_i P, (R_C, R_S).
    coef_energy_:    mean over training samples of Lambda_i ** 2, (R_C, R_S).
    train_error_, heldout_error_: relative reconstruction errors.
    error_history_:  training error after each iteration.
    n_iter_, n_passes_, fit_time_, extract_time_: iterations, passes over the data, seconds.
    generator_name_, generator_hash_, layer_, n_samples_, seed_: provenance.
    part_names_:     {part: name} from ``panda name-parts`` (e.g. 'eyes'); shown in every picture.
    """

    def __init__(
        self,
        rank_appearance: int | None = None,
        rank_parts: int = 12,
        max_iter: int = 30,
        tol: float = 1e-4,
        random_state: int = 0,
        batch_size: int = 256,
        memory_budget: int = 2 << 30,
        n_heldout: int = 256,
        n_init: int = 4,
        background_samples: int = 8,
        verbose: bool = False,
    ) -> None:
        self.rank_appearance = rank_appearance
        self.rank_parts = rank_parts
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self.n_heldout = n_heldout
        self.n_init = n_init
        self.background_samples = background_samples
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    def fit(self, generator: GeneratorAdapter, layer: str | None = None, n_samples: int = 2000, seed: int = 0) -> "PandA":
        """Learn A and P from the feature maps of seeds ``seed .. seed + n_samples - 1`` at ``layer``."""
        layer = layer or generator.default_layer
        if layer is None:
            raise PandaError(f"generator '{generator.name}' has no default layer: give one (`panda layers {generator.name}`).")
        if n_samples < 1:
            raise PandaError(f"n_samples={n_samples}: fit needs at least 1 sample.")
        generator.layer_module(layer)  # an unknown layer fails here, listing the valid ones
        c, h, w = generator.layer_shapes()[layer]
        rank_c = c if self.rank_appearance is None else self.rank_appearance
        check_ranks(rank_c, self.rank_parts, c, h * w)  # before spending time on extraction

        # extract_time_: the generator's forward passes that fill the in-memory cache; fit_time_:
        # every pass over the features, statistics included (with streaming it re-generates them).
        t0 = time.perf_counter()
        source = FeatureSource(generator, layer, range(seed, seed + n_samples), self.batch_size,
                               self.memory_budget, progress=self.verbose)
        self.extract_time_ = time.perf_counter() - t0

        t1 = time.perf_counter()
        stats = data_stats(source, grid=(h, w))
        result = panda_factorise(source, rank_c, self.rank_parts, self.max_iter, self.tol, self.random_state,
                                 stats=stats, n_init=self.n_init)
        self.fit_time_ = time.perf_counter() - t1
        self._set_fitted(result.appearances, result.parts, (c, h, w), stats)
        self.error_history_ = result.errors
        self.train_error_ = result.errors[-1]
        self.n_iter_ = len(result.errors)
        self.n_passes_ = result.n_passes + 2  # + the statistics pass above and the coefficient pass below
        self.coef_mean_, self.coef_energy_ = self._coefficient_stats(source)
        self._set_border_scores(stats)
        self.generator_name_, self.generator_hash_ = generator.name, generator.weight_hash
        self.layer_, self.n_samples_, self.seed_ = layer, n_samples, seed
        self.background_, self.background_sign_, self.background_gain_ = None, 1.0, float("nan")
        self.background_time_ = 0.0
        self.part_names_: dict[int, str] = {}
        if self.background_samples > 0:
            from .removal import find_background  # removal builds on the model

            t2 = time.perf_counter()
            found = find_background(self, generator, range(BACKGROUND_SEED_START, BACKGROUND_SEED_START + self.background_samples))
            self.background_, self.background_sign_, self.background_gain_ = found.appearance, found.sign, found.gain
            self.background_time_ = time.perf_counter() - t2
        self.heldout_error_ = float("nan")
        if self.n_heldout > 0:
            held = FeatureSource(generator, layer, range(HELDOUT_SEED_START, HELDOUT_SEED_START + self.n_heldout),
                                 self.batch_size, 0)
            self.heldout_error_ = relative_error(held, self.appearances_, self.parts_)
        return self

    def _set_fitted(self, a: torch.Tensor, p: torch.Tensor, shape, stats: DataStats) -> None:
        self.appearances_ = a.detach().float().cpu().contiguous()
        self.parts_ = p.detach().float().cpu().contiguous()
        self.layer_shape_ = tuple(int(v) for v in shape)
        self.feature_scale_ = float(stats.feature_norm)

    def _set_border_scores(self, stats: DataStats) -> None:
        """Each appearance's share of energy, and of its energy on the grid's outer ring relative to the
        ring's area (1 = spread evenly; > 1 = on the border): where a concept sits, from the fit's statistics."""
        a = self.appearances_.double()
        energy = ((a.T @ stats.channel.cpu()) * a.T).sum(1)
        border = ((a.T @ stats.border_channel.cpu()) * a.T).sum(1)
        _, h, w = self.layer_shape_
        area = float(border_mask(h, w).double().mean())
        self.appearance_energy_ = (energy / stats.total).float()
        self.background_scores_ = (border / energy.clamp_min(1e-30) / area).float()

    def _coefficient_stats(self, batches) -> tuple[torch.Tensor, torch.Tensor]:
        total, sq, n = 0, 0, 0
        for z in batches:
            lam = self.coefficients(z)
            total = total + lam.double().sum(0)
            sq = sq + (lam.double() ** 2).sum(0)
            n += z.shape[0]
        return (total / n).float(), (sq / n).float()

    # -------------------------------------------------------------- inspection
    def _check_fitted(self) -> None:
        if not hasattr(self, "parts_"):
            raise PandaError("this PandA model is not fitted yet: call fit(...) or PandA.load(path) first.")

    @property
    def n_parts(self) -> int:
        self._check_fitted()
        return self.parts_.shape[1]

    @property
    def n_appearances(self) -> int:
        self._check_fitted()
        return self.appearances_.shape[1]

    def _flat(self, z: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) or (N, C, S) -> (N, C, S), checked against the fitted layer."""
        self._check_fitted()
        c, h, w = self.layer_shape_
        if z.dim() == 4:
            z = z.flatten(2)
        if z.dim() != 3 or z.shape[1:] != (c, h * w):
            raise PandaError(f"feature maps of shape {tuple(z.shape)} do not match this model's layer "
                             f"{self.layer_} ({c}x{h}x{w}).")
        return z

    def part_label(self, part: int) -> str:
        """'part 5 (eyes)' where the part has a name (``panda name-parts``), else 'part 5'."""
        name = self.part_names_.get(part)
        return f"part {part} ({name})" if name else f"part {part}"

    def part_maps(self) -> torch.Tensor:
        """The parts as maps, (R_S, H, W), non-negative."""
        self._check_fitted()
        _, h, w = self.layer_shape_
        return self.parts_.T.reshape(-1, h, w)

    def coefficients(self, z: torch.Tensor) -> torch.Tensor:
        """Lambda_i = A^T Z_i P for feature maps (N, C, H, W) -> (N, R_C, R_S)."""
        z = self._flat(z)
        return self.appearances_.to(z).T @ z @ self.parts_.to(z)

    def localize(self, z: torch.Tensor) -> torch.Tensor:
        """A^T Z_i: how much of each appearance is at each position, (N, C, H, W) -> (N, R_C, H, W)."""
        z = self._flat(z)
        _, h, w = self.layer_shape_
        return (self.appearances_.to(z).T @ z).unflatten(2, (h, w))

    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """A (A^T Z_i P) P^T, (N, C, H, W) -> (N, C, H, W)."""
        z4 = z
        z = self._flat(z)
        a, p = self.appearances_.to(z), self.parts_.to(z)
        return (a @ (a.T @ z @ p) @ p.T).view(z4.shape[0], *self.layer_shape_)

    def top_appearances(self, part: int, k: int = 5, by: str = "energy") -> list[int]:
        """The ``k`` appearances that matter most in ``part``, the first to try as edits.

        by="energy":   largest mean coefficient energy E[Lambda_i[j, part]^2]: what the generator puts there.
        by="variance": largest variance of Lambda_i[j, part] over samples: what differs from image to image there.
        """
        self.check_part(part)
        if by == "energy":
            score = self.coef_energy_[:, part]
        elif by == "variance":
            score = self.coef_energy_[:, part] - self.coef_mean_[:, part] ** 2
        else:
            raise PandaError(f"unknown ranking '{by}': use 'energy' or 'variance'.")
        k = min(k, self.n_appearances)
        return [int(j) for j in torch.argsort(score, descending=True)[:k]]

    def check_part(self, part: int) -> int:
        self._check_fitted()
        if not 0 <= part < self.n_parts:
            raise PandaError(f"part {part} is out of range: this model has parts 0..{self.n_parts - 1}.")
        return part

    def check_appearance(self, appearance: int) -> int:
        self._check_fitted()
        if not 0 <= appearance < self.n_appearances:
            raise PandaError(f"appearance {appearance} is out of range: this model has appearances 0..{self.n_appearances - 1}.")
        return appearance

    def check_compatible(self, generator: GeneratorAdapter, layer: str | None = None) -> None:
        """Refuse a generator (or layer) other than the one this model was fitted on."""
        self._check_fitted()
        if generator.name != self.generator_name_ or generator.weight_hash != self.generator_hash_:
            raise PandaError(
                f"this factor file was fitted on generator '{self.generator_name_}' (weights {self.generator_hash_[:12]}), "
                f"not '{generator.name}' (weights {generator.weight_hash[:12]}): use --generator {self.generator_name_}, "
                f"or fit a new one with `panda fit --generator {generator.name}`.")
        if layer is not None and layer != self.layer_:
            raise PandaError(f"this factor file was fitted at layer '{self.layer_}', not '{layer}': "
                             f"use --layer {self.layer_}, or fit a new one at '{layer}'.")
        shape = generator.layer_shapes().get(self.layer_)
        if shape is None or tuple(shape) != tuple(self.layer_shape_):
            raise PandaError(f"layer '{self.layer_}' of '{generator.name}' has shape {shape}, the factor file "
                             f"expects {self.layer_shape_}: re-fit it with `panda fit`.")

    # ----------------------------------------------------------- persistence
    def metadata(self) -> dict:
        self._check_fitted()
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "panda_version": __version__,
            "generator": self.generator_name_, "generator_sha256": self.generator_hash_, "layer": self.layer_,
            "layer_shape": list(self.layer_shape_), "rank_appearance": self.n_appearances, "rank_parts": self.n_parts,
            "n_samples": self.n_samples_, "seed": self.seed_, "random_state": self.random_state,
            "train_error": self.train_error_, "heldout_error": _json_float(self.heldout_error_),
            "n_heldout": self.n_heldout, "error_history": self.error_history_, "n_iter": self.n_iter_,
            "n_passes": self.n_passes_, "fit_time_s": self.fit_time_, "extract_time_s": self.extract_time_,
            "feature_scale": self.feature_scale_, "background": self.background_,
            "background_sign": self.background_sign_, "background_gain": _json_float(self.background_gain_),
            "part_names": {str(k): v for k, v in self.part_names_.items()},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write a safetensors file (A, P, coefficient statistics) with the metadata as JSON; atomic."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {name: getattr(self, name + "_") for name in _TENSORS}
        parent = path.parent if str(path.parent) else Path(".")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
        except OSError as exc:
            raise PandaError(f"cannot write the factor file '{path}' ({exc.strerror}): choose another path with --out.") from exc
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={"panda": json.dumps(self.metadata())})
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PandA":
        """Read a factor file written by :meth:`save`, checking its structure and values."""
        from safetensors import safe_open

        path = Path(path)
        refit = "re-create it with `panda fit`"
        if not path.is_file():
            raise PandaError(f"factor file '{path}' does not exist: give the path written by `panda fit`, or {refit}.")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta_raw = (fh.metadata() or {}).get("panda")
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # safetensors raises several types for a damaged file
            raise PandaError(f"'{path}' is not a readable panda factor file ({exc}): {refit}.") from exc
        try:
            meta = json.loads(meta_raw)
            assert meta["format"] == FORMAT
        except Exception as exc:
            raise PandaError(f"'{path}' has no panda metadata: it was not written by panda; {refit}.") from exc
        absent = set(_REQUIRED_META) - meta.keys()
        if absent:
            raise PandaError(f"'{path}': the metadata lacks {sorted(absent)}: {refit}.")
        if meta["format_version"] > FORMAT_VERSION:
            raise PandaError(f"'{path}' has format version {meta['format_version']}, newer than this panda "
                             f"({__version__}) reads: upgrade panda.")
        missing = set(_TENSORS) - tensors.keys()
        if missing:
            raise PandaError(f"'{path}' lacks the tensors {sorted(missing)}: {refit}.")
        c, h, w = meta["layer_shape"]
        a, p = tensors["appearances"].float(), tensors["parts"].float()
        rc, rs = meta["rank_appearance"], meta["rank_parts"]
        expect = {"appearances": (c, rc), "parts": (h * w, rs), "coef_mean": (rc, rs), "coef_energy": (rc, rs),
                  "appearance_energy": (rc,), "background_scores": (rc,)}
        for name, shape in expect.items():
            if tuple(tensors[name].shape) != shape:
                raise PandaError(f"'{path}': tensor '{name}' has shape {tuple(tensors[name].shape)}, expected {shape}: {refit}.")
            if not torch.isfinite(tensors[name]).all():
                raise PandaError(f"'{path}': tensor '{name}' contains NaN or inf: {refit}.")
        if (p < 0).any():
            raise PandaError(f"'{path}': the parts have negative entries, so the file is damaged: {refit}.")
        if not torch.allclose(a.T @ a, torch.eye(rc), atol=1e-3):
            raise PandaError(f"'{path}': the appearances are not orthonormal, so the file is damaged: {refit}.")
        model = cls(rank_appearance=rc, rank_parts=rs, random_state=meta["random_state"], n_heldout=meta["n_heldout"])
        stats = DataStats(0.0, torch.empty(0), torch.empty(0), meta["feature_scale"], meta["n_samples"])
        model._set_fitted(a, p, (c, h, w), stats)
        for name in _TENSORS[2:]:
            setattr(model, name + "_", tensors[name].float())
        bg = meta["background"]
        if (bg is not None and not 0 <= bg < rc) or meta["background_sign"] not in (1.0, -1.0):
            raise PandaError(f"'{path}': the background appearance {bg} is not valid: {refit}.")
        model.background_, model.background_sign_ = bg, float(meta["background_sign"])
        model.background_gain_ = _from_json_float(meta["background_gain"])
        try:  # optional: written by `panda name-parts`
            model.part_names_ = {int(k): str(v) for k, v in meta.get("part_names", {}).items()}
        except (TypeError, ValueError, AttributeError) as exc:
            raise PandaError(f"'{path}': the part names are not readable: {refit}.") from exc
        if any(not 0 <= k < rs for k in model.part_names_):
            raise PandaError(f"'{path}': names are given for parts outside 0..{rs - 1}: name its parts again "
                             f"with `panda name-parts`, or {refit}.")
        model.generator_name_, model.generator_hash_ = meta["generator"], meta["generator_sha256"]
        model.layer_, model.n_samples_, model.seed_ = meta["layer"], meta["n_samples"], meta["seed"]
        model.train_error_, model.heldout_error_ = meta["train_error"], _from_json_float(meta["heldout_error"])
        model.error_history_, model.n_iter_, model.n_passes_ = meta["error_history"], meta["n_iter"], meta["n_passes"]
        model.fit_time_, model.extract_time_ = meta["fit_time_s"], meta["extract_time_s"]
        return model

    def __repr__(self) -> str:
        if not hasattr(self, "parts_"):
            return f"PandA(rank_appearance={self.rank_appearance}, rank_parts={self.rank_parts})"
        return (f"PandA({self.generator_name_}:{self.layer_} {'x'.join(map(str, self.layer_shape_))}, "
                f"R_C={self.n_appearances}, R_S={self.n_parts}, held-out error={self.heldout_error_:.4f})")


_REQUIRED_META = ("format_version", "generator", "generator_sha256", "layer", "layer_shape", "rank_appearance",
                  "rank_parts", "n_samples", "seed", "random_state", "train_error", "heldout_error", "n_heldout",
                  "error_history", "n_iter", "n_passes", "fit_time_s", "extract_time_s", "feature_scale",
                  "background", "background_sign", "background_gain")
_TENSORS = ("appearances", "parts", "coef_mean", "coef_energy", "appearance_energy", "background_scores")


def _json_float(x: float):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _from_json_float(x) -> float:
    return float("nan") if x is None else float(x)
