"""The ``fit`` command's input and ending.

The input is read into memory or, for an ``.h5ad`` whose matrix the machine cannot hold several times
over, opened out of core (:class:`~cellsynth.data.BackedCells`), with the same choice of the matrix that
holds counts. The ending is one line on how training ended, or the command that resumes it.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import typer

from .errors import InputError

#: an in-memory fit holds the input matrix about this many times (read, float32, normalised, selected)
IN_MEMORY_COPIES = 4


def fit_input(
    data: Path,
    *,
    labels: Path | None,
    label_key: str,
    make_unique: bool,
    layer: str | None,
    representation: str,
    out_of_core: bool | None,
    cache_dir: Path,
):
    """``(input, layer)``: an AnnData read into memory, or a :class:`~cellsynth.data.BackedCells` where
    ``out_of_core`` asks for it or (``None``) where an ``.h5ad``'s matrix, :data:`IN_MEMORY_COPIES` times
    over, exceeds the memory available; and the layer to train on, a count layer where ``X`` holds none
    (said on stderr)."""
    from .data import read
    from .data.celldata import counts_layer, counts_layer_note

    cells = _backed(data, layer, out_of_core, labels, cache_dir)
    if cells is not None:
        if make_unique:
            cells.make_names_unique()
        if layer is None and representation == "auto" and (found := backed_counts_layer(cells)) is not None:
            typer.echo(f"{counts_layer_note(found)} (--representation log1p keeps X)", err=True)
            layer = found
        return cells, layer
    adata = read(data, labels=labels, label_key=label_key, make_unique=make_unique)
    typer.echo(f"read {adata.n_obs} cells × {adata.n_vars} genes from {data}", err=True)
    if layer is None and representation == "auto" and (found := counts_layer(adata)) is not None:
        layer = found
        typer.echo(f"{counts_layer_note(found)} (--representation log1p keeps X)", err=True)
    return adata, layer


def _backed(data: Path, layer: str | None, out_of_core: bool | None, labels: Path | None, cache_dir: Path):
    """The input opened out of core, or ``None`` to read it into memory."""
    from .data.backed import BackedCells, available_memory

    h5ad = data.suffix.lower() == ".h5ad" and data.is_file()
    if out_of_core is False or (out_of_core is None and not h5ad):
        return None
    if not h5ad:
        raise InputError(f"--out-of-core reads .h5ad files and {data} is not one; write it as .h5ad first")
    if labels is not None:  # labels from a file are put into an AnnData read into memory
        if out_of_core is None:
            return None
        raise InputError("--out-of-core takes the labels from the file's obs; drop --labels (or --in-memory)")
    try:
        cells = BackedCells(data, layer, cache_dir=cache_dir)
    except InputError:
        if out_of_core:
            raise
        return None  # not readable block by block (stored by genes): read into memory as before
    need, free = IN_MEMORY_COPIES * cells.memory_bytes, available_memory()
    size = f"{cells.n_obs:,} cells × {cells.n_vars:,} genes, {cells.stored_entries:,} stored values"
    if out_of_core is None and (free is None or need <= free):
        cells.close()
        return None
    why = (
        "as asked"
        if out_of_core
        else f"in memory it needs about {need / 2**30:.1f} of {free / 2**30:.1f} GiB"
    )
    typer.echo(f"fitting {data} out of core ({size}; {why}): its matrix is read from disk", err=True)
    return cells


def backed_counts_layer(cells) -> str | None:
    """Where ``X`` of the file holds no counts, the first count layer or ``raw.X`` (same genes) that does,
    judged on their first block; else ``None``."""
    from .data.celldata import COUNT_LAYERS, RAW_LAYER

    if cells.detected() == "counts":
        return None
    for name in [n for n in COUNT_LAYERS if n in cells.layers] + [RAW_LAYER]:
        try:
            cells.use(name)
        except InputError:
            continue
        if cells.detected() == "counts":
            return name
    cells.use(None)
    return None


def without_missing(adata, keys: list[str]):
    """``adata`` (or a :class:`~cellsynth.data.BackedCells`) without the cells whose ``obs[keys]`` hold a
    missing value, said on stderr; keys not in ``obs`` are left to the fit's own refusal."""
    keys = [k for k in keys if k in adata.obs.columns]
    missing = adata.obs[keys].isna().any(axis=1).to_numpy()
    if not missing.any():
        return adata
    if missing.all():
        raise InputError(f"every cell misses a value of {', '.join(keys)}: nothing is left to fit")
    typer.echo(
        f"--drop-missing: left out {int(missing.sum()):,} cells missing a value of {', '.join(keys)}",
        err=True,
    )
    if hasattr(adata, "keep"):  # out of core: the rows are skipped as the file is read
        adata.keep(~missing)
        return adata
    return adata[~missing].copy()


def resumed_run(checkpoint_dir: Path) -> tuple[str, int, dict, list[str]]:
    """What the run whose checkpoint is in ``checkpoint_dir`` was: model, seed, fit options and its
    parameters as ``--param`` items."""
    from .train.checkpoint import read_training_meta

    meta = read_training_meta(checkpoint_dir)
    params = [f"{k}={json.dumps(v)}" for k, v in meta["params"].items()]
    return meta["model"], meta["seed"], meta["fit"], params


def report_fit(m, model: str, out: Path, checkpoint_dir: Path, data: Path, seconds: float) -> None:
    """One line on how training ended; an interrupted run keeps its checkpoint and exits with 130."""
    rec = m.fit_record
    if rec.get("stopped_because") == "interrupted":
        typer.echo(
            f"training interrupted after {len(m.history)} epochs; the best model so far → {out}; "
            f"`cellsynth fit {data} --out {out} --resume` continues it",
            err=True,
        )
        raise typer.Exit(130)
    if checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    best = rec.get("best_val")
    score = "" if best is None else f", best validation {rec.get('val_metric', 'score')} {best:.4g}"
    typer.echo(
        f"fitted {model} in {seconds:.0f}s ({len(m.history)} epochs, stopped: {rec.get('stopped_because')}"
        f"{score}) → {out}",
        err=True,
    )
    if split := m.info.get("subtypes"):  # which types the model sees as several populations
        found = Counter(split["types"][t] for t in split["parent"])
        parts = ", ".join(f"{name} ({k})" for name, k in found.items() if k > 1)
        typer.echo(f"sub-populations conditioned on (output under their type's label): {parts}", err=True)
