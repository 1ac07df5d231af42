"""Service ports: one stable, machine-wide port per app port (Marathon's ``servicePorts``).

Where an app's service ports live in its definition (as in Marathon, so ``GET /v2/apps``
shows them and a client that PUTs the app back keeps them):

- host networking: ``portDefinitions[i].port``. With ``requirePorts: false`` (the default)
  that number is *only* the service port -- the task's host port is dynamic, chosen by
  placement from the node's ranges (``AppSpec.fixed_host_ports`` is empty). With
  ``requirePorts: true`` it is also the task's host port (service port == host port, so no
  proxy is needed, and the built-in balancer does not listen on it);
- bridge networking: ``container.portMappings[i].servicePort`` (independent of ``hostPort``).

:func:`assign` is pure; :class:`ServicePortAllocator` is the orchestrator's cached view of
which ports the stored apps hold, and of the lowest port that may be free, so one assignment
costs O(ports of the app) amortised, not O(apps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from scheduler.model.app import AppSpec, task_id_prefix
from scheduler.model.task import Task, TaskState
from scheduler.model.validation import SpecError

PortRange = tuple[int, int]

DEFAULT_SERVICE_PORT_RANGE: PortRange = (10000, 20000)
"""Marathon's ``local_port_min``/``local_port_max`` defaults (inclusive here)."""


def _uses_mappings(spec: AppSpec) -> bool:
    return spec.container is not None and spec.container.portMappings is not None


def service_ports(spec: AppSpec) -> list[int]:
    """The app's service ports, one per app port, in port order (``0`` = not assigned yet;
    a stored definition has every one assigned)."""
    if spec.container is not None and spec.container.portMappings is not None:
        return [m.servicePort for m in spec.container.portMappings]
    return [p.port for p in spec.port_definitions]


def port_path(spec: AppSpec, index: int) -> str:
    """The JSON pointer of the ``index``-th service port in the user's document."""
    if _uses_mappings(spec):
        return f"/container/portMappings/{index}/servicePort"
    return f"/portDefinitions/{index}/port"


def held_ports(spec: AppSpec) -> set[int]:
    """Every port number the app claims on this machine: its service ports and its fixed host
    ports (another app must not get either as a service port)."""
    return {p for p in service_ports(spec) if p} | set(spec.fixed_host_ports)


def taken_ports(apps: Iterable[AppSpec], except_id: str | None = None) -> dict[int, str]:
    """port → app id over ``apps`` (skipping ``except_id``), as :func:`assign` wants it."""
    out: dict[int, str] = {}
    for app in apps:
        if app.id != except_id:
            for p in held_ports(app):
                out.setdefault(p, app.id)
    return out


def assign(spec: AppSpec, taken: Mapping[int, str], previous: AppSpec | None,
           port_range: PortRange = DEFAULT_SERVICE_PORT_RANGE,
           start: int | None = None) -> AppSpec:
    """``spec`` with every service port chosen and written into the definition.

    - A non-zero port the user gave is kept; if another app holds it (``taken[port]`` is an
      id other than ``spec.id``; entries of ``spec.id`` itself are ignored) a
      :class:`SpecError` names ``/portDefinitions/<i>/port`` (or
      ``/container/portMappings/<i>/servicePort``) -- Marathon leaves that clash to the user,
      Dromos cannot, because it listens on the port itself.
    - A ``0`` is filled like Marathon does: first with ``previous``'s service ports that lie
      in ``port_range`` and that the new definition does not use explicitly (in order, so an
      app PUT again without its ports keeps them), then with the lowest free port of
      ``port_range`` (inclusive) -- at or above ``start`` when given, which a caller passes
      when it knows every port of the range below ``start`` is taken (so a search does not
      walk the held ports again). None left: :class:`SpecError` saying so.

    For host networking the result carries ``portDefinitions`` (and drops the legacy ``ports``
    list, which said the same thing); for bridge networking, ``portMappings[i].servicePort``.
    """
    lo, hi = port_range
    wanted = service_ports(spec)
    errors: list[tuple[str, list[str]]] = []

    def holder(port: int) -> str | None:
        owner = taken.get(port)
        return owner if owner is not None and owner != spec.id else None

    seen: dict[int, int] = {}
    for i, port in enumerate(wanted):
        if not port:
            continue
        if port in seen:
            errors.append((port_path(spec, i), [
                f"service port {port} is already used by port {seen[port]} of this app"]))
            continue
        seen[port] = i
        owner = holder(port)
        if owner is not None:
            errors.append((port_path(spec, i), [
                f"service port {port} is already used by app {owner}; choose another "
                f"port or 0 to get a free one from {lo}-{hi}"]))
    if spec.container is not None and spec.container.portMappings is not None:
        for i, m in enumerate(spec.container.portMappings):
            # A fixed host port is bound on this same machine: it must not be a port another
            # app holds either (placement keeps two tasks off one host port, not this).
            owner = holder(m.hostPort) if m.hostPort and m.hostPort != m.servicePort else None
            if owner is not None:
                errors.append((f"/container/portMappings/{i}/hostPort", [
                    f"host port {m.hostPort} is already used by app {owner}"]))
    if errors:
        raise SpecError("Object is not valid", errors)

    used = set(seen) | set(spec.fixed_host_ports)
    recycled = [p for p in (service_ports(previous) if previous is not None else [])
                if lo <= p <= hi and p not in used and holder(p) is None]
    chosen: list[int] = []
    candidate = lo if start is None else max(lo, start)
    for i, port in enumerate(wanted):
        if port:
            chosen.append(port)
            continue
        while recycled and recycled[0] in used:
            recycled.pop(0)
        if recycled:
            port = recycled.pop(0)
        else:
            while candidate <= hi and (candidate in used or holder(candidate) is not None):
                candidate += 1
            if candidate > hi:
                raise SpecError("Object is not valid", [(port_path(spec, i), [
                    f"no free service port left in {lo}-{hi}: every port of the range is "
                    "held by an app; delete an app, give this port a fixed number, or "
                    "start Dromos with a larger --service-ports range"])])
            port = candidate
        used.add(port)
        chosen.append(port)
    return _with_service_ports(spec, chosen)


def _with_service_ports(spec: AppSpec, ports: list[int]) -> AppSpec:
    if spec.container is not None and spec.container.portMappings is not None:
        mappings = [m.model_copy(update={"servicePort": p})
                    for m, p in zip(spec.container.portMappings, ports, strict=True)]
        return spec.model_copy(
            update={"container": spec.container.model_copy(update={"portMappings": mappings})})
    defs = [d.model_copy(update={"port": p})
            for d, p in zip(spec.port_definitions, ports, strict=True)]
    return spec.model_copy(update={"portDefinitions": defs, "ports": None})


class ServicePortAllocator:
    """:func:`assign` over the stored apps, with the port → app index kept between calls.

    ``list_apps`` (the store's) is read once, then each assignment adds the ports it hands
    out. Entries are never removed on the way (a write may still fail after the assignment),
    so the index can only hold *too many* ports -- of deleted apps, or ports an app gave up
    -- never too few: no port is handed out twice. When an assignment fails against the
    index, the index is rebuilt from the store and the assignment tried once more, so a
    stale entry can waste a port until then but never cause a wrong 422.

    The lowest port that may be free is kept too (ports below it are all in the index), so
    the search for a free port starts there instead of walking every held port: with entries
    never removed between rebuilds it only moves up, and a rebuild starts it again at the
    range's low end.

    Not thread-safe: the orchestrator calls it under its lock.
    """

    def __init__(self, list_apps: Callable[[], Iterable[AppSpec]],
                 port_range: PortRange = DEFAULT_SERVICE_PORT_RANGE) -> None:
        self._list_apps = list_apps
        self.port_range = port_range
        self._index: dict[int, str] | None = None
        self._low: tuple[PortRange, int] | None = None  # (range, lowest port maybe free)

    def _rebuild(self) -> dict[int, str]:
        self._index = taken_ports(self._list_apps())
        self._low = None
        return self._index

    def _start(self) -> int:
        lo = self.port_range[0]
        if self._low is None or self._low[0] != self.port_range:
            return lo
        return self._low[1]

    def assign(self, spec: AppSpec, previous: AppSpec | None) -> AppSpec:
        """``spec`` with its service ports chosen (see :func:`assign`); ``previous`` is the
        stored definition of the same app, if any. Raises :class:`SpecError` (422)."""
        index = self._index if self._index is not None else self._rebuild()
        try:
            out = assign(spec, index, previous, self.port_range, self._start())
        except SpecError:
            index = self._rebuild()
            out = assign(spec, index, previous, self.port_range)
        for p in service_ports(out):
            index[p] = out.id  # assign() made sure no other app holds these
        for p in out.fixed_host_ports:
            index.setdefault(p, out.id)
        low = self._start()
        while low in index:
            low += 1
        self._low = (self.port_range, low)
        return out

    def forget(self) -> None:
        """Drop the index (it is rebuilt from the store on the next assignment)."""
        self._index = None
        self._low = None


def endpoints_text(apps: Iterable[AppSpec], tasks: Iterable[Task],
                   up: Callable[[Task, AppSpec], bool],
                   host_of: Callable[[Task], str]) -> str:
    """``GET /v2/tasks`` as ``text/plain``: Marathon's lines for load balancers.

    One line per service port of each app: ``<id>\\t<servicePort>\\t<host>:<port>\\t...``
    where ``<id>`` is the app id without its leading slash and with ``/`` as ``_``
    (Marathon's ``safePath``: ``/prod/web`` → ``prod_web``) and every ``host:port`` is followed
    by a tab, as Marathon writes them. An app without ports gets one line
    ``<id>\\t \\t<host> <host> ...``. Apps are sorted by id.

    Tasks listed: RUNNING and not being killed (Marathon: ``isRunning``), and -- beyond
    Marathon, whose bridge routed to failing tasks -- ``up(task, app)``, which the API makes
    "healthy, when the app has health checks". ``host_of`` is the address a task's ports
    answer on (the runtime's probe host), so the lines can be used as they are.
    Like Marathon, apps with an ``ipAddress`` (IP-per-task, not Docker) are left out.
    """
    by_app: dict[str, list[Task]] = {}
    for t in tasks:
        if t.state is TaskState.RUNNING and t.kill_requested_at is None:
            by_app.setdefault(t.app_id, []).append(t)
    lines: list[str] = []
    for app in sorted(apps, key=lambda a: a.id):
        docker = app.container is not None and app.container.docker is not None
        if app.ipAddress and not docker:
            continue
        name = task_id_prefix(app.id)
        running = [t for t in by_app.get(app.id, []) if up(t, app)]
        ports = service_ports(app)
        if not ports:
            lines.append(f"{name}\t \t" + "".join(f"{host_of(t)} " for t in running))
        for i, sp in enumerate(ports):
            lines.append(f"{name}\t{sp}\t" + "".join(
                f"{host_of(t)}:{t.ports[i] if i < len(t.ports) else 0}\t" for t in running))
    return "".join(line + "\n" for line in lines)
