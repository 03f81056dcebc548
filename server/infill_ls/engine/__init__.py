"""Inference engines: the local transformers one here; a remote one may sit beside it."""
