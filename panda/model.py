"""The :class:`PandA` estimator: fit, inspect, save and load parts and appearances.

A thin wrapper in the TensorLy manner: :meth:`PandA.fit` takes the data (a
:class:`panda.features.FeatureSource`: generator, layer and seeds belong to the data; or feature maps
you already have, :class:`panda.features.FeatureArray`), hands the work
to :func:`panda.factorisation.panda_factorise` and stores its result. Held-out scoring is
:meth:`PandA.score`; the background appearance for object removal is searched by
:func:`panda.removal.find_background` and stored with :meth:`PandA.set_background`.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from .errors import PandaError, check_whole, plain_int
from .factorisation import (DataStats, appearance_shares, check_params, check_ranks, check_statistics_memory, coefficient_moments,
                            mixing_matrices, panda_factorise, reconstruct as reconstruct_maps, relative_error)
from .features import FeatureArray, FeatureSource, as_features
from .fileio import atomic_write
from .generators import GeneratorAdapter
from .version import __version__

FORMAT = "panda-factors"
FORMAT_VERSION = 3  # 2: the tensors' sha256 in the metadata ("tensor_sha256"); 3: the appearance mixing W ("mixing")
# files without a mixing are still written as version 2, so older panda reads them


class PandA:
    """Parts and appearances of a generator's feature maps at one layer (scikit-learn style).

    Parameters
    ----------
    rank_appearance : int or None
        R_C, number of appearances; None means all C channels (the paper's choice).
    rank_parts : int
        R_S, number of parts.
    max_iter : int
        At most this many alternating iterations.
    tol : float
        Stop when the relative training error falls by less than this (relative).
    random_state : int
        Seed of the random starts of P.
    n_init : int
        Random starts of the parts; the best is kept (each costs an S x S solve, not a data pass).
    reseed : int
        Then up to this many rounds that move the weakest parts to where the fit is worst
        (:func:`panda.factorisation.reseed_parts`), kept while they lower the error: at R_S of 24 and more, mostly a
        lower error than 16 random starts give, in less time (benchmarks/reseed.md). 0 (default): none.
    verbose : bool or None
        Progress bars for the fit's stages (the data's own bar is the source's ``progress``); None (default): when
        stderr is a terminal.
    mixing : bool
        Also fit an appearance mixing W (R_C x R_C, symmetric positive semi-definite): the reconstruction becomes
        A W A^T Z P P^T, the model class of the authors' code (whose A is not kept orthonormal: A' = A W^(1/2)). A, the
        edits, removals and heat maps keep the orthonormal appearances; the parts are fitted with W. Lower held-out
        error (benchmarks/fit_speed.md), for R_C more S x S matrices of memory and one more pass.
    mixing_directions : int or None
        With ``mixing``: how many of W's eigenvectors (those carrying the most energy) keep eigenvalues of their own
        while W and the parts alternate; the rest share one. Fewer cost less (that many S x S matrices, plus one,
        instead of R_C): at a 16 x 16 layer of 128 channels, 32 directions fit in two thirds of the time of all 128,
        0.0003-0.001 higher in held-out error. None (default): all R_C.

    Attributes
    ----------
    appearances_ : torch.Tensor
        A, (C, R_C), orthonormal columns.
    parts_ : torch.Tensor
        P, (S, R_S), non-negative; column k reshaped to (H, W) is part k.
    mixing_ : torch.Tensor or None
        W, (R_C, R_C), when fitted with ``mixing=True``; None means W = I.
    layer_shape_ : tuple of int
        (C, H, W).
    feature_scale_ : float
        The layer's typical activation norm (mean ||z_{:, s}|| over samples and positions): the unit of alpha.
    appearance_energy_ : torch.Tensor
        Share of sum_i ||Z_i||^2 along each appearance, (R_C,).
    background_scores_ : torch.Tensor
        Each appearance's energy share on the grid's outer ring / the ring's area, (R_C,).
    background_, background_sign_, background_gain_ : int or None, float, float
        The appearance (and sign) that acts as "background" for object removal and how far it brings regions
        towards their surroundings' colour (:func:`panda.removal.find_background`); None when not searched.
    coef_mean_, coef_energy_ : torch.Tensor
        Mean over training samples of Lambda_i = A^T Z_i P and of Lambda_i ** 2, (R_C, R_S).
    train_error_, heldout_error_ : float
        Relative reconstruction errors (held-out: NaN until :meth:`score`).
    n_heldout_ : int
        Samples the held-out error was measured on.
    error_history_ : list of float
        Training error after each iteration.
    n_iter_, n_passes_, fit_time_, extract_time_ : int, int, float, float
        Iterations, passes over the data, seconds in the fit and in the generator.
    generator_name_, generator_hash_, layer_, n_samples_, seed_ : provenance
    data_ : str
        What the samples were: "seeds" (from ``seed_`` on), "latents" (given ones: ``seed_`` is 0) or "features"
        (maps given as an array, no generator).
    generator_source_ : dict
        Where the generator came from (``GeneratorAdapter.source``): format, and for checkpoints the file name,
        truncation psi and noise mode the features were taken with.
    part_names_ : dict of int to str
        {part: name} from ``panda name-parts`` (e.g. 'eyes'); shown in every picture.
    hand_named_ : frozenset of int
        The parts named by hand (:meth:`name_part`, ``--name``, the explorer): naming after FaceMesh keeps their names,
        a region's name included, and measures only the others.
    """

    mixing_: torch.Tensor | None = None  # W = I until a fit with mixing=True (or a file with one) sets it
    hand_named_: frozenset[int] = frozenset()  # replaced, never changed in place: no model shares another's

    def __init__(
        self,
        rank_appearance: int | None = None,
        rank_parts: int = 12,
        max_iter: int = 30,
        tol: float = 1e-4,
        random_state: int = 0,
        n_init: int = 4,
        verbose: bool | None = None,
        mixing: bool = False,
        mixing_directions: int | None = None,
        reseed: int = 0,
    ) -> None:
        # numpy integers (a rank taken from an array) as the ints they are: checked at fit, written to JSON on save
        self.rank_appearance = plain_int(rank_appearance)
        self.rank_parts = plain_int(rank_parts)
        self.max_iter = plain_int(max_iter)
        self.tol = tol
        self.random_state = plain_int(random_state)
        self.n_init = plain_int(n_init)
        self.verbose = verbose
        self.mixing = mixing
        self.mixing_directions = plain_int(mixing_directions)
        self.reseed = plain_int(reseed)

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters by name, scikit-learn's way: ``PandA(**model.get_params())`` is an unfitted
        copy (``sklearn.base.clone`` and parameter searches work). ``deep`` is accepted for that API; PandA holds no
        estimators of its own."""
        return {name: getattr(self, name) for name in _PARAMS}

    def set_params(self, **params) -> "PandA":
        """Change constructor parameters by name (``model.set_params(rank_parts=24)``); takes effect at the next
        :meth:`fit`. Returns self."""
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown:
            raise PandaError(f"PandA has no parameter {', '.join(map(repr, unknown))}: it takes {', '.join(_PARAMS)}.")
        PandA.__init__(self, **(self.get_params() | params))  # the constructor's own conversions, one place
        return self

    # ------------------------------------------------------------------ fitting
    def validate(self, shape: tuple[int, int, int]) -> int:
        """Every hyper-parameter against the layer's (C, H, W); returns R_C."""
        c, h, w = shape
        rank_c = c if self.rank_appearance is None else self.rank_appearance
        check_ranks(rank_c, self.rank_parts, c, h * w)
        check_params(self.max_iter, self.tol, self.n_init, self.random_state, self.mixing, self.mixing_directions,
                     self.reseed)
        return rank_c

    def fit(self, source: "FeatureSource | FeatureArray | torch.Tensor | np.ndarray",
            stats: DataStats | None = None) -> "PandA":
        """Learn A and P from the feature maps of ``source``.

        Parameters
        ----------
        source : FeatureSource, FeatureArray, torch.Tensor or numpy.ndarray
            The training data: a generator's samples (its generator, layer and seeds are recorded as the factors'
            provenance), or feature maps you already have, (N, C, H, W) (:class:`panda.features.FeatureArray`: a
            model fitted on them has no generator to edit with).
        stats : DataStats, optional
            This very source's first-pass statistics (:func:`panda.factorisation.data_stats` with the layer's grid),
            to fit several ranks on one pass (:func:`panda.selection.rank_sweep`); their sample count and shapes
            are checked against ``source``. Their pass is then not counted in ``n_passes_`` or ``fit_time_``.

        Returns
        -------
        PandA
            self.
        """
        source = as_features(source)
        c, h, w = source.shape
        rank_c = self.validate(source.shape)  # before any sample is generated
        check_statistics_memory((h, w), source.device, f"layer {source.layer!r}",
                                mixing_matrices(rank_c, self.mixing_directions) if self.mixing else None)
        if stats is not None:
            _check_stats(stats, source)
        t0, extract0 = time.perf_counter(), source.extract_time
        result = panda_factorise(source, rank_c, self.rank_parts, self.max_iter, self.tol, self.random_state,
                                 stats=stats, n_init=self.n_init, grid=(h, w), progress=self.verbose,
                                 mixing=self.mixing, mixing_directions=self.mixing_directions, reseed=self.reseed)
        self.appearances_ = result.appearances.detach().float().cpu().contiguous()
        self.parts_ = result.parts.detach().float().cpu().contiguous()
        self.mixing_ = None if result.mixing is None else result.mixing.detach().float().cpu().contiguous()
        self.layer_shape_ = (c, h, w)
        self.feature_scale_ = float(result.stats.feature_norm)
        self.coef_mean_, self.coef_energy_ = coefficient_moments(source, self.appearances_, self.parts_)
        self.appearance_energy_, self.background_scores_ = appearance_shares(result.stats, self.appearances_, (h, w))
        self.error_history_ = result.errors
        self.train_error_ = result.errors[-1]
        self.n_iter_ = len(result.errors)
        self.n_passes_ = result.n_passes + 1  # + the coefficient pass
        # extract_time_: the generator's forward passes; fit_time_: everything else, statistics included.
        self.extract_time_ = source.extract_time - extract0
        self.fit_time_ = time.perf_counter() - t0 - self.extract_time_
        g = source.generator
        if g is None:  # maps given as an array: nothing to name but where they came from (the layer)
            self.generator_name_, self.generator_hash_, self.generator_source_ = "", "", {"format": FeatureArray.format}
        else:
            self.generator_name_, self.generator_hash_, self.generator_source_ = g.name, g.weight_hash, dict(g.source)
            if source.seeds is not None and g.class_index is not None:  # the seeds drew this class (--class)
                self.generator_source_["class"] = g.classes[g.class_index]
        self.layer_, self.n_samples_ = source.layer, len(source)
        self.seed_ = 0 if source.seeds is None else int(source.seeds[0])
        self.data_ = "seeds" if source.seeds is not None else "features" if g is None else "latents"
        self.heldout_error_, self.n_heldout_ = float("nan"), 0
        self.background_, self.background_sign_, self.background_gain_ = None, 1.0, float("nan")
        self.part_names_: dict[int, str] = {}
        self.hand_named_ = frozenset()
        return self

    def score(self, source: "FeatureSource | FeatureArray | torch.Tensor | np.ndarray") -> float:
        """Relative reconstruction error sum_i ||Z_i - A W A^T Z_i P P^T||^2 / sum_i ||Z_i||^2 on ``source``
        (lower is better); recorded as ``heldout_error_`` and ``n_heldout_`` for the factor file.

        Parameters
        ----------
        source : FeatureSource, FeatureArray, torch.Tensor or numpy.ndarray
            Samples of the same generator and layer, ideally never used for fitting
            (:meth:`panda.features.FeatureSource.heldout`), or feature maps (N, C, H, W) of the layer's shape.
        """
        source = as_features(source)
        if source.generator is not None:
            self.check_compatible(source.generator, source.layer)
        elif tuple(source.shape) != tuple(self.layer_shape_):
            raise PandaError(f"feature maps of shape (N, {', '.join(map(str, source.shape))}) do not match this model's "
                             f"layer {self.layer_} ({'x'.join(map(str, self.layer_shape_))}).")
        self.heldout_error_ = relative_error(source, self.appearances_, self.parts_, self.mixing_)
        self.n_heldout_ = len(source)
        return self.heldout_error_

    def set_background(self, appearance: int | None, sign: float = 1.0, gain: float = float("nan")) -> None:
        """Store the appearance (and sign) object removal adds by default, and its measured gain."""
        if appearance is not None:
            self.check_appearance(appearance)
        if sign not in (1.0, -1.0):
            raise PandaError(f"the background sign must be +1 or -1, got {sign}.")
        self.background_, self.background_sign_, self.background_gain_ = appearance, float(sign), float(gain)

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
        """(N, C, H, W) or (N, C, S), a tensor or NumPy array -> (N, C, S) tensor, checked against the fitted layer."""
        self._check_fitted()
        if not isinstance(z, torch.Tensor):
            z = torch.from_numpy(np.array(z, dtype=np.float32))
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

    def name_part(self, part: int, name: str | None) -> None:
        """Name ``part`` yourself (any domain: ``name_part(3, "iris")``), or with None remove its name; a name may be
        given to several parts, which then act as one region where a command takes the name. A name starts with a
        letter and holds letters, digits, spaces and ``_-/.``: an index-like or comma-holding name would be misread
        where a part is given as an index or in PART,APPEARANCE,ALPHA."""
        part = self.check_part(part)
        if name is None:
            self.part_names_.pop(part, None)
            self.hand_named_ = self.hand_named_ - {part}
            return
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9 _\-/.]*", name) or name != name.strip():
            raise PandaError(f"part name {name!r}: start it with a letter and use letters, digits, spaces and _-/. "
                             f"(e.g. 'iris', 'left eye').")
        self.part_names_[part] = name
        self.hand_named_ = self.hand_named_ | {part}

    def parts_named(self, name: str) -> list[int]:
        """The parts named ``name`` (``panda name-parts``), e.g. every part of the eyes; refused when none is."""
        found = [k for k, v in sorted(self.part_names_.items()) if v == name]
        if not found:
            names = ", ".join(sorted(set(self.part_names_.values()))) or "none: `panda name-parts FILE` names them"
            raise PandaError(f"no part is named '{name}': give part indices, or a name among {names}.")
        return found

    def part_maps(self) -> torch.Tensor:
        """The parts as maps, (R_S, H, W), non-negative."""
        self._check_fitted()
        _, h, w = self.layer_shape_
        return self.parts_.T.reshape(-1, h, w)

    def coefficients(self, z: torch.Tensor) -> torch.Tensor:
        """Lambda_i = A^T Z_i P for feature maps (N, C, H, W) -> (N, R_C, R_S)."""
        z = self._flat(z)
        return self.appearances_.to(z).T @ (z @ self.parts_.to(z))  # Z P first: R_S << S

    def localize(self, z: torch.Tensor) -> torch.Tensor:
        """A^T Z_i: how much of each appearance is at each position, (N, C, H, W) -> (N, R_C, H, W)."""
        z = self._flat(z)
        _, h, w = self.layer_shape_
        return (self.appearances_.to(z).T @ z).unflatten(2, (h, w))

    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """A W (A^T Z_i P) P^T (W = I without a mixing), (N, C, H, W) -> (N, C, H, W)."""
        z4 = z
        z = self._flat(z)
        return reconstruct_maps(z, self.appearances_, self.parts_, self.mixing_).view(z4.shape[0], *self.layer_shape_)

    def top_appearances(self, part: int, k: int = 5, by: str = "energy") -> list[int]:
        """The ``k`` appearances that matter most in ``part``, the first to try as edits.

        by="energy":   largest mean coefficient energy E[Lambda_i[j, part]^2]: what the generator puts there.
        by="variance": largest variance of Lambda_i[j, part] over samples: what differs from image to image there.
        by="specific": energy times how much more of the appearance's energy falls in this part than the part's
                       share of all energy would give it (its lift above 1): what is strong here *and* particular to
                       it. Energy alone puts the mean direction, strong in every part, first everywhere.
        """
        self.check_part(part)
        if check_whole(k, "k") < 1:
            raise PandaError(f"k={k}: ask for at least one appearance.")
        if by == "energy":
            score = self.coef_energy_[:, part]
        elif by == "variance":
            score = self.coef_energy_[:, part] - self.coef_mean_[:, part] ** 2
        elif by == "specific":
            energy = self.coef_energy_.double()
            share = energy[:, part] / energy.sum(1).clamp_min(1e-30)  # of each appearance's energy, in this part
            baseline = energy[:, part].sum() / energy.sum().clamp_min(1e-30)  # of all energy, in this part
            score = energy[:, part] * (share / baseline.clamp_min(1e-30) - 1).clamp_min(0)
        else:
            raise PandaError(f"unknown ranking '{by}': use 'energy', 'variance' or 'specific'.")
        k = min(k, self.n_appearances)
        return [int(j) for j in torch.argsort(score, descending=True)[:k]]

    def reorder_parts(self, order: Sequence[int]) -> "PandA":
        """A copy whose part k is this model's part ``order[k]``: the same fit (P P^T, hence every reconstruction,
        error and edit of a part, is unchanged), numbered otherwise. Its coefficient statistics and part names move
        with the parts. :func:`panda.comparison.align` numbers a fit's parts after another fit's.

        Parameters
        ----------
        order : sequence of int
            A permutation of 0..R_S-1.
        """
        self._check_fitted()
        order = [int(k) for k in order]
        if sorted(order) != list(range(self.n_parts)):
            raise PandaError(f"the new order of the parts must name each of 0..{self.n_parts - 1} once; got {order}.")
        out = copy.deepcopy(self)  # independent of this model: editing one leaves the other as it is
        idx = torch.tensor(order, dtype=torch.long)
        out.parts_ = self.parts_[:, idx].contiguous()
        out.coef_mean_ = self.coef_mean_[:, idx].contiguous()
        out.coef_energy_ = self.coef_energy_[:, idx].contiguous()
        out.part_names_ = {new: self.part_names_[old] for new, old in enumerate(order) if old in self.part_names_}
        out.hand_named_ = frozenset(new for new, old in enumerate(order) if old in self.hand_named_)
        return out

    def check_part(self, part: int) -> int:
        self._check_fitted()
        if isinstance(part, str):  # a name given where an index is taken (the command line takes either)
            raise PandaError(f"part {part!r}: give a part's index; model.parts_named({part!r}) lists the parts so named.")
        part = check_whole(part, "part")
        if not 0 <= part < self.n_parts:
            raise PandaError(f"part {part} is out of range: this model has parts 0..{self.n_parts - 1}.")
        return part

    def check_appearance(self, appearance: int) -> int:
        self._check_fitted()
        appearance = check_whole(appearance, "appearance")
        if not 0 <= appearance < self.n_appearances:
            raise PandaError(f"appearance {appearance} is out of range: this model has appearances 0..{self.n_appearances - 1}.")
        return appearance

    @property
    def has_generator(self) -> bool:
        """False for a model fitted on feature maps given as an array (:class:`panda.features.FeatureArray`)."""
        self._check_fitted()
        return self.generator_source_.get("format") != FeatureArray.format

    def check_compatible(self, generator: GeneratorAdapter, layer: str | None = None) -> None:
        """Refuse a generator (or layer) other than the one this model was fitted on."""
        self._check_fitted()
        if not self.has_generator:
            raise PandaError(f"these factors were fitted on {self.generator_label()}, not on a generator, so nothing "
                             f"can be drawn or edited with them: fit on the generator that made the maps (a "
                             f"FeatureSource) to edit; coefficients(), localize() and reconstruct() take such maps.")
        # The weights decide (a renamed checkpoint is the same generator); a module without a hash must match by name.
        same = generator.weight_hash == self.generator_hash_ and (bool(self.generator_hash_) or generator.name == self.generator_name_)
        if not same:
            raise PandaError(
                f"this factor file was fitted on {self.generator_label()}, not on '{generator.name}' (weights "
                f"{generator.weight_hash[:12] or 'unhashed'}): use it with that generator, or fit new factors on '{generator.name}'.")
        for key, what in (("truncation_psi", "truncation psi"), ("noise_mode", "noise mode")):
            fitted, now = self.generator_source_.get(key), generator.source.get(key)
            if fitted is not None and fitted != now:
                raise PandaError(f"this factor file was fitted with {what} {fitted}, the generator is loaded with {now}: "
                                 f"load it with {what} {fitted} (the features' scale depends on it), or fit new factors.")
        if layer is not None and layer != self.layer_:
            raise PandaError(f"this factor file was fitted at layer '{self.layer_}', not '{layer}': "
                             f"use layer '{self.layer_}', or fit new factors at '{layer}'.")
        shape = generator.layer_shapes().get(self.layer_)
        if shape is None or tuple(shape) != tuple(self.layer_shape_):
            raise PandaError(f"layer '{self.layer_}' of '{generator.name}' has shape {shape}, the factor file "
                             f"expects {self.layer_shape_}: fit the factors again.")

    def generator_label(self) -> str:
        """The generator this model was fitted on, as a person would name it."""
        self._check_fitted()
        src = self.generator_source_
        if not self.has_generator:
            return f"feature maps given as an array ('{self.layer_}')"
        if src.get("format") in (None, "registered", "module"):
            return f"generator '{self.generator_name_}' (weights {self.generator_hash_[:12] or 'unhashed'})"
        return f"checkpoint '{src.get('file')}' ({src['format']}, sha256 {self.generator_hash_[:12]})"

    # ----------------------------------------------------------- persistence
    def metadata(self) -> dict:
        self._check_fitted()
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION if self.mixing_ is not None else 2,
            "panda_version": __version__, "mixing": self.mixing_ is not None,
            "generator": self.generator_name_, "generator_sha256": self.generator_hash_,
            "generator_source": self.generator_source_, "layer": self.layer_,
            "layer_shape": list(self.layer_shape_), "rank_appearance": self.n_appearances, "rank_parts": self.n_parts,
            "n_samples": self.n_samples_, "seed": self.seed_, "data": self.data_, "random_state": self.random_state,
            "n_init": self.n_init, "reseed": self.reseed, "max_iter": self.max_iter, "tol": self.tol,
            "mixing_directions": self.mixing_directions,
            "train_error": self.train_error_, "heldout_error": _json_float(self.heldout_error_),
            "n_heldout": self.n_heldout_, "error_history": self.error_history_, "n_iter": self.n_iter_,
            "n_passes": self.n_passes_, "fit_time_s": self.fit_time_, "extract_time_s": self.extract_time_,
            "feature_scale": self.feature_scale_, "background": self.background_,
            "background_sign": self.background_sign_, "background_gain": _json_float(self.background_gain_),
            "part_names": {str(k): v for k, v in self.part_names_.items()},
            "hand_named": sorted(self.hand_named_ & set(self.part_names_)),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write a safetensors file (A, P, coefficient statistics) with the metadata as JSON; atomic.

        Parameters
        ----------
        path : path-like
            The factor file; its folder is created when missing.
        """
        self._check_fitted()
        path = Path(path)
        tensors = {name: getattr(self, name + "_").contiguous() for name in _TENSORS}
        if self.mixing_ is not None:
            tensors["mixing"] = self.mixing_.contiguous()
        meta = dict(self.metadata(), tensor_sha256=tensor_digest(tensors))
        data = save(tensors, metadata={"panda": json.dumps(meta)})
        if path.is_dir():
            raise PandaError(f"'{path}' is a folder: give a file name for the factors.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PandaError(f"cannot write the factor file '{path}' ({exc.strerror}): choose another path.") from exc
        return atomic_write(path, data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PandA":
        """Read a factor file written by :meth:`save`, checking its structure and values."""
        path = Path(path)
        refit = "fit the factors again"
        if path.is_dir():
            raise PandaError(f"'{path}' is a folder: give the path of the factor file inside it (*.safetensors).")
        if not path.is_file():
            raise PandaError(f"factor file '{path}' does not exist: give the path the factors were saved to, or {refit}.")
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
        if not isinstance(meta, dict):
            raise PandaError(f"'{path}' has no panda metadata: it was not written by panda; {refit}.")
        absent = set(_REQUIRED_META) - meta.keys()
        if absent:
            raise PandaError(f"'{path}': the metadata lacks {sorted(absent)}: {refit}.")
        _check_meta(meta, path, refit)
        if meta["format_version"] > FORMAT_VERSION:
            raise PandaError(f"'{path}' has format version {meta['format_version']}, newer than this panda "
                             f"({__version__}) reads: upgrade panda.")
        missing = (set(_TENSORS) | ({"mixing"} if meta.get("mixing") is True else set())) - tensors.keys()
        if missing:
            raise PandaError(f"'{path}' lacks the tensors {sorted(missing)}: {refit}.")
        if meta["format_version"] >= 2:  # files from before version 2 carry no checksum
            written = _TENSORS + (("mixing",) if meta["format_version"] >= 3 and "mixing" in tensors else ())
            if meta.get("tensor_sha256") != tensor_digest({k: tensors[k] for k in written}):
                raise PandaError(f"'{path}': the tensors do not match the checksum written with them, so the file "
                                 f"was changed or damaged after it was saved: {refit}, or restore a copy.")
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
        mixing = _check_mixing(tensors.get("mixing"), rc, path, refit) if meta["format_version"] >= 3 else None
        # files from before these were recorded were fitted with panda's defaults then: 4 starts, no re-seeding,
        # at most 30 iterations to a tolerance of 1e-4, and every direction of a mixing refitted
        model = cls(rank_appearance=rc, rank_parts=rs, random_state=meta["random_state"], n_init=meta.get("n_init", 4),
                    reseed=meta.get("reseed", 0), max_iter=meta.get("max_iter", 30), tol=meta.get("tol", 1e-4),
                    mixing_directions=meta.get("mixing_directions") if mixing is not None else None)
        model.appearances_, model.parts_, model.layer_shape_ = a.contiguous(), p.contiguous(), (c, h, w)
        model.mixing_, model.mixing = mixing, mixing is not None
        model.feature_scale_, model.n_heldout_ = float(meta["feature_scale"]), meta["n_heldout"]
        for name in _TENSORS[2:]:
            setattr(model, name + "_", tensors[name].float())
        bg = meta["background"]
        if bg is not None and not 0 <= bg < rc:
            raise PandaError(f"'{path}': the background appearance {bg} is outside 0..{rc - 1}: {refit}.")
        model.background_, model.background_sign_ = bg, float(meta["background_sign"])
        model.background_gain_ = _from_json_float(meta["background_gain"])
        try:  # optional: written by `panda name-parts`
            model.part_names_ = {int(k): str(v) for k, v in meta.get("part_names", {}).items()}
        except (TypeError, ValueError, AttributeError) as exc:
            raise PandaError(f"'{path}': the part names are not readable: {refit}.") from exc
        if any(not 0 <= k < rs for k in model.part_names_):
            raise PandaError(f"'{path}': names are given for parts outside 0..{rs - 1}: name its parts again, or {refit}.")
        hand = meta.get("hand_named", [])  # optional: files before it hold no hand names apart
        if not isinstance(hand, list) or not all(_is_int(k) and k in model.part_names_ for k in hand):
            raise PandaError(f"'{path}': the list of parts named by hand is not readable: name its parts again, or "
                             f"{refit}.")
        model.hand_named_ = frozenset(hand)
        model.generator_name_, model.generator_hash_ = meta["generator"], meta["generator_sha256"]
        source = meta.get("generator_source", {"format": "registered"})  # files before the zoo: registered DCGANs
        if not isinstance(source, dict) or not isinstance(source.get("format"), str):
            raise PandaError(f"'{path}': the generator's source is not readable: {refit}.")
        model.generator_source_ = source
        model.layer_, model.n_samples_, model.seed_ = meta["layer"], meta["n_samples"], meta["seed"]
        model.data_ = meta.get("data", "seeds")  # files before latents and arrays: seeds
        model.train_error_, model.heldout_error_ = meta["train_error"], _from_json_float(meta["heldout_error"])
        model.error_history_, model.n_iter_, model.n_passes_ = meta["error_history"], meta["n_iter"], meta["n_passes"]
        model.fit_time_, model.extract_time_ = meta["fit_time_s"], meta["extract_time_s"]
        return model

    def __repr__(self) -> str:
        if not hasattr(self, "parts_"):
            return (f"PandA(rank_appearance={self.rank_appearance}, rank_parts={self.rank_parts}"
                    + (", mixing=True)" if self.mixing else ")"))
        return (f"PandA({self.generator_name_}:{self.layer_} {'x'.join(map(str, self.layer_shape_))}, "
                f"R_C={self.n_appearances}, R_S={self.n_parts}{', with mixing W' if self.mixing_ is not None else ''}, "
                f"held-out error={self.heldout_error_:.4f})")


#: The constructor's parameters (:meth:`PandA.get_params`), from its signature: one list to keep.
_PARAMS = tuple(inspect.signature(PandA.__init__).parameters)[1:]

_REQUIRED_META = ("format_version", "generator", "generator_sha256", "layer", "layer_shape", "rank_appearance",
                  "rank_parts", "n_samples", "seed", "random_state", "train_error", "heldout_error", "n_heldout",
                  "error_history", "n_iter", "n_passes", "fit_time_s", "extract_time_s", "feature_scale",
                  "background", "background_sign", "background_gain")
_TENSORS = ("appearances", "parts", "coef_mean", "coef_energy", "appearance_energy", "background_scores")


def _check_stats(stats: DataStats, source: "FeatureSource | FeatureArray") -> None:
    """Statistics handed to :meth:`PandA.fit` must be those of its source: the same sample count and layer shape."""
    c, h, w = source.shape
    have = (stats.n, tuple(stats.channel.shape), tuple(stats.position.shape), stats.grid)
    want = (len(source), (c, c), (h * w, h * w), (h, w))
    if have != want:
        raise PandaError(f"the statistics given to fit are of {stats.n} samples at a {stats.channel.shape[0]}-channel "
                         f"layer of grid {stats.grid}, not of this source ({len(source)} samples, {c} x {h} x {w}): "
                         f"compute them with data_stats(source, ({h}, {w})).")


def _check_mixing(w: torch.Tensor | None, rank: int, path: Path, refit: str) -> torch.Tensor | None:
    """A factor file's mixing W: absent (W = I), or (R_C, R_C) finite, symmetric and positive semi-definite."""
    if w is None:
        return None
    w = w.float()
    if tuple(w.shape) != (rank, rank):
        raise PandaError(f"'{path}': tensor 'mixing' has shape {tuple(w.shape)}, expected {(rank, rank)}: {refit}.")
    if not torch.isfinite(w).all():
        raise PandaError(f"'{path}': tensor 'mixing' contains NaN or inf: {refit}.")
    scale = float(w.abs().max()) + 1e-30
    if not torch.allclose(w, w.T, atol=1e-5 * scale) or float(torch.linalg.eigvalsh(w.double()).min()) < -1e-5 * scale:
        raise PandaError(f"'{path}': the appearance mixing is not symmetric positive semi-definite, so the file is "
                         f"damaged: {refit}.")
    return w.contiguous()


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes, in name order: a flipped bit anywhere changes it."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _finite_number(x) -> bool:
    return _is_number(x) and math.isfinite(x)


#: What each metadata field must be, and how a person would say it (a file edited by hand fails here, not later).
_META_RULES = {
    "format_version": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "mixing": (lambda v: isinstance(v, bool), "true or false"),
    "generator": (lambda v: isinstance(v, str), "a string"),
    "generator_sha256": (lambda v: isinstance(v, str), "a string"),
    "layer": (lambda v: isinstance(v, str) and v != "", "a layer name"),
    "layer_shape": (lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(x) and x >= 1 for x in v),
                    "a list of three whole numbers >= 1 (C, H, W)"),
    "rank_appearance": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "rank_parts": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "n_samples": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "seed": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "data": (lambda v: v in ("seeds", "latents", "features"), "'seeds', 'latents' or 'features'"),
    "random_state": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "n_init": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "reseed": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "max_iter": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "tol": (lambda v: _finite_number(v) and v >= 0, "a finite number >= 0"),
    "mixing_directions": (lambda v: v is None or (_is_int(v) and v >= 1), "null or a whole number >= 1"),
    "train_error": (_finite_number, "a finite number"),
    "heldout_error": (lambda v: v is None or _finite_number(v), "a finite number or null"),
    "n_heldout": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "error_history": (lambda v: isinstance(v, list) and all(_finite_number(x) for x in v), "a list of finite numbers"),
    "n_iter": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "n_passes": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "fit_time_s": (_finite_number, "a finite number"),
    "extract_time_s": (_finite_number, "a finite number"),
    # edit strengths are multiples of it: NaN, 0, negative or astronomically large would break every edit
    "feature_scale": (lambda v: _finite_number(v) and 0 < v < 1e30, "a finite number > 0"),
    "background": (lambda v: v is None or (_is_int(v) and v >= 0), "null or an appearance index >= 0"),
    "background_sign": (lambda v: v in (1, -1) and _is_number(v), "+1 or -1"),
    "background_gain": (lambda v: v is None or _finite_number(v), "a finite number or null"),
}


def _check_meta(meta: dict, path: Path, refit: str) -> None:
    for key, (ok, what) in _META_RULES.items():
        if key in meta and not ok(meta[key]):
            raise PandaError(f"'{path}': metadata '{key}' is {meta[key]!r}, it must be {what}: {refit}.")


def _json_float(x: float):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _from_json_float(x) -> float:
    return float("nan") if x is None else float(x)
