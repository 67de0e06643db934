"""Validation scores beyond the distance: the classifier two-sample tests (a random forest telling held-out,
or training, real cells from generated ones: the benchmark's detector in miniature)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import TrainingError
from .calibration import type_moments

#: validation scores (lower is better): ``mmd``, a multi-bandwidth MMD in a PCA space of the training
#: cells; ``wmmd``, the same MMD with each principal component scaled to unit variance (a forest splits on
#: every component whatever its variance, where the plain MMD is dominated by the first few); ``c2st``, a
#: classifier two-sample test — the cross-validated ROC AUC of a small random forest telling held-out real
#: cells from as many generated ones, in a PCA fitted on both (the benchmark's detector in miniature);
#: ``c2st_train``, the forest telling training cells (up to ``C2ST_CELLS``, held-out ones never among them)
#: from cells generated for their conditions, in the PCA of those cells' most variable genes (the genes and
#: space the benchmark's detector sees): ten times the cells of a 10 % hold-out, so a score that separates
#: states a few hundredths of AUC apart, at the price of judging the fit to the cells trained on (it
#: followed the detector with ~850 training cells and was misled with a few hundred: docs/benchmarks.md).
#: ``cmmd``, the MMD after each type's generated cells are moved towards the type's training cells' mean
#: principal coordinates, by as much of the difference as is beyond its standard error (the part of a
#: state that mean calibration after training cannot mend).
#: The MMDs are recorded at every validation, a forest's AUC only when it selects.
VAL_METRICS = ("mmd", "wmmd", "cmmd", "c2st", "c2st_train")
#: the likelihood plan's scores: ``nelbo``, the held-out negative ELBO per cell; ``c2st`` as above, with
#: one prior draw per held-out cell
LIKELIHOOD_VAL_METRICS = ("nelbo", "c2st")
C2ST_CELLS = 1000  # held-out cells (at most) per side of the classifier test
C2ST_COMPONENTS = 30
C2ST_TREES = 50
C2ST_FOLDS = 3
C2ST_GENES = 2000  # c2st_train: the training cells' most variable genes (the detector's HVG count)
C2ST_TRAIN_COMPONENTS = 50  # c2st_train: principal components of those genes (the detector's)
VAL_TYPE_CELLS = 5000  # cmmd: training cells (at most) whose per-type means and variances it moves towards
NOISE_DRAWS = 32  # random splits of the pooled cells that give an MMD's noise


@torch.no_grad()
def c2st_auc(
    real: torch.Tensor, fake: torch.Tensor, *, random_state: int = 0, components: int = C2ST_COMPONENTS
) -> float:
    """Cross-validated ROC AUC of a random forest telling ``fake`` rows from ``real`` rows (cells ×
    genes) in their union PCA (``components``): 0.5 when the forest cannot tell them apart, 1 when it
    always can."""
    from ..metrics.detection import classifier_auc

    both = torch.cat([real.cpu(), fake.cpu()]).double()
    both = both - both.mean(0)
    k = int(min(components, len(both) - 1, both.shape[1]))
    # principal coordinates by a randomised SVD (a tenth of an exact one's time at 2,000 × 2,000), its
    # draws seeded by ``random_state`` in a forked CPU RNG (on the CPU: a 2,000-row SVD): torch's global
    # random states, CUDA's included, are left as they were
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(random_state)
        u, sv, _ = torch.svd_lowrank(both, q=min(k + 10, *both.shape), niter=4)
    pcs = (u[:, :k] * sv[:k]).float().cpu().numpy()
    n = len(real)
    return classifier_auc(
        pcs[:n], pcs[n:], folds=C2ST_FOLDS, trees=C2ST_TREES, random_state=random_state,
        n_jobs=max(1, torch.get_num_threads()),
    )  # fmt: skip


def pca_mmds(
    pcs: torch.Tensor, ref: torch.Tensor, sd: torch.Tensor, centring: tuple | None = None
) -> dict[str, float]:
    """``val_mmd`` between generated cells' principal coordinates ``pcs`` and the held-out cells' ``ref``,
    and ``val_wmmd``, the same with each component divided by its standard deviation ``sd`` in the
    training cells (a component of numerically nil variance left as it is); with ``centring`` (the
    generated cells' type codes, then :func:`centre_types`' training side) also ``val_cmmd``, the MMD of
    the generated cells moved by :func:`centre_types`. Each score's noise is recorded beside it
    (``val_mmd_sd``, ...: its spread over random splits of the pooled cells, :func:`mmd_rbf_noise`)."""
    from ..metrics.distribution import mmd_rbf_noise

    scale = torch.where(sd > 1e-6 * sd.max(), 1.0 / sd.clamp_min(1e-30), torch.ones_like(sd)).to(pcs.dtype)
    sides = {"val_mmd": (pcs, ref), "val_wmmd": (pcs * scale, ref * scale)}
    if centring is not None:
        sides["val_cmmd"] = (centre_types(pcs, *centring), ref)
    scores: dict[str, float] = {}
    for key, (x, y) in sides.items():
        scores[key], scores[f"{key}_sd"] = mmd_rbf_noise(x, y, draws=NOISE_DRAWS)
    return scores


def type_centring(plan, data) -> tuple[torch.Tensor, ...]:
    """``val_cmmd``'s ``centring`` for the cells an adversarial ``plan`` generates for validation: their type
    codes, and the training cells' (at most ``VAL_TYPE_CELLS``, drawn with the plan's seed) mean and
    variance of each type in the plan's PCA, with their number of cells."""
    rows = plan.train_rows
    if len(rows) > VAL_TYPE_CELLS:
        # a generator of its own: the plan's random stream, and so every other draw, stays as it was
        rows = np.random.default_rng(plan.seed).choice(rows, VAL_TYPE_CELLS, replace=False)
    rows, dev = np.sort(rows), plan.pca_mean.device
    labels = data.label.codes[rows].astype(np.int64)

    def pcs(chunk: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(data.dense_rows(chunk)).to(dev) - plan.pca_mean) @ plan.pca_basis

    mean, var = type_moments(pcs, rows, labels, data.label.n, plan.pca_basis.shape[1])
    n = np.bincount(labels, minlength=data.label.n)
    return plan.val_gen_codes[:, 0], *(torch.from_numpy(a).float().to(dev) for a in (mean, var, n))


def centre_types(
    pcs: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor, var: torch.Tensor, n: torch.Tensor
) -> torch.Tensor:
    """``pcs`` (cells × components) with each type's rows (``labels``, integer codes) moved by one vector
    towards the type's row of ``targets`` (types × components; the training cells' means, of variances
    ``var`` over ``n`` cells), as mean calibration moves a type's generated means onto its training cells':
    along each component only the part of the difference ``d`` beyond its standard error ``se`` (of both
    sides' means) is moved, ``d · max(0, 1 − se² / d²)`` (positive-part James–Stein), so a type of few
    cells, whose means calibration leaves where they are, is scored where it is. A type without training
    cells is not moved."""
    dtype, labels = pcs.dtype, labels.long()
    onehot = torch.nn.functional.one_hot(labels, len(targets)).to(dtype)
    n_gen = onehot.sum(0).clamp_min(1)[:, None]
    means = (onehot.T @ pcs) / n_gen
    var_gen = ((onehot.T @ pcs.square()) / n_gen - means.square()).clamp_min(0)
    diff = targets.to(dtype) - means
    se2 = var.to(dtype) / n.to(dtype).clamp_min(1)[:, None] + var_gen / n_gen
    weight = (1 - se2 / diff.square().clamp_min(1e-12)).clamp(0, 1) * (n[:, None] > 0).to(dtype)
    return pcs + (weight * diff)[labels]


def forest_state(seed: int, step: int) -> int:
    """The classifier test's forest seed at a validation: another forest at every step, fixed by the
    plan's seed."""
    return (int(seed) * 100_003 + int(step)) % 2**31


def c2st_reference(data, val_rows: np.ndarray, device) -> torch.Tensor:
    """The classifier test's real side: held-out cells only (a training subsample would be no test)."""
    held = np.sort(val_rows)[:C2ST_CELLS]
    if len(held) < 2 * C2ST_FOLDS:
        raise TrainingError(
            f"val_metric='c2st' needs held-out cells: {len(held)} are held out; raise "
            "val_fraction or val_min_cells, or use val_metric='mmd'"
        )
    return torch.from_numpy(data.dense_rows(held)).to(device)


class TrainingForestTest:
    """``c2st_train``: a forest telling up to ``C2ST_CELLS`` training cells (drawn by ``rng``) from cells
    generated for their conditions (``codes`` and ``rows``, which :meth:`__call__`'s cells must follow), in
    the union PCA of both sides' ``C2ST_GENES`` genes most variable in those training cells (scanpy's Seurat
    dispersion on log data), as the benchmark's detector does. The PCA is fitted on both sides at every
    call: axes fitted on the training cells alone would spread them, and only them, along their own noise
    (more genes than cells), and the forest would tell them from any other cells."""

    def __init__(self, data, train_rows: np.ndarray, codes: torch.Tensor, rng: np.random.Generator, device):
        from ..metrics.space import gene_rank

        rows = np.sort(rng.choice(train_rows, min(len(train_rows), C2ST_CELLS), replace=False))
        if len(rows) < 2 * C2ST_FOLDS:
            raise TrainingError(f"val_metric='c2st_train' needs training cells: {len(rows)} are left")
        X = data.dense_rows(rows)
        self.genes = torch.from_numpy(np.sort(gene_rank(X, data.preprocessing.representation)[:C2ST_GENES]))
        self.real = torch.from_numpy(X)[:, self.genes]
        self.codes, self.rows = codes[rows].to(device), rows

    def __call__(self, fake: torch.Tensor, *, random_state: int) -> float:
        fake = fake[:, self.genes.to(fake.device)].cpu()
        return c2st_auc(self.real, fake, random_state=random_state, components=C2ST_TRAIN_COMPONENTS)


def c2st_sides(metric: str, data, val_rows, train_rows, codes, rng: np.random.Generator, device):
    """The classifier test (``test(fake, random_state=...) -> AUC``; None for the MMDs) and, for
    ``c2st_train``, the conditions and rows to generate its cells for (None: the validation's own cells)."""
    if metric == "c2st":
        real = c2st_reference(data, val_rows, device)
        return lambda fake, random_state: c2st_auc(real, fake[: len(real)], random_state=random_state), None
    if metric != "c2st_train":
        return None, None
    test = TrainingForestTest(data, train_rows, codes, rng, device)
    return test, (test.codes, test.rows)
