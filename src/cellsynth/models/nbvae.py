"""The count likelihood of the ``nbvae`` model: negative binomial and zero-inflated negative binomial.

Both directions live here: the log-likelihoods the model is trained with (torch) and the draws it
samples with (numpy, from the model's own generator). The model itself (networks, parameters) is in
:mod:`cellsynth.models.vae`, beside the Gaussian ``vae``.

Parametrisation (as in scVI): mean ``μ`` and inverse dispersion ``θ``, so that
``Var = μ + μ²/θ``; the zero-inflated form adds a dropout probability ``π = sigmoid(logit)`` with which a
count is 0 whatever the negative binomial says.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..data.fused import Fused
from ..data.preprocess import TARGET_SUM, CountEntries

_EPS = 1e-8
# θ is kept in a range where the gamma–Poisson draw is exact in float64 and the log-likelihood stable
LOG_THETA_RANGE = (-9.0, 14.0)


def count_nll(
    counts: CountEntries, mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-cell negative log-likelihood of ``counts`` under NB(``mu``, ``theta``) (cells × genes),
    zero-inflated with dropout probability ``sigmoid(zi_logits)`` when given (scVI's stable form of the ZINB).

    Most entries of count data are zero, so every entry's zero-count term is evaluated densely and only the
    non-zero counts add theirs: ``log p(x) = Σ_genes log p(0) + Σ_{x≠0} [log p(x) − log p(0)]``, where
    ``log NB(x) − log NB(0) = x log(μ/(θ+μ)) + lgamma(x+θ) − lgamma(θ) − lgamma(x+1)`` and, zero-inflated,
    ``log p(x) − log p(0) = log NB(x) − log NB(0) + log sigmoid(−l + log NB(0))``.
    """
    log_theta_mu, zero = _ZERO_TERM(theta, mu)
    at = counts.row * mu.shape[1] + counts.col

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1)[at]

    x, t = counts.value.to(mu.dtype), pick(theta)
    extra = (
        x * (torch.log(pick(mu) + _EPS) - pick(log_theta_mu))
        + torch.lgamma(x + t)
        - torch.lgamma(t)
        - torch.lgamma(x + 1)
    )
    if zi_logits is not None:
        pi_theta_log = -zi_logits + zero  # log(π/(1-π)) + log NB(0), per entry
        zero = F.softplus(pi_theta_log) - F.softplus(-zi_logits)  # log(π + (1-π) NB(0))
        extra = extra + F.logsigmoid(pick(pi_theta_log))
    return -zero.sum(1).index_add(0, counts.row, extra)


def _zero_term(theta: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log(θ + μ), log NB(0))`` per entry: ``log NB(0) = θ (log θ − log(θ + μ))``."""
    log_theta_mu = torch.log(theta + mu + _EPS)
    return log_theta_mu, theta * (torch.log(theta + _EPS) - log_theta_mu)


def _expected_counts(logits: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
    """``μ = library · softmax(logits)`` over genes: each cell's expected counts."""
    return library[:, None] * torch.softmax(logits, 1)


def _profile_values(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log1p(ρ · 1e4), ρ)`` for ``ρ = softmax(logits)`` over genes: the profile as training values."""
    rho = torch.softmax(logits, 1)
    return torch.log1p(rho * TARGET_SUM), rho


# each chain one loop forward and one backward over a large batch (data.fused)
_ZERO_TERM = Fused(_zero_term)
EXPECTED_COUNTS = Fused(_expected_counts)
PROFILE_VALUES = Fused(_profile_values)


def draw_nb(
    mu: np.ndarray,
    theta: np.ndarray,
    rng: np.random.Generator,
    dropout: np.ndarray | None = None,
) -> np.ndarray:
    """Counts ~ NB(``mu``, ``theta``) as a gamma–Poisson mixture, zero with probability ``dropout``.

    Parameters
    ----------
    mu
        Cells × genes means (≥ 0).
    theta
        Inverse dispersions, broadcastable to ``mu`` (> 0).
    rng
        Source of every draw.
    dropout
        Zero-inflation probabilities, broadcastable to ``mu`` (None: plain negative binomial).

    Returns
    -------
    float32 counts of ``mu``'s shape.
    """
    mu = np.asarray(mu, dtype=np.float64)
    theta = np.broadcast_to(np.asarray(theta, dtype=np.float64), mu.shape)
    rate = rng.gamma(shape=theta, scale=mu / theta)
    counts = rng.poisson(rate).astype(np.float32)
    if dropout is not None:
        counts[rng.random(mu.shape) < dropout] = 0
    return counts
