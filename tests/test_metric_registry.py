"""The metric registry: one definition per metric drives aggregation, summary, CSV and tables."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.metric_registry import BY_KEY, LEADERBOARD_METRICS, METRICS, PRIMARY, aggregate, get_metric
from harness.metrics import ROW_FIELDS
from harness.results import CSV_COLUMNS, render_report
from harness.status import STATUSES, Status


def _row(key, status="ok", **values):
    row = {f: None for f in ROW_FIELDS}
    row.update(key=key, status=status, **values)
    return row


FULL = dict(e_rho_mEh=0.5, dipole_error_debye=0.1, density_l2=0.01, scf_cycles_model_start=3,
            scf_cycles_minao=10, scf_iter_reduction=0.7)


def test_aggregate_counts_every_status_honestly():
    rows = [
        _row("A", energy_error_mEh=-2.0, excitation_mae_eV=0.2, **FULL),
        _row("B", "excitations_failed", energy_error_mEh=4.0, **{**FULL, "e_rho_mEh": 1.5}),
        _row("C", "not_converged", energy_error_mEh=-9.0, excitation_mae_eV=0.4),  # no metrics from it
        _row("D", "crashed"),
        _row("E", "timeout"),
    ]
    agg = aggregate(rows)
    assert agg["energy_mae_mEh"] == pytest.approx((2 + 4) / 2)  # over the molecules with metrics 1-5
    assert agg["e_rho_mean_mEh"] == pytest.approx((0.5 + 1.5) / 2)
    assert agg["excitation_mae_eV"] == pytest.approx(0.2)  # status ok only
    assert agg["scf_iter_ratio_pooled"] == pytest.approx(6 / 20)
    assert agg["converged_fraction"] == pytest.approx(2 / 5)


def test_a_missing_metric_value_is_never_dropped_from_a_mean():
    rows = [_row("A", energy_error_mEh=1.0, **FULL), _row("B", energy_error_mEh=3.0, **{**FULL, "e_rho_mEh": None})]
    agg = aggregate(rows)
    assert agg["energy_mae_mEh"] == pytest.approx(2.0)
    assert agg["e_rho_mean_mEh"] is None  # one covered molecule lacks it: no silent mean over the other
    rows[1]["e_rho_mEh"] = float("nan")
    assert aggregate(rows)["e_rho_mean_mEh"] is None


def test_aggregate_edge_cases_and_unknown_status():
    agg = aggregate([])
    assert agg["energy_mae_mEh"] is None and agg["converged_fraction"] is None
    assert aggregate([_row("X", "functional_error")])["converged_fraction"] == 0.0
    with pytest.raises(HarnessError, match="unknown status 'failed'"):
        aggregate([_row("Y", status="failed")])


def test_registry_is_the_one_table():
    assert PRIMARY.key == "energy_mae_mEh" and PRIMARY.better == "lower"
    assert {m.key for m in LEADERBOARD_METRICS} <= set(BY_KEY)
    for m in METRICS:  # every aggregated column exists in the per-molecule CSV
        cols = m.column.split("/") if m.aggregation == "pooled_ratio" else [m.column]
        assert all(c in CSV_COLUMNS for c in cols), m.key
    with pytest.raises(HarnessError, match="did you mean 'energy_mae_mEh'"):
        get_metric("energy_mae_meh")
    assert set(STATUSES) == {s.value for s in Status}
    # the printed report takes its titles from the registry
    text = render_report({"submission": "x", "split": "tiny", "n_molecules": 0}, [])
    assert all(m.title in text for m in METRICS)


def test_sort_key_follows_direction():
    red = BY_KEY["scf_iter_reduction_mean"]
    assert sorted([0.1, 0.5, None], key=red.sort_key) == [0.5, 0.1, None]
    assert sorted([0.1, 0.5, None], key=PRIMARY.sort_key) == [0.1, 0.5, None]
