"""The HTML report: one self-contained file whose sections show what the evaluation computed.

The report is written from the real :func:`cellsynth.evaluate` output on simulated cells; the
synthetic set is an independent real sample with two types' labels swapped, so that the per-type
metrics of those two types are bad and the others good.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cellsynth.metrics import evaluate, overall_verdict
from cellsynth.metrics.verdicts import LEVEL_RANK, check_level
from cellsynth.report import write_report
from cellsynth.report.tables import fmt

TYPES = {"alpha": 260, "beta": 180, "gamma": 110, "delta": 30, "rare": 12}
FAST = {
    "max_cells_ot": 300,
    "max_cells_mmd": 300,
    "detection_trees": 50,
    "per_type_trees": 20,
    "groundgan_trees": 50,
    "n_jobs": 1,
}
PNG = "data:image/png;base64,"
# one figure per section, the training curves only with a history
FIGURES = {
    "summary": 0,
    "umap": 1,
    "types-umap": 1,
    "genes": 1,
    "correlation": 1,
    "library": 1,
    "properties": 1,
    "per-type": 1,
    "training": 1,
    "settings": 0,
}
HISTORY = [
    {
        "epoch": e,
        "d_loss": 1.3 - 0.01 * e,
        "g_loss": 0.7 + 0.01 * e,
        "class_loss_real": 1.0 / e,
        **({"val_mmd": 0.1 / e} if e % 2 == 0 else {}),
    }
    for e in range(1, 21)
]


@pytest.fixture(scope="module")
def sets():
    """REAL, SYNTH and TRAIN: three disjoint draws of one simulation; SYNTH has alpha and gamma swapped."""
    from cellsynth.data.datasets import simulate

    adata = simulate({k: 3 * v for k, v in TYPES.items()}, n_genes=150, seed=11)
    part = np.random.default_rng(0).permutation(adata.n_obs) % 3
    real, synth, train = (adata[part == k].copy() for k in range(3))
    labels = synth.obs["cell_type"].astype(str)
    synth.obs["cell_type"] = labels.replace({"alpha": "gamma", "gamma": "alpha"}).astype("category")
    return real, synth, train


@pytest.fixture(scope="module")
def evaluation(sets):
    real, synth, train = sets
    return evaluate(real, synth, label_key="cell_type", train=train, settings=FAST, return_context=True)


@pytest.fixture(scope="module")
def report_with_history(evaluation, tmp_path_factory) -> Path:
    metrics, ctx = evaluation
    path = tmp_path_factory.mktemp("report") / "sub" / "report.html"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = write_report(path, metrics, ctx, history=HISTORY, umap_cap=300)
    assert out == path
    assert not [w for w in caught if "could not be drawn" in str(w.message)]
    return path


def sections(html: str) -> dict[str, str]:
    """``{section id: its HTML}``."""
    return dict(re.findall(r'<section id="([^"]+)"[^>]*>(.*?)</section>', html, flags=re.S))


def table_row(html: str, first_cell: str) -> str:
    """The one table row whose first cell holds ``first_cell``."""
    rows = re.findall(rf"<tr><t[hd]>{re.escape(first_cell)}.*?</tr>", html, flags=re.S)
    assert len(rows) == 1, (first_cell, len(rows))
    return rows[0]


def test_report_is_one_self_contained_html_document(report_with_history):
    html = report_with_history.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("<html") == 1 and html.rstrip().endswith("</html>")
    assert html.count("<body>") == 1 and html.count("</body>") == 1
    # nothing loaded from elsewhere: no scripts, no external sources or style sheets
    assert "<script" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == sum(FIGURES.values())
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    # no temporary file left beside the report
    assert [p.name for p in report_with_history.parent.iterdir()] == ["report.html"]


def test_each_section_draws_its_figure(report_with_history):
    html = report_with_history.read_text(encoding="utf-8")
    parts = sections(html)
    assert {sid: body.count(PNG) for sid, body in parts.items() if sid != "verdict"} == FIGURES
    for sid in FIGURES:  # the navigation links every section
        assert f'<a href="#{sid}">' in html
    assert "could not be drawn" not in html
    # the UMAP subsample is recorded, with the numbers of cells actually drawn
    assert "at most 300 per side" in parts["umap"] and "300 of " in parts["umap"]


def test_header_says_what_was_compared(report_with_history, evaluation):
    html = report_with_history.read_text(encoding="utf-8")
    header = html[html.index("<header>") : html.index("</header>")]
    _, ctx = evaluation
    assert f"<dd>{len(ctx.real.X):,} cells · 5 types</dd>" in header
    assert f"<dd>{len(ctx.synth.X):,} cells · 5 types</dd>" in header
    assert f"<dd>{len(ctx.train.X):,} cells (control and privacy)</dd>" in header
    assert "<dd>real: counts, synth: counts, train: counts</dd>" in header


def test_summary_prints_each_metric_with_its_value_control_and_verdict(report_with_history, evaluation):
    metrics, _ = evaluation
    summary = sections(report_with_history.read_text(encoding="utf-8"))["summary"]
    table = metrics.table()
    assert len(table) == len(metrics.overall) >= 20
    for rec in table.itertuples(index=False):
        row = table_row(summary, f"<code>{rec.metric}</code>")
        cells = re.findall(r'<td class="num">(.*?)</td>', row)
        assert cells == [fmt(rec.value), fmt(rec.control)], rec.metric
        assert f'<span class="badge {rec.level}">{rec.verdict}</span>' in row, rec.metric
    # the swapped labels are caught against the control, and the privacy checks pass
    assert table.set_index("metric").loc["trts_accuracy", "verdict"] == "worse than real data"
    assert '<span class="badge good">no sign of copying</span>' in summary
    # families in their order, each under its heading
    heads = re.findall(r'<tr class="family"><th colspan="5">(\w+):', summary)
    assert heads == ["Distribution", "Detection", "Genes", "Properties", "Biology", "Privacy"]


def test_per_type_table_has_a_row_per_type_with_its_values(report_with_history, evaluation):
    metrics, _ = evaluation
    section = sections(report_with_history.read_text(encoding="utf-8"))["per-type"]
    per_type = metrics.per_type
    head = re.findall(r"<th>(\w+)</th>", section[section.index("<thead>") : section.index("</thead>")])
    # each per-type control right after its metric
    assert head.index("detection_auc_control") == head.index("detection_auc") + 1
    assert head.index("trts_accuracy_control") == head.index("trts_accuracy") + 1
    for t in TYPES:
        cells = re.findall(r'<td class="([^"]*)">(.*?)</td>', table_row(section, t))
        assert len(cells) == len(head) - 1
        for column, (cls, text) in zip(head[1:], cells, strict=True):
            value = per_type.loc[t, column]
            assert text == fmt(value, integer=column.startswith("n_")), (t, column)
            level = check_level(column, value)
            assert cls == "num" + (f" {level}" if level in ("good", "bad") else ""), (t, column)
    # the two swapped types are told apart from their real counterparts; an intact one is not
    for t in ("alpha", "gamma"):
        assert per_type.loc[t, "detection_auc"] > 0.9
    assert per_type.loc["beta", "detection_auc"] < 0.6


def test_training_curves_only_with_history(report_with_history, copies_report):
    caption = sections(report_with_history.read_text(encoding="utf-8"))["training"]
    assert caption.count(PNG) == 1 and "20 epochs." in caption
    for key in ("d_loss", "g_loss", "class_loss_real"):
        assert f"<code>{key}</code>" in caption
    assert "the star marks the weights that were kept" in caption

    html = copies_report.read_text(encoding="utf-8")
    without = sections(html)
    assert "training" not in without and '<a href="#training">' not in html
    assert sum(b.count(PNG) for b in without.values()) == sum(FIGURES.values()) - 1
    assert "at most 200 per side" in without["umap"]


def test_history_without_curves_gets_a_note():
    from cellsynth.report.sections import training_section

    section = training_section([{"epoch": 1}, {"epoch": 2, "val_mmd": float("nan")}])
    assert section.id == "training"
    assert PNG not in section.html and "recorded no losses or validation score" in section.html
    only_mmd = training_section([{"epoch": 1, "val_mmd": 0.2}, {"epoch": 2, "val_mmd": 0.1}])
    assert only_mmd.html.count(PNG) == 1 and "2 epochs. Validation: the MMD" in only_mmd.html


def test_without_counts_the_sum_of_log_values_is_shown(sets, tmp_path):
    import scanpy as sc

    real, synth, _ = sets
    logged = []
    for part in (real, synth):
        part = part.copy()
        sc.pp.normalize_total(part, target_sum=1e4)
        sc.pp.log1p(part)
        logged.append(part)
    metrics, ctx = evaluate(*logged, label_key="cell_type", families=["genes"], return_context=True)
    html = write_report(tmp_path / "r.html", metrics, ctx, umap_cap=200).read_text(encoding="utf-8")
    library = sections(html)["library"]
    assert library.count(PNG) == 1 and "sum of the log-normalised values" in library
    assert "Training cells" not in html and "<dd>real: log1p, synth: log1p</dd>" in html
    # without TRAIN there is no control: the detection-free verdict says so
    assert 'class="verdict none"' in html and "No detection metric was computed" in html


# ------------------------------------------------------------------------------------------- verdict

HEADLINE_METRICS = ("dcr_ratio", "exact_copy_fraction", "mia_auc", "detection_auc")


def with_values(metrics, overall=None, control=None, **kw):
    """The evaluated metrics with some values replaced."""
    return dataclasses.replace(
        metrics,
        overall={**metrics.overall, **(overall or {})},
        control={**metrics.control, **(control or {})},
        **kw,
    )


@pytest.mark.parametrize(
    ("overall", "control", "level", "headline"),
    [
        # values near the thresholds, where a page judging by its own rules could disagree with the table
        ({"exact_copy_fraction": 0.05}, {}, "bad", "look copied"),
        ({"detection_auc": 0.58}, {"detection_auc": 0.51}, "bad", "easier to tell apart"),
        ({"mia_auc": 0.62}, {}, "warn", "may reveal which cells"),
        ({"detection_auc": 0.68}, {"detection_auc": 0.5}, "bad", "easier to tell apart"),
        # and the plain ones
        ({"detection_auc": 0.53, "dcr_ratio": 0.02}, {}, "bad", "look copied"),
        ({"detection_auc": 0.93}, {}, "bad", "easily told apart"),
        ({"detection_auc": 0.52}, {"detection_auc": 0.5}, "good", "hard to tell apart"),
        ({"detection_auc": 0.52, "dcr_ratio": 0.7}, {"detection_auc": 0.5}, "warn", "closer to the training"),
    ],
)
def test_overall_verdict_agrees_with_the_table(evaluation, overall, control, level, headline):
    metrics, ctx = evaluation
    m = with_values(metrics, overall, control)
    got_level, text, sentences = overall_verdict(m, ctx)
    assert (got_level, headline in text) == (level, True), text
    # the verdict is the worst level the table gives the metrics that decide it
    table = m.table().set_index("metric")
    worst = max((table.loc[n, "level"] for n in HEADLINE_METRICS), key=LEVEL_RANK.__getitem__)
    assert got_level == worst
    assert sentences and all(s.endswith(".") for s in sentences)


@pytest.fixture(scope="module")
def copies_report(evaluation, tmp_path_factory) -> Path:
    """The report of the evaluated metrics with 5% exact copies, no per-type table, a warning and no
    history: 1% to 10% copies are "exact copies" in the table, and the page must say so too."""
    metrics, ctx = evaluation
    m = with_values(
        metrics,
        {"exact_copy_fraction": 0.05},
        per_type=None,
        settings={**metrics.settings, "warnings": ["synthetic: OT did not converge"]},
    )
    row = m.table().set_index("metric").loc["exact_copy_fraction"]
    assert (row["level"], row["verdict"]) == ("bad", "exact copies")
    return write_report(tmp_path_factory.mktemp("copies") / "r.html", m, ctx, umap_cap=200)


def test_report_verdict_and_table_agree_on_a_few_copies(copies_report):
    html = copies_report.read_text(encoding="utf-8")
    verdict = html[html.index('<section id="verdict"') : html.index("</section>")]
    assert 'class="verdict bad"' in verdict and "look copied" in verdict
    assert "5.0% of the synthetic cells are exact copies" in verdict
    assert "OT did not converge" in verdict
    summary = sections(html)["summary"]
    row = table_row(summary, "<code>exact_copy_fraction</code>")
    assert '<span class="badge bad">exact copies</span>' in row
    assert "No per-type metrics were computed" in sections(html)["per-type"]


# ---------------------------------------------------------------------------------------------- CLI


def test_evaluate_cli_with_a_model_draws_its_training_curves(
    fitted_cgan, fitted_cgan_dir, counts_adata, tmp_path
):
    from cellsynth.cli import app
    from cellsynth.data.split import split_by_type
    from cellsynth.models import load

    train, real = split_by_type(counts_adata, label_key="cell_type", seed=0)
    paths = {
        "real": tmp_path / "real.h5ad",
        "synth": tmp_path / "synth.h5ad",
        "train": tmp_path / "train.h5ad",
    }
    real.write_h5ad(paths["real"])
    train.write_h5ad(paths["train"])
    fitted_cgan.sample(300, seed=0).write_h5ad(paths["synth"])
    out = tmp_path / "eval"
    args = ["evaluate", paths["real"], paths["synth"], "--train", paths["train"], "--model", fitted_cgan_dir]
    args += ["--out", out, "--family", "detection", "--family", "privacy"]
    args += ["--setting", "detection_trees=30", "--setting", "per_type_trees=10", "--setting", "n_jobs=1"]
    args += ["--setting", "groundgan_trees=30"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output

    data = json.loads((out / "metrics.json").read_text())
    assert {"detection_auc", "dcr_ratio"} <= set(data["overall"]) and "detection_auc" in data["control"]
    assert "detection_auc" in result.output  # the summary printed
    history = load(fitted_cgan_dir).history
    losses = [k for k in history[0] if k.endswith("loss")]
    assert history and losses
    training = sections((out / "report.html").read_text(encoding="utf-8"))["training"]
    assert training.count(PNG) == 1
    assert f"{len(history)} epochs." in training
    assert all(f"<code>{k}</code>" in training for k in losses)


def test_report_renders_in_headless_chromium(report_with_history, tmp_path):
    """Optional: a real browser opens the file offline and draws it (skipped without Chromium)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed")
    shot = tmp_path / "report.png"
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,3000",
        report_with_history.as_uri(),
    ]  # fmt: skip
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"chromium could not run here: {e}")
    assert shot.exists() and shot.stat().st_size > 50_000
