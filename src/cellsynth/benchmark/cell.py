"""One grid cell of a benchmark, run in its own process: ``python -m cellsynth.benchmark.cell JOB PARENT``.

``JOB`` is the cell's ``job.json`` (:class:`~cellsynth.benchmark.layout.CellJob`), ``PARENT`` the process id
of the benchmark that started it. The cell fits its model on TRAIN, saves it, samples as many cells as TEST
holds with TEST's per-type counts, evaluates them against TEST (with TRAIN: the control and privacy; with
``draws`` above 1, further synthetic sets scored by the detector alone, and their mean detection AUC),
writes the metrics and the HTML report, runs the rare-type augmentation test, and as its last act writes
``result.json`` atomically; so a cell whose ``result.json`` exists is complete. A failure writes
``failed.json`` (the one-line error; the traceback goes to the log) and exits with status 1.

SIGTERM (or the benchmark's death) during training stops it as the training loop does on SIGTERM; the cell
then exits with status 130 without a result, and the benchmark runs it again when resumed.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .._io import jsonable, write_text_atomic
from ..errors import CellsynthError
from .layout import FAILED, RESULT, CellJob

INTERRUPTED = 130
#: the sampling seed of a cell's further synthetic sets: the cell's seed + this × the draw's index
DRAW_SEED_STRIDE = 1_000_003


def peak_memory_mb(usage: resource.struct_rusage | None = None) -> float:
    """Peak resident memory (``ru_maxrss``) of this process, or of ``usage``, in MiB."""
    usage = usage or resource.getrusage(resource.RUSAGE_SELF)
    scale = 1.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB on Linux
    return float(usage.ru_maxrss) * scale / 2**20


def error_line(error: BaseException) -> str:
    """An exception as one line: a cellsynth error's message, else its type and first line."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    line = text if isinstance(error, CellsynthError) else f"{type(error).__name__}: {text}".rstrip(": ")
    return line if len(line) <= 300 else line[:297] + "..."


def _gpu_peak_mb() -> float | None:
    """Peak GPU memory the cell's tensors took (None when it used no GPU)."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send SIGTERM when the benchmark dies (a killed benchmark leaves no orphan training)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the cell just finishes on its own
        return
    if os.getppid() != parent:  # the benchmark died before the request took effect
        sys.exit(INTERRUPTED)


def run_cell(job: CellJob) -> dict[str, Any] | None:
    """Fit, sample, save, evaluate, report and test augmentation; the result record (None: interrupted)."""
    import anndata as ad

    from .. import models
    from ..data.writers import write_synthetic
    from ..metrics.evaluation import evaluate, write_outputs
    from ..report import write_report
    from .augmentation import augmentation_plan, augmentation_test
    from .layout import split_paths

    directory = Path(job.directory)
    train_path, test_path = split_paths(directory.parents[1])
    train, test = ad.read_h5ad(train_path), ad.read_h5ad(test_path)
    seconds: dict[str, float] = {}

    t0 = time.monotonic()
    model = models.get(job.model, **job.params)
    model.fit(
        train,
        label_key=job.label_key,
        condition_keys=job.condition_keys,
        n_genes=job.n_genes,
        device=job.device,
        seed=job.seed,
        progress=False,
    )
    seconds["fit"] = time.monotonic() - t0
    if model.fit_record.get("stopped_because") == "interrupted":
        return None
    model.save(directory / "model")

    t0 = time.monotonic()
    per_type = test.obs[job.label_key].astype(str).value_counts()
    per_type_counts = {str(k): int(v) for k, v in per_type.items() if v}
    synthetic = model.sample(per_type=per_type_counts, seed=job.seed)
    seconds["sample"] = time.monotonic() - t0
    write_synthetic(synthetic, directory / "synthetic.h5ad")

    t0 = time.monotonic()
    metrics, ctx = evaluate(
        test,
        synthetic,
        label_key=job.label_key,
        train=train,
        seed=job.seed,
        settings=job.settings,
        families=job.families,
        return_context=True,
    )
    seconds["evaluate"] = time.monotonic() - t0
    per_draw = None
    if job.draws > 1 and "detection_auc" in metrics.overall:
        t0 = time.monotonic()
        further = _further_draws(job, model, per_type_counts, test)
        per_draw = [metrics.overall["detection_auc"], *further]
        metrics.overall["detection_auc_draws"] = sum(per_draw) / len(per_draw)
        seconds["draws"] = time.monotonic() - t0
    write_outputs(metrics, directory)
    if job.report:
        title = f"cellsynth benchmark: {job.model}, seed {job.seed}"
        write_report(directory / "report.html", metrics, ctx, history=model.history, title=title)

    t0 = time.monotonic()
    plan = augmentation_plan(train.obs[job.label_key].astype(str))
    extra = model.sample(per_type=plan, seed=job.seed) if plan else None
    augmentation = augmentation_test(train, test, extra, label_key=job.label_key, seed=job.seed)
    seconds["augmentation"] = time.monotonic() - t0

    return {
        "status": "done",
        "model": job.model,
        "seed": job.seed,
        "key": job.key(),
        "max_minutes": job.params.get("max_minutes"),
        "fit_seconds": seconds["fit"],
        "seconds": seconds,
        "stop_reason": model.fit_record.get("stopped_because"),
        "epochs": len(model.history),
        "n_synthetic": int(synthetic.n_obs),
        "detection_auc_per_draw": per_draw,
        "metrics": metrics.overall,
        "control": metrics.control,
        "augmentation": augmentation,
        "params": job.params,
    }


def _further_draws(job: CellJob, model, per_type: dict[str, int], test) -> list[float]:
    """The detection AUCs of ``job.draws - 1`` further synthetic sets of ``model`` (TEST's per-type
    counts, sampling seeds ``job.seed + DRAW_SEED_STRIDE * i``), each scored as the cell's own set is.

    TRAIN is left out: it adds only the real-vs-real control, the same at every draw and computed with the
    cell's own set (TRAIN and TEST hold the same genes, so the detector's space is the same without it)."""
    from ..metrics.evaluation import evaluate

    aucs = []
    for i in range(1, job.draws):
        more = model.sample(per_type=per_type, seed=job.seed + DRAW_SEED_STRIDE * i)
        scored = evaluate(test, more, label_key=job.label_key, seed=job.seed, settings=job.settings,
                          families=["detection"])  # fmt: skip
        aucs.append(scored.overall["detection_auc"])
    return aucs


def main(argv: list[str] | None = None) -> int:
    """Run the cell of ``argv = [job.json, parent pid]``; the exit status (0, 1 failed, 130 interrupted)."""
    job_path, parent = (argv if argv is not None else sys.argv[1:])[:2]
    _die_with_parent(int(parent))
    job = CellJob.from_file(job_path)
    directory = Path(job.directory)
    try:
        record = run_cell(job)
    except Exception as e:
        traceback.print_exc()
        failure = {"status": "failed", "model": job.model, "seed": job.seed, "key": job.key()}
        failure.update(error=error_line(e), peak_mb=peak_memory_mb())
        write_text_atomic(directory / FAILED, json.dumps(jsonable(failure), indent=2) + "\n")
        return 1
    if record is None:
        print("training interrupted: the cell is left unfinished", file=sys.stderr)
        return INTERRUPTED
    record["peak_mb"] = peak_memory_mb()
    record["gpu_peak_mb"] = _gpu_peak_mb()
    write_text_atomic(directory / RESULT, json.dumps(jsonable(record), indent=2) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
