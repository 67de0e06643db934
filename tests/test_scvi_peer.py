"""The scvi peer (scvi-tools' CondSCVI): optional dependency, fit, sampling, save/load, determinism and
the caller's global random state."""

from __future__ import annotations

import importlib.util
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cellsynth import models
from cellsynth.data.celldata import CellData
from cellsynth.data.preprocess import normalize_log1p
from cellsynth.errors import InputError, TrainingError
from cellsynth.models import scvi_peer  # noqa: F401  (registers the model; imports without scvi)
from cellsynth.models.registry import missing
from tests.conftest import assert_integer

FIT = dict(label_key="cell_type", condition_keys=["donor"], progress=False)
TYPES = ("alpha", "beta", "gamma", "rare")


@pytest.fixture(scope="module")
def scvi():
    return pytest.importorskip("scvi")


@pytest.fixture(scope="module")
def fitted(scvi, counts_adata):
    return models.get("scvi", epochs=2).fit(counts_adata, seed=0, **FIT)


def _weights(model):
    return {k: v.clone() for k, v in model.modules["generator"].state_dict().items()}


# ---------------------------------------------------------------------- without scvi-tools
def test_missing_scvi_makes_the_model_unavailable_with_the_extra_named(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "scvi" else real(name, *a)
    )
    assert "pip install 'cellsynth[peers]'" in missing("scvi")
    with pytest.raises(InputError, match="'scvi' is unavailable.*cellsynth\\[peers\\]"):
        models.get("scvi")


def test_module_imports_and_registers_without_scvi_installed():
    code = (
        "import sys; sys.modules['scvi'] = None\n"  # `import scvi` now fails, find_spec finds nothing
        "from cellsynth.models import scvi_peer, registry\n"
        "assert 'scvi' in registry.available()\n"
        "print(registry.missing('scvi'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "needs scvi: pip install 'cellsynth[peers]'" in out.stdout


# ---------------------------------------------------------------------- fit
def test_fit_trains_condscvi_and_records_how(fitted, scvi):
    assert isinstance(fitted.modules["generator"], scvi.module.VAEC)
    assert fitted.modules["generator"].n_batch == 2  # the donor covariate is CondSCVI's batch
    rec = fitted.fit_record
    assert rec["epochs_run"] == 2 and rec["stopped_because"] == "epochs"
    assert rec["train_cells"] == 595 and rec["validation_cells"] == 0
    assert [h["epoch"] for h in fitted.history] == [1, 2]
    assert all(np.isfinite(h["train_loss"]) for h in fitted.history)
    assert fitted.history[1]["train_loss"] < fitted.history[0]["train_loss"]


def test_raw_counts_are_recovered_exactly_from_celldata(counts_adata):
    data = CellData.from_anndata(counts_adata, label_key="cell_type")
    real = counts_adata.X[:, data.preprocessing.train_genes]
    assert abs(scvi_peer.raw_counts(data) - real).max() == 0


def test_log1p_input_is_refused_in_one_clear_line(scvi, counts_adata):
    log1p = counts_adata.copy()
    log1p.X = normalize_log1p(log1p.X)
    with pytest.raises(InputError, match="needs raw counts, but the data is log1p"):
        models.get("scvi", epochs=1).fit(log1p, **FIT)


def test_resume_and_early_stopping_without_validation_are_refused(scvi, counts_adata, tmp_path):
    with pytest.raises(TrainingError, match="cannot resume.*fit afresh"):
        models.get("scvi", epochs=1).fit(counts_adata, checkpoint_dir=tmp_path, resume=True, **FIT)
    with pytest.raises(InputError, match="early_stopping=true needs validation cells.*train_size"):
        models.get("scvi", early_stopping=True)


def test_validation_split_and_early_stopping_run(scvi, counts_adata):
    m = models.get("scvi", epochs=3, train_size=0.8, early_stopping=True).fit(counts_adata, seed=0, **FIT)
    assert m.fit_record["train_cells"] == 476 and m.fit_record["validation_cells"] == 119
    assert all(np.isfinite(h["validation_loss"]) for h in m.history)


def test_time_budget_stops_training(scvi, counts_adata):
    m = models.get("scvi", epochs=10_000, max_minutes=0.002).fit(counts_adata, seed=0, **FIT)
    assert m.fit_record["stopped_because"] == "time budget"
    assert 1 <= m.fit_record["epochs_run"] < 10_000 and len(m.history) == m.fit_record["epochs_run"]


def test_sigint_stops_after_the_step_and_keeps_the_model(scvi, counts_adata, monkeypatch):
    real = scvi_peer._stop_callback

    def interrupting(max_minutes):
        cb = real(max_minutes)
        end = cb.on_train_batch_end

        def on_batch_end(trainer, *args):
            signal.raise_signal(signal.SIGINT)  # what Ctrl+C does: caught, training stops, no exit
            end(trainer, *args)

        cb.on_train_batch_end = on_batch_end
        return cb

    monkeypatch.setattr(scvi_peer, "_stop_callback", interrupting)
    before = signal.getsignal(signal.SIGINT)
    m = models.get("scvi", epochs=50).fit(counts_adata, seed=0, **FIT)
    assert m.fit_record["stopped_because"] == "interrupted" and m.fit_record["epochs_run"] == 1
    assert signal.getsignal(signal.SIGINT) is before
    assert m.sample(10, seed=0).n_obs == 10


# ---------------------------------------------------------------------- sampling
def test_sample_gives_every_requested_type_as_integer_counts(fitted, counts_adata):
    s = fitted.sample(per_type={t: 30 for t in TYPES}, seed=0)
    assert s.obs["cell_type"].value_counts().to_dict() == {t: 30 for t in TYPES}
    assert set(s.obs["donor"]) <= {"donor_0", "donor_1"}
    assert list(s.var_names) == list(counts_adata.var_names)
    assert sp.issparse(s.X) and s.X.data.min() >= 0
    assert_integer(s.X.data)
    assert s.X[:, [5, 50, 100]].sum() == 0  # never-expressed genes stay zero
    np.testing.assert_allclose(s.layers["log1p"].toarray(), normalize_log1p(s.X).toarray(), rtol=1e-6)
    assert s.uns["cellsynth"]["model"] == "scvi"
    # library sizes are drawn from the type's training cells
    lib = np.asarray(s.X.sum(1)).ravel()
    real = np.asarray(counts_adata.X.sum(1)).ravel()
    assert lib.mean() == pytest.approx(real.mean(), rel=0.25)


def test_decoder_sees_the_cell_type_and_the_covariate(fitted):
    vaec = fitted.modules["generator"]
    z = torch.randn(4, vaec.n_latent, generator=torch.Generator().manual_seed(0))

    def profile(label: int, donor: int) -> torch.Tensor:
        w = [torch.eye(4)[[label] * 4], torch.eye(2)[[donor] * 4]]
        return scvi_peer.decode(vaec, w, z)

    p = profile(0, 0)
    torch.testing.assert_close(p.sum(1), torch.ones(4))
    assert (p - profile(1, 0)).abs().max() > 1e-4
    assert (p - profile(0, 1)).abs().max() > 1e-4


def test_mixture_path_is_the_generative_pass_at_one_hot_weights(fitted):
    vaec = fitted.modules["generator"]
    z = torch.randn(8, vaec.n_latent, generator=torch.Generator().manual_seed(1))
    donor = torch.eye(2)[[0, 1] * 4]
    one_hot = scvi_peer.decode(vaec, [torch.eye(4)[[2] * 8], donor], z)
    near = torch.zeros(8, 4)
    near[:, 2], near[:, 0] = 1 - 1e-7, 1e-7  # not one-hot: the weighted path
    torch.testing.assert_close(scvi_peer.decode(vaec, [near, donor], z), one_hot, rtol=1e-4, atol=1e-7)
    mixed = fitted.sample(40, mix={"alpha": 0.5, "gamma": 0.5}, seed=0)
    assert set(mixed.obs["cell_type"]) == {"mix(alpha=0.50,gamma=0.50)"}
    assert_integer(mixed.X.data)


def test_same_seed_same_cells_and_save_load_keeps_them(fitted, tmp_path):
    a = fitted.sample(200, seed=3)
    assert (a.X != fitted.sample(200, seed=3).X).nnz == 0
    assert (a.X != fitted.sample(200, seed=4).X).nnz > 0
    path = fitted.save(tmp_path / "scvi")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "weights.safetensors"]
    loaded = models.load(path)
    assert loaded.name == "scvi" and loaded.fit_record["epochs_run"] == 2
    b = loaded.sample(200, seed=3)
    assert (a.X != b.X).nnz == 0
    assert list(a.obs["cell_type"]) == list(b.obs["cell_type"])
    assert list(a.obs["donor"]) == list(b.obs["donor"])


def test_fitting_twice_with_one_seed_gives_the_same_weights(fitted, counts_adata):
    again = models.get("scvi", epochs=2).fit(counts_adata, seed=0, **FIT)
    other = models.get("scvi", epochs=2).fit(counts_adata, seed=1, **FIT)
    w0, w1, w2 = _weights(fitted), _weights(again), _weights(other)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert not all(torch.equal(w0[k], w2[k]) for k in w0)


def test_fit_and_sample_leave_the_callers_global_rngs_alone(scvi, counts_adata):
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    m = models.get("scvi", epochs=1).fit(counts_adata, seed=5, **FIT)
    m.sample(50, seed=0)
    assert torch.equal(states[0], torch.get_rng_state())
    after = np.random.get_state()
    assert np.array_equal(states[1][1], after[1]) and states[1][2] == after[2]
    assert states[2] == random.getstate()
