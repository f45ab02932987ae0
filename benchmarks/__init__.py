"""Reproducible performance measurements of clobi (`python -m benchmarks --help`)."""
