"""prefopt: length-aware preference optimization of language models."""

__version__ = "0.1.0"
