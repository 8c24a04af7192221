"""Baseline trainers: fit one of the four architectures (`harness.architectures`) with the E+D
or the DI loss (`harness.losses`) against B3LYP/def2-SVP references, and write a submission
folder that `harness evaluate` scores.

Output folder (``--out``, e.g. ``submissions/xcdiff-di``)::

    submission.yaml            complete, validated by harness.submission.load_submission
    functional.py              entry point: build_architecture(arch, preset) (weights loaded by the harness)
    weights.safetensors        the SELECTED model (best validation energy MAE)
    training.json              configuration, data keys, selection, timings
    training_log.csv           one row per step (train) and per validation (val)
    training_curves.png        train/val loss, val energy MAE and density error
    checkpoints/last.safetensors, last-optim.safetensors, state.json   (resume)

Model selection: the step with the lowest validation energy MAE (mEh) — the same
quantity for both losses, so E+D and DI models are selected alike; ties keep the earlier
step. Validation runs every ``eval_every`` steps and at the last step (step 0 = the
initial model is always validated, so a model that only gets worse is never selected).

Data: references from a reference folder (``--reference``) or, by default, built for just
the preset's subset of molecules into ``reference_data/build/<preset-cache>`` with the
ordinary `harness.reference.build` machinery (resumable), plus DI targets per geometry
(`harness.reference.di_targets.di_targets_for_record`, cached as ``di/<key>.npz`` next to it).
The subset is the smallest closed-shell molecules of the train and val splits (by electron
count, then atom count, then name), never a test molecule.

Determinism: the model is initialised from ``seed``; the molecules of a step come from a
generator seeded by (seed, step), so a resumed run draws the same batches as an
uninterrupted one. Torch runs with ``threads`` intra-op threads (default 1).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.executor import RecordRef, Task, clear_worker_cache, make_executor, worker_cached
from harness.io import atomic_path, atomic_write_json, atomic_write_text, sha256_file
from harness.losses import (
    DEFAULT_SOLVER,
    DEFAULT_WEIGHTS,
    LossOutput,
    LossWeights,
    SolverOptions,
    TrainingGeometry,
    WarmStart,
    loss_function,
    prepare_geometry,
)

ARCH_CHOICES = ("xcdiff", "nagai", "nlmp", "egxc")
LOSS_CHOICES = ("ed", "di")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE_ROOT = REPO_ROOT / "reference_data" / "build"
#: sha256 of the manifests of the committed training data (``Preset.data``), pinned like the
#: bundled test split's: a modified or partly rebuilt folder is refused
DATA_MANIFEST_SHA256 = {"paper": "3f0acf123cb5ebb109081a0a652d7ea49e433e186c8d599356d1d8b189c1d84a"}
PAPER = "arXiv:2606.04279 (DI-Loss); baseline reproduction with xc-harness"


@dataclass(frozen=True)
class Preset:
    """Training budget. ``n_train``/``n_val``: molecules (smallest first) of the train/val
    splits; ``conformers``: distorted copies per train molecule used besides the equilibrium
    geometry (val: equilibrium only); ``batch``: geometries per step (0 = all);
    ``grid_level``: training grid (evaluation always uses level 3)."""

    name: str
    n_train: int
    n_val: int
    conformers: int
    steps: int
    lr: float
    batch: int
    eval_every: int
    grid_level: int
    #: explicit molecule names (in the split) instead of the n smallest; empty = smallest
    train_names: tuple = ()
    val_names: tuple = ()
    di_samples: int = 2
    di_probes: int = 2
    di_sigma: float = 0.05
    grad_clip: float = 1.0
    #: a global gradient norm above this stops the run as diverged (`divergence`). Norms of 1e4–1e6
    #: are normal in the first steps (losses in mEh; training_log.csv, column grad_norm) and are
    #: clipped to ``grad_clip``; six orders above that is a gradient gone wrong
    max_grad_norm: float = 1e12
    #: exponential moving average of the parameters (0: none): after every step
    #: θ̄ ← d·θ̄ + (1 − d)·θ, and validation, selection and the submission use θ̄ (`ParameterAverage`)
    ema_decay: float = 0.0
    description: str = ""
    #: where the preset's reference data lives: "" = built on demand into the train-subset cache;
    #: a name = the folder reference_data/<name>-train-val-v1 (committed, DI targets inside)
    data: str = ""
    #: the architectures' size preset (`harness.architectures`), when it is not this preset's name
    arch_preset: str = ""

    @property
    def architecture(self) -> str:
        return self.arch_preset or self.name


PRESETS = {
    "quick": Preset(
        name="quick", n_train=5, n_val=1, conformers=0, steps=15, lr=5e-3, batch=0, eval_every=5, grid_level=1,
        train_names=("H2", "LiH", "HF", "H2O", "CH4"), val_names=("N2",), di_samples=1, di_probes=2,
        description="5 small train molecules covering H, Li, C, O, F (H2, LiH, HF, H2O, CH4; equilibrium), "
        "the smallest val molecule (N2), 15 full-batch Adam steps, lr 5e-3 (cosine to 5e-4), level-1 "
        "training grid, DI: the reference point + 1 perturbed point (sigma 0.05), 2 probes",
    ),
    "paper": Preset(
        name="paper", n_train=20, n_val=17, conformers=1, steps=100, lr=5e-3, batch=6, eval_every=10,
        grid_level=1, di_samples=1, di_probes=2, di_sigma=0.05, data="paper", arch_preset="quick", ema_decay=0.9,
        description="the 20 smallest train molecules with 1 distorted conformer each (40 geometries), all 17 "
        "val molecules for selection, 100 Adam steps of 6 geometries, lr 5e-3 (cosine to 5e-4), the "
        "parameters' moving average (decay 0.9) validated, selected and submitted, level-1 "
        "training grid, DI: the reference point + 1 perturbed point (sigma 0.05), 2 probes; the reference "
        "data (with DI targets in the files) is committed in reference_data/paper-train-val-v1",
    ),
    "full": Preset(
        name="full", n_train=74, n_val=17, conformers=3, steps=3000, lr=5e-4, batch=8, eval_every=100,
        grid_level=3,
        description="all 74 train molecules + 3 conformers each, all 17 val molecules, 3000 Adam steps of "
        "8 geometries, lr 5e-4 (cosine), level-3 grid",
    ),
}


@dataclass
class TrainConfig:
    arch: str
    loss: str
    out: Path
    preset: str = "quick"
    seed: int = 0
    steps: int | None = None
    lr: float | None = None
    reference: Path | None = None
    split_train: str = "train"
    split_val: str = "val"
    max_train: int | None = None
    max_val: int | None = None
    grid_level: int | None = None
    cache: Path | None = None
    threads: int = 1
    progress: bool = True
    plot: bool = True
    #: replace preset fields (e.g. {"di_samples": 1} for quick tests)
    overrides: dict = field(default_factory=dict)
    #: testing aid: raise KeyboardInterrupt after this step's checkpoint (simulates a kill)
    stop_after: int | None = None
    weights: LossWeights = DEFAULT_WEIGHTS
    #: worker processes of the reference build (when the preset's data must be computed)
    build_workers: int = 1
    solver: SolverOptions = DEFAULT_SOLVER
    #: where each step's per-molecule losses and gradients are computed (`harness.executor`):
    #: 1 = this process; N > 1 = a local pool; ``scheduler`` = Dask (overrides ``workers``).
    #: Not part of the run's identity: a run may resume on another backend.
    workers: int = 1
    scheduler: str | None = None

    @property
    def spec(self) -> Preset:
        p = PRESETS[self.preset]
        changes = {"steps": self.steps, "lr": self.lr, "n_train": self.max_train, "n_val": self.max_val,
                   "grid_level": self.grid_level}
        changes = {k: v for k, v in changes.items() if v is not None}
        changes.update(self.overrides)
        return dataclasses.replace(p, **changes)

    def identity(self) -> dict:
        """What a resumed run must share with the run that wrote the checkpoint. The learning rate
        is not part of it: a diverged run resumes with a lower one (``lr_changes`` in the state)."""
        s = self.spec
        return {
            "arch": self.arch, "loss": self.loss, "preset": self.preset, "seed": self.seed,
            "reference": None if self.reference is None else str(Path(self.reference).resolve()),
            "split_train": self.split_train, "split_val": self.split_val, "n_train": s.n_train, "n_val": s.n_val,
            "conformers": s.conformers, "batch": s.batch, "grid_level": s.grid_level,
            "di": [s.di_samples, s.di_probes, s.di_sigma], "grad_clip": s.grad_clip,
            "weights": self.weights.to_dict(), "solver": dataclasses.asdict(self.solver),
        } | ({"ema_decay": s.ema_decay} if s.ema_decay else {})


class TrainError(HarnessError, RuntimeError):
    """A training run that cannot start or continue (bad option, checkpoint mismatch)."""


class TrainDiverged(TrainError):
    """A step whose loss or gradient is not finite, or whose gradient norm is past
    `Preset.max_grad_norm`: the run stops at the last good checkpoint (`divergence`)."""


def divergence(outs, grad_norm: float, spec: "Preset") -> str | None:
    """Why a training step counts as diverged (None: it does not): a geometry's loss is NaN or
    infinite, the gradient is not finite, or its global norm exceeds ``spec.max_grad_norm``
    (an exploding gradient; clipping would hide it)."""
    bad = [o.key for o in outs if not math.isfinite(o.loss)]
    if bad:
        return f"the loss is not finite on {', '.join(bad)}"
    if not math.isfinite(grad_norm):
        return "the parameter gradient is not finite"
    if grad_norm > spec.max_grad_norm:
        return f"the gradient norm {grad_norm:.3g} exceeds {spec.max_grad_norm:g} (an exploding gradient)"
    return None


# ------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------


def architecture_sha256(arch: str) -> str:
    from harness.architectures import architecture_sha256 as sha

    return sha(arch)


def build_model(arch: str, preset: str, seed: int) -> torch.nn.Module:
    from harness.architectures import build_architecture

    torch.manual_seed(seed)
    model = build_architecture(arch, preset=preset, seed=seed)
    return model.to(torch.float64)


FUNCTIONAL_PY = '''"""{name}: `{arch}` trained with the {loss_long} loss by `harness train`
(architecture size {preset}, seed {seed}). The architecture lives in harness.architectures; the harness
loads weights.safetensors into it (sha256-pinned, strict)."""

import torch

from harness.architectures import architecture_sha256, build_architecture

ARCH = "{arch}"
PRESET = "{preset}"
#: sha256 of the architecture's source when these weights were trained
ARCH_SHA256 = "{arch_sha256}"


def make_functional():
    now = architecture_sha256(ARCH)
    if now != ARCH_SHA256:
        raise RuntimeError(
            f"harness.architectures.{{ARCH}} changed since this submission was trained "
            f"(source sha256 {{now[:12]}}, trained with {{ARCH_SHA256[:12]}}); retrain it with harness train")
    return build_architecture(ARCH, preset=PRESET, seed=0).to(torch.float64)
'''


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


def subset_molecules(split: str, n: int, names: tuple = ()) -> list:
    """The ``n`` smallest closed-shell G2 molecules of a split (electrons, atoms, name), or the
    first ``n`` of ``names`` (which must all belong to the split) when given."""
    from harness.molecules import g2_closed_shell, split_of

    mols = [m for m in g2_closed_shell() if split_of(m.name) == split]
    if names:
        by_name = {m.name: m for m in mols}
        missing = [x for x in names if x not in by_name]
        if missing:
            raise TrainError(f"preset molecules {missing} are not in the {split!r} split")
        return [by_name[x] for x in names[:n]]
    mols.sort(key=lambda m: (m.n_electrons, len(m.symbols), m.name))
    return mols[:n]


def _cache_dir(cfg: TrainConfig) -> Path:
    if cfg.cache is not None:
        return Path(cfg.cache)
    if cfg.spec.data:
        return REPO_ROOT / "reference_data" / f"{cfg.spec.data}-train-val-v1"
    return DEFAULT_CACHE_ROOT / "train-subset"


def _di_settings(spec: Preset):
    from harness.reference.di_targets import DISettings

    return DISettings(samples=spec.di_samples, sigma=spec.di_sigma, probes=spec.di_probes, seed=0)


def _load_di(record, sha: str, cache: Path, spec: Preset, progress_note=None):
    """DI targets of a record: the ones stored in the reference file (``record.di``) when they
    were drawn with the preset's DI settings, else the cache (``cache/di/<key>-<tag>.npz``, tag
    from the record sha256 and the DI settings), else computed with PySCF and cached
    atomically. Returns a mapping of the five target arrays."""
    from harness.reference.di_targets import di_targets_for_record

    settings = _di_settings(spec)
    fields = ("kappa", "energy_Eh", "gradient", "probes", "hvp")
    stored = getattr(record, "di", None)
    if stored is not None and getattr(stored, "settings", None) == settings:
        return {k: np.asarray(getattr(stored, k)) for k in fields}
    tag = hashlib.sha256(json.dumps([sha, settings.to_dict()], sort_keys=True).encode()).hexdigest()[:12]
    path = cache / "di" / f"{record.key}-{tag}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in fields}
        except Exception:  # a damaged cache file is recomputed
            path.unlink()
    if progress_note:
        progress_note(f"DI targets {record.key}")
    di = di_targets_for_record(record, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: np.asarray(getattr(di, k)) for k in fields})
    return {k: np.asarray(getattr(di, k)) for k in fields}


def load_data(cfg: TrainConfig, model, log=print, executor=None) -> tuple[list["GeometryJob"], list["GeometryJob"], dict]:
    """(train geometries, val geometries, description) for a run, as `GeometryJob` objects (a
    worker prepares each geometry the first time it needs it). ``executor``: where a missing
    reference build runs (default: ``cfg.build_workers`` local processes); when it ships files
    (Dask), the jobs carry their reference files."""
    from harness.reference.store import ReferenceSet

    spec = cfg.spec
    cache = _cache_dir(cfg)
    ship = executor is not None and executor.ships_files
    if cfg.reference is not None:
        refset = ReferenceSet(cfg.reference)
        tr = refset.select(cfg.split_train, conformers=spec.conformers > 0)
        va = refset.select(cfg.split_val, conformers=False)
        tr = [e for e in tr if e.conformer <= spec.conformers]
        tr = sorted(tr, key=lambda e: (e.nao, e.natm, e.key))
        va = sorted(va, key=lambda e: (e.nao, e.natm, e.key))
        names_tr = []
        for e in tr:
            if e.name not in names_tr:
                names_tr.append(e.name)
        names_tr = names_tr[:spec.n_train]
        tr = [e for e in tr if e.name in names_tr]
        va = [e for e in va if e.name not in names_tr][:spec.n_val]
        source = str(cfg.reference)
    else:
        from harness.reference.build import PlannedGeometry, build_reference
        from harness.reference.settings import ReferenceSettings

        mols_tr = subset_molecules(cfg.split_train, spec.n_train, spec.train_names)
        mols_va = subset_molecules(cfg.split_val, spec.n_val, spec.val_names)
        settings = ReferenceSettings(conformers=max(spec.conformers, 0))
        from harness.molecules import distorted_conformers

        planned = []
        # with a committed data folder the DI targets go into the reference files themselves
        di_in_files = bool(spec.data)
        for m in mols_tr:
            planned.append(PlannedGeometry(m, cfg.split_train, di=di_in_files))
            if spec.conformers > 0:
                for c in distorted_conformers(m, spec.conformers, settings.conformer_seed,
                                              settings.conformer_sigma_angstrom,
                                              settings.conformer_min_distance_ratio):
                    planned.append(PlannedGeometry(c, cfg.split_train, di=di_in_files))
        planned += [PlannedGeometry(m, cfg.split_val) for m in mols_va]
        report = build_reference(cache, planned, settings, workers=max(1, cfg.build_workers), progress=cfg.progress,
                                 executor=executor if executor is not None and executor.kind == "dask" else None,
                                 name=f"{spec.data}-train-val" if spec.data else "g2-b3lyp-svp",
                                 di_settings=_di_settings(spec) if di_in_files else None)
        if report.failed:
            raise TrainError(f"reference build failed for {sorted(report.failed)}: "
                             f"{next(iter(report.failed.values()))}")
        if report.computed:
            log(f"built {len(report.computed)} reference geometries in {report.wall_s:.1f} s into {cache}")
        refset = ReferenceSet(cache, check_pin=False)
        pin = DATA_MANIFEST_SHA256.get(spec.data) if spec.data and cfg.cache is None else None
        if pin is not None and refset.manifest_sha256 != pin:
            raise TrainError(f"{refset.manifest_path}: sha256 {refset.manifest_sha256[:12]}… differs from the pinned "
                             f"{pin[:12]}… of the committed {spec.data!r} training data (harness.train."
                             "DATA_MANIFEST_SHA256); restore the folder with git checkout")
        keys = {p.key for p in planned}
        tr = [refset.entry(p.key) for p in planned if p.split == cfg.split_train and p.key in keys]
        va = [refset.entry(p.key) for p in planned if p.split == cfg.split_val]
        source = str(cache)

    def prep(entries, with_di):
        out = []
        for e in entries:
            di = None
            if with_di:
                rec = refset.load(e.key)
                di = _load_di(rec, e.sha256, cache, spec, log if cfg.progress else None)
            out.append(GeometryJob(RecordRef.of(refset, e.key, ship=ship), di, spec.grid_level))
        return out

    train = prep(tr, cfg.loss == "di")
    val = prep(va, False)
    if not train or not val:
        raise TrainError(f"no training ({len(train)}) or validation ({len(val)}) geometries selected")
    desc = {
        "reference": source, "reference_manifest_sha256": refset.manifest_sha256,
        "train_keys": [g.record.key for g in train], "val_keys": [g.record.key for g in val],
        "di_settings": _di_settings(spec).to_dict() if cfg.loss == "di" else None,
    }
    return train, val, desc


def prepare_data(cfg: TrainConfig, log=print) -> dict:
    """Build (or verify) the reference data and DI targets a run needs, without training; returns
    the data description of `load_data`."""
    torch.set_num_threads(max(1, int(cfg.threads)))
    model = build_model(cfg.arch, cfg.spec.architecture, cfg.seed)
    return load_data(cfg, model, log=log)[2]


def saw_test_molecules(keys: list[str]) -> bool:
    from harness.molecules import split_of

    return any(split_of(k.split("__c")[0]) == "test" for k in keys)


# ------------------------------------------------------------------------------------------
# one molecule's loss: the task of a training step
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeometryJob:
    """One training geometry as a task carries it: the reference record (`RecordRef`), its DI
    targets (mapping of arrays, or None) and the training grid level."""

    record: RecordRef
    di: Any
    grid_level: int


@dataclass(frozen=True)
class ModelJob:
    """The model and loss of a run, as a worker rebuilds them (`molecule_loss_task`)."""

    arch: str
    architecture: str
    seed: int
    loss: str
    weights: LossWeights
    solver: SolverOptions


def _geometry(model, job: ModelJob, g: GeometryJob) -> TrainingGeometry:
    """The prepared geometry (setup, grid, reference density), built once per worker."""
    key = (g.record.key, g.record.sha256, g.grid_level, g.di is not None, job.arch, job.architecture)
    return worker_cached("train-geometry", key, lambda: prepare_geometry(g.record.load(), model,
                                                                         grid_level=g.grid_level, di=g.di), keep=None)


def molecule_loss(model, job: ModelJob, g: GeometryJob, backward: bool, scale: float = 1.0,
                  warm: WarmStart | None = None) -> LossOutput:
    """One geometry's loss (``backward``: the run's loss, its gradient times ``scale``
    accumulated into ``model``'s ``.grad``; else the E+D validation terms, no gradient).
    ``warm``: where its SCF and CG start (the output's ``warm`` is the next start)."""
    fn = loss_function(job.loss if backward else "ed")
    return fn(model, _geometry(model, job, g), job.weights, job.solver, backward=backward, scale=scale, warm=warm)


def molecule_loss_task(job: ModelJob, state: dict[str, torch.Tensor], g: GeometryJob, backward: bool,
                       scale: float, warm: WarmStart | None = None
                       ) -> tuple[LossOutput, dict[str, torch.Tensor] | None]:
    """A worker's part of a step: the model at ``state``, one geometry's loss, and the
    parameter gradient (name → tensor) that this geometry alone contributes."""
    model = worker_cached("train-model", (job.arch, job.architecture, job.seed),
                          lambda: build_model(job.arch, job.architecture, job.seed), keep=1)
    model.load_state_dict(state, strict=True)
    model.zero_grad(set_to_none=True)
    out = molecule_loss(model, job, g, backward, scale, warm)
    grads = None
    if backward:
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def run_losses(executor, model, job: ModelJob, geoms: list[GeometryJob], backward: bool,
               scale: float = 1.0, warm: dict[str, WarmStart] | None = None) -> list[LossOutput]:
    """The losses of ``geoms`` at the current ``model``, in their order; with ``backward`` the
    summed parameter gradient ends in ``model``'s ``.grad``. In this process (``inline``) the
    live model accumulates it; elsewhere each worker returns its molecule's gradient and they
    are added here in the same order.

    ``warm``: the run's warm starts by geometry key, read and updated here (the client holds
    them, so where a molecule runs does not change its numbers, and a checkpoint keeps them)."""
    def start(g):
        return None if warm is None else warm.get(g.record.key)

    def keep(out):
        if warm is not None:
            if out.warm is None:
                warm.pop(out.key, None)  # not converged: the next start is the reference density
            else:
                warm[out.key] = out.warm
        out.warm = None
        return out

    if executor.kind == "inline":
        return [keep(molecule_loss(model, job, g, backward, scale, start(g))) for g in geoms]
    state = _state_dict(model)
    outcomes: dict[int, Any] = {}
    tasks = [Task(f"{i}", molecule_loss_task, (job, state, g, backward, scale, start(g)))
             for i, g in enumerate(geoms)]
    executor.map(tasks, lambda o: outcomes.__setitem__(int(o.task.key), o))
    params = dict(model.named_parameters())
    outs = []
    for i, g in enumerate(geoms):
        o = outcomes[i]
        if o.error is not None:
            raise o.error
        if o.lost_worker is not None:
            raise TrainError(f"{g.record.key}: {o.lost_worker}")
        out, grads = o.value
        outs.append(keep(out))
        for name, grad in (grads or {}).items():
            p = params[name]
            if p.grad is None:
                p.grad = grad.clone()
            else:
                p.grad.add_(grad)
    return outs


# ------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------


def _state_dict(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def save_warm_starts(warm: dict[str, WarmStart], path: Path) -> None:
    """The run's warm starts (`WarmStart` per geometry key) as one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    for key in sorted(warm):
        tensors.update(warm[key].to_tensors(f"{key}/"))
    _save_safetensors(tensors, path)


def load_warm_starts(path: Path) -> dict[str, WarmStart]:
    """The warm starts of `save_warm_starts` (empty when the file is missing: a cold start)."""
    from safetensors.torch import load_file

    if not path.is_file():
        return {}
    tensors = load_file(str(path))
    keys = sorted({name.rsplit("/", 1)[0] for name in tensors})
    return {k: w for k in keys if (w := WarmStart.from_tensors(tensors, f"{k}/")) is not None}


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


class ParameterAverage:
    """Exponential moving average of a model's parameters (Polyak averaging; Polyak & Juditsky,
    SIAM J. Control Optim. 30, 838 (1992)): θ̄ ← d·θ̄ + (1 − d)·θ after every step, starting
    from the initial θ. With small batches Adam's steps jitter the model around its path (a
    validation energy MAE that jumps by tens of mEh between passes); θ̄ follows the path
    without the jitter. Floating-point entries are averaged, the rest copied."""

    def __init__(self, model, decay: float):
        if not 0.0 < decay < 1.0:
            raise TrainError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.state = _state_dict(model)

    @torch.no_grad()
    def update(self, model) -> None:
        for name, value in model.state_dict().items():
            avg = self.state[name]
            if avg.is_floating_point():
                avg.mul_(self.decay).add_(value, alpha=1.0 - self.decay)
            else:
                avg.copy_(value)


class Adam:
    """Plain Adam (Kingma & Ba) with bias correction, deterministic and checkpointable as
    tensors (torch.optim's first construction imports the compiler stack, ~10 s here)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps = lr, betas, eps
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1.0 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
            p.sub_(self.lr * (m / c1) / ((v / c2).sqrt() + self.eps))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"t": torch.tensor([self.t], dtype=torch.int64)}
        for i, (m, v) in enumerate(zip(self.m, self.v)):
            out[f"m.{i}"] = m.detach().clone().contiguous()
            out[f"v.{i}"] = v.detach().clone().contiguous()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.t = int(tensors["t"][0])
        for i in range(len(self.params)):
            self.m[i].copy_(tensors[f"m.{i}"])
            self.v[i].copy_(tensors[f"v.{i}"])


# ------------------------------------------------------------------------------------------
# logging
# ------------------------------------------------------------------------------------------

LOG_FIELDS = ("step", "split", "loss", "loss_energy", "loss_density", "loss_gradient", "loss_hvp",
              "energy_mae_mEh", "density_l2_mean", "scf_converged_fraction", "scf_iterations_mean",
              "cg_iterations_mean", "cg_residual_max", "cg_not_converged", "cg_nonpositive_curvature",
              "grad_norm", "lr", "wall_s")


def _row(step: int, split: str, outs, lr: float, wall: float) -> dict:
    n = max(1, len(outs))

    def mean(get):
        vals = [v for v in (get(o) for o in outs) if v is not None]
        return sum(vals) / len(vals) if vals else None

    return {
        "step": step, "split": split, "loss": mean(lambda o: o.loss),
        "loss_energy": mean(lambda o: o.terms.get("energy")),
        "loss_density": mean(lambda o: o.terms.get("density")),
        "loss_gradient": mean(lambda o: o.terms.get("gradient")),
        "loss_hvp": mean(lambda o: o.terms.get("hvp")),
        "energy_mae_mEh": mean(lambda o: abs(o.metrics["energy_error_mEh"])),
        "density_l2_mean": mean(lambda o: o.metrics.get("density_l2")),
        "scf_converged_fraction": sum(o.metrics.get("scf_converged", 0.0) for o in outs) / n,
        "scf_iterations_mean": mean(lambda o: o.metrics.get("scf_iterations")),
        "cg_iterations_mean": mean(lambda o: o.metrics.get("cg_iterations")),
        # the adjoint solves of this step: never silent when one fell short
        "cg_residual_max": max((o.metrics["cg_residual"] for o in outs if "cg_residual" in o.metrics), default=None),
        "cg_not_converged": sum(1 for o in outs if o.metrics.get("cg_converged") == 0.0),
        "cg_nonpositive_curvature": sum(1 for o in outs if o.metrics.get("cg_nonpositive_curvature") == 1.0),
        "lr": lr, "wall_s": wall,
    }


def solver_counts(rows: list[dict]) -> dict:
    """How often the inner solvers fell short over a run's training steps (for training.json)."""
    tr = [r for r in rows if r["split"] == "train"]
    return {
        "train_steps": len(tr),
        "steps_with_cg_not_converged": sum(1 for r in tr if r.get("cg_not_converged")),
        "cg_not_converged_geometries": sum(int(r.get("cg_not_converged") or 0) for r in tr),
        "cg_nonpositive_curvature_geometries": sum(int(r.get("cg_nonpositive_curvature") or 0) for r in tr),
        "steps_with_scf_not_converged": sum(1 for r in tr if (r.get("scf_converged_fraction") or 0) < 1.0),
        "cg_residual_max": max((r["cg_residual_max"] for r in tr if r.get("cg_residual_max") is not None),
                               default=None),
    }


def write_log(rows: list[dict], path: Path) -> None:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in LOG_FIELDS})
    atomic_write_text(path, buf.getvalue())


def plot_curves(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [r for r in rows if r["split"] == "train"]
    va = [r for r in rows if r["split"] == "val"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    for rs, lab in ((tr, "train"), (va, "val")):
        pts = [(r["step"], r["loss"]) for r in rs if r["loss"] is not None and r["loss"] > 0]
        if pts:
            ax.semilogy(*zip(*pts), marker="." if lab == "val" else None, label=f"{lab} loss")
    ax.set_xlabel("step")
    ax.set_title("loss")
    ax.legend()
    for ax, key, lab in ((axes[1], "energy_mae_mEh", "energy MAE (mEh)"), (axes[2], "density_l2_mean", "L2 density error")):
        for rs, name in ((tr, "train"), (va, "val")):
            pts = [(r["step"], r[key]) for r in rs if r.get(key) is not None and r[key] > 0]
            if pts:
                ax.semilogy(*zip(*pts), marker="." if name == "val" else None, label=name)
        ax.set_xlabel("step")
        ax.set_title(lab)
        ax.legend()
    fig.suptitle(title)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.14, top=0.84, wspace=0.25)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------------------------------
# submission
# ------------------------------------------------------------------------------------------


def write_submission(out: Path, cfg: TrainConfig, model, data_desc: dict, selection: dict) -> None:
    import yaml

    name = out.resolve().name
    spec = cfg.spec
    loss_long = {"ed": "energy+density (E+D)", "di": "DI (E+D + gradient/Hessian)"}[cfg.loss]
    atomic_write_text(out / "functional.py", FUNCTIONAL_PY.format(
        name=name, arch=cfg.arch, preset=cfg.spec.architecture, seed=cfg.seed, loss_long=loss_long,
        arch_sha256=architecture_sha256(cfg.arch)))
    weights = out / "weights.safetensors"
    _save_safetensors(_state_dict(model), weights)
    keys = data_desc["train_keys"] + data_desc["val_keys"]
    text = (
        f"harness train: architecture {cfg.arch}, loss {cfg.loss} ({loss_long}), preset {cfg.preset} "
        f"({spec.steps} steps, lr {spec.lr}, grid level {spec.grid_level}), seed {cfg.seed}. "
        f"B3LYP/def2-SVP references g2-b3lyp-svp ({data_desc['reference']}); "
        f"train geometries ({len(data_desc['train_keys'])}): {', '.join(data_desc['train_keys'])}; "
        f"val geometries ({len(data_desc['val_keys'])}, model selection by val energy MAE): "
        f"{', '.join(data_desc['val_keys'])}. Selected step {selection['step']} "
        f"(val energy MAE {selection['val_energy_mae_mEh']:.3f} mEh)."
    )
    data = {
        "name": name,
        "version": f"{cfg.preset}-s{cfg.seed}",
        "framework": "torch",
        "entry_point": "functional.py:make_functional",
        "weights": "weights.safetensors",
        "sha256": sha256_file(weights),
        "authors": ["xc-harness baseline trainer"],
        "license": "MIT",
        "paper": PAPER,
        "training_data": {"text": text, "saw_test_molecules": saw_test_molecules(keys)},
    }
    header = (f"# Written by `harness train --arch {cfg.arch} --loss {cfg.loss} --preset {cfg.preset} "
              f"--seed {cfg.seed}`; architecture={cfg.arch} loss={cfg.loss} preset={cfg.preset} seed={cfg.seed}\n")
    atomic_write_text(out / "submission.yaml", header + yaml.safe_dump(data, sort_keys=False, width=1000))


# ------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    out: Path
    steps_done: int
    best_step: int
    best_val_energy_mae_mEh: float
    wall_s: float
    resumed_from: int | None = None
    rows: list[dict] = field(default_factory=list)


def train(cfg: TrainConfig, log=print) -> TrainResult:
    """Run (or resume) one training; returns the selection and the log rows."""
    if cfg.arch not in ARCH_CHOICES:
        raise TrainError(f"unknown architecture {cfg.arch!r}; choose from {list(ARCH_CHOICES)}")
    if cfg.preset not in PRESETS:
        raise TrainError(f"unknown preset {cfg.preset!r}; choose from {sorted(PRESETS)}")
    loss_function(cfg.loss)  # an unknown loss fails before anything is built
    t_start = time.perf_counter()
    torch.set_num_threads(max(1, int(cfg.threads)))
    out = Path(cfg.out)
    ckdir = out / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    spec = cfg.spec

    model = build_model(cfg.arch, cfg.spec.architecture, cfg.seed)
    executor = make_executor(cfg.workers, cfg.scheduler)
    try:
        return _train(cfg, log, model, executor, t_start, out, ckdir, spec)
    finally:
        clear_worker_cache("train-geometry")
        clear_worker_cache("train-model")
        executor.close()


def _stored_identity(record: dict) -> dict:
    """A run's identity as written in state.json or training.json (older files held the lr,
    which a resume may change)."""
    return {k: v for k, v in (record.get("identity") or {}).items() if k != "lr"}


def _finished(out: Path, identity: dict, spec: Preset) -> TrainResult | None:
    """The recorded result of this run when it has already run to the end and written its
    submission (same identity, all steps, weights present), with or without its checkpoints
    (they are not committed: a fresh clone of a study has none); else None, also for an
    unreadable training.json, which the finishing tail of the run then writes again."""
    info_path = out / "training.json"
    if not info_path.is_file() or not (out / "weights.safetensors").is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
        if _stored_identity(info) != identity or info.get("steps_done") != spec.steps:
            return None
        sel = info["selection"]
        return TrainResult(out, spec.steps, sel["step"], sel["val_energy_mae_mEh"], 0.0, spec.steps, [])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _train(cfg: TrainConfig, log, model, executor, t_start: float, out: Path, ckdir: Path,
           spec: Preset) -> TrainResult:
    from safetensors.torch import load_file
    from tqdm.auto import tqdm

    train_set, val_set, data_desc = load_data(cfg, model, log=log, executor=executor)
    job = ModelJob(cfg.arch, spec.architecture, cfg.seed, cfg.loss, cfg.weights, cfg.solver)
    if executor.kind != "inline":
        log(f"per-molecule losses on {executor.describe()}")
    opt = Adam(model.parameters(), lr=spec.lr)

    def lr_at(step: int) -> float:
        """Cosine decay from lr to lr/10 over the run (step 1 … steps)."""
        frac = min(step - 1, spec.steps) / max(1, spec.steps)
        return spec.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))

    identity = cfg.identity()
    identity["data"] = {"train_keys": data_desc["train_keys"], "val_keys": data_desc["val_keys"]}
    state_path = ckdir / "state.json"
    rows: list[dict] = []
    best = {"step": -1, "val_energy_mae_mEh": float("inf")}
    start = 0
    resumed = None
    #: the base learning rate of the cosine schedule, from which step on (a resume may lower it)
    lr_changes = [{"from_step": 1, "lr": spec.lr}]
    #: wall time of the earlier invocations of this run, up to their last checkpoint
    wall_before = 0.0
    done = _finished(out, identity, spec)
    if done is not None:  # a rerun of a finished run (a study script resuming) changes nothing
        log(f"{out}: already trained ({spec.steps} steps, selected step {done.best_step}); nothing to do")
        return done
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if _stored_identity(state) != identity:
            raise TrainError(f"{state_path}: checkpoint of a different run (arch/loss/preset/seed/data differ); "
                             "use another --out or delete the folder")
        model.load_state_dict(load_file(str(ckdir / "last.safetensors")), strict=True)
        opt.load_state_tensors(load_file(str(ckdir / "last-optim.safetensors")))
        start = int(state["step"])
        rows = state["rows"]
        best = state["best"]
        resumed = start
        lr_changes = state.get("lr_changes") or lr_changes
        wall_before = float(state.get("wall_s_total", 0.0))
        if lr_changes[-1]["lr"] != spec.lr:
            lr_changes.append({"from_step": start + 1, "lr": spec.lr})
        log(f"resuming {out} from step {start}/{spec.steps}"
            + (f" with base learning rate {spec.lr:g}" if len(lr_changes) > 1 else ""))
    #: each geometry's SCF and CG start where its last solve ended; kept with the checkpoint, so
    #: a resumed run continues exactly as an uninterrupted one
    warm = load_warm_starts(ckdir / "last-warm.safetensors") if resumed is not None else {}
    #: the model that is validated, selected and submitted: the parameter average when the preset
    #: keeps one, else the trained model itself
    average = None
    judged = model
    if spec.ema_decay:
        average = ParameterAverage(model, spec.ema_decay)
        if resumed is not None:
            ema_path = ckdir / "last-ema.safetensors"
            if not ema_path.is_file():
                raise TrainError(f"{ema_path}: missing from the checkpoint of a run with ema_decay "
                                 f"{spec.ema_decay}; it cannot resume exactly, use another --out or delete the folder")
            average.state = load_file(str(ema_path))
        judged = build_model(cfg.arch, spec.architecture, cfg.seed)
        judged.load_state_dict(average.state, strict=True)

    def checkpoint(step: int):
        _save_safetensors(_state_dict(model), ckdir / "last.safetensors")
        _save_safetensors(opt.state_tensors(), ckdir / "last-optim.safetensors")
        save_warm_starts(warm, ckdir / "last-warm.safetensors")
        if average is not None:
            _save_safetensors(average.state, ckdir / "last-ema.safetensors")
        atomic_write_json(state_path, {"identity": identity, "step": step, "rows": rows, "best": best,
                                       "lr_changes": lr_changes,
                                       "wall_s_total": wall_before + time.perf_counter() - t_start})

    def validate(step: int):
        if average is not None:
            judged.load_state_dict(average.state, strict=True)
        outs = run_losses(executor, judged, job, val_set, backward=False, warm=warm)  # E+D terms and metrics
        row = _row(step, "val", outs, opt.lr, time.perf_counter() - t_start)
        rows.append(row)
        mae = row["energy_mae_mEh"] if row["scf_converged_fraction"] == 1.0 else float("inf")
        if mae < best["val_energy_mae_mEh"]:
            best.update(step=step, val_energy_mae_mEh=mae)
            _save_safetensors(_state_dict(judged), ckdir / "best.safetensors")
        return row

    if start == 0 and not any(r["split"] == "val" and r["step"] == 0 for r in rows):
        validate(0)
        checkpoint(0)
    bar = tqdm(total=spec.steps, initial=start, desc=f"train {cfg.arch}-{cfg.loss}", unit="step",
               disable=not cfg.progress, smoothing=0.2)
    try:
        for step in range(start + 1, spec.steps + 1):
            rng = np.random.default_rng([cfg.seed, step])
            idx = np.arange(len(train_set))
            if spec.batch and spec.batch < len(train_set):
                idx = np.sort(rng.choice(len(train_set), size=spec.batch, replace=False))
            opt.lr = lr_at(step)
            opt.zero_grad()
            outs = run_losses(executor, model, job, [train_set[i] for i in idx], backward=True, scale=1.0 / len(idx),
                              warm=warm)
            params = [p for p in model.parameters() if p.grad is not None]
            norm = math.sqrt(sum(float((p.grad * p.grad).sum()) for p in params))
            why = divergence(outs, norm, spec)
            if why is not None:  # nothing of this step is applied; the checkpoint is step - 1's
                raise TrainDiverged(
                    f"{out}: training diverged at step {step}: {why}. Stopped at the last good checkpoint "
                    f"(step {step - 1}); resume from it with a lower learning rate, e.g. the same command with "
                    f"--lr {opt.lr / 10:.3g} (this step's lr was {opt.lr:.3g})")
            if spec.grad_clip and norm > spec.grad_clip:  # clip the global gradient norm
                for p in params:
                    p.grad.mul_(spec.grad_clip / norm)
            opt.step()
            if average is not None:
                average.update(model)
            row = _row(step, "train", outs, opt.lr, time.perf_counter() - t_start)
            row["grad_norm"] = norm
            rows.append(row)
            post = f"loss {row['loss']:.3g}"
            if step % spec.eval_every == 0 or step == spec.steps:
                vrow = validate(step)
                post += f" val MAE {vrow['energy_mae_mEh']:.2f} mEh"
            checkpoint(step)
            bar.set_postfix_str(post)
            bar.update()
            if cfg.stop_after is not None and step >= cfg.stop_after:
                raise KeyboardInterrupt
    finally:
        bar.close()
        if rows:
            write_log(rows, out / "training_log.csv")
            try:
                if cfg.plot:
                        plot_curves(rows, out / "training_curves.png", f"{out.name}: {cfg.arch}, {cfg.loss} loss, "
                                f"preset {cfg.preset}, seed {cfg.seed}")
            except Exception as exc:  # a plotting problem must not lose a training run
                log(f"warning: could not plot the training curves: {exc}")

    if best["step"] < 0 or not (ckdir / "best.safetensors").is_file():
        n_val = sum(1 for r in rows if r["split"] == "val")
        raise TrainError(f"{out}: no validation pass converged: in all {n_val} validations the model SCF failed to "
                         "converge on at least one val geometry, so no model can be selected (see "
                         f"{out / 'training_log.csv'}, column scf_converged_fraction)")
    model.load_state_dict(load_file(str(ckdir / "best.safetensors")), strict=True)
    selection = {"step": best["step"], "val_energy_mae_mEh": best["val_energy_mae_mEh"]}
    write_submission(out, cfg, model, data_desc, selection)
    wall = time.perf_counter() - t_start
    atomic_write_json(out / "training.json", {
        "identity": identity, "preset": dataclasses.asdict(spec), "data": data_desc, "selection": selection,
        "steps_done": spec.steps, "wall_s_this_run": wall, "wall_s_total": wall_before + wall,
        "resumed_from": resumed,
        "solver": solver_counts(rows), "lr_changes": lr_changes,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
    })
    return TrainResult(out, spec.steps, best["step"], best["val_energy_mae_mEh"], wall, resumed, rows)


__all__ = ["ARCH_CHOICES", "GeometryJob", "LOSS_CHOICES", "ModelJob", "PRESETS", "ParameterAverage", "Preset",
           "TrainConfig", "TrainDiverged", "TrainError", "TrainResult", "build_model", "divergence", "load_data",
           "load_warm_starts", "molecule_loss", "molecule_loss_task", "prepare_data", "run_losses",
           "save_warm_starts", "subset_molecules", "train", "write_submission"]
