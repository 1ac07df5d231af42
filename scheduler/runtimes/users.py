"""The ``user`` a task runs as (Marathon's ``user``, Chronos's ``runAsUser``), per runtime.

- local: the executor drops to the user's uid, primary gid and supplementary groups
  (``initgroups``) before exec, and the sandbox is handed to the user so the task can write
  its working directory, as a Mesos agent does. A user this machine does not know is refused
  at validation (422), and so is any other user when Dromos itself does not run as root.
- docker: passed to the engine as the container's ``User`` (a name the image knows, or
  ``uid[:gid]``); the engine fails the start for a name the image does not have.
- kubernetes: a numeric uid becomes the pod's ``runAsUser``; a name, or uid 0, is refused
  (422): a pod's user is a number and Pod Security ``restricted`` forbids root.

A runtime that can judge a user before launch implements :class:`ChecksUser`; the app
commands ask it (:func:`user_problem`) under the orchestrator lock.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@runtime_checkable
class ChecksUser(Protocol):
    """A runtime that can tell, before launch, whether it can run tasks as ``user``."""

    def user_problem(self, user: str) -> str | None:
        """Why tasks cannot run as ``user`` on this runtime, or ``None`` when they can."""
        ...


def user_problem(runtime: object, user: str | None) -> str | None:
    """Why ``runtime`` cannot run a task as ``user`` (``None``: it can, or cannot tell)."""
    if not user or not isinstance(runtime, ChecksUser):
        return None
    return runtime.user_problem(user)


@dataclass(frozen=True)
class LocalUser:
    """A user of this machine, resolved: what the executor switches to."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def resolve_local_user(user: str) -> LocalUser:
    """``user`` (a name, or a numeric uid) as this machine knows it. A uid without a passwd
    entry runs with gid = uid and no other groups. ``LookupError`` for an unknown name."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if user.isdigit():
            uid = int(user)
            return LocalUser(user, uid, uid, (uid,), "/")
        raise LookupError(f"there is no user {user!r} on this machine") from None
    except (ValueError, OverflowError):
        raise LookupError(f"{user!r} is not a valid user") from None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return LocalUser(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def local_user_problem(user: str) -> str | None:
    """Why the local runtime cannot run a task as ``user``: unknown here, or another user
    while Dromos does not run as root (it could not switch)."""
    try:
        resolved = resolve_local_user(user)
    except LookupError as e:
        return str(e)
    me = os.geteuid()
    if resolved.uid != me and me != 0:
        return (f"Dromos runs as uid {me}, not root, so it cannot run tasks as "
                f"{user!r} (uid {resolved.uid})")
    return None


def kubernetes_uid(user: str) -> int:
    """The pod ``runAsUser`` for ``user``. ``ValueError`` (saying why) for a name or root."""
    if not user.isdigit():
        raise ValueError(f"user {user!r}: the kubernetes runtime needs a numeric uid "
                         "(a pod's runAsUser is a number; names are the image's business)")
    uid = int(user)
    if uid == 0:
        raise ValueError("user 0 (root): pods run as non-root (Pod Security 'restricted')")
    if uid > 2**31 - 1:
        raise ValueError(f"user {user!r} is not a valid uid")
    return uid


def local_launch_user(user: str | None) -> dict[str, object] | None:
    """What ``launch.json`` records of the user for the executor (``None``: run as Dromos
    does). ``ValueError`` saying why when the local runtime cannot run as ``user``."""
    if not user:
        return None
    why = local_user_problem(user)
    if why is not None:
        raise ValueError(why)
    u = resolve_local_user(user)
    return {"name": u.name, "uid": u.uid, "gid": u.gid, "groups": list(u.groups),
            "home": u.home}
