"""Inference engines: ``local`` (a transformers model in this process) and ``openai`` (a remote server)."""

from __future__ import annotations


def load_engine(settings, report=lambda message, percent: None):
    """The engine the ``backend`` setting names, ready to ``generate``."""
    if settings.backend == "openai":
        from .remote import RemoteEngine

        return RemoteEngine.load(settings, report)
    from .local import LocalEngine

    return LocalEngine.load(settings, report)
