"""Validation scores beyond the distance: the classifier two-sample test (a random forest telling
held-out real cells from generated ones, the benchmark's detector in miniature)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import TrainingError

#: validation scores (lower is better): ``mmd``, a multi-bandwidth MMD in a PCA space of the training
#: cells; ``wmmd``, the same MMD with each principal component scaled to unit variance (a forest splits on
#: every component whatever its variance, where the plain MMD is dominated by the first few); ``c2st``, a
#: classifier two-sample test — the cross-validated ROC AUC of a small random forest telling held-out real
#: cells from as many generated ones, in a PCA fitted on both (the benchmark's detector in miniature).
#: Both MMDs are recorded at every validation, the forest's AUC only when it selects.
VAL_METRICS = ("mmd", "wmmd", "c2st")
#: the likelihood plan's scores: ``nelbo``, the held-out negative ELBO per cell; ``c2st`` as above, with
#: one prior draw per held-out cell
LIKELIHOOD_VAL_METRICS = ("nelbo", "c2st")
C2ST_CELLS = 1000  # held-out cells (at most) per side of the classifier test
C2ST_COMPONENTS = 30
C2ST_TREES = 50
C2ST_FOLDS = 3


@torch.no_grad()
def c2st_auc(real: torch.Tensor, fake: torch.Tensor, *, random_state: int = 0) -> float:
    """Cross-validated ROC AUC of a random forest telling ``fake`` rows from ``real`` rows (cells ×
    genes) in their union PCA: 0.5 when the forest cannot tell them apart, 1 when it always can."""
    from ..metrics.detection import classifier_auc

    both = torch.cat([real, fake]).double()
    both = both - both.mean(0)
    k = int(min(C2ST_COMPONENTS, len(both) - 1, both.shape[1]))
    # principal coordinates from the cells' Gram matrix: exact, and no random draws (cells ≤ 2 × 1000)
    values, vectors = torch.linalg.eigh(both @ both.T)
    top = torch.argsort(values, descending=True)[:k]
    pcs = (vectors[:, top] * values[top].clamp_min(0).sqrt()).float().cpu().numpy()
    n = len(real)
    return classifier_auc(
        pcs[:n], pcs[n:], folds=C2ST_FOLDS, trees=C2ST_TREES, random_state=random_state, n_jobs=1
    )


def pca_mmds(pcs: torch.Tensor, ref: torch.Tensor, sd: torch.Tensor) -> dict[str, float]:
    """``val_mmd`` between generated cells' principal coordinates ``pcs`` and the held-out cells' ``ref``,
    and ``val_wmmd``, the same with each component divided by its standard deviation ``sd`` in the
    training cells (a component of numerically nil variance left as it is)."""
    from ..metrics.distribution import mmd_rbf

    scale = torch.where(sd > 1e-6 * sd.max(), 1.0 / sd.clamp_min(1e-30), torch.ones_like(sd)).to(pcs.dtype)
    return {"val_mmd": mmd_rbf(pcs, ref), "val_wmmd": mmd_rbf(pcs * scale, ref * scale)}


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
