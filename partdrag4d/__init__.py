"""PartDrag-4D: part-level dynamics data from articulated objects (PartNet-Mobility format)."""

__version__ = "0.1.0"
