"""Writing synthetic cells: ``.h5ad``, or a CSV/TSV matrix with its labels beside it.

Every file is written to a temporary name and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

from pathlib import Path

from .._io import write_atomic
from ..errors import InputError

__all__ = ["write_synthetic"]


def write_synthetic(adata, out: Path) -> list[Path]:
    """Write an AnnData as ``.h5ad``, or as a cells × genes CSV/TSV plus ``<stem>_labels.csv``.

    Parameters
    ----------
    adata
        The cells to write (typically from ``model.sample``).
    out
        ``*.h5ad`` (gzip-compressed), ``*.csv`` or ``*.tsv``. For CSV/TSV the matrix goes to ``out`` (a
        ``cell`` column, then one column per gene; whole numbers when ``uns["cellsynth"]`` says the
        representation is counts) and ``obs`` to ``<stem>_labels<suffix>`` beside it, GARAGE-style.

    Returns
    -------
    list of Path
        The files written, the matrix first.

    Raises
    ------
    InputError
        ``out`` has another suffix.
    """
    import pandas as pd
    import scipy.sparse as sp

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".h5ad":
        write_atomic(out, lambda p: adata.write_h5ad(p, compression="gzip"))
        return [out]
    if suffix in (".csv", ".tsv"):
        sep = "," if suffix == ".csv" else "\t"
        labels_path = out.with_name(f"{out.stem}_labels{out.suffix}")
        X = adata.X.toarray() if sp.issparse(adata.X) else adata.X
        frame = pd.DataFrame(X, index=adata.obs_names, columns=adata.var_names)
        fmt = "%.0f" if adata.uns.get("cellsynth", {}).get("representation") == "counts" else "%.6g"
        write_atomic(out, lambda p: frame.to_csv(p, sep=sep, float_format=fmt, index_label="cell"))
        write_atomic(labels_path, lambda p: adata.obs.to_csv(p, sep=sep, index_label="cell"))
        return [out, labels_path]
    raise InputError(f"--out {out}: unknown output format {out.suffix!r}; use .h5ad or .csv")
