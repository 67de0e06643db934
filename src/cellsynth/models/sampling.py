"""Which conditions each synthetic cell gets, and whether a sampling request fits in memory.

A fitted model remembers its training cells' condition combinations (``info["joint"]``); a request
(``n`` cells in the real or uniform type proportions, ``per_type`` counts, or ``mix`` weights between
types) becomes each cell's condition codes, drawn from the combinations seen with its type.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import RequestError


def joint_table(codes: np.ndarray) -> dict[str, list]:
    """The distinct rows of ``codes`` (cells × condition keys) and how many cells have each."""
    uniq, counts = np.unique(codes, axis=0, return_counts=True)
    return {"codes": uniq.ravel().tolist(), "counts": counts.tolist()}


def restore_types(obs, info: dict) -> None:
    """Give the condition columns of ``obs`` whose training column held integers integer categories
    again, and those that held booleans boolean ones (a mixture's name, ``mix(...)``, keeps the column as
    text)."""
    for key in info.get("integer_keys", []):
        if key not in obs:
            continue
        try:
            values = [int(c) for c in obs[key].cat.categories]
        except ValueError:
            continue
        obs[key] = obs[key].cat.rename_categories(values)
    for key in info.get("bool_keys", []):
        if key in obs and set(obs[key].cat.categories) <= {"False", "True"}:
            obs[key] = obs[key].cat.rename_categories({"False": False, "True": True})


def check_memory(info: dict, n, per_type) -> None:
    """Refuse a request whose dense working arrays cannot fit in this machine's memory.

    The generated values are held dense (cells × training genes, float32) until the output is built,
    with a batch's working arrays beside them (counted as much again); ``as_is`` output is dense over
    every output gene too.
    """
    try:
        total = max(int(n or 0), 0) + sum(max(int(k), 0) for k in (per_type or {}).values())
    except (TypeError, ValueError):
        return  # malformed counts: plan_conditions names them
    pre = info["preprocessing"]
    n_genes = len(pre["train_genes"])
    per_cell = 2 * 4 * n_genes + (4 * len(pre["output_genes"]) if pre["representation"] == "as_is" else 0)
    need, memory = total * per_cell, _physical_memory()
    if memory is not None and need > memory:
        raise RequestError(
            f"sampling {total:,} cells × {n_genes:,} genes needs about {_gigabytes(need)} of memory "
            f"(dense float32 values), more than this machine's {_gigabytes(memory)}; ask for fewer "
            "cells (a smaller --n or --per-type) or sample in several runs with different seeds"
        )


def joint_conditions(info: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training cells' condition combinations: ``(codes, counts, label_counts)``."""
    joint = np.asarray(info["joint"]["codes"], dtype=np.int64).reshape(-1, 1 + len(info["condition_keys"]))
    joint_counts = np.asarray(info["joint"]["counts"], dtype=np.float64)
    n_labels = len(info["categories"][info["label_key"]])
    return joint, joint_counts, np.bincount(joint[:, 0], weights=joint_counts, minlength=n_labels)


def label_types(info: dict) -> tuple[list[str], np.ndarray]:
    """The types a request names and outputs, and the type of each label the model is conditioned on
    (index into them): the label's own categories, or the types its sub-types split
    (:mod:`~cellsynth.data.subtypes`)."""
    labels = info["categories"][info["label_key"]]
    split = info.get("subtypes")
    if not split:
        return list(labels), np.arange(len(labels))
    return list(split["types"]), np.asarray(split["parent"], dtype=np.int64)


def plan_conditions(info: dict, n, per_type, proportions, mix, rng: np.random.Generator):
    """Decide each synthetic cell's condition codes (and soft label weights when mixing), and its type.

    A model conditioned on sub-types gets, for each cell of a type, one of the type's sub-types at their
    training shares (as it gets the further conditions); a mixed cell takes one sub-type of each mixed type.
    """
    labels, type_of = label_types(info)
    joint, joint_counts, label_counts = joint_conditions(info)

    def draw(t: int, k: int) -> np.ndarray:
        rows = np.flatnonzero(type_of[joint[:, 0]] == t)
        p = joint_counts[rows] / joint_counts[rows].sum()
        return joint[rng.choice(rows, size=k, p=p)]

    if n is not None and (not isinstance(n, int | np.integer) or n < 0):
        raise RequestError(f"--n must be a non-negative integer, got {n!r}")
    if mix:
        unknown = [k for k in mix if k not in labels]
        if unknown:
            raise RequestError(f"unknown label(s) in --mix: {unknown}; known labels: {labels}")
        w = np.array([float(v) for v in mix.values()])
        if len(mix) < 2 or np.any(w < 0) or w.sum() <= 0:
            raise RequestError("--mix needs two or more labels with non-negative weights, e.g. a=0.5,b=0.5")
        w = w / w.sum()
        if not n:
            raise RequestError("--mix needs --n, the number of mixed cells to generate")
        label_w = np.zeros((n, len(type_of)), dtype=np.float32)
        for name, wi in zip(mix, w, strict=True):
            subs = np.flatnonzero(type_of == labels.index(name))
            pick = (
                subs[0]
                if len(subs) == 1
                else rng.choice(subs, size=n, p=label_counts[subs] / label_counts[subs].sum())
            )
            label_w[np.arange(n), pick] += wi
        first = labels.index(max(mix, key=lambda k: mix[k]))
        codes = draw(first, n)
        tag = "mix(" + ",".join(f"{k}={wi:.2f}" for k, wi in zip(mix, w, strict=True)) + ")"
        return codes, label_w, [tag] * n

    want = np.zeros(len(labels), dtype=np.int64)
    if n:
        if proportions == "real":
            p = np.bincount(type_of, weights=label_counts, minlength=len(labels))
            p = p / p.sum()
        elif proportions == "uniform":
            p = np.full(len(labels), 1.0 / len(labels))
        else:
            raise RequestError(f"unknown --proportions {proportions!r}; use real or uniform")
        want += largest_remainder(p, n)
    for name, k in (per_type or {}).items():
        if name not in labels:
            raise RequestError(f"unknown label {name!r} in --per-type; known labels: {labels}")
        if int(k) < 0:
            raise RequestError(f"--per-type {name}={k}: counts must be non-negative")
        want[labels.index(name)] += int(k)
    codes = np.concatenate(
        [draw(c, int(k)) for c, k in enumerate(want) if k > 0] or [np.zeros((0, joint.shape[1]), np.int64)]
    )
    names = [labels[type_of[c]] for c in codes[:, 0]]
    return codes, None, names


def largest_remainder(p: np.ndarray, n: int) -> np.ndarray:
    """``n`` split in proportions ``p`` into integers summing to ``n`` (largest remainders first)."""
    raw = p * n
    out = np.floor(raw).astype(np.int64)
    short = n - out.sum()
    if short > 0:
        out[np.argsort(-(raw - out), kind="stable")[:short]] += 1
    return out


def _physical_memory() -> int | None:
    """Total physical memory in bytes (None where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _gigabytes(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:,.1f} GiB"
