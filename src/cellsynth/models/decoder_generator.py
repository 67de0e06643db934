"""``nbgan``'s generator: an nbvae's decoder fed each type's Gaussian of latent codes
(:class:`~cellsynth.models.type_noise.TypeGaussianNoise`), with per-(type, gene) count dispersions and,
once :mod:`~cellsynth.train.spread` has fitted it, a Gaussian spread term in the log-rates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..train.spread import RANK as SPREAD_RANK
from .nbvae import PROFILE_VALUES
from .type_noise import TypeGaussianNoise, type_gaussians
from .vae import NBVAENet, weighted_rows


class DecoderGenerator(nn.Module):
    """``z → z' = mean[c] + z ⊙ dev[c] → decoder → log1p(ρ · 1e4)``: the cgan's generator interface
    (``forward(z, weights) -> (x, pre)``, ``noise``, ``z_dim``, per-(type, gene) ``log_dispersion``)
    around an nbvae's decoder (its encoder is not kept)."""

    def __init__(
        self,
        n_genes: int,
        sizes: Sequence[int],
        z_dim: int,
        hidden: Sequence[int],
        dispersion: bool,
        code_cov: str = "pooled",
        spread: bool = False,
        spread_from_noise: bool = False,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.nonnegative = True
        self.code_cov = code_cov  # the shrinkage target of a type's code covariance (type_gaussians)
        self.gives_profile = True  # forward(..., with_profile=True) also returns ρ
        self.noise = TypeGaussianNoise(sizes, z_dim)
        # the decoder of NBVAENet(hidden reversed): its widths are ``hidden``
        self.vae = NBVAENet(
            n_genes, sizes, z_dim, tuple(hidden)[::-1], 0.0, per_label=True, zero_inflated=False
        )
        del self.vae.encoder
        self.log_dispersion = nn.Parameter(torch.full((sizes[0], n_genes), -2.0)) if dispersion else None
        # the spread term's variance taken out of the count draw's independent log-normal noise, gene by
        # gene (:meth:`noise_taken`), so that it correlates the genes' variation instead of adding to it
        self.spread_from_noise = spread_from_noise
        # the spread term (train.spread): the training cells' principal axes and each type's factor along
        # them; tensors only while it is set (``spread``: set, to be loaded), so a model without one has none
        if spread:
            self._spread_tensors(
                torch.zeros(SPREAD_RANK, n_genes), torch.zeros(sizes[0], SPREAD_RANK, SPREAD_RANK)
            )

    def marginal_parameters(self) -> list[nn.Parameter]:
        """Per-(type, gene) parameters: the decoder's type offsets and the count draw's dispersion."""
        extra = [] if self.log_dispersion is None else [self.log_dispersion]
        return [self.vae.offset, *extra]

    @torch.no_grad()
    def shift_log_rate(self, delta: torch.Tensor) -> None:
        """Add ``delta`` (types × genes) to each type's log-rates: its softmax offsets."""
        self.vae.offset.add_(delta.to(self.vae.offset.device, self.vae.offset.dtype))

    def dispersion(self, weights: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """cells × genes over-dispersion for cells with conditions ``weights`` (mixtures: geometric)."""
        if self.log_dispersion is None:
            return None
        phi = torch.exp(weighted_rows(weights[0], self.log_dispersion.float()))
        taken = self.noise_taken()
        if taken is None:
            return phi
        # the log-normal's σ² = log(1 + φ), less what the spread term carries
        return torch.expm1((torch.log1p(phi) - weighted_rows(weights[0], taken)).clamp_min(1e-8))

    def noise_taken(self) -> torch.Tensor | None:
        """types × genes: the log-rate variance the spread term takes out of the count draw's log-normal
        noise (``spread_from_noise``): its own variance in each gene, at most the noise's σ²; None without
        the term. A gene's log-rate keeps its variance and its mean (:meth:`forward` moves the mean by
        half of what is taken, as the log-normal's mean-one correction no longer does)."""
        if not (self.spread_from_noise and self.spread_on and self.log_dispersion is not None):
            return None
        loadings = torch.einsum("gk,ckj->cgj", self.spread_axes, self.spread_factors)
        noise = torch.log1p(torch.exp(self.log_dispersion.detach().float()))
        return torch.minimum(loadings.square().sum(-1), noise)

    def forward(self, z: torch.Tensor, weights: Sequence[torch.Tensor], with_profile: bool = False):
        """``(x, x)`` with ``x = log1p(ρ · 1e4)``; ``with_profile``: ``(x, x, ρ)``, so that a count draw
        takes ρ as it is instead of recovering it from ``x`` (the same values and gradients, fewer
        genes-wide operations). ``z`` of ``z_dim + SPREAD_RANK`` columns: the last ones draw the spread
        term, added to the log-rates (:meth:`noise_width`)."""
        eps, z = z[:, self.z_dim :], z[:, : self.z_dim]
        h = self.vae.decode(self.noise(z, weights), weights)
        logits = self.vae.head_output(self.vae.profile, h, weights)
        if eps.shape[1]:
            factors = torch.einsum("nc,cij->nij", weights[0].to(eps.dtype), self.spread_factors.to(eps.dtype))
            logits = logits + torch.einsum("nij,nj->ni", factors, eps) @ self.spread_axes.to(eps.dtype).T
            taken = self.noise_taken()
            if taken is not None:
                logits = logits - 0.5 * weighted_rows(weights[0], taken)
        x, rho = PROFILE_VALUES(logits)
        return (x, x, rho) if with_profile else (x, x)

    @property
    def spread_on(self) -> bool:
        """Whether the spread term is set (its tensors exist)."""
        return "spread_factors" in self._buffers

    def noise_width(self) -> int:
        """Columns of the noise to sample with: ``z_dim``, and the spread term's once it is set."""
        return self.z_dim + (SPREAD_RANK if self.spread_on else 0)

    @torch.no_grad()
    def set_spread(self, axes: np.ndarray | None, factors: np.ndarray | None) -> None:
        """Set the spread term (axes: rank × genes; factors: types × rank × rank), or remove it (None)."""
        if factors is None:
            if self.spread_on:
                del self.spread_axes, self.spread_factors
            return
        self._spread_tensors(torch.as_tensor(np.asarray(axes)), torch.as_tensor(np.asarray(factors)))

    def _spread_tensors(self, axes: torch.Tensor, factors: torch.Tensor) -> None:
        device = self.vae.offset.device
        self.register_buffer("spread_axes", axes.T.to(device, torch.float32).contiguous())
        self.register_buffer("spread_factors", factors.to(device, torch.float32).contiguous())

    @torch.no_grad()
    def start_from(self, autoencoder: NBVAENet, codes: np.ndarray, labels: np.ndarray) -> None:
        """Take ``autoencoder``'s decoder, and start the noise of each type at its cells' ``codes``
        (mean and deviation per dimension); covariates start neutral (the decoder sees them)."""
        state = {k: v for k, v in autoencoder.state_dict().items() if not k.startswith("encoder.")}
        self.vae.load_state_dict(state)
        n_labels = self.noise.mean[0].shape[0]
        mean, chol = type_gaussians(codes, labels, n_labels, self.code_cov)
        self.noise.mean[0].copy_(torch.from_numpy(mean))
        self.noise.dev.copy_(torch.from_numpy(chol))
        for k in range(1, len(self.noise.mean)):
            self.noise.mean[k].zero_()
        if self.log_dispersion is not None:  # Poisson–log-normal of variance 1/θ: the NB's over-dispersion
            theta = autoencoder.theta([torch.eye(n_labels)])
            self.log_dispersion.copy_(-torch.log(theta).clamp(-7.0, 5.0))


__all__ = ["SPREAD_RANK", "DecoderGenerator"]
