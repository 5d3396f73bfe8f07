"""Command-line interface (``kgc``)."""
