"""What made a result: the harness's scoring code and the evaluation settings, as hashes.

A cached molecule row and a summary are valid only for the code and the settings that made
them (PROTOCOL §3, ranking). Two things are hashed:

* `scoring_sha256`: the sha256 of every source file under ``harness/`` that can change a
  number, i.e. all of them except the presentation, training and command-line modules in
  `NOT_SCORING` (so a new module counts as scoring code until it is listed there);
* `EvaluationSettings.sha256`: the model-SCF, grid, density-fitting, TDDFT and limit-free
  settings of an evaluation, as canonical JSON.

The leaderboard recomputes both and marks a result stale when either differs.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import harness

#: Paths under harness/ (relative, '/'-separated; a trailing '/' is a folder) that cannot change
#: a score: the command line, the leaderboard and reports, the orchestration of an evaluation
#: (`harness.evaluate`: processes, cache, files; the per-molecule scoring is `harness.pipeline`),
#: the result files and their schema, the sandbox's mounts, this hash itself, training,
#: reference *building*, the C allocator's policy.
NOT_SCORING: tuple[str, ...] = (
    "cli/", "leaderboard/", "reproduction.py", "train.py", "losses.py", "grassmann.py",
    "evaluate.py", "executor.py", "results.py", "summary_schema.py", "sandbox.py", "provenance.py",
    "reference/build.py", "reference/show.py", "extras.py", "io.py", "allocator.py",
)

HARNESS_DIR = Path(harness.__file__).resolve().parent


def _is_scoring(rel: str) -> bool:
    return not any(rel.startswith(p) if p.endswith("/") else rel == p for p in NOT_SCORING)


def scoring_files(root: Path = HARNESS_DIR) -> list[Path]:
    """The scoring source files, sorted by their path relative to ``root``."""
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if "__pycache__" not in rel and _is_scoring(rel):
            out.append(p)
    return out


@functools.lru_cache(maxsize=4)
def scoring_sha256(root: Path = HARNESS_DIR) -> str:
    """sha256 over (relative path, content) of `scoring_files`; hex."""
    h = hashlib.sha256()
    for p in scoring_files(root):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


@dataclass(frozen=True)
class EvaluationSettings:
    """Settings of one evaluation that can change its numbers (the reference's own settings
    are pinned by the manifest's sha256). ``excitations`` is None when metric 6 is skipped."""

    max_cycle: int = 100
    conv_tol_energy_Eh: float = 1e-9
    conv_tol_grad: float = 1e-5
    density_fitting_scf: bool = True
    auxbasis: str = "def2-universal-jfit"
    init_guess: str = "minao"
    energy_exact_j: bool = True
    excitations: dict | None = field(default=None)

    def to_dict(self) -> dict:
        return asdict(self)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


__all__ = ["EvaluationSettings", "HARNESS_DIR", "NOT_SCORING", "scoring_files", "scoring_sha256"]
