"""Training curves: the losses and the validation score a model recorded per epoch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

# Loss curves drawn when present in a training history, in this order (other ``*_loss`` keys follow).
LOSS_KEYS = ("d_loss", "g_loss", "class_loss_real", "class_loss_fake", "sparsity_loss")


def loss_keys(history: Sequence[dict[str, Any]]) -> list[str]:
    """The losses a history recorded, in the order they are drawn (:data:`LOSS_KEYS` first)."""
    keys = [k for k in LOSS_KEYS if any(_number(h.get(k)) for h in history)]
    return keys + sorted(
        {k for h in history for k in h if k.endswith("loss") and k not in keys and _number(h.get(k))}
    )


#: validation scores a training plan may record (history column → what it is); lower is better for each
VALIDATION_KEYS = {"val_mmd": "validation MMD", "val_nelbo": "validation negative ELBO per cell"}


def validation_key(history: Sequence[dict[str, Any]]) -> str | None:
    """The validation score a history recorded (a column of :data:`VALIDATION_KEYS`), or None."""
    for key in VALIDATION_KEYS:
        if any(_number(h.get(key)) for h in history):
            return key
    return None


def has_val_mmd(history: Sequence[dict[str, Any]]) -> bool:
    """Whether a history recorded a validation score (MMD or negative ELBO)."""
    return validation_key(history) is not None


def has_curves(history: Sequence[dict[str, Any]]) -> bool:
    """Whether a training history holds anything :func:`training_curves` can draw."""
    return bool(loss_keys(history)) or has_val_mmd(history)


def training_curves(history: Sequence[dict[str, Any]]) -> Figure:
    """Losses against epoch and, when recorded, the validation score against epoch.

    Raises
    ------
    ValueError
        Nothing to draw (see :func:`has_curves`).
    """
    if not has_curves(history):
        raise ValueError("the training history holds no losses and no validation score")
    epochs = np.array([h.get("epoch", i + 1) for i, h in enumerate(history)], dtype=np.float64)
    keys = loss_keys(history)
    val = validation_key(history)
    has_mmd = val is not None
    n = int(bool(keys)) + int(has_mmd)
    fig = Figure(figsize=(6.5 * n, 4.3))
    axes = list(np.atleast_1d(fig.subplots(1, n)))
    if keys:
        ax = axes.pop(0)
        for k in keys:
            v = np.array([h.get(k) if _number(h.get(k)) else np.nan for h in history], dtype=np.float64)
            ax.plot(epochs, v, lw=1.5, marker="." if len(epochs) <= 60 else None, label=k)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (mean over the epoch)")
        ax.set_title("Training losses", fontsize=11)
        ax.legend(frameon=False, fontsize=8)
        ax.grid(alpha=0.25)
    if has_mmd:
        ax = axes.pop(0)
        pts = [(e, h[val]) for e, h in zip(epochs, history, strict=True) if _number(h.get(val))]
        e, v = np.array(pts, dtype=np.float64).T
        ax.plot(e, v, color="#6a3d9a", lw=1.5, marker="o", ms=3)
        best = int(np.argmin(v))
        ax.plot(
            [e[best]], [v[best]], marker="*", ms=14, color="#2e7d32", ls="none", label=f"best {v[best]:.4g}"
        )
        if np.all(v > 0):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{VALIDATION_KEYS[val]} (lower is better)")
        ax.set_title(VALIDATION_KEYS[val].capitalize(), fontsize=11)
        ax.legend(frameon=False, fontsize=9)
        ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig


def _number(v: Any) -> bool:
    return (
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) and np.isfinite(v)
    )
