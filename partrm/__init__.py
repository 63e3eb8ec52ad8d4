"""PartRM: a drag-conditioned large Gaussian reconstruction model for part-level dynamics."""

__version__ = "0.1.0"
