"""Metrics comparing real and synthetic cells."""
