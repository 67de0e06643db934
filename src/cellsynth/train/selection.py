"""Which validated state a training plan keeps, and whether a validation counts as progress.

The selecting score (lower is better) comes with its noise: the spread of the same estimate between
random splits of the pooled cells (``<key>_sd``, :func:`~cellsynth.metrics.distribution.mmd_rbf_noise`).
Two rules sit on top of "keep the lowest score":

- ``tolerance`` k (``val_tolerance``): a score within k noise SDs of the best is a **tie**; the later of
  tied states is kept, and only a score below the best by more than k SDs is progress for ``patience``.
- a **tie-break** score (a plan's ``tie_key``; for nbgan's autoencoder stage, the held-out NELBO): ties are
  scores within max(k, 1) noise SDs of the best, and a tie replaces the kept state only when its
  tie-break score is lower than the kept state's, which then counts as progress. Where the held-out cells
  are many, states can score within their noise of each other while the held-out NELBO still tells them
  apart; where the NELBO only rises (the autoencoder overfitting), no tie wins and the rule keeps what the
  lowest score keeps (docs/benchmarks.md, "Scaling").
"""

from __future__ import annotations

from typing import NamedTuple


class Verdict(NamedTuple):
    keep: bool  # the validated state replaces the kept one
    progress: bool  # patience starts again


def judge(
    score: float,
    noise: float,
    best: float,
    tolerance: float = 0.0,
    tie: float | None = None,
    kept_tie: float = float("inf"),
) -> Verdict:
    """The verdict on a validated state scoring ``score`` (noise SD ``noise``) against the best score so
    far ``best``; ``tie``: its tie-break score (None: no tie-break), ``kept_tie``: the kept state's."""
    band = tolerance * noise
    improved = score < best - band
    if tie is not None:  # a tie (within at least one noise SD) wins only on a lower tie-break score
        won = not improved and noise > 0 and score <= best + max(band, noise) and tie < kept_tie
        return Verdict(keep=improved or won, progress=improved or won)
    tied = not improved and band > 0 and score <= best + band
    return Verdict(keep=improved or tied, progress=improved)
