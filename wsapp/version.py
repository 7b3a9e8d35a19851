"""The version of wsapp, for ``wsapp.__version__`` and what a running server reports."""

__all__ = ["__version__"]

__version__ = "0.1.0"
