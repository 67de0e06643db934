"""A graph attention encoder (PyG ``GATConv``) that also reports its attention weights."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class GATEncoder(nn.Module):
    """Two (or more) ``GATConv`` layers classifying nodes: multi-head concatenated hidden layers, then a
    single-head output layer with one logit per class.

    ``forward(x, edge_index, return_attention=True)`` also returns, per layer, the ``(edge_index,
    alpha)`` pair from PyG's ``return_attention_weights=True``: ``edge_index`` there includes the self
    loops the layer added, and ``alpha`` is ``edges × heads``.
    """

    def __init__(
        self,
        n_in: int,
        n_classes: int,
        *,
        hidden: int = 32,
        heads: int = 8,
        n_layers: int = 2,
        dropout: float = 0.3,
    ):
        super().__init__()
        from torch_geometric.nn import GATConv

        if n_layers < 1:
            raise ValueError("a GAT needs at least one layer")
        self.dropout = dropout
        layers = []
        width = n_in
        for _ in range(n_layers - 1):
            layers.append(GATConv(width, hidden, heads=heads, dropout=dropout))
            width = hidden * heads
        layers.append(GATConv(width, n_classes, heads=1, concat=False, dropout=dropout))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, return_attention: bool = False):
        attention = []
        for i, layer in enumerate(self.layers):
            x = F.dropout(x, p=self.dropout, training=self.training)
            if return_attention:
                x, (ei, alpha) = layer(x, edge_index, return_attention_weights=True)
                attention.append((ei, alpha))
            else:
                x = layer(x, edge_index)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return (x, attention) if return_attention else x
