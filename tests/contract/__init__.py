"""The remote contract suite: one set of tests every adapter passes (see conftest.py)."""
