"""Tests of the reference server (a package, so module names never clash with other dirs)."""
