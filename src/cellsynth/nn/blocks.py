"""MLPs, the per-condition noise modulation z' = mean[c] + z * dev[c], and a projection discriminator.

Conditions travel as a list of weight matrices, one per condition key (cells × categories): one-hot
rows for ordinary cells, convex combinations for label mixing. Every block takes that form, so mixing
needs no special path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

# softplus(_DEV_INIT) == 1: deviations start at the identity
_DEV_INIT = 0.5413248546129181


def pack_rows(x: torch.Tensor, partners: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """PacGAN packing: each row of ``x`` side by side with its partners' rows (one index tensor per
    extra slot; none: ``x`` itself)."""
    return torch.cat([x, *(x[p] for p in partners)], dim=1) if len(partners) else x


def one_hot_conditions(codes: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """``codes`` (cells × keys, int64) → one float one-hot matrix per key."""
    return [F.one_hot(codes[:, k], n).to(torch.float32) for k, n in enumerate(sizes)]


class WideInputLinear(nn.Module):
    """``nn.Linear`` (the same initial values) for a layer of many inputs, its weight stored transposed
    (inputs × outputs).

    With cells × genes inputs this layout makes the weight's gradient a (genes × cells) @ (cells ×
    outputs) product; ``nn.Linear``'s outputs × inputs weight gets it as (outputs × cells) @ (cells ×
    genes), the slower form on the CPU: about 2 ms of a ~100 ms autoencoder step on Baron mouse pancreas
    (docs/benchmarks.md). Model files written with ``nn.Linear``'s layout (``weight``) load into it.
    """

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        layer = nn.Linear(n_in, n_out)  # nn.Linear's initialisation, the same random draws
        self.in_features, self.out_features = n_in, n_out
        self.weight_t = nn.Parameter(layer.weight.detach().t().contiguous())
        self.bias = layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight_t)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "weight" in state_dict:  # nn.Linear's layout: outputs × inputs
            state_dict[prefix + "weight_t"] = state_dict.pop(prefix + "weight").t()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MLP(nn.Sequential):
    """Linear layers with LeakyReLU, optional LayerNorm and dropout between them (``wide_input``: the
    first a :class:`WideInputLinear`)."""

    def __init__(
        self,
        n_in: int,
        hidden: Sequence[int],
        n_out: int,
        *,
        norm: bool = False,
        dropout: float = 0.0,
        negative_slope: float = 0.2,
        wide_input: bool = False,
    ):
        layers: list[nn.Module] = []

        def linear(a: int, b: int) -> nn.Module:
            return WideInputLinear(a, b) if wide_input and not layers else nn.Linear(a, b)

        width = n_in
        for h in hidden:
            layers.append(linear(width, h))
            if norm:
                layers.append(nn.LayerNorm(h))
            layers.append(nn.LeakyReLU(negative_slope))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(linear(width, n_out))
        super().__init__(*layers)


class ConditionalNoise(nn.Module):
    """Modulate noise by learned per-condition mean and deviation embeddings.

    For one key: ``z' = mean[c] + z * softplus(dev[c])``. Several keys combine by summing their
    mean embeddings and their (pre-softplus) deviation embeddings; only the first key (the label)
    starts with deviation 1, the others start neutral.
    """

    def __init__(self, sizes: Sequence[int], dim: int):
        super().__init__()
        self.sizes = list(sizes)
        self.mean = nn.ParameterList(
            [nn.Parameter(torch.randn(n, dim) * (0.5 if k == 0 else 0.1)) for k, n in enumerate(self.sizes)]
        )
        self.dev = nn.ParameterList(
            [
                nn.Parameter(torch.full((n, dim), _DEV_INIT if k == 0 else 0.0))
                for k, n in enumerate(self.sizes)
            ]
        )

    def forward(self, z: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        mean = sum(w @ m for w, m in zip(weights, self.mean, strict=True))
        dev = F.softplus(sum(w @ d for w, d in zip(weights, self.dev, strict=True)))
        return mean + z * dev


class ProjectionDiscriminator(nn.Module):
    """Real-vs-synthetic critic returning logits: ``psi(h) + sum_k <embed_k(c_k), h>`` (Miyato & Koyama).

    The projection term makes the critic judge each cell against its own condition, so that a
    generated cell must look like a real cell *of its type*, not just like some real cell.
    """

    def __init__(self, n_genes: int, sizes: Sequence[int], hidden: Sequence[int], dropout: float = 0.0):
        super().__init__()
        *body, last = hidden
        self.body = nn.Sequential(MLP(n_genes, body, last, dropout=dropout), nn.LeakyReLU(0.2))
        self.head = nn.Linear(last, 1)
        self.embed = nn.ParameterList([nn.Parameter(torch.zeros(n, last)) for n in sizes])

    def forward(
        self, x: torch.Tensor, weights: Sequence[torch.Tensor], partners: Sequence[torch.Tensor] = ()
    ) -> torch.Tensor:
        """Logits for cells ``x``, each judged beside its ``partners``' cells (:func:`pack_rows`)."""
        h = self.body(pack_rows(x, partners))
        out = self.head(h).squeeze(-1)
        for w, e in zip(weights, self.embed, strict=True):
            out = out + ((w @ e) * h).sum(-1)
        return out


class InputProjection(nn.Module):
    """A fixed linear map ``(x - mean) @ basis`` (buffers, not trained): e.g. a PCA of the training cells.

    A critic that sees cells through the training data's leading principal components judges their
    structure (which genes move together, how far cells vary around their type) and cannot memorise
    individual training cells' gene-level noise, which on a few hundred cells it otherwise does within
    minutes; count sampling supplies that noise anyway. It is also far cheaper on wide data.
    """

    def __init__(self, n_genes: int, n_comps: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_genes))
        self.register_buffer("basis", torch.zeros(n_genes, n_comps))

    @torch.no_grad()
    def set(self, mean: torch.Tensor, basis: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.basis.copy_(basis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) @ self.basis.to(x.dtype)

    @torch.no_grad()
    def is_orthonormal(self, tol: float = 1e-3) -> bool:
        """Whether the basis' columns are orthonormal (a PCA's are; an all-zero basis, unset, is not)."""
        b = self.basis.double()
        return bool(torch.allclose(b.T @ b, torch.eye(b.shape[1], dtype=b.dtype, device=b.device), atol=tol))


class Projected(nn.Module):
    """``module(projection(x), *args)``, with PacGAN ``partners`` packed after the projection: each cell's
    projection beside its partners' (the same as projecting packed cells slot by slot, at a fraction of
    the cost on wide data). ``projected=True``: ``x`` is already projected."""

    def __init__(self, projection: InputProjection, module: nn.Module):
        super().__init__()
        self.projection = projection
        self.module = module

    def forward(self, x: torch.Tensor, *args, partners: Sequence[torch.Tensor] = (), projected: bool = False):
        h = x if projected else self.projection(x)
        return self.module(pack_rows(h, partners), *args)
