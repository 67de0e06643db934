"""Same seed, same data → the same synthetic cells.

The digests pin what three small fits sample (the cgan with a covariate and its count draw, GARAGE with
GAT seeds, and a hinge/RMSprop/Poisson cgan without EMA or packing). A restructuring must leave them
unchanged; a deliberate change of the algorithm updates them, and its commit says why.

The digests are pinned per CPU capability (``torch.backends.cpu.get_cpu_capability()``): torch's kernels
round differently with AVX2 and with AVX-512, and one different last bit of a rate changes a count drawn
from it. With AVX-512 the processor's family matters too (its math library picks kernels per processor:
AMD's Zen 4, family 25, and Zen 5, family 26, give different cells), so those pins name it. On a machine
with no pin the case is skipped, saying so; fitting twice on any machine must give
the same cells (the determinism tests of each model). They were pinned with two torch threads (the
machine's cores), and a reduction split over another number of threads rounds differently too: each case
runs with two, whatever the test runner set.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from cellsynth import models

SMALL = dict(epochs=3, val_every_steps=5, g_hidden=(32, 64), d_hidden=(64, 32), c_hidden=(32, 16), z_dim=16)

CASES = {
    "cgan": (
        "cgan",
        {},
        ["donor"],
        {
            "AVX2": "e89432f0f71284a1",
            "AVX512 AMD 25": "d7ddc296a210cce5",
            "AVX512 AMD 26": "23d7c9b6f9ea5ac2",
        },
    ),
    "garage": (
        "garage",
        dict(leakage=0.2, gat={"max_epochs": 10}),
        [],
        {
            "AVX2": "697191013e2df47a",
            "AVX512 AMD 25": "ea2e95b5cb0f0cb7",
            "AVX512 AMD 26": "3e7ed9bd04300c01",
        },
    ),
    "cgan_hinge_rmsprop": (
        "cgan",
        dict(loss="hinge", optimizer="rmsprop", count_noise="poisson", pack=1, ema_decay=None),
        [],
        {
            "AVX2": "c5d280b26ca493fe",
            "AVX512 AMD 25": "b44ea6d0f1315706",
            "AVX512 AMD 26": "30651a51d06edc62",
        },
    ),
}


def digest(out) -> str:
    h = hashlib.sha256()
    X = out.X.tocsr()
    X.sort_indices()
    for a in (X.data.astype(np.float32), X.indices.astype(np.int64), X.indptr.astype(np.int64)):
        h.update(np.ascontiguousarray(a).tobytes())
    for col in out.obs.columns:
        h.update("|".join(map(str, out.obs[col].tolist())).encode())
    return h.hexdigest()[:16]


def machine() -> str:
    """The pins' key: the CPU capability, and with AVX-512 the processor's vendor and family."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX512":
        return capability
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's fields
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    vendor = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}.get(fields.get("vendor_id", ""), "?")
    return f"{capability} {vendor} {fields.get('cpu family', '?')}"


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("case", sorted(CASES))
def test_small_fit_samples_the_pinned_cells(counts_adata, case, two_threads):
    name, params, condition_keys, pins = CASES[case]
    key = machine()
    if key not in pins:
        pytest.skip(f"no digest pinned for this machine, {key} (pinned: {', '.join(pins)})")
    model = models.get(name, **SMALL, **params)
    model.fit(counts_adata, label_key="cell_type", condition_keys=condition_keys, progress=False, seed=0)
    assert digest(model.sample(n=150, seed=2)) == pins[key]
