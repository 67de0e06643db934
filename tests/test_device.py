"""The CPU training set-up: glibc's allocator keeps a step's freed buffers; the precision of each stage."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

# rounds of eight 8 MB buffers (a whole-transcriptome batch's size) allocated, written and freed, as a
# training step's are; prints whether the thresholds were set and the page faults over the rounds after
# the first
PROBE = """
import resource, torch
from cellsynth.train.device import make_fabric, keep_freed_buffers
make_fabric("cpu")
def rounds(n):
    for _ in range(n):
        held = [torch.ones(2_000_000) for _ in range(8)]
        del held
rounds(1)  # the first round's pages fault either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(20)
print(keep_freed_buffers(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(**env) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=os.environ | env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's allocator"
)
def test_a_cpu_fabric_keeps_freed_batch_buffers_for_reuse():
    kept, faults = probe()
    left, faults_left = probe(CELLSYNTH_MALLOPT="0")
    assert kept and not left
    # the rounds write 20 × 64 MB, 327,680 pages of 4 KB: with the thresholds the buffers are reused and
    # hardly any page faults. Untouched, each round maps them afresh (~312,000 faults on an idle host; the
    # kernel backs some with huge pages under load, as few as ~17,000 seen), always many more
    assert faults < 4_000
    assert faults_left > 2 * faults


@pytest.mark.parametrize(("native", "min_entries", "expected"), [
    (True, 1, "bf16-mixed"),  # a CPU with native bf16 and a batch at least the threshold's width
    (True, None, "32-true"),  # the batch (64 cells × 120 genes) narrower than the threshold
    (False, 1, "32-true"),  # bf16 emulated: float32
])  # fmt: skip
def test_precision_null_is_bf16_only_for_wide_batches_on_cpus_with_native_bf16(
    counts_adata, monkeypatch, native, min_entries, expected
):
    from cellsynth import models
    from cellsynth.train import device

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    if min_entries is not None:
        monkeypatch.setattr(device, "BF16_MIN_ENTRIES", min_entries)
    model = models.get("nbvae", epochs=2, batch_size=64, val_every_steps=5, mixed_precision=None)
    model.fit(counts_adata, label_key="cell_type", progress=False, seed=0)
    assert model.fit_record["precision"] == expected
    cells = model.sample(50, seed=0)
    assert np.isfinite(cells.X.toarray() if hasattr(cells.X, "toarray") else cells.X).all()
    # asked for explicitly, either way, whatever the CPU
    for asked, precision in ((True, "bf16-mixed"), (False, "32-true")):
        model = models.get("nbvae", epochs=1, batch_size=64, mixed_precision=asked)
        model.fit(counts_adata, label_key="cell_type", progress=False, seed=0)
        assert model.fit_record["precision"] == precision


@pytest.mark.parametrize(("asked", "ae", "expected", "expected_ae"), [
    ({}, {}, "32-true", "32-true"),  # the default: float32 in both stages
    ({"mixed_precision": None}, {}, "bf16-mixed", "bf16-mixed"),  # null, where it pays, inherited
    ({"mixed_precision": None}, {"mixed_precision": False}, "bf16-mixed", "32-true"),  # the autoencoder's own
])  # fmt: skip
def test_nbgan_trains_both_stages_in_its_precision_unless_ae_sets_the_autoencoders(
    counts_adata, monkeypatch, asked, ae, expected, expected_ae
):
    from cellsynth import models
    from cellsynth.train import device

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(device, "BF16_MIN_ENTRIES", 1)
    params = dict(epochs=2, val_every_steps=5, z_dim=8, g_hidden=(32, 32), d_hidden=(32, 16), c_hidden=(16,))
    model = models.get("nbgan", **params, **asked, ae={"epochs": 2, **ae})
    model.fit(counts_adata, label_key="cell_type", progress=False, seed=0)
    assert model.fit_record["precision"] == expected
    assert model.fit_record["autoencoder"]["precision"] == expected_ae


def test_bf16_autocast_leaves_the_likelihood_as_float32_computes_it(counts_adata):
    # the per-type tables (log-profile offsets, log-dispersions) enter the negative binomial's log-gamma
    # terms; rounded to bf16 they moved the held-out NELBO by half or more
    from cellsynth import models

    nelbo = {}
    for mixed in (False, True):
        model = models.get("nbvae", epochs=2, batch_size=64, val_every_steps=5, mixed_precision=mixed)
        model.fit(counts_adata, label_key="cell_type", progress=False, seed=0)
        nelbo[mixed] = [r["val_nelbo"] for r in model.history if "val_nelbo" in r]
    assert len(nelbo[False]) >= 2
    np.testing.assert_allclose(nelbo[True], nelbo[False], rtol=0.01)
