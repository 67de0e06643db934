"""10x Genomics input: a MEX folder (or its ``matrix.mtx``), or a CellRanger ``.h5``."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...errors import InputError
from .common import open_text, reading


def _tenx_files(path: Path) -> tuple[Path, str, Path, Path, Path]:
    """(folder, prefix, matrix, features-or-genes, barcodes) of a 10x folder or matrix file."""
    if path.is_dir():
        folder = path
        matrices = sorted(p for p in folder.iterdir() if re.fullmatch(r"(.*)matrix\.mtx(\.gz)?", p.name))
        if not matrices:
            raise InputError(
                f"{path} has no matrix.mtx(.gz) — a 10x folder holds matrix.mtx, features.tsv (or genes.tsv) "
                f"and barcodes.tsv, each optionally .gz"
            )
        prefixes = sorted({re.fullmatch(r"(.*)matrix\.mtx(\.gz)?", p.name).group(1) for p in matrices})
        if len(prefixes) > 1 or len(matrices) > 1:
            names = ", ".join(p.name for p in matrices)
            raise InputError(
                f"{path} holds several 10x matrices ({names}) — pass the path of the one to read"
            )
        matrix = matrices[0]
    else:
        folder, matrix = path.parent, path
    m = re.fullmatch(r"(.*)matrix\.mtx(\.gz)?", matrix.name)
    prefix = m.group(1) if m else ""

    def find(*stems: str) -> Path | None:
        for stem in stems:
            for suffix in ("", ".gz"):
                p = folder / f"{prefix}{stem}{suffix}"
                if p.is_file():
                    return p
        return None

    features = find("features.tsv", "genes.tsv")
    barcodes = find("barcodes.tsv")
    missing = [n for n, p in (("features.tsv/genes.tsv", features), ("barcodes.tsv", barcodes)) if p is None]
    if missing:
        raise InputError(
            f"10x folder {folder} has {matrix.name} but no {prefix}{' or '.join(missing)}(.gz) — "
            f"put the 10x files together in one folder"
        )
    return folder, prefix, matrix, features, barcodes


def read_10x_mtx(path: Path) -> ad.AnnData:
    import scanpy as sc

    folder, prefix, matrix, features, barcodes = _tenx_files(path)
    fix = "check the 10x files are complete and belong together"
    with reading(matrix, "a 10x matrix", fix):
        with open_text(features) as fh:
            n_fields = len(fh.readline().rstrip("\r\n").split("\t"))
        legacy = (matrix.name, features.name, barcodes.name) == (
            f"{prefix}matrix.mtx",
            f"{prefix}genes.tsv",
            f"{prefix}barcodes.tsv",
        )
        v3 = (matrix.name, features.name, barcodes.name) == (
            f"{prefix}matrix.mtx.gz",
            f"{prefix}features.tsv.gz",
            f"{prefix}barcodes.tsv.gz",
        )
        if (legacy and n_fields >= 2) or (v3 and n_fields >= 3):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*not unique.*")
                adata = sc.read_10x_mtx(
                    folder, var_names="gene_symbols", make_unique=False, prefix=prefix or None
                )
        else:  # mixed compression or a one-column genes file: scanpy expects one of its two layouts
            adata = _read_mtx_by_hand(matrix, features, barcodes)
        adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.uns["cellsynth_read"] = {"format": "10x_mtx"}
    return adata


def _read_mtx_by_hand(matrix: Path, features: Path, barcodes: Path) -> ad.AnnData:
    from scipy.io import mmread

    X = sp.csr_matrix(mmread(str(matrix)).T, dtype=np.float32)  # 10x stores genes × cells
    feats = pd.read_csv(features, sep="\t", header=None, dtype=str, keep_default_na=False)
    cells = pd.read_csv(barcodes, sep="\t", header=None, dtype=str, keep_default_na=False)[0]
    if X.shape != (len(cells), len(feats)):
        raise InputError(
            f"{matrix} is {X.shape[1]} genes × {X.shape[0]} cells but {features.name} lists "
            f"{len(feats)} genes "
            f"and {barcodes.name} {len(cells)} barcodes — the 10x files do not belong together"
        )
    var = pd.DataFrame({"gene_ids": feats[0].to_numpy()})
    var.index = pd.Index((feats[1] if feats.shape[1] >= 2 else feats[0]).to_numpy(), dtype=str)
    keep = slice(None)
    if feats.shape[1] >= 3:
        var["feature_types"] = feats[2].to_numpy()
        if (var["feature_types"] == "Gene Expression").any():
            keep = (var["feature_types"] == "Gene Expression").to_numpy()
    adata = ad.AnnData(X, obs=pd.DataFrame(index=pd.Index(cells.to_numpy(), dtype=str)), var=var)
    return adata[:, keep].copy()


def read_10x_h5(path: Path, genome: str | None) -> ad.AnnData:
    import scanpy as sc

    with reading(path, "a 10x CellRanger .h5", "check the file is a complete CellRanger filtered/raw .h5"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not unique.*")
            adata = sc.read_10x_h5(path, genome=genome)
        adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.uns["cellsynth_read"] = {"format": "10x_h5"}
    return adata
