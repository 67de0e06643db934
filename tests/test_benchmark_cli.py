"""`cellsynth benchmark`: a complete leaderboard, resuming after a kill, failed cells, refused input.

The grids are tiny (2-epoch fits of small networks on 284 simulated cells, a few metric families); every
cell still runs in its own process, as in real use.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cellsynth.cli import app
from cellsynth.data.datasets import simulate

runner = CliRunner()
THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
ENV = {**os.environ, **dict.fromkeys(THREADS, "1")}
TINY = ["g_hidden=[32]", "d_hidden=[32,16]", "c_hidden=[16,8]", "critic_components=16", "init_variation=8"]
TINY += ["epochs=2", "val_every_steps=5"]
PARAMS = [x for m in ("cgan", "garage") for p in TINY for x in ("--param", f"{m}.{p}")]
PARAMS += ["--param", "garage.seed_method=random"]  # no graph attention network to train
FAST = ["--setting", "n_jobs=1", "--setting", "detection_trees=10", "--setting", "per_type_trees=10"]
FAST += ["--setting", "groundgan_trees=10", "--setting", "detection_folds=2", "--setting", "n_pcs=10"]
FAST += ["--setting", "sliced_projections=20"]
FAST += ["--family", "distribution", "--family", "detection", "--family", "privacy"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env=ENV)


def assert_user_error(result, *words):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory) -> Path:
    """284 cells, 60 genes, four types; ``rare`` holds 5% of the cells."""
    path = tmp_path_factory.mktemp("data") / "cells.h5ad"
    simulate({"alpha": 120, "beta": 90, "gamma": 60, "rare": 14}, n_genes=60, seed=1).write_h5ad(path)
    return path


def grid_args(data_path: Path, out: Path) -> list[str]:
    return [
        "benchmark", str(data_path), "--label-key", "cell_type", "--models", "cgan,garage", "--seeds", "2",
        "--max-minutes-per-model", "1", *PARAMS, *FAST, "--out", str(out),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def resumed(data_path, tmp_path_factory):
    """A 2 × 2 grid stopped by SIGTERM once its first cell has finished, then rerun with the same command.

    Returns ``(out, (return code, stderr, leaderboard.md) of the first run, the first cell's result (path,
    mtime), the rerun's result)``.
    """
    out = tmp_path_factory.mktemp("bench") / "grid"
    command = [sys.executable, "-m", "cellsynth.cli", *grid_args(data_path, out)]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("cells/*/result.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    stopped = (proc.returncode, stderr, (out / "leaderboard.md").read_text())
    (first,) = out.glob("cells/*/result.json")
    mtime = first.stat().st_mtime_ns
    rerun = invoke(*grid_args(data_path, out))
    return out, stopped, (first, mtime), rerun


def test_sigterm_stops_the_grid_with_130_and_says_how_to_resume(resumed):
    out, (code, stderr, md), _, _ = resumed
    assert code == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert "interrupted after 1 of 4 cells" in last and "rerun: cellsynth benchmark" in last, last
    assert f"--out {out}" in last
    # the leaderboard of the stopped run shows the finished cell and what is left to do
    assert "| cgan | 1/2 |" in md and "| garage | 0/2 |" in md
    assert "- unfinished cgan seed 1: rerun the same command" in md


def test_resume_keeps_finished_cells_and_completes_the_leaderboard(resumed):
    out, _, (first, mtime), rerun = resumed
    assert rerun.exit_code == 0, rerun.output
    assert first.stat().st_mtime_ns == mtime  # not run again
    assert "cgan seed 0: kept" in rerun.output
    assert rerun.output.count(": done") == 3
    assert len(list(out.glob("cells/*/result.json"))) == 4


def test_leaderboard_has_every_cell_the_control_and_the_best_marked(resumed):
    out = resumed[0]
    csv = pd.read_csv(out / "leaderboard.csv")
    cells = set(zip(csv.model, csv.seed, strict=True))
    assert len(csv) == 4 and cells == {("cgan", 0), ("cgan", 1), ("garage", 0), ("garage", 1)}
    assert (csv.status == "done").all()
    for column in ("detection_auc", "mmd", "dcr_ratio", "augment_rare_f1_gain", "fit_seconds", "peak_mb"):
        assert csv[column].notna().all(), column
    assert (csv.peak_mb > 50).all() and (csv.stop_reason == "epochs").all()
    assert csv.control_detection_auc.notna().all()

    md = (out / "leaderboard.md").read_text()
    assert "cellsynth benchmark" in md and f"--out {out}" in md  # the command at the top
    rows = [ln for ln in md.splitlines() if ln.startswith("| ")]
    names = [r.split("|")[1].strip() for r in rows[1:]]
    assert names == ["cgan", "garage", "real vs real (control)"]
    header = [c.strip() for c in rows[0].split("|")[1:-1]]
    body = {n: [c.strip() for c in r.split("|")[1:-1]] for n, r in zip(names, rows[1:], strict=True)}
    # each metric column: the bold entry is the model whose mean is best by the metric's direction
    means = csv.groupby("model")[["detection_auc", "mmd"]].mean()
    for metric, best in (
        ("detection_auc", (means.detection_auc - 0.5).abs().idxmin()),
        ("mmd", means.mmd.idxmin()),
    ):
        j = next(i for i, h in enumerate(header) if h.startswith(metric + " "))
        bold = [n for n in ("cgan", "garage") if body[n][j].startswith("**")]
        assert bold == [best], (metric, body)
        assert not body["real vs real (control)"][j].startswith("**")

    page = (out / "leaderboard.html").read_text()
    assert page.count("class='best'") >= len(header) - 4  # one or more per metric column
    assert "real vs real (control)" in page and "<td>cgan</td>" in page and "<td>garage</td>" in page
    for row in csv.itertuples():
        assert (out / row.cell / "model" / "config.json").exists() and (
            out / row.cell / "synthetic.h5ad"
        ).exists()
        # each model's report (of its first seed), linked from the page
        if row.seed == 0:
            assert (out / row.report).stat().st_size > 10_000 and f"href='{row.report}'" in page
        else:
            assert not (out / row.cell / "report.html").exists() and pd.isna(row.report)


def test_other_data_in_the_same_out_is_refused(resumed, tmp_path):
    other = tmp_path / "other.h5ad"
    simulate({"alpha": 120, "beta": 90, "gamma": 60, "rare": 14}, n_genes=60, seed=2).write_h5ad(other)
    args = grid_args(other, resumed[0])
    result = invoke(*args)
    assert_user_error(result, "other data", "--out")


def test_a_failing_model_is_recorded_and_the_others_complete(data_path, tmp_path):
    out = tmp_path / "b"
    # a divergence limit every loss exceeds, and no rollback: garage's training raises at its first step
    failing = ["--param", "garage.divergence_limit=1e-9", "--param", "garage.max_rollbacks=0"]
    result = invoke(
        "benchmark", data_path, "--label-key", "cell_type", "--models", "garage,cgan", "--seeds", "1",
        "--max-minutes-per-model", "1", *PARAMS, *failing, *FAST, "--reports", "none", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    csv = pd.read_csv(out / "leaderboard.csv").set_index("model")
    assert csv.loc["garage", "status"] == "failed" and "diverged" in csv.loc["garage", "error"]
    assert "\n" not in csv.loc["garage", "error"]
    assert csv.loc["cgan", "status"] == "done" and math.isfinite(csv.loc["cgan", "detection_auc"])
    md = (out / "leaderboard.md").read_text()
    assert "- failed garage seed 0: training diverged" in md
    assert "| garage | 0/1 |" in md
    assert not list(out.glob("cells/*/report.html"))  # --reports none


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--models", "cgan,nosuch"], ["unknown model 'nosuch'"]),
        (["--models", "cgan,,garage"], ["--models expects"]),
        (["--models", "cgan,cgan"], ["more than once"]),
        (["--label-key", "celltype"], ["--label-key", "celltype"]),
        (["--condition-key", "donor"], ["--condition-key", "donor"]),
        (["--param", "cgan.nosuch=1"], ["unknown parameter 'nosuch'", "cgan"]),
        (["--param", "nosuch.epochs=1"], ["unknown model 'nosuch'"]),
        (["--param", "epochs=1"], ["MODEL.KEY=VALUE", "got epochs=", "(e.g. cgan.epochs)"]),
        (["--param", "garage.epochs=1"], ["garage is not among --models"]),
        (["--param", "cgan.max_minutes=1"], ["--max-minutes-per-model"]),
        (["--param", "cgan.epochs=0"], ["'epochs'", "cgan"]),
        (["--seeds", "0"], ["--seeds"]),
        (["--draws", "0"], ["--draws"]),
        (["--family", "nosuch"], ["--family"]),
    ],
)
def test_bad_requests_are_one_line_and_exit_2_before_anything_runs(data_path, tmp_path, args, words):
    out = tmp_path / "bench"
    result = invoke("benchmark", data_path, "--models", "cgan", "--out", out, *args)
    assert_user_error(result, *words)
    assert not (out / "cells").exists()


def test_augmentation_plan_brings_rare_types_to_the_median_size():
    from cellsynth.benchmark import augmentation_plan

    labels = np.repeat(["a", "b", "c", "r"], [100, 80, 60, 5])
    assert augmentation_plan(labels) == {"r": 65}  # median of 5, 60, 80, 100 is 70


def test_augmentation_test_rewards_cells_of_the_rare_type(data_path):
    import anndata as ad

    from cellsynth.benchmark import augmentation_test
    from cellsynth.data.split import split_by_type

    cells = ad.read_h5ad(data_path)
    train, test = split_by_type(cells, label_key="cell_type", seed=0)
    # real rare cells of another draw stand in for a perfect generator; other types' cells are ignored
    more = simulate({"alpha": 120, "beta": 90, "gamma": 60, "rare": 200}, n_genes=60, seed=1)
    first = augmentation_test(train, test, more, label_key="cell_type", seed=0)
    again = augmentation_test(train, test, more, label_key="cell_type", seed=0)
    assert first == again
    assert first["augment_rare_types"] == ["rare"] and first["augment_added"] == {"rare": 200}
    assert first["augment_rare_recall"] >= first["augment_rare_recall_plain"]
    assert first["augment_rare_recall_gain"] == pytest.approx(
        first["augment_rare_recall"] - first["augment_rare_recall_plain"]
    )
    plain = augmentation_test(train, test, None, label_key="cell_type", seed=0)
    assert plain["augment_rare_recall_plain"] == first["augment_rare_recall_plain"]
    assert math.isnan(plain["augment_rare_f1_gain"]) and plain["augment_note"]


def test_the_budget_not_a_models_epoch_default_ends_each_fit(data_path, tmp_path):
    """Every model gets the same wall clock: its default epoch cap (300) is lifted, the budget stops it."""
    import json

    from cellsynth.benchmark.grid import EPOCHS

    out = tmp_path / "b"
    tiny = [x for p in TINY if not p.startswith("epochs=") for x in ("--param", f"cgan.{p}")]
    result = invoke(
        "benchmark", data_path, "--label-key", "cell_type", "--models", "cgan", "--seeds", "1",
        "--max-minutes-per-model", "0.1", *tiny, *FAST, "--reports", "none", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (job,) = out.glob("cells/*/job.json")
    assert json.loads(job.read_text())["params"]["epochs"] == EPOCHS
    csv = pd.read_csv(out / "leaderboard.csv")
    assert csv.loc[0, "stop_reason"] in ("time budget", "early stopping")


def test_draws_average_the_detection_auc_over_further_synthetic_sets(data_path, tmp_path):
    """``--draws 3``: the cell's own set and two more, each scored by the detector; their mean is reported."""
    import json

    out = tmp_path / "b"
    result = invoke(
        "benchmark", data_path, "--label-key", "cell_type", "--models", "cgan", "--seeds", "1",
        "--max-minutes-per-model", "1", *PARAMS[:2 * len(TINY)], *FAST, "--reports", "none", "--draws", "3",
        "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (record,) = out.glob("cells/*/result.json")
    record = json.loads(record.read_text())
    per_draw = record["detection_auc_per_draw"]
    assert len(per_draw) == 3 and per_draw[0] == record["metrics"]["detection_auc"]
    assert len(set(per_draw)) > 1  # other cells, other scores
    assert record["metrics"]["detection_auc_draws"] == pytest.approx(np.mean(per_draw))
    csv = pd.read_csv(out / "leaderboard.csv")
    assert csv.loc[0, "detection_auc_draws"] == pytest.approx(np.mean(per_draw))
    assert "detection_auc_draws" in (out / "leaderboard.md").read_text()


def test_one_draw_keeps_a_cells_key():
    """Cells of one draw hash as they did before ``draws`` existed (an earlier --out resumes them)."""
    import hashlib
    import json
    from dataclasses import asdict

    from cellsynth._io import jsonable
    from cellsynth.benchmark.layout import CellJob

    job = CellJob("cgan", 0, {"epochs": 2}, "cell_type", split="abc")
    before = {k: v for k, v in asdict(job).items() if k not in ("device", "report", "directory", "draws")}
    text = json.dumps(jsonable(before), sort_keys=True, default=str)
    assert job.key() == hashlib.sha256(text.encode()).hexdigest()[:12]
    job.draws = 3
    assert job.key() != hashlib.sha256(text.encode()).hexdigest()[:12]
