"""The ``cellsynth benchmark`` command (registered on the CLI's app by :mod:`cellsynth.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..cli_options import check_out_path, parse_key_values


def benchmark(
    data: Annotated[Path, typer.Argument(help="Labelled cells: .h5ad, 10x, CSV/TSV or Kaggle .h5")],
    label_key: Annotated[
        str, typer.Option("--label-key", help="obs column with the cell type")
    ] = "cell_type",
    out: Annotated[Path, typer.Option("--out", help="Benchmark folder (the same --out resumes it)")] = ...,
    condition_key: Annotated[
        list[str] | None,
        typer.Option("--condition-key", help="Further covariate to condition on (repeatable)"),
    ] = None,
    models: Annotated[
        str, typer.Option("--models", help="all, or model names separated by commas (e.g. cgan,garage)")
    ] = "all",
    max_minutes: Annotated[
        float, typer.Option("--max-minutes-per-model", help="Every fit's wall-clock budget, the same for all")
    ] = 10.0,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per model (0 .. N-1)")] = 3,
    test_fraction: Annotated[
        float, typer.Option("--test-fraction", help="Share of each type's cells held out as TEST")
    ] = 0.5,
    n_genes: Annotated[
        int | None, typer.Option("--n-genes", help="Train on the top-N highly variable genes")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="A model's hyperparameter MODEL.KEY=VALUE (JSON value), repeatable"),
    ] = None,
    setting: Annotated[
        list[str] | None,
        typer.Option("--setting", help="Evaluation setting KEY=VALUE (JSON value), e.g. max_cells_ot=1000"),
    ] = None,
    family: Annotated[
        list[str] | None, typer.Option("--family", help="Only this metric family (repeatable)")
    ] = None,
    reports: Annotated[
        str,
        typer.Option("--reports", help="Cells writing report.html: first (each model's seed 0), all, none"),
    ] = "first",
    draws: Annotated[
        int,
        typer.Option("--draws", help="Synthetic sets per cell, mean detection AUC: detection_auc_draws"),
    ] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", help="No grid display")] = False,
):
    """Fit every model with every seed on one TRAIN split of DATA, evaluate each on TEST, and write
    OUT/leaderboard.csv, .md and .html (each cell in its own process; rerun the same command to resume)."""
    from .grid import BenchmarkInterrupted, run_benchmark
    from .options import parse_model_params, parse_models

    parse_models(models)  # bad names and syntax fail before any folder is made
    params = parse_model_params(parse_key_values(param, "--param"))
    settings = parse_key_values(setting, "--setting")
    check_out_path(out, directory=True)
    try:
        run_benchmark(
            data,
            label_key=label_key,
            out=out,
            models=models,
            max_minutes=max_minutes,
            seeds=seeds,
            test_fraction=test_fraction,
            condition_keys=condition_key or [],
            n_genes=n_genes,
            device=device,
            params=params,
            settings=settings,
            families=family,
            reports=reports,
            draws=draws,
            progress=not quiet,
        )
    except BenchmarkInterrupted as e:
        typer.echo(
            f"interrupted after {e.finished} of {e.total} cells; to resume, rerun: {e.command}", err=True
        )
        raise typer.Exit(130) from None
    written = ", ".join(str(out / f"leaderboard.{ext}") for ext in ("md", "html", "csv"))
    typer.echo(f"wrote {written}", err=True)
