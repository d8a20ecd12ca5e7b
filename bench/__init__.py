"""Benchmarks of the Aegis gateway (``python -m bench.gateway``); see ``bench/README.md``."""
