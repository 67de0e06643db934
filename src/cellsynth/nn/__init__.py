"""Network building blocks shared by the generators."""

from __future__ import annotations

from .blocks import MLP, ConditionalNoise, ProjectionDiscriminator, one_hot_conditions

__all__ = ["MLP", "ConditionalNoise", "ProjectionDiscriminator", "one_hot_conditions"]
