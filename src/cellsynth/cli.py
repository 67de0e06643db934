"""Command-line interface: a thin shell over the Python API.

User errors print one line (``error: ...``) and exit with status 2, without a traceback, and leave no
half-written output behind.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer

from .errors import CellsynthError, InputError

app = typer.Typer(
    name="cellsynth",
    help="Realistic synthetic single-cell RNA-seq data: fit a generator, sample labelled cells.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 2):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable) -> Callable:
    """Turn CellsynthError (and the few OS errors a user can cause) into one line + exit 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CellsynthError as e:
            _fail(str(e))
        except PermissionError as e:
            _fail(f"permission denied: {e.filename}; choose a writable --out")
        except KeyboardInterrupt:
            _fail("interrupted; nothing was written", code=130)

    return wrapper


def parse_pairs(text: str | None, what: str, cast=float) -> dict:
    """``"B_cell=500,T_cell=200"`` → ``{"B_cell": 500, "T_cell": 200}`` (labels may hold spaces)."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise InputError(f"{what} expects label=value pairs separated by commas, got {part!r}")
        key, value = part.rsplit("=", 1)
        try:
            out[key.strip()] = cast(value.strip())
        except ValueError:
            raise InputError(f"{what}: {value.strip()!r} is not a valid number for {key.strip()!r}") from None
    return out


def _param_value(text: str):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _check_out_path(out: Path, *, directory: bool) -> None:
    if out.exists() and directory and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory; choose another path")
    if out.exists() and not directory and out.is_dir():
        raise InputError(f"--out {out} is a directory; give a file name ending in .h5ad or .csv")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the folder for --out {out}: {e.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write to {parent}; choose a writable --out")


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.resolve().parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_synthetic(adata, out: Path) -> list[Path]:
    """Write an AnnData as ``.h5ad``, or GARAGE-style CSV (cells × genes) + ``<stem>_labels.csv``."""
    import pandas as pd
    import scipy.sparse as sp

    suffix = out.suffix.lower()
    if suffix == ".h5ad":
        write_atomic(out, lambda p: adata.write_h5ad(p, compression="gzip"))
        return [out]
    if suffix in (".csv", ".tsv"):
        sep = "," if suffix == ".csv" else "\t"
        labels_path = out.with_name(f"{out.stem}_labels{out.suffix}")
        X = adata.X.toarray() if sp.issparse(adata.X) else adata.X
        frame = pd.DataFrame(X, index=adata.obs_names, columns=adata.var_names)
        fmt = "%.0f" if adata.uns.get("cellsynth", {}).get("representation") == "counts" else "%.6g"
        write_atomic(out, lambda p: frame.to_csv(p, sep=sep, float_format=fmt, index_label="cell"))
        write_atomic(labels_path, lambda p: adata.obs.to_csv(p, sep=sep, index_label="cell"))
        return [out, labels_path]
    raise InputError(f"--out {out}: unknown output format {out.suffix!r}; use .h5ad or .csv")


@app.command()
@user_errors
def fit(
    data: Annotated[
        Path, typer.Argument(help="Input: .h5ad, 10x folder/.h5, CSV/TSV (+ --labels) or Kaggle .h5")
    ],
    label_key: Annotated[
        str, typer.Option("--label-key", help="obs column with the cell type")
    ] = "cell_type",
    out: Annotated[Path, typer.Option("--out", help="Model directory to write")] = ...,
    condition_key: Annotated[
        list[str] | None,
        typer.Option("--condition-key", help="Further covariate to condition on (repeatable)"),
    ] = None,
    model: Annotated[str, typer.Option(help="Model name (see `cellsynth models`)")] = "cgan",
    layer: Annotated[str | None, typer.Option(help="Use adata.layers[LAYER] instead of X")] = None,
    representation: Annotated[str, typer.Option(help="auto | counts | log1p | as_is")] = "auto",
    n_genes: Annotated[
        int | None, typer.Option("--n-genes", help="Train on the top-N highly variable genes")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum number of epochs")] = None,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Training time budget")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for everything random")] = 0,
    labels: Annotated[Path | None, typer.Option(help="Labels file for CSV/TSV input")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="Model hyperparameter KEY=VALUE (JSON value), repeatable"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar")] = False,
):
    """Fit a generator on DATA and save it to --out (weights.safetensors + config.json)."""
    from . import models
    from .data import read

    _check_out_path(out, directory=True)
    params = {}
    for item in param or []:
        if "=" not in item:
            raise InputError(f"--param expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        params[k.strip()] = _param_value(v)
    if epochs is not None:
        params["epochs"] = epochs
    if max_minutes is not None:
        params["max_minutes"] = max_minutes
    m = models.get(model, **params)
    adata = read(data, labels=labels, label_key=label_key)
    typer.echo(f"read {adata.n_obs} cells × {adata.n_vars} genes from {data}", err=True)
    covariates = adata.uns.get("cellsynth_read", {}).get("covariates", [])
    if not condition_key and len(covariates):
        condition_key = [str(c) for c in covariates]
        typer.echo(f"conditioning on the covariates the reader found: {', '.join(condition_key)}", err=True)
    # the best model so far is kept here during training; it goes away once the final save succeeded
    checkpoint_dir = out.with_name(f".{out.name}.checkpoint")
    t0 = time.monotonic()
    try:
        m.fit(
            adata,
            label_key=label_key,
            condition_keys=condition_key or [],
            layer=layer,
            representation=representation,
            n_genes=n_genes,
            device=device,
            seed=seed,
            progress=not quiet,
            checkpoint_dir=checkpoint_dir,
        )
        m.save(out)
    except Exception:
        if checkpoint_dir.exists():
            typer.echo(f"training failed; the best model so far is in {checkpoint_dir}", err=True)
        raise
    if checkpoint_dir.exists():
        import shutil

        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    rec = m.fit_record
    epochs_run = len(m.history)
    typer.echo(
        f"fitted {model} in {time.monotonic() - t0:.0f}s ({epochs_run} epochs, "
        f"stopped: {rec.get('stopped_because')}, "
        f"best validation MMD {rec.get('best_val_mmd')}) → {out}",
        err=True,
    )


@app.command()
@user_errors
def sample(
    model_dir: Annotated[Path, typer.Argument(help="Model directory written by `cellsynth fit`")],
    out: Annotated[Path, typer.Option("--out", help="OUT.h5ad or OUT.csv")] = ...,
    n: Annotated[int | None, typer.Option("--n", help="Number of cells")] = None,
    per_type: Annotated[str | None, typer.Option("--per-type", help='e.g. "B_cell=500,T_cell=200"')] = None,
    proportions: Annotated[str, typer.Option(help="real | uniform (how --n is split over types)")] = "real",
    mix: Annotated[str | None, typer.Option(help='Interpolate types, e.g. "alpha=0.5,beta=0.5"')] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same cells")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "cpu",
):
    """Sample labelled synthetic cells from a saved model."""
    from .models import load

    if out.suffix.lower() not in (".h5ad", ".csv", ".tsv"):
        raise InputError(f"--out {out}: use a file name ending in .h5ad or .csv")
    _check_out_path(out, directory=False)
    if n is None and not per_type:
        raise InputError("say how many cells: --n N and/or --per-type label=count")
    model = load(model_dir)
    adata = model.sample(
        n=n,
        per_type=parse_pairs(per_type, "--per-type", cast=_int),
        proportions=proportions,
        mix=parse_pairs(mix, "--mix") or None,
        seed=seed,
        device=device,
    )
    written = write_synthetic(adata, out)
    counts = adata.obs[model.info["label_key"]].value_counts()
    typer.echo(f"wrote {adata.n_obs} cells × {adata.n_vars} genes → {', '.join(map(str, written))}", err=True)
    for name, k in counts.items():
        if k:
            typer.echo(f"  {name}: {k}", err=True)


def _int(text: str) -> int:
    value = float(text)
    if value != int(value):
        raise ValueError(text)
    return int(value)


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder")] = Path("demo_out"),
    max_minutes: Annotated[float, typer.Option("--max-minutes", help="Training time budget")] = 3.0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed")] = 0,
):
    """Fit a cgan on scanpy's bundled pbmc68k and write DIR/synthetic.h5ad and DIR/model/."""
    from .demo import run_demo

    _check_out_path(out, directory=True)
    run_demo(out, max_minutes=max_minutes, device=device, seed=seed)


@app.command("models")
def list_models():
    """List the available generators."""
    from .models import available

    for name, doc in available().items():
        typer.echo(f"{name:10s} {doc}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        typer.echo("error: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
