"""Each type's Gaussian of latent codes: the noise modulation ``z' = mean[c] + dev[c] z`` of ``nbgan``'s
generator (:class:`TypeGaussianNoise`) and its start from the codes of the training cells
(:func:`type_gaussians`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

#: the shrinkage targets of a type's code covariance (``code_cov``): its variances alone, or with the
#: correlations of the pooled within-type covariance
CODE_COV = ("diagonal", "pooled")


class TypeGaussianNoise(nn.Module):
    """``z' = mean[c] + dev[c] z``: the cgan's per-condition noise modulation with each type's deviation a
    lower-triangular matrix (a full covariance: a type's codes are correlated) instead of a diagonal.

    Several keys sum their mean embeddings (covariates start at zero); the deviation is the label's (soft
    labels: the weighted matrices).
    """

    def __init__(self, sizes: Sequence[int], dim: int):
        super().__init__()
        self.dim = dim
        self.mean = nn.ParameterList([nn.Parameter(torch.zeros(n, dim)) for n in sizes])
        self.dev = nn.Parameter(torch.eye(dim).repeat(sizes[0], 1, 1))

    def forward(self, z: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        mean = sum(w.to(z.dtype) @ m.to(z.dtype) for w, m in zip(weights, self.mean, strict=True))
        dev = torch.tril(self.dev).to(z.dtype)
        scaled = torch.einsum("lij,nj->nli", dev, z)  # each cell's noise through every type's matrix
        return mean + (weights[0].to(z.dtype)[:, :, None] * scaled).sum(1)

    @torch.no_grad()
    def whiten(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The noise that :meth:`forward` turns into ``codes`` for cells of type ``labels``,
        ``dev[c]⁻¹ (code − mean[c])`` (covariates' embeddings left out: they start at zero)."""
        mean = self.mean[0][labels]
        dev = torch.tril(self.dev)[labels]
        rhs = (codes.to(dev.dtype) - mean)[:, :, None]
        return torch.linalg.solve_triangular(dev, rhs, upper=False)[:, :, 0]


def type_gaussians(
    codes: np.ndarray, labels: np.ndarray, n_labels: int, code_cov: str = "pooled"
) -> tuple[np.ndarray, np.ndarray]:
    """Each type's mean (types × dim) and the Cholesky factor of its covariance (types × dim × dim) of
    ``codes`` (cells × dim) with types ``labels``; a type without cells keeps 0 and the identity.

    A type's sample covariance is shrunk by ``min(1, dim / cells)`` (all the way for ``dim`` cells or
    fewer) towards its own variances with the correlations of every type's cells pooled
    (``code_cov="pooled"``: a type's codes are correlated much as every type's are, and a few dozen cells
    estimate variances far better than correlations) or with none (``"diagonal"``)."""
    dim = codes.shape[1]
    groups = [codes[labels == c] for c in range(n_labels)]
    mean = np.array([g.mean(0) if len(g) else np.zeros(dim) for g in groups]).reshape(n_labels, dim)
    chol = np.tile(np.eye(dim), (n_labels, 1, 1))
    covs = {c: np.cov(g, rowvar=False).reshape(dim, dim) for c, g in enumerate(groups) if len(g) > 1}
    corr = _pooled_correlation(covs, [len(g) for g in groups]) if code_cov == "pooled" else None
    for c, cov in covs.items():
        var = np.diag(cov)
        target = np.diag(var) if corr is None else np.sqrt(np.outer(var, var)) * corr
        shrink = min(1.0, dim / len(groups[c]))
        chol[c] = np.linalg.cholesky((1 - shrink) * cov + shrink * target + 1e-6 * np.eye(dim))
    return mean, chol


def _pooled_correlation(covs: dict[int, np.ndarray], cells: list[int]) -> np.ndarray:
    """The correlation matrix of the pooled within-type covariance (each type's ``covs[c]`` weighted by
    its ``cells[c]`` less one)."""
    pooled = sum((cells[c] - 1) * cov for c, cov in covs.items()) / max(sum(cells[c] - 1 for c in covs), 1)
    sd = np.sqrt(np.maximum(np.diag(pooled), 1e-12))
    return pooled / sd[:, None] / sd[None, :]


__all__ = ["CODE_COV", "TypeGaussianNoise", "type_gaussians"]
