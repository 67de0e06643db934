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

_EPS = 1e-8
# θ is kept in a range where the gamma–Poisson draw is exact in float64 and the log-likelihood stable
LOG_THETA_RANGE = (-9.0, 14.0)


def _gamma_terms(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``lgamma(x + θ) − lgamma(θ) − lgamma(x + 1)``, element-wise. It is 0 where ``x`` is 0, most entries
    of count data, so the log-gammas (and their digammas in the backward pass) are evaluated only where
    ``x`` is not."""
    x, theta = torch.broadcast_tensors(x, theta)
    where = x != 0
    xs, ts = x[where], theta[where]
    terms = torch.lgamma(xs + ts) - torch.lgamma(ts) - torch.lgamma(xs + 1)
    return torch.zeros_like(theta, dtype=terms.dtype).masked_scatter(where, terms)


def nb_log_prob(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Element-wise log NB(x; mean ``mu``, inverse dispersion ``theta``)."""
    log_theta_mu = torch.log(theta + mu + _EPS)
    return (
        theta * (torch.log(theta + _EPS) - log_theta_mu)
        + x * (torch.log(mu + _EPS) - log_theta_mu)
        + _gamma_terms(x, theta)
    )


def zinb_log_prob(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor
) -> torch.Tensor:
    """Element-wise log ZINB(x; ``mu``, ``theta``, dropout ``sigmoid(zi_logits)``), in a stable form:
    ``log π = -softplus(-l)`` and ``log(1 - π) = -softplus(l)`` (scVI's formulation)."""
    softplus_neg = F.softplus(-zi_logits)  # -log π; and -log π - l = -log(1 - π)
    log_theta_mu = torch.log(theta + mu + _EPS)
    pi_theta_log = -zi_logits + theta * (torch.log(theta + _EPS) - log_theta_mu)
    zero = F.softplus(pi_theta_log) - softplus_neg
    nonzero = (
        -softplus_neg + pi_theta_log + x * (torch.log(mu + _EPS) - log_theta_mu) + _gamma_terms(x, theta)
    )
    return torch.where(x < 0.5, zero, nonzero)


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
