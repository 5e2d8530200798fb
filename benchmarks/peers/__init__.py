"""The peers' side of ``benchmarks/side_by_side.py``: one driver per system, same workloads, same timing.

Each ``*_driver`` module runs in its own system's Python environment (Skyloom: the project's venv;
Celery and Dask: ``benchmarks/.peer-venv/<name>``, from ``requirements-<name>.txt``) and imports
only :mod:`benchmarks.peers.common` besides its system, so that the timing rule is written once.
"""
