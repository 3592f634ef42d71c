"""Model-randomisation sanity check of map methods (Adebayo et al., 2018; docs/method.md §10).

"Sanity checks for saliency maps" (Adebayo, Gilmer, Muelly, Goodfellow, Hardt and Kim,
NeurIPS 2018) asks whether an explanation depends on what the model learned: re-initialise
the model's weights, from the top down (*cascading*), and recompute the map. A map that
stays the same when the weights it should explain are random explains the image, not the
model (an edge detector passes for a saliency map on a trained and on a random network).

:func:`sanity_steps` does this for any registered map method on one image:

1. the method's scored map (:attr:`~napari_correlax.maps.methods.MapMethod.scored`) with
   the trained model;
2. the same with the head re-initialised, then the head and the last backbone stage, then
   down to every stage (:func:`cascade`: one step per stage, cumulative, each seeded);
3. per label, the Spearman rank correlation of every map with the trained model's map over
   the cells (or pixels) where both maps have a value (:func:`spearman`).

A method is *flagged* when, with every weight random, the mean over labels of ``|ρ|`` is
above ``threshold`` (default :data:`DEFAULT_THRESHOLD`): its map still orders the image
largely as the trained model's map did. The absolute value counts a map whose sign flips
(Eigen-CAM's SVD sign) as unchanged, as the paper's absolute rank correlation does.

Re-initialising uses each module's own ``reset_parameters`` (PyTorch's default
initialisation: Kaiming-uniform convolutions and linear layers; BatchNorm back to weight
1, bias 0 and running statistics 0 / 1), under ``torch.manual_seed(seed + step)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError
from ..maps import drain
from ..maps.methods import get_method, run_method
from ..maps.runtime import Progress
from ..maps.settings import MapSettings
from .report import Table

if TYPE_CHECKING:
    import torch.nn as nn

    from ..io.image import Mammogram

__all__ = [
    "DEFAULT_THRESHOLD",
    "SanityReport",
    "cascade",
    "sanity",
    "sanity_steps",
    "spearman",
    "stages",
]

#: Mean |Spearman ρ| over labels, at full randomisation, above which a method is flagged.
#: Halfway between a map unrelated to the trained model's (ρ ≈ 0) and the same map
#: (ρ = 1): above it, more of the map's ordering survives the loss of every learned
#: weight than is lost, so the map mostly shows the image. Random convolutions still
#: respond to edges (the skin line, the pectoral muscle), so even an honest map keeps
#: some correlation; 0.5 leaves room for that.
DEFAULT_THRESHOLD = 0.5


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps of the same shape (ties get average ranks).

    Only positions where both maps are finite count (NaN: not analysed). NaN when fewer
    than two such positions remain or either map is constant there.
    """
    from scipy.stats import rankdata

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.size} and {b.size} values")
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 2:
        return math.nan
    ra, rb = rankdata(a[keep]), rankdata(b[keep])
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / den if den > 0 else math.nan


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _starts_stage(module: nn.Module) -> bool:
    import torch.nn as nn

    return any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules())


def stages(model: Any) -> list[tuple[str, list[nn.Module]]]:
    """The backbone's stages in forward order, as (dotted name, modules).

    From ``model.encoder`` the walk goes down while a module has a single child with
    weights; that module's children with weights are the stages. A child without any
    convolution or linear layer (a BatchNorm after its convolution) joins the stage
    before it, so a stage is a block a user would name.

    Raises:
        CorrelaxError: the model has no ``encoder`` and ``classifier`` (the layout of
            :class:`~napari_correlax.models.Classifier`).
    """
    encoder = getattr(model, "encoder", None)
    if encoder is None or getattr(model, "classifier", None) is None:
        raise CorrelaxError("the sanity check needs a classifier with an `encoder` backbone and "
                            f"a `classifier` head; {type(model).__name__} has not both")
    prefix, node = "encoder", encoder
    while True:
        weighted = [(n, m) for n, m in node.named_children() if _has_params(m)]
        if len(weighted) != 1:
            break
        prefix, node = f"{prefix}.{weighted[0][0]}", weighted[0][1]
    found: list[tuple[str, list[nn.Module]]] = []
    for name, module in weighted:
        if found and not _starts_stage(module):
            found[-1][1].append(module)
        else:
            found.append((f"{prefix}.{name}", [module]))
    return found or [(prefix, [node])]


def _reset(modules: Sequence[nn.Module]) -> None:
    for module in modules:
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
            if hasattr(sub, "reset_running_stats"):
                sub.reset_running_stats()


def cascade(model: Any, seed: int = 0) -> Iterator[tuple[str, Any]]:
    """The trained model, then copies with the head and successively deeper stages
    re-initialised: yields ``(what is random, model)``, e.g. ``("original", m)``,
    ``("head", m1)``, ``("head … encoder.body.7", m2)``, down to the first stage.

    The trained ``model`` is never changed; each step changes one copy further
    (``torch.manual_seed(seed + step)`` before the step's re-initialisation).
    """
    import torch

    found = stages(model)
    yield "original", model
    work = copy.deepcopy(model)
    work.eval()
    torch.manual_seed(seed + 1)
    _reset([work.classifier])
    yield "head", work
    names = dict(work.named_modules())
    for step, (name, _) in enumerate(reversed(found), start=2):
        torch.manual_seed(seed + step)
        stage_modules = dict(found)[name]
        _reset([names[_path(model, m)] for m in stage_modules])
        yield f"head … {name}", work


def _path(model: Any, module: nn.Module) -> str:
    """Dotted name of ``module`` inside ``model``."""
    for name, m in model.named_modules():
        if m is module:
            return name
    raise LookupError("module not in model")  # pragma: no cover - stages come from the model


@dataclass
class SanityReport:
    """Spearman ρ of each method's map at each randomisation step with its original.

    ``rho[method]`` is (steps, labels); row 0 (the trained model) is 1 where the map is
    not constant. ``steps`` names what was random at each row.
    """

    methods: list[str]
    labels: list[str]
    steps: list[str]
    rho: dict[str, np.ndarray]
    threshold: float = DEFAULT_THRESHOLD
    kinds: dict[str, str] = field(default_factory=dict)
    #: Methods that could not make their map with the trained model, and why (left out).
    errors: dict[str, str] = field(default_factory=dict)

    def final(self, method: str) -> float:
        """Mean |ρ| over labels with every weight random (NaN labels left out)."""
        values = np.abs(self.rho[method][-1])
        return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan

    @property
    def flagged(self) -> list[str]:
        """Methods whose map barely changes with the model randomised."""
        return [m for m in self.methods if self.final(m) > self.threshold]

    def table(self) -> Table:
        """One row per method: mean |ρ| over labels at each step, then the verdict."""
        table = Table("Model randomisation: mean |Spearman ρ| with the trained model's map",
                      ["Method", "Map", *self.steps, "Verdict"])
        for m in self.methods:
            means = [float(np.nanmean(np.abs(r))) if np.isfinite(r).any() else None
                     for r in self.rho[m]]
            verdict = "FLAGGED: ignores the model" if m in self.flagged else "passes"
            table.rows.append([m, self.kinds.get(m, ""), *means, verdict])
        table.notes.append(
            f"Cascading re-initialisation (Adebayo et al., 2018): head first, then each "
            f"backbone stage from the last. Flagged: mean |ρ| > {self.threshold:g} with "
            "every weight random.")
        return table

    def long_table(self) -> Table:
        """One row per method, step and label: the signed ρ."""
        table = Table("Spearman ρ per method, step and label",
                      ["method", "step", "randomised", "label", "spearman", "flagged"])
        for m in self.methods:
            for k, step in enumerate(self.steps):
                for j, label in enumerate(self.labels):
                    value = self.rho[m][k, j]
                    table.rows.append([m, k, step, label,
                                       None if not np.isfinite(value) else float(value),
                                       int(m in self.flagged)])
        return table


def _scored_maps(result: Any, kind: str) -> np.ndarray:
    maps = result.get(kind)
    if maps is None:
        raise CorrelaxError(f"the map method made no {kind!r} map")
    maps = np.asarray(maps, dtype=np.float64)
    return maps if maps.ndim == 3 else maps[None]


def sanity_steps(image: Mammogram | np.ndarray, model: Any, methods: Sequence[str],
                 settings: MapSettings | None = None, *, threshold: float = DEFAULT_THRESHOLD,
                 seed: int = 0) -> Generator[Progress, None, SanityReport]:
    """Run the cascading randomisation check of every method on ``image``.

    Args:
        image: a Mammogram or H×W array in [0, 1].
        model: a :class:`~napari_correlax.models.Classifier` (``encoder`` + ``classifier``).
        methods: registered map method names; each is scored on its ``scored`` kind.
        settings: map settings shared by every method (its ``method`` is replaced, and
            each method gets the ``options`` it knows, e.g. the CAMs' ``mode``).
        threshold: flag a method whose mean |ρ| over labels exceeds this at the end.
        seed: seed of the re-initialisations.

    Yields ``Progress("sanity", done, total)`` after each map; returns a
    :class:`SanityReport`. A method that cannot map the image with the trained model
    (CorrelaxError, e.g. plain CAM on a two-layer head) is left out and named in
    ``errors``.
    """
    settings = settings or MapSettings()
    specs = [get_method(m) for m in dict.fromkeys(methods)]
    if not specs:
        raise CorrelaxError("name at least one map method to check")
    n_steps = len(stages(model)) + 2
    total, done = n_steps * len(specs), 0
    names: list[str] = []
    original: dict[str, np.ndarray] = {}
    rho = {spec.name: np.full((n_steps, len(model.labels)), np.nan) for spec in specs}
    errors: dict[str, str] = {}
    yield Progress("sanity", 0, total)
    for k, (step, current) in enumerate(cascade(model, seed)):
        names.append(step)
        for spec in specs:
            if spec.name in errors:
                continue
            options = {o: v for o, v in settings.options if o in spec.options}
            try:
                result = drain(run_method(image, current, settings.with_(method=spec.name,
                                                                         options=options)))
                maps = _scored_maps(result, spec.scored)
            except CorrelaxError as exc:
                if k:
                    raise
                errors[spec.name] = str(exc)
                total -= n_steps
                continue
            if k == 0:
                original[spec.name] = maps
            for j in range(min(len(maps), len(model.labels))):
                rho[spec.name][k, j] = spearman(original[spec.name][j], maps[j])
            done += 1
            yield Progress("sanity", done, total)
    kept = [s for s in specs if s.name not in errors]
    return SanityReport(methods=[s.name for s in kept], labels=list(model.labels),
                        steps=names, rho={s.name: rho[s.name] for s in kept},
                        threshold=threshold, kinds={s.name: s.scored for s in kept},
                        errors=errors)


def sanity(image: Mammogram | np.ndarray, model: Any, methods: Sequence[str],
           settings: MapSettings | None = None, **options: Any) -> SanityReport:
    """:func:`sanity_steps` without progress."""
    return drain(sanity_steps(image, model, methods, settings, **options))
