"""Every single-run benchmark's ``--smoke`` run works end to end against the current API.

How the scripts are run and their output read: tests/benchmark_runs.py.
"""

from __future__ import annotations

import ast
import json
import math
import re

import pandas as pd
import pytest

from cellsynth import models
from tests.benchmark_runs import NUMBER, assert_finite, constant, result_values, smoke


def test_cgan_quality(scripts):
    out = smoke(scripts, "cgan_quality.py")
    record = json.loads(out.strip().splitlines()[-1])
    assert record["dataset"] == "smoke" and record["model"] == "cgan"
    assert record["steps"] > 0 and record["stopped"] == "epochs"
    assert_finite(record, ["fit_seconds", "steps"])
    n_types, of = record["types"].split("/")
    assert 0 < int(n_types) <= int(of)
    keys = constant("KEYS", "cgan_quality.py")
    assert_finite(record["overall"], keys)  # every headline metric, as the real runs report it
    assert_finite(record["control"], ["detection_auc", "mmd", "wasserstein", "tstr_macro_f1"])


def test_step_time(scripts):
    out = smoke(scripts, "step_time.py")
    values = result_values(out)
    assert_finite(values, ["gan_step_s", "ae_step_s", "gan_gflops", "ae_gflops", "peak_gflops"])
    # matrix products were counted in both stages, and reach a share of the peak, not more
    assert (
        0 < values["gan_gflops"] < values["peak_gflops"] and 0 < values["ae_gflops"] < values["peak_gflops"]
    )
    assert "of the peak" in out and out.count(" ms per step") == 2


def test_evaluate_speed(scripts):
    out = smoke(scripts, "evaluate_speed.py")
    assert "REAL, SYNTH, TRAIN: 300 cells × 100 genes each" in out
    assert_finite(result_values(out), ["evaluate_seconds"])
    seconds = dict(
        re.findall(rf"(\S+)=({NUMBER})", next(x for x in out.splitlines() if x.startswith("seconds:")))
    )
    assert_finite({k: float(v) for k, v in seconds.items()}, ["common_space", "total"])
    for name in ("detection_auc", "wasserstein", "mmd", "tstr_macro_f1"):
        match = re.search(rf"^{name}: ({NUMBER}) \(control ({NUMBER})\)$", out, re.M)
        assert match, f"no {name} line in:\n{out}"
        assert all(math.isfinite(float(v)) for v in match.groups())


def test_gat_scale(scripts):
    out = smoke(scripts, "gat_scale.py")
    stage = re.search(rf"GAT (\d+) epochs, held-out balanced accuracy ({NUMBER}); seeds (\d+)", out)
    assert stage and int(stage[1]) > 0 and 0 <= float(stage[2]) <= 1 and int(stage[3]) > 0
    result = result_values(out)
    assert_finite(result, ["gat_seconds", "process_peak_rss_gb"])
    # nan only where the kernel's peak counter cannot be reset, as the benchmark documents
    assert "peak_rss_gb" in result and not math.isinf(result["peak_rss_gb"])


def test_marginal_oracle(scripts):
    out = smoke(scripts, "marginal_oracle.py")
    lines = out.strip().splitlines()
    variants = {}
    for line in lines[:4]:
        variants.update(json.loads(line))
    assert list(variants) == ["as_sampled", "mean_shift", "quantile_map", "mean_shift_population"]
    for metrics in variants.values():
        assert_finite(metrics, constant("KEYS", "marginal_oracle.py"))
    spreads = [
        re.match(rf"PC\d+: sd test ({NUMBER}) train ({NUMBER}) synthetic ({NUMBER})", x) for x in lines[4:]
    ]
    assert len(spreads) == 12 and all(spreads)
    assert all(math.isfinite(float(v)) for m in spreads for v in m.groups())


def test_reference_generators(scripts):
    out = smoke(scripts, "reference_generators.py")
    kinds = constant("SMOKE_GENERATORS", "reference_generators.py")
    lines = out.strip().splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == kinds
    for line in lines:
        assert_finite(ast.literal_eval(line.split(" ", 1)[1]), constant("KEYS", "reference_generators.py"))


def test_throughput(scripts):
    out = smoke(scripts, "throughput.py")
    assert re.search(r"run 1 ours: \d+ cells in", out) and re.search(r"run 1 seed: \d+ cells in", out)
    result = result_values(out)
    assert_finite(result, ["ours_cells_per_s", "seed_cells_per_s", "throughput_ratio"])
    assert result["ours_cells_per_s"] > 0 and result["seed_cells_per_s"] > 0
    assert out.strip().splitlines()[-1].startswith("RESULT throughput_ratio=")


def test_time_to_fidelity(scripts, tmp_path):
    params = ["--param", "val_every_steps=1", "--param", "val_metric=c2st"]
    out = smoke(scripts, "time_to_fidelity.py", "--out", str(tmp_path), "--throughput-rounds", "2", *params)
    lines = out.strip().splitlines()
    record = json.loads(lines[-2])
    assert record["peer"]["model"] == "scvi" and record["peer"]["epochs"] == 3
    assert 0.0 <= record["ours"]["kept_detection_auc"] <= 1.0
    assert {"val_mmd", "val_wmmd", "val_c2st"} <= set(record["ours"]["selection"])  # each vs the detector
    assert 0.0 <= record["peer"]["detection_auc"] <= 1.0
    result = result_values(out)
    assert set(result) == {"time_to_peer_ratio", "throughput_ratio"}
    assert result["throughput_ratio"] > 0 and math.isfinite(result["throughput_ratio"])
    # the printed throughput is the alternated rounds' median, the order swapped between rounds
    rounds = record["throughput_rounds"]
    assert [r["peer_first"] for r in rounds] == [True, False]
    assert all(
        r["ratio"] == pytest.approx(r["ours_cells_per_s"] / r["peer_cells_per_s"], rel=0.01) for r in rounds
    )
    assert result["throughput_ratio"] == pytest.approx(sum(r["ratio"] for r in rounds) / 2, rel=0.01)
    assert record["throughput_of_the_fits"] > 0
    trace = pd.read_csv(tmp_path / "trace.csv")
    ours = trace[trace["model"] == models.DEFAULT_MODEL]
    assert len(ours) >= 1 and ours["detection_auc"].between(0, 1).all()  # the monitor scored every validation
    assert set(ours["stage"]) == {"autoencoder", "gan", "final"}  # nbgan: both stages monitored
    # the last point is the model as fitted (calibrated), after every monitored state
    final = ours[ours["stage"] == "final"]
    assert len(final) == 1 and final.index[0] == ours.index[-1]
    assert final["detection_auc"].iloc[0] == pytest.approx(record["ours"]["kept_detection_auc"], abs=1e-4)
    assert final["seconds"].iloc[0] >= ours["seconds"].iloc[:-1].max()
    # the ratio is the first monitored time at or below the peer's AUC, over the peer's time
    reached = ours.loc[ours["detection_auc"] <= record["peer"]["detection_auc"], "seconds"]
    expected = reached.min() / record["peer"]["seconds"] if len(reached) else math.inf
    assert result["time_to_peer_ratio"] == pytest.approx(expected, rel=1e-2)
    assert (tmp_path / "time_to_fidelity.png").stat().st_size > 1000


def test_latent_ceiling(scripts):
    lines = [json.loads(x) for x in smoke(scripts, "latent_ceiling.py").strip().splitlines()]
    assert [r["variant"] for r in lines] == ["recon_test", "recon_train", "type_gaussian", "prior"]
    for r in lines:
        assert_finite(r, ["detection_auc", "dcr_ratio", "mmd"])
        assert 0.0 <= r["detection_auc"] <= 1.0
