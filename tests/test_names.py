"""Repeated cell or gene names: described, refused, or made unique on request."""

from __future__ import annotations

import pytest

import cellsynth
from cellsynth.data.datasets import simulate
from cellsynth.data.names import describe_duplicates, make_names_unique
from cellsynth.errors import InputError


def test_describe_duplicates_counts_every_repeated_name_and_shows_the_first_few():
    assert describe_duplicates(["a", "b", "c"], "gene") is None
    names = ["x", "a", "b", "a", "c", "b", "d", "a", "d", "e", "e"]
    text = describe_duplicates(names, "gene")
    assert text == "4 gene names occur more than once ('a' ×3, 'b' ×2, 'd' ×2, and 1 more)"


def test_make_names_unique_reports_what_it_renamed():
    adata = simulate({"a": 5, "b": 5}, n_genes=6, seed=0)
    adata.var_names = ["g0", "g0", "g0-1", "g3", "g4", "g4"]
    assert make_names_unique(adata) == {"genes": 2}
    assert adata.var_names.is_unique and adata.var_names[0] == "g0"
    assert make_names_unique(adata) == {}


def test_evaluate_refuses_duplicate_gene_names():
    real = simulate({"a": 20, "b": 20}, n_genes=10, seed=1)
    synth = simulate({"a": 20, "b": 20}, n_genes=10, seed=2)
    genes = list(synth.var_names)
    genes[4] = genes[3]
    synth.var_names = genes
    with pytest.raises(InputError, match=rf"SYNTH: 1 gene name occurs more than once \('{genes[3]}' ×2\)"):
        cellsynth.evaluate(real, synth, label_key="cell_type")
