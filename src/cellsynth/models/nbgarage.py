"""``nbgarage``: GARAGE's seed cells mixed into the input of ``nbgan``'s count-decoder generator.

``nbgan`` (:mod:`.nbgan`) starts its generator as a trained negative-binomial decoder fed with each type's
Gaussian of latent codes; GARAGE (:mod:`.garage`) replaces a fraction λ of the generator's input rows by
seed cells chosen by graph attention (every type, rare ones first, gets a quota). Here the two meet: a seed
is the latent code of its cell (the autoencoder's posterior mean), expressed as the generator's input noise
— ``dev[c]⁻¹ (code − mean[c])`` under the start's per-type modulation — so that at the start a seed row
decodes to its cell's reconstruction, and adversarial training moves seed and noise rows alike. Sampling
mixes seeds in at the same rate, with GARAGE's copying guard (each cell's distance to its seed, ``obs``).

The seeds are chosen before the autoencoder is trained (in the data's principal components, as GARAGE's)
and their codes taken after it; checkpoints of the adversarial stage carry the codes in the training state
(the encoder is not kept), so a resumed run mixes in the same seeds. As with GARAGE, the model file holds
the seeds' codes: share samples, not model files, when the training cells are private.
"""

from __future__ import annotations

import numpy as np
import torch

from ..params import ParamSpec
from .garage import GARAGE, SEEDING_PARAMS, SeedBank
from .nbgan import NBGAN
from .registry import register

#: the training-state key of the seeds' input codes in checkpoints of the adversarial stage
SEED_CODES = "seed_codes"


@register
class NBGARAGE(GARAGE, NBGAN):
    """nbgan with GARAGE's graph-attention seed cells as latent codes in its input batch."""

    name = "nbgarage"
    # no spread term: its samples come from the seed bank's inputs, which do not draw it
    param_spec = ParamSpec([p for p in NBGAN.param_spec if p.name != "spread"]).extend(*SEEDING_PARAMS)
    _seed_rows: np.ndarray | None = None

    def _seed_inputs(self, bank: SeedBank, data, coords, rows) -> None:  # noqa: ARG002
        self._seed_rows = rows  # their codes exist once the autoencoder is trained: see _started

    def _started(self, generator, data, codes: np.ndarray) -> None:
        bank, rows = self.modules["seeds"], self._seed_rows
        if rows is None or not len(rows):
            return
        noise = generator.noise
        labels = torch.from_numpy(data.label.codes[rows]).long()
        bank.latent.copy_(noise.whiten(torch.from_numpy(codes[rows]).float(), labels))

    def _checkpoint_callback(self, path, meta):
        write = super()._checkpoint_callback(path, meta)

        def with_seed_codes(state: dict, model_state: dict) -> None:
            write({**state, SEED_CODES: self.modules["seeds"].latent}, model_state)

        return with_seed_codes

    def _start_generator(self, data, *, device, seed, progress, resume) -> None:
        super()._start_generator(data, device=device, seed=seed, progress=progress, resume=resume)
        if resume is not None and SEED_CODES in resume:
            self.modules["seeds"].latent.copy_(resume[SEED_CODES])
