"""The leaderboard: collect ``results/<name>/<split>/summary.json``, validate, rank, render.

``harness leaderboard publish`` runs four steps, one module each:

1. `harness.leaderboard.collect`: `collect` finds every ``summary.json`` (``summary_format``
   2) under the results folder and `validate_summary` checks it against the current
   repository: protocol, reference manifest, submission files, the harness's scoring code and
   the evaluation settings (else **stale**), a well-formed and self-consistent summary whose
   ``per_molecule.csv`` is the one written with it (``csv_sha256``; else **refused**). A stale
   or refused summary becomes a `Refusal` with a one-line reason naming the file.
2. `rank` puts, per split, the complete results first, ranked by the registry's primary
   metric (`harness.metric_registry.PRIMARY`), and the partial ones (failed molecules or a
   subset) below them, unranked, with their coverage.
3. `harness.leaderboard.markdown` (README.md, leaderboard.csv) and `harness.leaderboard.html`
   (index.html with SVG charts; CSS, JS and templates in ``assets/``) render the board. They
   are pure functions of their inputs (no clock, host name or absolute path), so the same
   results give byte-identical files. Their metric columns come from
   `harness.metric_registry.LEADERBOARD_METRICS` (`harness.leaderboard.columns`).
4. `publish` writes ``README.md``, ``leaderboard.csv`` and ``index.html`` atomically.

The column tuples (`TABLE_COLUMNS`, `METRIC_COLUMNS`, `CSV_COLUMNS`) and key tuples
(`REQUIRED_KEYS`, `NULLABLE_METRICS`) are computed from the registry when read, never kept
by hand.

Units: as in the registry's metric keys (energies in mEh, dipoles in Debye, the L2 density
error in atomic units, excitation energies in eV), wall times in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.io import atomic_path
from harness.leaderboard.collect import (
    NO_SCORING_CODE,
    PER_MOLECULE_NAME,
    PROVENANCE_KEYS,
    REFUSED,
    SANDBOXES,
    SPLIT_ORDER,
    STALE,
    SUMMARY_FORMAT,
    SUMMARY_NAME,
    Collection,
    Entry,
    LeaderboardError,
    ReferenceInfo,
    Refusal,
    bundled_reference,
    collect,
    current_settings,
    nullable_metrics,
    rank,
    required_keys,
    validate_summary,
)
from harness.leaderboard.columns import (
    DAGGER,
    DOUBLE_DAGGER,
    MISSING,
    NOT_RUN,
    PARTIAL_MARK,
    UNRANKED,
    Column,
    format_value,
    metric_columns,
    table_columns,
)
from harness.leaderboard.html import bar_chart_svg, nice_ticks, render_html, scatter_svg
from harness.leaderboard.markdown import csv_columns, render_csv, render_markdown

#: Outputs of `publish`, inside the ``--out`` folder.
README_NAME = "README.md"
CSV_NAME = "leaderboard.csv"
HTML_NAME = "index.html"

_COMPUTED: dict[str, Callable[[], Any]] = {
    "TABLE_COLUMNS": table_columns,
    "METRIC_COLUMNS": metric_columns,
    "CSV_COLUMNS": csv_columns,
    "REQUIRED_KEYS": required_keys,
    "NULLABLE_METRICS": nullable_metrics,
}


def __getattr__(name: str) -> Any:
    """`TABLE_COLUMNS`, `METRIC_COLUMNS`, `CSV_COLUMNS`, `REQUIRED_KEYS`, `NULLABLE_METRICS`:
    computed from the metric registry at each access."""
    if name in _COMPUTED:
        return _COMPUTED[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class PublishResult:
    """What `publish` did: the board (split -> ranked then partial entries), the refusals and
    the files written."""

    board: dict[str, list[Entry]]
    refusals: list[Refusal]
    files: list[Path]

    @property
    def ranked(self) -> dict[str, list[Entry]]:
        """Split -> ranked (complete) entries, best first; splits without one are left out."""
        out = {s: [e for e in rows if e.ranked] for s, rows in self.board.items()}
        return {s: rows for s, rows in out.items() if rows}

    @property
    def partial(self) -> dict[str, list[Entry]]:
        """Split -> partial (unranked) entries; splits without one are left out."""
        out = {s: [e for e in rows if not e.ranked] for s, rows in self.board.items()}
        return {s: rows for s, rows in out.items() if rows}

    @property
    def n_ranked(self) -> int:
        return sum(len(v) for v in self.ranked.values())

    @property
    def n_partial(self) -> int:
        return sum(len(v) for v in self.partial.values())


def _write_bytes_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))


def publish(results_dir: str | Path = "results", submissions_dir: str | Path = "submissions",
            out_dir: str | Path = "leaderboard",
            writer: Callable[[Path, str], None] = _write_bytes_atomic) -> PublishResult:
    """Collect, validate and rank every summary; write README.md, leaderboard.csv and
    index.html to ``out_dir`` (each atomically: a temporary file, then ``os.replace``).

    Raises `LeaderboardError` when it cannot run (see `collect`, `bundled_reference`).
    """
    reference = bundled_reference()
    found = collect(results_dir, submissions_dir, reference)
    board = rank(found.entries)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LeaderboardError(f"--out {out_dir} exists and is not a folder")
    texts = {
        README_NAME: render_markdown(board, found.refusals, reference),
        CSV_NAME: render_csv(board),
        HTML_NAME: render_html(board, found.refusals, reference),
    }
    files = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            writer(out_dir / name, text)
            files.append(out_dir / name)
    except OSError as exc:
        raise LeaderboardError(f"cannot write to {out_dir}: {exc}") from exc
    return PublishResult(board=board, refusals=found.refusals, files=files)


__all__ = [
    "CSV_COLUMNS", "CSV_NAME", "Collection", "Column", "DAGGER", "DOUBLE_DAGGER", "Entry", "HTML_NAME",
    "LeaderboardError", "METRIC_COLUMNS", "MISSING", "NOT_RUN", "NO_SCORING_CODE", "NULLABLE_METRICS",
    "PARTIAL_MARK", "PER_MOLECULE_NAME", "PROVENANCE_KEYS", "PublishResult", "README_NAME", "REFUSED",
    "REQUIRED_KEYS", "ReferenceInfo", "Refusal", "SANDBOXES", "SPLIT_ORDER", "STALE", "SUMMARY_FORMAT",
    "SUMMARY_NAME", "TABLE_COLUMNS", "UNRANKED", "bar_chart_svg", "bundled_reference", "collect",
    "csv_columns", "current_settings", "format_value", "metric_columns", "nice_ticks", "publish", "rank",
    "render_csv", "render_html", "render_markdown", "required_keys", "scatter_svg", "table_columns",
    "validate_summary",
]
