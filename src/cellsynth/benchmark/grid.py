"""`run_benchmark`: models × seeds on one split of the user's data, each cell in its own process.

The data are split once by type (seed 0) into TRAIN and TEST; every model then gets the same TRAIN, the
same wall-clock budget (its ``max_minutes`` parameter) and each seed, and is judged on the same TEST. The
budget is the stop: each model's cap on epochs is lifted (:data:`EPOCHS`, unless ``params`` set
``epochs``), so that a model whose default epoch count ends its fit in seconds on small data is not judged
after a fraction of the time the others had; a model's own early stopping still applies. Each
grid cell runs as ``python -m cellsynth.benchmark.cell`` (:mod:`.cell`): a crash, an out-of-memory kill
or a model's global state cannot take the grid down, and the cell's peak memory is its own. A cell that
fails is recorded with its one-line error and the grid goes on. A rerun of the same command in the same
directory keeps the finished cells (see :mod:`.layout` for what identifies one) and runs the others,
failed ones included; SIGINT/SIGTERM stops the running cell, keeps the finished ones and raises
:class:`BenchmarkInterrupted`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import jsonable, write_atomic, write_text_atomic
from .._signals import SignalTrap
from ..errors import InputError
from .display import GridDisplay
from .layout import (
    FAILED,
    JOB,
    LOG,
    RESULT,
    SPLIT_RECORD,
    CellJob,
    cell_directory,
    data_fingerprint,
    read_record,
    split_paths,
)
from .options import check_families, check_model_params, command_line, parse_models, read_labelled

SPLIT_SEED = 0
_GRACE_SECONDS = 120.0  # after SIGTERM, how long a cell may take to stop before it is killed


#: the epoch cap every model gets in a benchmark: the wall-clock budget (or the model's early stopping)
#: ends the fit first
EPOCHS = 1_000_000


class BenchmarkInterrupted(Exception):
    """The benchmark was stopped (SIGINT/SIGTERM); the finished cells are kept.

    Attributes
    ----------
    command
        The command that resumes it (the same one).
    finished, total
        Cells finished (done or failed) and cells in the grid.
    """

    def __init__(self, command: str, finished: int, total: int):
        super().__init__(f"interrupted after {finished} of {total} cells; rerun the same command to resume")
        self.command, self.finished, self.total = command, finished, total


def _prepare_split(adata, out: Path, label_key: str, test_fraction: float) -> tuple[str, int, int]:
    """Split once (seed 0) and keep TRAIN, TEST and the record; a rerun checks the data are the same.

    Returns ``(fingerprint of the split, TRAIN cells, TEST cells)``.
    """
    from ..data.split import split_by_type

    fingerprint = data_fingerprint(adata, label_key)
    wanted = {"data": fingerprint, "label_key": label_key, "test_fraction": test_fraction, "seed": SPLIT_SEED}
    record_path = out / SPLIT_RECORD
    train_path, test_path = split_paths(out)
    if record_path.exists():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        changed = [k for k, v in wanted.items() if record.get(k) != v]
        if changed:
            what = "DATA" if "data" in changed else ", ".join(f"--{k.replace('_', '-')}" for k in changed)
            raise InputError(
                f"--out {out} holds a benchmark of other {'data' if what == 'DATA' else 'options'} ({what} "
                "changed); rerun with the same DATA and options to resume it, or choose another --out"
            )
        if train_path.exists() and test_path.exists():
            return record["split"], record["n_train"], record["n_test"]
    train, test = split_by_type(adata, label_key=label_key, test_fraction=test_fraction, seed=SPLIT_SEED)
    for path, part in ((train_path, train), (test_path, test)):
        write_atomic(path, lambda p, part=part: part.write_h5ad(p, compression="gzip"))
    names = [str(n) for n in test.obs_names]
    split = data_fingerprint(test, label_key)[:16] + data_fingerprint(train, label_key)[:16]
    record = {**wanted, "split": split, "n_train": train.n_obs, "n_test": test.n_obs, "test_cells": names}
    write_text_atomic(record_path, json.dumps(record, indent=1) + "\n")
    return split, train.n_obs, test.n_obs


class _StopRequest(SignalTrap):
    """SIGINT/SIGTERM ask the grid to stop (a second one kills the running cell at once)."""

    def __init__(self):
        super().__init__()
        self.requested = False
        self.force = False

    def _handle(self, signum, frame):  # noqa: ARG002
        self.force = self.requested
        self.requested = True


def _exit_reason(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"the cell was killed by {name}{hint}; see its log.txt"
    return f"the cell exited with status {code}; see its log.txt"


def _run_cell(job: CellJob, display: GridDisplay, stop: _StopRequest) -> dict[str, Any] | None:
    """Run one cell in a child process; its record (done or failed), or None when stopped unfinished."""
    from .cell import peak_memory_mb

    directory = Path(job.directory)
    shutil.rmtree(directory, ignore_errors=True)  # whatever an unfinished or failed run left
    directory.mkdir(parents=True)
    write_text_atomic(directory / JOB, job.to_json())
    command = [sys.executable, "-m", "cellsynth.benchmark.cell", str(directory / JOB), str(os.getpid())]
    t0 = time.monotonic()
    with open(directory / LOG, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    signalled = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = code = os.waitstatus_to_exitcode(status)
            break
        now = time.monotonic()
        if stop.requested and signalled is None:
            proc.send_signal(signal.SIGTERM)  # training stops at its next step
            signalled = now
        if signalled is not None and (stop.force or now - signalled > _GRACE_SECONDS):
            proc.kill()
        display.refresh()
        time.sleep(0.2)
    record = read_record(directory)
    if record is not None and record.get("status") == "done":  # written last: the cell is complete
        return record
    if stop.requested:
        return None
    if record is None or record.get("status") != "failed":
        record = {"status": "failed", "model": job.model, "seed": job.seed, "key": job.key()}
        record["error"] = _exit_reason(code)
    record.setdefault("peak_mb", peak_memory_mb(usage))
    record["wall_seconds"] = time.monotonic() - t0
    write_text_atomic(directory / FAILED, json.dumps(jsonable(record), indent=2) + "\n")
    return record


def run_benchmark(
    data,
    *,
    label_key: str,
    out: str | os.PathLike,
    models: str | Sequence[str] = "all",
    max_minutes: float = 10.0,
    seeds: int = 3,
    test_fraction: float = 0.5,
    condition_keys: Sequence[str] = (),
    n_genes: int | None = None,
    device: str = "auto",
    params: Mapping[str, Mapping[str, Any]] | None = None,
    settings: Mapping[str, Any] | None = None,
    families: Sequence[str] | None = None,
    reports: str = "first",
    draws: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Fit every model with every seed on one TRAIN split, evaluate on TEST, and write a leaderboard.

    Parameters
    ----------
    data
        Labelled cells: an AnnData, or a path :func:`cellsynth.read` reads.
    label_key
        ``obs`` column with the cell type.
    out
        The benchmark directory (see :mod:`cellsynth.benchmark.layout`); a rerun with the same arguments
        resumes it.
    models
        ``"all"`` (every registered model), ``"cgan,garage"`` or a list; models whose optional dependency
        is missing are skipped with a note.
    max_minutes
        Each fit's wall-clock budget, the same for every model (its ``max_minutes`` parameter); the
        models' epoch caps are lifted, so the budget (or a model's early stopping) ends each fit.
    seeds
        Seeds per model: ``0 .. seeds - 1`` (each fit, sample and evaluation).
    test_fraction
        Share of each type's cells held out as TEST.
    condition_keys, n_genes, device
        As for :meth:`~cellsynth.models.SyntheticCellModel.fit`.
    params
        ``{model: {parameter: value}}``, checked against each model's declared parameters.
    settings
        Evaluation settings (see ``cellsynth.metrics.space.DEFAULT_SETTINGS``).
    families
        Metric families to evaluate (default: all; see ``cellsynth metrics``).
    reports
        Which cells write their HTML report (``report.html`` beside their metrics): ``"first"`` (each
        model's first seed), ``"all"`` or ``"none"``.
    draws
        Synthetic sets each cell's detector scores: above 1, ``detection_auc_draws`` is their mean
        detection AUC (each draw's sampling noise in one cell's figure averaged out; the further sets are
        scored by the detection family alone).
    progress
        Show the grid while it runs (a live table on a terminal, a line per finished cell otherwise).

    Returns
    -------
    pandas.DataFrame
        One row per model × seed: status, error, seconds, peak memory, stop reason, every metric; the
        same as ``OUT/leaderboard.csv``. ``leaderboard.md`` and ``leaderboard.html`` hold the summary.

    Raises
    ------
    InputError
        Bad arguments (unknown model, bad parameter, missing column, ...), before anything is fitted; or
        ``out`` holding a benchmark of other data.
    BenchmarkInterrupted
        SIGINT/SIGTERM stopped it; the finished cells are kept and the leaderboard shows them.
    """
    from ..metrics.space import resolve_settings
    from ..models.registry import missing, param_spec
    from ..params import check_option
    from ..train.device import resolve_device
    from .leaderboard import cell_rows, write_leaderboard

    names = parse_models(models)
    checked = check_model_params(names, params or {})
    max_minutes = check_option("--max-minutes-per-model", max_minutes, "float", gt=0)
    check_option("--reports", reports, "str", choices=("first", "all", "none"))
    check_option("--seeds", seeds, "int", ge=1)
    check_option("--draws", draws, "int", ge=1)
    check_option("--test-fraction", test_fraction, "float", gt=0, lt=1)
    check_option("--n-genes", n_genes, "int", ge=2)
    settings = dict(settings or {})
    resolve_settings(settings)
    resolve_device(device)
    out, condition_keys = Path(out), list(condition_keys)
    families = check_families(families)
    options = {"--label-key": label_key, "--condition-key": condition_keys}
    options.update(
        {"--max-minutes-per-model": max_minutes, "--seeds": seeds, "--test-fraction": test_fraction}
    )
    options.update({"--n-genes": n_genes, "--device": device if device != "auto" else None})
    options["--reports"] = reports if reports != "first" else None
    options["--draws"] = draws if draws != 1 else None
    command = command_line(
        data, out, models=models, options=options, params=checked, settings=settings, families=families
    )
    skipped: dict[str, str] = {}
    for name in names:
        why = missing(name)
        if why or "max_minutes" not in param_spec(name):
            skipped[name] = f"it {why}" if why else "it declares no max_minutes, so it cannot get the budget"

    adata = read_labelled(data, label_key, condition_keys)
    out.mkdir(parents=True, exist_ok=True)
    split, n_train, n_test = _prepare_split(adata, out, label_key, test_fraction)
    about = (
        f"{adata.n_obs} cells × {adata.n_vars} genes: {n_train} TRAIN, {n_test} TEST (split by type, seed "
        f"{SPLIT_SEED}); each fit gets {max_minutes:g} min"
    )
    del adata

    jobs = []
    for name in names:
        if name in skipped:
            continue
        spec = param_spec(name)
        lifted = {"epochs": EPOCHS} if "epochs" in spec else {}
        full = {**spec.defaults(), **lifted, **checked.get(name, {}), "max_minutes": max_minutes}
        for seed in range(seeds):
            job = CellJob(name, seed, full, label_key, condition_keys, n_genes, settings, families, split)
            job.draws = draws
            job.device, job.report = device, reports == "all" or (reports == "first" and seed == 0)
            job.directory = str(cell_directory(out, job))
            jobs.append(job)

    records: dict[tuple[str, int], dict] = {}
    for name, why in skipped.items():
        for seed in range(seeds):
            records[name, seed] = {"model": name, "seed": seed, "status": "skipped", "error": why}
    interrupted = False
    with GridDisplay(names, list(range(seeds)), enabled=progress) as display, _StopRequest() as stop:
        for name in skipped:
            for seed in range(seeds):
                display.finish(name, seed, "skipped")
        for job in jobs:
            directory = Path(job.directory)
            kept = read_record(directory) if (directory / RESULT).exists() else None
            if kept is not None:
                records[job.model, job.seed] = kept
                display.finish(job.model, job.seed, "kept", "finished earlier")
                continue
            if stop.requested:
                interrupted = True
                break
            display.start(job.model, job.seed)
            record = _run_cell(job, display, stop)
            if record is None:
                interrupted = True
                break
            records[job.model, job.seed] = record
            detail = f"{record['fit_seconds']:.0f}s fit" if record["status"] == "done" else record["error"]
            display.finish(job.model, job.seed, record["status"], detail)

    rows = []
    for name in names:
        for seed in range(seeds):
            rec = records.get((name, seed)) or {"model": name, "seed": seed, "status": "unfinished"}
            job = next((j for j in jobs if (j.model, j.seed) == (name, seed)), None)
            if job is not None:
                rec = {**rec, "cell": str(Path(job.directory).relative_to(out))}
                if rec["status"] == "done" and (Path(job.directory) / "report.html").exists():
                    rec["report"] = f"{rec['cell']}/report.html"
            rows.append(rec)
    frame = cell_rows(rows)
    write_leaderboard(frame, out, models=names, skipped=skipped, command=command, about=about)
    if interrupted:
        finished = sum(r["status"] in ("done", "failed") for r in rows)
        raise BenchmarkInterrupted(command, finished, len(jobs))
    return frame
