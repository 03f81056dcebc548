"""infill-ls: inline fill-in-the-middle code suggestions over LSP."""

__version__ = "0.1.0"
