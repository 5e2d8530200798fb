"""Skyloom deployable."""
