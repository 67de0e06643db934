"""The multi-run, resumable benchmarks (sweeps, grids, scaling) in ``--smoke`` mode: every run, the CSV, a
rerun that keeps what is done, the tables. How the scripts are run: tests/benchmark_runs.py."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.benchmark_runs import assert_finite, constant, result_values, smoke


def test_garage_leakage(scripts, tmp_path):
    csv = tmp_path / "leakage.csv"
    out = smoke(scripts, "garage_leakage.py", "--out", str(csv))
    assert "dataset leakage" in out  # the summary table
    table = pd.read_csv(csv)
    assert sorted(table["leakage"]) == [0.0, 0.2]
    assert (table["steps"] > 0).all()
    for row in table.to_dict("records"):
        assert_finite(row, constant("KEYS", "garage_leakage.py"))
    seeded = table[table["leakage"] > 0].to_dict("records")[0]
    arms = [f"{arm}_{m}" for arm in ("none", "oversample", "garage") for m in ("recall", "f1")]
    assert_finite(seeded, ["seed_distance_ratio_median", "rare_train_cells", *arms])
    assert all(0 <= seeded[k] <= 1 for k in arms)


def test_scaling(scripts, tmp_path):
    csv, png = tmp_path / "scaling.csv", tmp_path / "scaling.png"
    out = smoke(scripts, "scaling.py", "--out", str(csv), "--plot", str(png))
    table = pd.read_csv(csv)
    assert (table["status"] == "done").all(), table["error"].tolist()
    # each size's training cells (the split keeps a few cells of every type out), more for the larger
    assert len(table) == 2 and table["train_cells"].iloc[0] < table["train_cells"].iloc[1]
    assert table["train_cells"].between(150, 450).all() and (table["steps"] > 0).all()
    for row in table.to_dict("records"):
        assert_finite(row, ["fit_minutes", "loop_minutes", "detection_auc", "peak_rss_gb", "fit_peak_gb"])
        # the training loops' clock within the fit's; the fit's own peak memory within the process's
        assert 0 < row["loop_minutes"] <= row["fit_minutes"] and 0 < row["fit_peak_gb"] <= row["peak_rss_gb"]
    assert result_values(out) == {"configurations": 2.0, "failed": 0.0}
    assert png.stat().st_size > 0
    # a rerun keeps both configurations: nothing is fitted again, the rows stay
    again = smoke(scripts, "scaling.py", "--out", str(csv))
    assert again.count("kept (") == 2
    pd.testing.assert_frame_equal(pd.read_csv(csv), table)
    # the CSV as a Markdown table: a header, its rule, a row per configuration
    lines = smoke(scripts, "scaling.py", "--table", "--out", str(csv)).strip().splitlines()
    assert lines[0].startswith("| data | model | train_cells |") and len(lines) == 2 + len(table)


def test_garage_claim(scripts, tmp_path):
    csv = tmp_path / "claim.csv"
    out = smoke(scripts, "garage_claim.py", "--out", str(csv))
    table = pd.read_csv(csv)
    assert list(table["arm"]) == ["gan", "garage", "lshgan"] and (table["steps"] > 0).all()
    for row in table.to_dict("records"):
        assert_finite(row, constant("KEYS", "garage_claim.py"))
        curve = json.loads(row["curve"])
        assert curve and all(0 <= point["auc"] <= 1 for point in curve)
        assert [p["step"] for p in curve] == sorted(p["step"] for p in curve)
    assert "detection_auc" in out  # the summary
    assert csv.with_suffix(".png").stat().st_size > 0  # the curves
    # Run again: every run is in the CSV already, so none is redone and the rows stay as they were.
    again = smoke(scripts, "garage_claim.py", "--out", str(csv))
    assert again.count("in " + str(csv) + " already") == 3
    pd.testing.assert_frame_equal(pd.read_csv(csv), table)
    summary = smoke(scripts, "garage_claim.py", "--table", "--out", str(csv))
    assert summary.splitlines()[0].startswith("| dataset | arm | seeds | steps |")
    assert [line.split(" | ")[1] for line in summary.splitlines()[2:]] == ["gan", "garage", "lshgan"]


def test_default_sweep(scripts, tmp_path):
    csv, root = tmp_path / "sweep.csv", tmp_path / "sweep"
    smoke(scripts, "default_sweep.py", "--root", str(root), "--out", str(csv))
    table = pd.read_csv(csv)
    pairs = sorted(zip(table["model"], table["variant"], strict=True))
    assert pairs == [("nbvae", "default"), ("nbvae", "lr x3")]
    assert (table["status"] == "done").all()
    assert table["detection_auc"].between(0, 1).all()
    # the variant really moved the knob: three times the model's declared learning rate
    from cellsynth.models.registry import param_spec

    lr = next(p.default for p in param_spec("nbvae") if p.name == "lr")
    row = table[(table["model"] == "nbvae") & (table["variant"] == "lr x3")].iloc[0]
    assert json.loads(row["params"]) == {"lr": pytest.approx(3 * lr)}
    # one benchmark folder per dataset × variant, each with its leaderboard
    assert sorted(p.parent.name for p in root.glob("smoke/*/leaderboard.csv")) == ["default", "lr_x3"]
    # a rerun resumes: every cell is kept, none is fitted again, the rows stay
    mtimes = {p: p.stat().st_mtime for p in root.glob("smoke/*/cells/*/metrics.json")}
    assert mtimes
    smoke(scripts, "default_sweep.py", "--root", str(root), "--out", str(csv))
    assert {p: p.stat().st_mtime for p in mtimes} == mtimes
    pd.testing.assert_frame_equal(pd.read_csv(csv), table)
    summary = smoke(scripts, "default_sweep.py", "--table", "--out", str(csv)).splitlines()
    assert summary[0].startswith("| model | variant | smoke | mean |")
    assert sum("**kept**" in line for line in summary) == 1  # one variant kept per model


def test_default_sweep_keeps_no_change_that_hurts_a_dataset(scripts, monkeypatch):
    monkeypatch.syspath_prepend(str(scripts))
    from default_sweep import decide

    rows = [
        ("a", "default", 0.90), ("b", "default", 0.80),
        ("a", "lr x3", 0.70), ("b", "lr x3", 0.85),  # best mean, but 0.05 worse on b
        ("a", "patience x3", 0.86), ("b", "patience x3", 0.805),  # better mean, 0.005 worse on b
        ("a", "lr /3", 0.895), ("b", "lr /3", 0.80),  # better everywhere, by less than the tolerance
        ("a", "tiny", 0.10),  # best of all, on one dataset only
    ]  # fmt: skip
    table = pd.DataFrame(
        [
            {"dataset": d, "model": "m", "variant": v, "detection_auc": auc, "status": "done"}
            for d, v, auc in rows
        ]
    )
    verdict = decide(table, tolerance=0.01).set_index("variant")
    kept = {"default": False, "lr x3": False, "patience x3": True, "lr /3": False, "tiny": False}
    assert verdict["kept"].to_dict() == kept
    assert verdict.loc["lr x3", "mean_auc"] == pytest.approx(0.775)
    assert verdict.loc["tiny", "datasets"] == 1 and verdict.loc["tiny", "of"] == 2
    # a larger tolerance lets the best mean through, despite its loss on b
    assert decide(table, tolerance=0.06).set_index("variant")["kept"]["lr x3"]
    # no variant good enough: the default stays
    assert decide(table[table["variant"].isin(["default", "lr /3"])], 0.01).set_index("variant")["kept"][
        "default"
    ]
