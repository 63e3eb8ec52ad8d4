"""Helpers the tests share (and the benchmarks reuse); no tests here. Importable as
``tests.support`` from the repository root (``pythonpath`` in pyproject.toml's pytest section)."""
