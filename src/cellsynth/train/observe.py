"""Train on what is output: put generated expression through the measurement real cells went through.

For count data, a cellsynth model does not output its generator's values: it draws counts from the
generated expression profile at a library size taken from real cells, exactly as sequencing samples
molecules (see ``SyntheticCellModel._to_output``). If the critic judged the generator's raw values
instead, the generator would learn to imitate the sampling noise already present in real log-normalised
data, and the output would then carry that noise twice (too few detected genes, inflated variance).

:class:`CountObservation` therefore applies, inside the training loop, what sampling applies at the end:
profile → counts at a real cell's library size → normalisation and log1p as in preprocessing. The
count draw passes the gradient straight through (Bengio et al. 2013), and the expected zero fraction
of the draw is known in closed form, so the sparsity objective matches the zeros that will be output.
"""

from __future__ import annotations

import torch

COUNT_NOISE = ("poisson", "pln", "rounding", "none")
_MAX_LOG = 15.0  # expm1(15) ≈ 3.3e6, far above any log1p-normalised value (log1p(1e4) ≈ 9.2)


def profile(x: torch.Tensor) -> torch.Tensor:
    """Log-normalised values → relative expression (rows sum to 1; all-zero rows stay zero)."""
    q = torch.expm1(x.float().clamp(max=_MAX_LOG))
    return q / q.sum(-1, keepdim=True).clamp_min(1e-12)


class CountObservation:
    """``(x, library, scale) → (observed x, probability that each entry is zero)``.

    ``library`` is a real cell's total over the training genes, ``scale`` its normalisation factor
    (target sum / total over all genes). ``noise``: ``"poisson"`` (counts ~ Poisson(profile · library),
    the molecule sampling of droplet data), ``"pln"`` (Poisson–log-normal: the rate is first multiplied
    by a mean-1 log-normal variable of variance ``dispersion``, per cell and gene, so each gene gets the
    independent over-dispersion of a negative binomial of the same dispersion, which a latent of a few
    dozen dimensions cannot produce; the draw is reparameterised, so the dispersion is learned; a
    log-normal rather than a gamma because it costs a normal draw, a gamma draw costs 10× more) or
    ``"rounding"`` (stochastic rounding of
    profile · library: the generator supplies all variability itself).
    """

    def __init__(self, noise: str):
        if noise not in COUNT_NOISE or noise == "none":
            raise ValueError(f"count noise must be 'poisson', 'pln' or 'rounding', got {noise!r}")
        self.noise = noise

    def __call__(
        self,
        x: torch.Tensor,
        library: torch.Tensor,
        scale: torch.Tensor,
        gen: torch.Generator | None = None,
        dispersion: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rate = profile(x) * library[:, None]
        if self.noise == "pln":
            if dispersion is None:
                raise ValueError("count noise 'pln' needs a dispersion (cells × genes)")
            var = torch.log1p(dispersion.float()).clamp_min(1e-8)  # log-normal σ² for variance φ, mean 1
            eps = torch.randn(rate.shape, generator=gen, device=rate.device, dtype=rate.dtype)
            rate = rate * torch.exp(var.sqrt() * eps - 0.5 * var)
        with torch.no_grad():
            if self.noise in ("poisson", "pln"):
                counts = torch.poisson(rate, generator=gen)
            else:
                low = torch.floor(rate)
                u = torch.rand(rate.shape, generator=gen, device=rate.device)
                counts = low + (u < rate - low).to(rate.dtype)
        counts_st = rate + (counts - rate).detach()  # value of the draw, gradient of the rate
        total = counts_st.sum(-1).clamp_min(1.0)
        # real cells: log1p(c * target / all-gene total); all-gene total ≈ own total * (real all / real train)
        factor = scale * library / total
        observed = torch.log1p(counts_st * factor[:, None])
        if self.noise in ("poisson", "pln"):  # given this draw's rate: an unbiased estimate for pln
            p_zero = torch.exp(-rate)
        else:
            p_zero = (1.0 - rate).clamp(0.0, 1.0)
        return observed, p_zero
