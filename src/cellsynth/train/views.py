"""The fixed linear views of a batch of cells that adversarial training takes, in one matrix product.

The critic behind a PCA (``critic_space="pca"``), the auxiliary classifier behind the same PCA, and the
conditional MMD in its own PCA each look at a batch through a fixed projection ``(x − mean) @ basis``.
Projected one by one, a batch of wide cells (Baron: 14,877 genes) is multiplied by a genes × components
matrix up to five times per step, and each product's gradient is another; projected together, once
(``x @ [B_critic | B_mmd] − [mean_critic B_critic | mean_mmd B_mmd]``: the means are taken out after
the product, so no genes-wide difference is formed), the generated batch costs one product forward and
one backward (docs/benchmarks.md, "Training throughput").

The real cells' views do not change while training: :meth:`CellViews.of_stored` projects every cell once
(from its sparse row when the data are sparse; a table of cells × the views' width, 71 MB for 100,000
cells at Baron's 178 columns), and a step then reads its real batch's views instead of densifying and
projecting it. Only for batches of at least :data:`STORED_MIN_ENTRIES` entries (wide data): a narrow batch
is projected in well under a millisecond, and small fits (the tests' pinned outputs) keep their arithmetic
to the last bit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

#: the real cells' views are projected once and stored from this many entries in a training batch (cells ×
#: genes) up; below it each batch is projected as it comes
STORED_MIN_ENTRIES = 1 << 20


class View(NamedTuple):
    """A batch as the networks see it: ``critic`` (the critic's input: the projection, or the cells
    themselves for a critic in gene space) and ``mmd`` (the MMD's principal components; None when not
    asked for)."""

    critic: torch.Tensor
    mmd: torch.Tensor | None


def _projection_of(module: nn.Module | None):
    projection = getattr(module, "projection", None)
    return projection if projection is not None and projection.is_orthonormal() else None


class CellViews:
    """``views(x, mmd=True) -> View``: a batch's critic input and MMD components, from one product.

    ``critic`` and ``classifier`` are the plan's networks: a network with an orthonormal ``projection``
    (:class:`~cellsynth.nn.blocks.InputProjection`) is fed its projection (``critic_projected``,
    ``classifier_projected``); the classifier only when its projection is the critic's. ``mean`` and
    ``basis`` (genes × k) define the MMD's components. Products run in float32 whatever the autocast
    context (the MMD's distances need it; the critic's inputs were float32 before too).
    """

    def __init__(
        self, critic: nn.Module, classifier: nn.Module | None, mean: torch.Tensor, basis: torch.Tensor
    ):
        own = _projection_of(critic)
        self.critic_projected = own is not None
        self.critic_kwargs = {"projected": True} if own is not None else {}  # what the critic is called with
        theirs = _projection_of(classifier)
        self.classifier_projected = (
            own is not None
            and theirs is not None
            and torch.equal(own.basis, theirs.basis)
            and torch.equal(own.mean, theirs.mean)
        )
        parts = [(own.mean, own.basis)] if own is not None else []
        parts.append((mean, basis))
        self.k = own.basis.shape[1] if own is not None else 0
        self.basis = torch.cat([b.float() for _, b in parts], 1).contiguous()
        self.offset = torch.cat([m.float() @ b.float() for m, b in parts])
        self.critic_basis = self.basis[:, : self.k].contiguous()
        # real cells reach the networks only through their views (no classifier, or one behind the PCA)
        self.views_only = own is not None and (classifier is None or self.classifier_projected)

    def __call__(self, x: torch.Tensor, mmd: bool = True) -> View:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            if not mmd:
                if not self.critic_projected:
                    return View(x, None)
                return View(x @ self.critic_basis - self.offset[: self.k], None)
            p = x @ self.basis - self.offset
        return View(p[:, : self.k] if self.critic_projected else x, p[:, self.k :])

    def stored(self, data, batch_size: int) -> torch.Tensor | None:
        """Every cell's projections (:meth:`of_stored`, rows in ``data``'s order) when the real cells reach
        the networks only through them and a batch of ``batch_size`` cells is wide enough to gain; else
        None."""
        if not self.views_only or batch_size * data.n_genes < STORED_MIN_ENTRIES:
            return None
        return self.of_stored(data, np.arange(data.n_cells))

    def split(self, p: torch.Tensor) -> View:
        """A :meth:`of_stored` table's rows as a View (projected critic input, MMD components)."""
        return View(p[:, : self.k], p[:, self.k :])

    @torch.no_grad()
    def of_stored(self, data, rows: np.ndarray, chunk: int = 4096) -> torch.Tensor:
        """The projections (critic's columns, then the MMD's) of the stored cells ``rows`` of ``data``
        (a :class:`~cellsynth.data.CellData`), float32 on the basis' device: a table for :meth:`split`
        (a projected critic only). Sparse rows are multiplied as they are stored."""
        basis = self.basis.cpu().numpy()
        parts = []
        for start in range(0, len(rows), chunk):
            stored = data.rows(rows[start : start + chunk])
            p = stored @ basis if sp.issparse(stored) else np.asarray(stored, dtype=np.float32) @ basis
            parts.append(torch.from_numpy(np.asarray(p, dtype=np.float32)))
        return torch.cat(parts).to(self.basis.device) - self.offset


__all__ = ["CellViews", "View"]
