"""The conditional GAN: per-condition noise modulation, an auxiliary class discriminator, a projection
critic, learnable sparsity and label mixing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError
from ..nn.blocks import MLP, ConditionalNoise, InputProjection, Projected, ProjectionDiscriminator
from ..train.adversarial import TrainSettings, principal_axes, train_adversarial
from ..train.losses import get_loss
from .model import SyntheticCellModel
from .registry import register


class ConditionalGenerator(nn.Module):
    """z ~ N(0, I) → z' = mean[c] + z ⊙ dev[c] → MLP + offset[c] → relu (exact zeros) or identity.

    ``offset`` is a learned per-condition, per-gene output bias (summed over condition keys like the
    noise embeddings). :meth:`init_offset` starts the label's offset at each type's mean profile, so the
    network learns the variation of cells around their type from the first step instead of first
    spending thousands of steps finding each type's mean expression.

    Returns ``(x, pre)``: the output and the pre-activation, from which the sparsity loss takes a
    gradient also where relu has none.
    """

    def __init__(
        self,
        n_genes: int,
        sizes: Sequence[int],
        z_dim: int,
        hidden: Sequence[int],
        nonnegative: bool,
        dispersion: bool = False,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.nonnegative = nonnegative
        self.noise = ConditionalNoise(sizes, z_dim)
        self.net = MLP(z_dim, hidden, n_genes, norm=True)
        self.offset = nn.ParameterList([nn.Parameter(torch.zeros(n, n_genes)) for n in sizes])
        # per-(label, gene) log over-dispersion of the count draw (count_noise="pln"; see train.observe)
        self.log_dispersion = nn.Parameter(torch.full((sizes[0], n_genes), -2.0)) if dispersion else None

    def marginal_parameters(self) -> list[nn.Parameter]:
        """Per-(condition, gene) parameters: output offsets and the count draw's dispersion."""
        extra = [] if self.log_dispersion is None else [self.log_dispersion]
        return [*self.offset, *extra]

    def dispersion(self, weights: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """cells × genes over-dispersion for cells with conditions ``weights`` (mixtures: geometric)."""
        if self.log_dispersion is None:
            return None
        return torch.exp(weights[0].float() @ self.log_dispersion.float())

    @torch.no_grad()
    def init_dispersion(self, phi: torch.Tensor) -> None:
        if self.log_dispersion is not None:
            self.log_dispersion.copy_(torch.log(phi.clamp(1e-3, 1e2)))

    @torch.no_grad()
    def init_offset(self, label_mean: torch.Tensor, network_scale: float = 0.1) -> None:
        """Start at ``label_mean`` (labels × genes) with the network's own output scaled down."""
        self.offset[0].copy_(label_mean)
        last = self.net[-1]
        last.weight.mul_(network_scale)
        last.bias.zero_()

    @torch.no_grad()
    def init_variation(
        self,
        components: torch.Tensor,
        sd: torch.Tensor,
        label_freq: torch.Tensor,
        gen: torch.Generator | None = None,
        n_draw: int = 4096,
    ) -> None:
        """Start the network's output variation on the real cells' within-type axes.

        ``components`` (k × genes, orthonormal rows) and ``sd`` (k) are the principal axes and standard
        deviations of the training cells around their type means. The last layer is set so that, for
        noise drawn as in training (labels at ``label_freq``), each type's output varies along
        ``components`` with deviation ``sd`` (the hidden features whitened within types), and the
        type's mean output is unchanged (absorbed in the label's offset). Training then refines a
        generator that starts as a per-type Gaussian on the real axes instead of a point at the type
        mean.
        """
        last = self.net[-1]
        labels = torch.multinomial(label_freq.float(), n_draw, replacement=True, generator=gen)
        w = F.one_hot(labels, len(label_freq)).float()
        weights = [w] + [torch.zeros(n_draw, o.shape[0]) for o in list(self.offset)[1:]]
        h = self.noise(torch.randn(n_draw, self.z_dim, generator=gen), weights)
        for layer in list(self.net)[:-1]:
            h = layer(h)
        count = w.sum(0).clamp_min(1)
        h_mean = (w.T @ h) / count[:, None]  # labels × hidden
        hc = h - h_mean[labels]
        _, s, vh = torch.linalg.svd(hc, full_matrices=False)
        k = min(len(sd), int((s > 1e-6 * s[0]).sum()))
        whiten = vh[:k] / (s[:k, None] / np.sqrt(n_draw))  # k × hidden: unit-variance coordinates
        weight = (components[:k].T * sd[:k]) @ whiten  # genes × hidden
        last.weight.copy_(weight)
        last.bias.zero_()
        self.offset[0].sub_(h_mean @ weight.T)

    def forward(self, z: torch.Tensor, weights: Sequence[torch.Tensor]):
        pre = self.net(self.noise(z, weights))
        pre = pre + sum(w.to(pre.dtype) @ o.to(pre.dtype) for w, o in zip(weights, self.offset, strict=True))
        return (F.relu(pre) if self.nonnegative else pre), pre


class ConditionClassifier(nn.Module):
    """Auxiliary classifier: one head of logits per condition key (no softmax before the loss)."""

    def __init__(self, n_genes: int, sizes: Sequence[int], hidden: Sequence[int], dropout: float = 0.1):
        super().__init__()
        *body, last = hidden
        self.body = nn.Sequential(MLP(n_genes, body, last, dropout=dropout), nn.LeakyReLU(0.2))
        self.heads = nn.ModuleList([nn.Linear(last, n) for n in sizes])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.body(x)
        return [head(h) for head in self.heads]


def label_mean_profile(data) -> np.ndarray:
    """labels × genes: each type's mean expression in the training representation.

    For log1p data (incl. normalised counts) the mean is taken on the linear scale and logged again
    (``log1p(mean(expm1(x)))``): the log of the type's average profile, which is what count draws
    from a generated profile reproduce on average.
    """
    codes = data.label.codes
    X = data.X
    log_scale = data.preprocessing.representation in ("counts", "log1p")
    out = np.zeros((data.label.n, data.n_genes), dtype=np.float32)
    for c in range(data.label.n):
        rows = np.flatnonzero(codes == c)
        if len(rows) == 0:
            continue
        part = X[rows]
        if sp.issparse(part):
            part = part.copy()
            if log_scale:
                np.expm1(part.data, out=part.data)
            mean = np.asarray(part.mean(0)).ravel()
        else:
            part = np.asarray(part, dtype=np.float64)
            mean = (np.expm1(part) if log_scale else part).mean(0)
        out[c] = np.log1p(mean) if log_scale else mean
    return out


def within_type_axes(data, n_comps: int, seed: int = 0, max_cells: int = 5000):
    """Principal axes (k × genes) and standard deviations (k) of the cells around their type means."""
    rows = np.arange(data.n_cells)
    rng = np.random.default_rng(seed)
    _, components, sd = principal_axes(data, rows, n_comps, rng, within_labels=True, max_cells=max_cells)
    return components, sd


def label_dispersion(data, floor: float = 1e-3, cap: float = 1e2) -> np.ndarray | None:
    """labels × genes over-dispersion φ of each type's counts (method of moments).

    With per-cell library sizes L_i and a type profile p, counts have mean L_i·p and variance
    L_i·p + φ·(L_i·p)²; φ = (Σ(y − L_i p)² − Σ L_i p) / Σ (L_i p)², clipped to [floor, cap]. Computed
    from sparse sums (Σy, Σy², Σ L·y), so no type's matrix is densified. None unless the data are
    counts (``data.library`` set).
    """
    if data.library is None:
        return None
    codes = data.label.codes
    out = np.full((data.label.n, data.n_genes), 0.1, dtype=np.float32)
    for c in range(data.label.n):
        rows = np.flatnonzero(codes == c)
        if len(rows) < 2:
            continue
        y = sp.csr_matrix(data.X[rows], dtype=np.float64)
        np.expm1(y.data, out=y.data)
        y = sp.diags(1.0 / data.scale[rows].astype(np.float64)) @ y  # back to counts
        lib = data.library[rows].astype(np.float64)
        s1 = np.asarray(y.sum(0)).ravel()
        s2 = np.asarray(y.multiply(y).sum(0)).ravel()
        sl = np.asarray(y.T @ lib).ravel()
        p = s1 / lib.sum()
        # Σ(y − Lp)² = Σy² − 2pΣLy + p²ΣL²;  Σ Lp = p ΣL;  Σ(Lp)² = p² ΣL²
        num = s2 - 2 * p * sl + p**2 * (lib**2).sum() - p * lib.sum()
        den = p**2 * (lib**2).sum()
        phi = np.divide(num, den, out=np.full_like(num, 0.1), where=den > 0)
        out[c] = np.clip(phi, floor, cap)
    return out


_TRAIN_KEYS = {f.name for f in fields(TrainSettings)} - {"extra"}


@register
class CGAN(SyntheticCellModel):
    """Conditional GAN: cell-type (and covariate) conditioned generator with auxiliary classifier."""

    name = "cgan"
    default_params = {
        "z_dim": 64,
        "g_hidden": (256, 512),
        "d_hidden": (256, 128),
        "c_hidden": (256, 128),
        "loss": "bce",
        "label_smoothing": 0.9,
        "d_dropout": 0.1,
        "critic_space": "pca",
        "critic_components": 128,
        **{f.name: f.default for f in fields(TrainSettings) if f.name in _TRAIN_KEYS and f.name != "extra"},
        # measured on Baron mouse (docs/benchmarks.md, sessions 7, 8, 10 and 11): 10-minute detection AUC
        # 0.938 → 0.907 (pln, packing) → 0.862 (moment match, faster per-gene parameters, g (256, 512))
        # → 0.821 (generator started on the within-type axes) → 0.736 (learning rates halved, the moment
        # match's gradient per gene and 9× stronger; session 11)
        "lr_g": 1e-4,
        "lr_d": 1e-4,
        "count_noise": "pln",
        "pack": 2,
        "moment_weight": 6e-3,  # per gene (see train.adversarial.MomentMatch and per_gene_path)
        "lr_marginal": 5e-3,
        "init_variation": 64,  # within-type axes the generator starts on (0: off)
    }

    def _z_dim(self, n_genes: int) -> int:
        """Dimension of the generator's input (seeded models may tie it to the data)."""
        return int(self.params["z_dim"])

    def _learns_dispersion(self) -> bool:
        """Poisson–log-normal count draws (``count_noise="pln"``) on count data."""
        info = self.info
        return (
            self.params["count_noise"] == "pln"
            and info is not None
            and info["preprocessing"]["representation"] == "counts"
        )

    def _critic_inputs(self, n_genes: int) -> int:
        space = self.params["critic_space"]
        if space == "genes":
            return n_genes
        if space == "pca":
            return int(self.params["critic_components"])
        raise InputError(f"critic_space must be 'genes' or 'pca', got {space!r}")

    def _build(self, sizes, n_genes):
        p = self.params
        nonneg = True if self.info is None else bool(self.info["preprocessing"]["nonnegative"])
        n_in = self._critic_inputs(n_genes)
        if self.info is not None and "critic_components" in self.info:
            n_in = int(self.info["critic_components"])  # capped by the training data
        pack = int(p["pack"])
        critic = ProjectionDiscriminator(pack * n_in, sizes, p["d_hidden"], dropout=p["d_dropout"])
        classifier = ConditionClassifier(n_in, sizes, p["c_hidden"])
        if p["critic_space"] == "pca":
            critic = Projected(InputProjection(n_genes, n_in), critic, pack=pack)
            classifier = Projected(InputProjection(n_genes, n_in), classifier)
        return {
            "generator": ConditionalGenerator(
                n_genes,
                sizes,
                self._z_dim(n_genes),
                p["g_hidden"],
                nonneg,
                dispersion=self._learns_dispersion(),
            ),
            "discriminator": critic,
            "classifier": classifier,
        }

    def _prepare_critic(self, data, seed: int) -> None:
        """Fit the critic's input PCA on the training cells (``critic_space="pca"``)."""
        if self.params["critic_space"] != "pca":
            return
        mean, basis, _ = data.pca(int(self.params["critic_components"]), seed)
        k = basis.shape[1]
        if k != self._critic_inputs(data.n_genes):  # fewer cells or genes than components: rebuild
            self.info["critic_components"] = k
            sizes = [c.n for c in data.conditions]
            fresh = self._build(sizes, data.n_genes)
            self.modules["discriminator"], self.modules["classifier"] = (
                fresh["discriminator"],
                fresh["classifier"],
            )
        for name in ("discriminator", "classifier"):
            self.modules[name].projection.set(torch.from_numpy(mean), torch.from_numpy(basis))

    def _loss(self):
        p = self.params
        if p["loss"] == "bce":
            return get_loss("bce", real_label=p["label_smoothing"])
        return get_loss(p["loss"])

    def _settings(self) -> TrainSettings:
        kw = {k: self.params[k] for k in _TRAIN_KEYS}
        kw["betas"] = tuple(kw["betas"])
        if self.params["loss"] == "wgan-gp" and kw["betas"] == TrainSettings.betas:
            kw["betas"] = (0.0, 0.9)
        return TrainSettings(**kw)

    def _training_latent(self, data, *, device, seed, progress):
        """The training loop's ``latent_fn`` (None: plain noise); seeded models override this."""
        return None

    def _fit(self, data, *, device, seed, progress):
        latent_fn = self._training_latent(data, device=device, seed=seed, progress=progress)
        self._prepare_critic(data, seed)
        self.modules["generator"].init_offset(torch.from_numpy(label_mean_profile(data)))
        k = int(self.params["init_variation"])
        if k:
            comps, sd = within_type_axes(data, k, seed)
            freq = np.bincount(data.label.codes, minlength=data.label.n).astype(np.float32)
            self.modules["generator"].init_variation(
                torch.from_numpy(comps),
                torch.from_numpy(sd),
                torch.from_numpy(freq),
                torch.Generator().manual_seed(seed),
            )
        if self._learns_dispersion():
            self.modules["generator"].init_dispersion(torch.from_numpy(label_dispersion(data)))
        result = train_adversarial(
            self.modules["generator"],
            self.modules["discriminator"],
            self.modules["classifier"],
            data,
            self._loss(),
            self._settings(),
            device=device,
            seed=seed,
            progress=progress,
            latent_fn=latent_fn,
            checkpoint=self._checkpoint_callback(),
        )
        self.modules["generator"].load_state_dict(result.generator_state)
        self.history = result.history
        self.fit_record = {"stopped_because": result.stopped_because, "best_val_mmd": result.best_val_mmd}
