"""Durable state: the StateStore protocol (base.py), SQLite (default) and memory (tests)."""

from scheduler.store.base import AlreadyExists, StateStore

__all__ = ["AlreadyExists", "StateStore"]
