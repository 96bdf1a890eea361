"""Ride-duration streaming consumer: a KCL MultiLang record processor that scores taxi rides in batches."""

__version__ = "0.1.0"

__all__ = ["__version__"]
