"""An index of app ids by path, so Marathon's "one path is an app or a group, never both"
check costs O(depth of the id), not O(number of apps).

:func:`scheduler.model.group.app_group_overlap` states the rule over plain lists (and walks
every app); :class:`AppPaths` answers the same question, with the same words, from an index
kept as apps come and go.
"""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.model.group import ancestors, is_under

ROOT = "/"


class AppPaths:
    """The app ids, and for each path that holds apps (an implied group) the ids under it.

    Not thread-safe on its own: the orchestrator reads and writes it under its lock."""

    def __init__(self, app_ids: Iterable[str] = ()) -> None:
        self._ids: set[str] = set()
        self._under: dict[str, set[str]] = {}  # group path (not the root) -> app ids under it
        for app_id in app_ids:
            self.add(app_id)

    def __contains__(self, app_id: object) -> bool:
        return app_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, app_id: str) -> None:
        """Record that ``app_id`` exists (again: no change)."""
        if app_id in self._ids:
            return
        self._ids.add(app_id)
        for group in ancestors(app_id):
            if group != ROOT:
                self._under.setdefault(group, set()).add(app_id)

    def remove(self, app_id: str) -> None:
        """Record that ``app_id`` is gone (unknown: no change)."""
        if app_id not in self._ids:
            return
        self._ids.discard(app_id)
        for group in ancestors(app_id):
            held = self._under.get(group)
            if held is not None:
                held.discard(app_id)
                if not held:
                    del self._under[group]

    def overlap(self, app_id: str, group_ids: Iterable[str]) -> str | None:
        """Why ``app_id`` cannot be an app beside the indexed apps and the declared groups
        ``group_ids``, or ``None`` -- :func:`~scheduler.model.group.app_group_overlap`'s
        answer. ``app_id`` itself being indexed is no clash (the app being replaced)."""
        for up in ancestors(app_id):
            if up in self._ids:
                return f"{app_id} would be inside app {up}, and an app cannot hold others"
        held = self._under.get(app_id)
        if held:
            other = min(held)
            assert is_under(other, app_id)
            return f"{app_id} is a group (it holds app {other}); an app cannot have its id"
        if app_id in set(group_ids):
            return f"{app_id} is a group; an app cannot have its id"
        return None
