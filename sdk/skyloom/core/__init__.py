"""The shared core: what the control-plane functions and the worker agent both need.

Nothing here is public API; the SDK's public surface is ``skyloom/__init__.py``.
"""
