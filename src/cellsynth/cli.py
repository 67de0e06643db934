"""Command-line interface: a thin shell over the Python API.

User errors print one line (``error: ...``) and exit with status 2, without a traceback, and leave no
half-written output behind.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from ._io import write_atomic
from .benchmark.command import benchmark as benchmark_command
from .cli_options import (
    MakeUnique,
    check_fit_options,
    check_model_params,
    check_out_path,
    check_seed,
    counts_beside_counts,
    default_model_for,
    model_params,
    one_line_warnings,
    parse_key_values,
    parse_pairs,
    print_summary,
    user_errors,
    whole_number,
)
from .defaults import DEFAULT_MODEL, DEFAULT_MODEL_NOT_COUNTS
from .errors import InputError

app = typer.Typer(
    name="cellsynth",
    help="Realistic synthetic single-cell RNA-seq data: fit a generator, sample labelled cells.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    model: Annotated[
        str | None,
        typer.Option(
            help=f"Model name (see `cellsynth models`); default: {DEFAULT_MODEL} for count data, "
            f"{DEFAULT_MODEL_NOT_COUNTS} for log-normalised or scaled data"
        ),
    ] = None,
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
    leakage: Annotated[
        float | None,
        typer.Option("--leakage", help="garage: fraction λ of cells used as seeds (0 = plain cgan)"),
    ] = None,
    gat_k: Annotated[int | None, typer.Option("--gat-k", help="garage: neighbours in the kNN graph")] = None,
    rare_threshold: Annotated[
        int | None,
        typer.Option("--rare-threshold", help="garage: types with at most N cells are rare (default: data)"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar")] = False,
    make_unique: MakeUnique = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the interrupted run whose checkpoint is kept beside --out (its model, parameters "
            "and seed; --epochs/--max-minutes may be raised)",
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the model directory --out if it exists")
    ] = False,
    drop_missing: Annotated[
        bool,
        typer.Option("--drop-missing", help="Leave out cells whose label or covariate is missing (NaN)"),
    ] = False,
    out_of_core: Annotated[
        bool | None,
        typer.Option(
            "--out-of-core/--in-memory",
            help=".h5ad: read the matrix from disk block by block and train from a memory-mapped copy beside "
            "--out (default: when memory is short)",
        ),
    ] = None,
):
    """Fit a generator on DATA and save it to --out (weights.safetensors + config.json).

    A checkpoint (the best model so far and the whole training state) is kept in .OUT.checkpoint beside
    --out every few minutes and when SIGTERM/SIGINT stops training; --resume continues from it.
    """
    from . import models
    from .cli_fit import fit_input, report_fit, resumed_run, without_missing

    options = {"--epochs": epochs, "--max-minutes": max_minutes, "--leakage": leakage, "--gat-k": gat_k}
    options["--rare-threshold"] = rare_threshold
    check_fit_options(model or DEFAULT_MODEL, options, n_genes=n_genes, seed=seed)
    check_out_path(out, directory=True)
    checkpoint_dir = out.with_name(f".{out.name}.checkpoint")
    if out.is_dir() and any(out.iterdir()) and not (overwrite or resume):
        raise InputError(
            f"--out {out} already exists; add --overwrite to replace it, or choose another --out"
        )
    if resume:
        if param or leakage is not None or gat_k is not None or rare_threshold is not None:
            raise InputError(
                "--resume continues a run with its own parameters; drop --param and the garage options"
            )
        model, seed, fit_options, param = resumed_run(checkpoint_dir)
        label_key, condition_key = fit_options["label_key"], fit_options["condition_keys"]
        layer, representation, n_genes = (fit_options[k] for k in ("layer", "representation", "n_genes"))
    elif (checkpoint_dir / "training.json").exists():
        typer.echo(
            f"note: {checkpoint_dir} holds an interrupted run (--resume continues it); this fit starts "
            "afresh and replaces it",
            err=True,
        )
    garage = {"leakage": leakage, "gat_k": gat_k, "rare_threshold": rare_threshold}
    check_model_params(
        model, model_params(model, param, epochs=epochs, max_minutes=max_minutes, garage=garage)
    )
    adata, layer = fit_input(
        data,
        labels=labels,
        label_key=label_key,
        make_unique=make_unique,
        layer=layer,
        representation=representation,
        out_of_core=out_of_core,
        cache_dir=out.absolute().parent,
    )
    if model is None:
        model = default_model_for(adata, layer, representation)
    m = models.get(model, **model_params(model, param, epochs=epochs, max_minutes=max_minutes, garage=garage))
    covariates = adata.uns.get("cellsynth_read", {}).get("covariates", [])
    if not condition_key and len(covariates):
        condition_key = [str(c) for c in covariates]
        typer.echo(f"conditioning on the covariates the reader found: {', '.join(condition_key)}", err=True)
    if drop_missing:
        adata = without_missing(adata, [label_key, *(condition_key or [])])
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
            resume=resume,
        )
        m.save(out)
    except Exception:
        if checkpoint_dir.exists():
            typer.echo(f"training failed; the best model so far is in {checkpoint_dir}", err=True)
        raise
    report_fit(m, model, out, checkpoint_dir, data, time.monotonic() - t0)


@app.command()
@user_errors
def sample(
    model_dir: Annotated[Path, typer.Argument(help="Model directory written by `cellsynth fit`")],
    out: Annotated[Path, typer.Option("--out", help="OUT.h5ad or OUT.csv")] = ...,
    n: Annotated[int | None, typer.Option("--n", help="Number of cells (default: the training size)")] = None,
    per_type: Annotated[str | None, typer.Option("--per-type", help='e.g. "B_cell=500,T_cell=200"')] = None,
    proportions: Annotated[str, typer.Option(help="real | uniform (how --n is split over types)")] = "real",
    mix: Annotated[str | None, typer.Option(help='Interpolate types, e.g. "alpha=0.5,beta=0.5"')] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same cells")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "cpu",
    ladder: Annotated[
        bool,
        typer.Option(
            "--ladder",
            help="GARAGE's size ladder: one file per 0.25, 0.5, 0.75, 1, 1.25, 1.5 × the training size "
            "(OUT_0.25x.h5ad, ...)",
        ),
    ] = False,
):
    """Sample labelled synthetic cells from a saved model."""
    from .data.writers import write_synthetic
    from .models import load
    from .params import check_option

    check_option("--n", n, "int", ge=0)
    check_seed(seed)
    if out.suffix.lower() not in (".h5ad", ".csv", ".tsv"):
        raise InputError(f"--out {out}: use a file name ending in .h5ad or .csv")
    if ladder:
        if n is not None or per_type or mix:
            raise InputError("--ladder sets the sizes itself: drop --n, --per-type and --mix")
        model = load(model_dir)
        n_train = int(model.info["n_train_cells"])
        targets = [(f, out.with_name(f"{out.stem}_{f:g}x{out.suffix}")) for f in LADDER]
        for _, path in targets:
            check_out_path(path, directory=False)
        for f, path in targets:
            adata = model.sample(n=round(f * n_train), proportions=proportions, seed=seed, device=device)
            written = write_synthetic(adata, path)
            typer.echo(f"wrote {adata.n_obs} cells ({f:g} × {n_train}) → {written[0]}", err=True)
        return
    check_out_path(out, directory=False)
    if n is None and mix:
        raise InputError("say how many cells to mix: --n N")
    model = load(model_dir)
    if n is None and not per_type:
        n = int(model.info["n_train_cells"])
        typer.echo(f"--n not given: as many cells as the model was fitted on ({n})", err=True)
    adata = model.sample(
        n=n,
        per_type=parse_pairs(per_type, "--per-type", cast=whole_number),
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


LADDER = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder")] = Path("demo_out"),
    max_minutes: Annotated[float, typer.Option("--max-minutes", help="Training time budget")] = 3.0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed")] = 0,
):
    """Fit the default model on scanpy's bundled pbmc68k; write DIR/synthetic.h5ad and DIR/model/."""
    from .demo import run_demo
    from .params import check_option

    check_option("--max-minutes", max_minutes, "float", gt=0)
    check_seed(seed)
    check_out_path(out, directory=True)
    run_demo(out, max_minutes=max_minutes, device=device, seed=seed)


@app.command()
@user_errors
def split(
    data: Annotated[
        Path, typer.Argument(help="Labelled cells: .h5ad, 10x, CSV/TSV (+ --labels) or Kaggle .h5")
    ],
    label_key: Annotated[
        str, typer.Option("--label-key", help="obs column with the cell type")
    ] = "cell_type",
    out: Annotated[Path, typer.Option("--out", help="Folder for train.h5ad and test.h5ad")] = ...,
    test_fraction: Annotated[
        float, typer.Option("--test-fraction", help="Share of each type's cells in test.h5ad")
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the draw")] = 0,
    labels: Annotated[Path | None, typer.Option(help="Labels file for CSV/TSV input")] = None,
    make_unique: MakeUnique = False,
):
    """Split DATA into OUT/train.h5ad and OUT/test.h5ad, stratified by type (singletons stay in train)."""
    from .data import read
    from .data.split import split_by_type
    from .params import check_option

    check_option("--test-fraction", test_fraction, "float", gt=0, lt=1)
    check_seed(seed)
    check_out_path(out, directory=True)
    adata = read(data, labels=labels, label_key=label_key, make_unique=make_unique)
    train, test = split_by_type(adata, label_key=label_key, test_fraction=test_fraction, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("test", test)):
        write_atomic(out / f"{name}.h5ad", lambda p, part=part: part.write_h5ad(p, compression="gzip"))
    typer.echo(
        f"{adata.n_obs} cells → {out / 'train.h5ad'} ({train.n_obs}), {out / 'test.h5ad'} ({test.n_obs})",
        err=True,
    )


@app.command()
@user_errors
def evaluate(
    real: Annotated[Path, typer.Argument(help="Held-out real cells (e.g. test.h5ad from `cellsynth split`)")],
    synth: Annotated[Path, typer.Argument(help="Synthetic cells from a model fitted on TRAIN")],
    label_key: Annotated[
        str, typer.Option("--label-key", help="obs column with the cell type (in every set)")
    ] = "cell_type",
    out: Annotated[
        Path, typer.Option("--out", help="Folder for metrics.json, metrics_per_type.csv, report.html")
    ] = ...,
    train: Annotated[
        Path | None,
        typer.Option("--train", help="The model's training cells: enables the control and privacy"),
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Model directory: its training curves go into the report")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every subsample and classifier")] = 0,
    family: Annotated[
        list[str] | None, typer.Option("--family", help="Only this metric family (repeatable)")
    ] = None,
    setting: Annotated[
        list[str] | None,
        typer.Option("--setting", help="Evaluation setting KEY=VALUE (JSON value), e.g. max_cells_ot=1000"),
    ] = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write report.html")] = True,
    make_unique: MakeUnique = False,
):
    """Compare SYNTH with REAL (each metric beside a real-vs-real control with --train) and write a report."""
    from .data import read
    from .metrics.evaluation import evaluate as run_evaluation
    from .metrics.evaluation import write_outputs

    check_seed(seed)
    check_out_path(out, directory=True)
    settings = parse_key_values(setting, "--setting")
    history = None
    if model is not None:
        from .models import load

        history = load(model).history
    sets = {}
    for name, path in (("REAL", real), ("SYNTH", synth), ("TRAIN", train)):
        if path is not None:
            sets[name] = a = read(path, label_key=label_key, make_unique=make_unique)
            typer.echo(f"read {name} {a.n_obs} cells × {a.n_vars} genes from {path}", err=True)
    sets = counts_beside_counts(sets)
    metrics, ctx = run_evaluation(
        sets["REAL"],
        sets["SYNTH"],
        label_key=label_key,
        train=sets.get("TRAIN"),
        seed=seed,
        settings=settings,
        families=family or None,
        return_context=True,
    )
    written = write_outputs(metrics, out)
    if report:
        try:
            from .report import write_report
        except ModuleNotFoundError as e:
            if e.name != "cellsynth.report":
                raise
            typer.echo("warning: cellsynth.report is not available; report.html was not written", err=True)
        else:
            write_report(out / "report.html", metrics, ctx, history=history)
            written.append(out / "report.html")
    print_summary(metrics)
    typer.echo(f"wrote {', '.join(map(str, written))}", err=True)


# `cellsynth benchmark` lives with the benchmark package (its options are many)
app.command("benchmark")(user_errors(benchmark_command))


@app.command("metrics")
def list_metrics():
    """List every metric: name, family, which way is better, and what it measures."""
    from .metrics.evaluation import available_metrics

    for name, info in available_metrics().items():
        better = info.direction if info.direction != "target" else f"target {info.target:g}"
        train = " (needs --train)" if info.needs_train else ""
        typer.echo(f"{name:24s} {info.family:13s} {better:11s} {info.description}{train}")


@app.command("models")
@user_errors
def list_models(
    params: Annotated[
        str | None,
        typer.Option("--params", metavar="MODEL", help="List MODEL's parameters and what they accept"),
    ] = None,
):
    """List the available generators, or one generator's parameters (``--params cgan``)."""
    from .models import available
    from .models.registry import missing, param_spec

    if params is not None:
        typer.echo(param_spec(params).render())
        typer.echo(f"set them with `cellsynth fit --model {params} --param KEY=VALUE` (VALUE as JSON)")
        return
    for name, doc in available().items():
        why = missing(name)
        typer.echo(f"{name:10s} {doc}" + (f"  [unavailable: {why}]" if why else ""))


def main() -> None:
    one_line_warnings()
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        typer.echo("error: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
