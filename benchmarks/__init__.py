"""Benchmarks of Skyloom (``benchmarks/standard.sh``) and the side-by-side run with its peers."""
