"""Dromos: a resource-aware scheduler for services (Marathon-style) and jobs (Chronos-style)."""

__version__ = "0.1.0"
