"""The HTML report: one self-contained file with every section, on a small hand-made evaluation."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellsynth.metrics.base import METRICS, EvalContext, Metrics, Space, metric

# The metric families declare these when imported; a stand-in declaration (same meaning) keeps this test
# independent of which families exist yet.
try:
    from cellsynth.metrics.evaluation import load_families

    load_families()
except ImportError:  # pragma: no cover - the families are written separately
    pass
_DECLARED = {
    "detection_auc": (
        "detection",
        "target",
        "Random-forest ROC AUC separating synthetic from real; 0.5 ideal.",
    ),
    "mmd": ("distribution", "minimize", "Unbiased MMD with RBF kernels in PCA space."),
    "gene_mean_pearson": ("genes", "maximize", "Pearson r of per-gene means."),
    "trts_accuracy": ("biology", "maximize", "Accuracy of a REAL-trained classifier on synthetic cells."),
    "dcr_ratio": ("privacy", "maximize", "Median distance to the closest TRAIN cell, synthetic over real."),
}
for _name, (_family, _direction, _description) in _DECLARED.items():
    if _name not in METRICS:
        metric(_name, _family, _direction, _description, target=0.5 if _direction == "target" else None)

TYPES = {"alpha": 260, "beta": 180, "gamma": 110, "delta": 30, "rare": 12}


def _space(adata, rows: np.ndarray) -> Space:
    counts = sp.csr_matrix(adata.X[rows], dtype=np.float32)
    lib = np.asarray(counts.sum(axis=1)).ravel()
    X = np.log1p(counts.multiply(1e4 / np.maximum(lib, 1)[:, None]).toarray()).astype(np.float32)
    labels = adata.obs["cell_type"].astype(str).to_numpy()[rows]
    return Space(X=X, labels=labels, counts=counts, library_size=lib)


@pytest.fixture(scope="module")
def evaluation():
    """REAL, SYNTH and TRAIN: three disjoint draws from one simulation, and metrics by hand."""
    from cellsynth.data.datasets import simulate

    adata = simulate({k: 3 * v for k, v in TYPES.items()}, n_genes=150, seed=11)
    rng = np.random.default_rng(0)
    part = rng.permutation(adata.n_obs) % 3
    real, synth, train = (_space(adata, np.flatnonzero(part == k)) for k in range(3))
    X = real.X
    order = np.argsort(-X.var(axis=0))
    ctx = EvalContext(
        real=real,
        synth=synth,
        train=train,
        genes=np.array([f"gene{j}" for j in range(X.shape[1])]),
        hvg=order[:100],
        settings={"representation": {"real": "counts", "synth": "counts"}, "n_pcs": 50},
        seed=0,
    )
    types = list(TYPES)
    per_type = pd.DataFrame(
        {
            "n_real": [int(np.sum(real.labels == t)) for t in types],
            "n_synth": [int(np.sum(synth.labels == t)) for t in types],
            "detection_auc": [0.52, 0.55, 0.81, np.nan, np.nan],
            "detection_auc_control": [0.50, 0.51, 0.53, np.nan, np.nan],
            "trts_accuracy": [0.97, 0.95, 0.7, 0.9, 0.5],
        },
        index=pd.Index(types, name="cell_type"),
    )
    metrics = Metrics(
        overall={
            "detection_auc": 0.58,
            "mmd": 0.012,
            "gene_mean_pearson": 0.991,
            "trts_accuracy": 0.93,
            "dcr_ratio": 0.97,
        },
        control={"detection_auc": 0.51, "mmd": 0.004, "gene_mean_pearson": 0.995, "trts_accuracy": 0.95},
        per_type=per_type,
        settings={"seed": 0, "max_cells_detection": 2500, "warnings": []},
    )
    return metrics, ctx


HISTORY = [
    {
        "epoch": e,
        "d_loss": 1.3 - 0.01 * e,
        "g_loss": 0.7 + 0.01 * e,
        "class_loss_real": 1.0 / e,
        "class_loss_fake": 1.2 / e,
        "sparsity_loss": 0.01,
        **({"val_mmd": 0.1 / e} if e % 2 == 0 else {}),
    }
    for e in range(1, 21)
]


@pytest.fixture(scope="module")
def report_with_history(evaluation, tmp_path_factory) -> Path:
    from cellsynth.report import write_report

    metrics, ctx = evaluation
    path = tmp_path_factory.mktemp("report") / "sub" / "report.html"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = write_report(path, metrics, ctx, history=HISTORY)
    assert out == path
    assert not [w for w in caught if "could not be drawn" in str(w.message)]
    return path


def _headings(html: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", html)


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
    assert len(images) >= 6
    import base64

    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    # no temporary file left beside the report
    assert [p.name for p in report_with_history.parent.iterdir()] == ["report.html"]


def test_report_has_every_section(report_with_history, evaluation):
    html = report_with_history.read_text(encoding="utf-8")
    headings = " | ".join(_headings(html))
    for section in (
        "Verdict",
        "Summary of metrics",
        "UMAP",
        "Each cell type in the map",
        "Per-gene means, variances and zeros",
        "Gene–gene correlations",
        "Library sizes",
        "Cell types",
        "Training curves",
        "Settings",
    ):
        assert section in headings, section
    # the header says what was compared
    metrics, ctx = evaluation
    assert f"{len(ctx.real.X):,} cells" in html and f"{len(ctx.synth.X):,} cells" in html
    assert "cellsynth" in html and "Seed" in html and "counts" in html
    # each metric beside its control and its verdict, grouped by family, with its description
    for name in metrics.overall:
        assert f"<code>{name}</code>" in html
    assert "Random-forest ROC AUC" in html or METRICS["detection_auc"].description in html
    assert "as good as real data" in html and "worse than real data" in html
    assert html.index("Distribution:") < html.index("Detection:") < html.index("Privacy:")
    # per-type table: every type, and the per-type control right after its metric
    for t in TYPES:
        assert f"<th>{t}</th>" in html
    assert html.index("<th>detection_auc</th>") < html.index("<th>detection_auc_control</th>")
    assert html.index("<th>detection_auc_control</th>") < html.index("<th>trts_accuracy</th>")
    assert "library size (total counts per cell)" in html.lower() or "Library size" in html
    assert "could not be drawn" not in html
    # the UMAP subsample is recorded
    assert "at most 5,000 per side" in html


def test_training_curves_only_with_history(evaluation, tmp_path, report_with_history):
    from cellsynth.report import write_report

    metrics, ctx = evaluation
    path = write_report(tmp_path / "r.html", metrics, ctx, umap_cap=300)
    html = path.read_text(encoding="utf-8")
    assert "Training curves" not in " ".join(_headings(html))
    with_history = report_with_history.read_text(encoding="utf-8")
    n_without = html.count("data:image/png;base64,")
    assert with_history.count("data:image/png;base64,") == n_without + 1
    assert "at most 300 per side" in html


def test_without_counts_the_sum_of_log_values_is_shown(evaluation, tmp_path):
    from cellsynth.report import write_report

    metrics, ctx = evaluation
    plain = EvalContext(
        real=Space(ctx.real.X, ctx.real.labels),
        synth=Space(ctx.synth.X, ctx.synth.labels),
        genes=ctx.genes,
        hvg=ctx.hvg,
        seed=1,
    )
    html = write_report(tmp_path / "r.html", metrics, plain, umap_cap=200).read_text(encoding="utf-8")
    assert "sum of the log-normalised values" in html
    assert "Training cells" not in html


@pytest.mark.parametrize(
    ("overall", "headline"),
    [
        ({"detection_auc": 0.53, "dcr_ratio": 0.02}, "look copied"),
        ({"detection_auc": 0.93, "dcr_ratio": 1.0}, "easily told apart"),
        ({"detection_auc": 0.53, "dcr_ratio": 1.0}, "hard to tell apart"),
        ({"detection_auc": 0.68}, "partly distinguishable"),
    ],
)
def test_overall_verdict(evaluation, overall, headline):
    from cellsynth.report import overall_verdict

    metrics, ctx = evaluation
    m = Metrics(overall=overall, control={"detection_auc": 0.5}, per_type=None, settings={})
    level, text, sentences = overall_verdict(m, ctx)
    assert headline in text
    assert level == (
        "good" if headline == "hard to tell apart" else "warn" if "partly" in headline else "bad"
    )
    assert sentences and all(s.endswith(".") for s in sentences)


def test_copied_data_is_flagged_in_the_summary_table(evaluation, tmp_path):
    """dcr_ratio has no meaningful control (a TRAIN subsample is a copy): a fixed threshold judges it."""
    from cellsynth.report import write_report

    _, ctx = evaluation
    m = Metrics(
        overall={"detection_auc": 0.52, "dcr_ratio": 0.01},
        control={"detection_auc": 0.5, "dcr_ratio": 0.0},
        per_type=None,
        settings={"warnings": ["synthetic: OT did not converge"]},
    )
    html = write_report(tmp_path / "r.html", m, ctx, umap_cap=200).read_text(encoding="utf-8")
    assert 'class="verdict bad"' in html
    assert '<span class="badge bad">looks copied</span>' in html
    assert "OT did not converge" in html
    assert "No per-type metrics were computed" in html


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
