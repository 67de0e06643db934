"""AnnData ``.h5ad`` files."""

from __future__ import annotations

from pathlib import Path

import anndata as ad

from .common import reading


def read_h5ad(path: Path) -> ad.AnnData:
    with reading(path, "an AnnData .h5ad file", "check the file is a complete .h5ad written by anndata"):
        adata = ad.read_h5ad(path)
    adata.uns["cellsynth_read"] = {"format": "h5ad"}
    return adata
