"""The benchmark the project ships: ``python -m consumer bench`` (``make bench``)."""

from consumer.tools.bench.run import BenchConfig, format_table, run_bench

__all__ = ["BenchConfig", "format_table", "run_bench"]
