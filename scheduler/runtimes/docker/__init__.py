"""The Docker runtime: every task is one container on a Docker Engine (``--runtime docker``).

Identity. A task's container is named :func:`container_name` of its task id (``dromos-`` +
the id, sanitised to Docker's ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``, plus a short hash of the id
whenever sanitising changed it) and carries the labels ``dromos.io/app``, ``dromos.io/task``,
``dromos.io/version`` and, for job runs, ``dromos.io/job`` and ``dromos.io/run``; ``docker ps
--filter label=dromos.io/app`` shows what Dromos runs. Docker refuses a second container of
the same name, which is what makes :meth:`DockerRuntime.launch` idempotent even when two
launches race, and a restarted Dromos finds its containers again by label (adoption).

What the runtime remembers lives beside the containers, in ``<state_dir>/docker/tasks/<container
name>/`` (a container's labels cannot change after creation): ``launch.json`` (container id,
start time), ``kill.json`` (a kill was requested, and its SIGKILL deadline), ``exit.json``
(how the task ended, written when the end is first seen) and ``output.log`` (the tail of the
container's output, saved when the container is removed). These records make a task id run
at most once, keep kills and outcomes across restarts, and let exited containers be removed
without losing what they said.

Decisions (also in the README, "Docker runtime"):

- **Apps (and jobs) without a container** are refused with a ``ValueError`` naming them: the
  docker runtime runs images, and silently running a bare command on the host (or in some
  image) would surprise. Whoever embeds the runtime may set ``default_image`` to run such apps'
  ``cmd``/``args`` in that image instead (the test suite does, to run the runtime contract
  suite on Docker).
- **Commands.** ``cmd`` runs as ``/bin/sh -c <cmd>`` (the entrypoint is replaced, as Mesos's
  Docker containerizer does); ``args`` are the container's command, handed to the image's
  entrypoint (Marathon's meaning); neither runs the image's own entrypoint and command. Every
  container runs Docker's init (``--init``, tini) as PID 1, so signals reach the task the way
  they do outside a container (a PID 1 ignores SIGTERM unless it handles it) and zombies are
  reaped.
- **Ports** use bridge networking. ``portMappings[i]`` publishes ``containerPort`` on host port
  ``LaunchSpec.ports[i]`` (the host ports Dromos's placement chose, in mapping order); a
  ``containerPort`` of 0 means "the same number as the host port" (Marathon). Apps with
  ``portDefinitions`` (no mappings) get each host port published on the same container port.
  Ports are bound on ``bind_address`` (127.0.0.1 unless configured). ``docker.network: HOST``
  uses the host's network instead (nothing published).
- **Environment.** Exactly Marathon's: ``PORT0..n``, ``PORT``, ``PORTS`` and ``PORT_<NAME>`` hold
  the *host* ports ("only host ports are made available to a task through environment
  variables"; ``HOST:PORT0`` is the task's address as the rest of the world sees it). With a
  fixed ``containerPort`` the task binds that port; with ``containerPort`` 0 the container port
  equals the host port, so ``$PORT0`` is the port to bind.
- **Resources.** ``cpus`` becomes a CFS quota (``NanoCpus``), clamped to 0.01 .. the engine's
  cores; ``mem`` (MiB) a hard memory limit, swap included, of at least Docker's 6 MiB (0 = no
  limit). ``gpus``: the devices the sharing step assigned become a device request for those
  indices (``DeviceRequest(device_ids=[...], capabilities=[["gpu"]])``, the NVIDIA container
  toolkit's); a GPU task without assigned devices is refused.
- **Images.** A local image is used as it is; a missing one is pulled; ``forcePullImage``
  always pulls first and falls back to the local image when the pull fails. An image that is
  neither local nor pullable is a ``ValueError`` naming the image (the launch is marked
  failed). Pulls happen inside :meth:`DockerRuntime.launch`, so a large first pull holds the
  control loop for its duration.
- **Exited containers** are kept ``keep_exited_seconds`` (default an hour: ``docker logs``
  and ``docker inspect`` for whoever investigates) after their end was recorded, then
  removed by a later :meth:`DockerRuntime.observe`, which first saves the tail of their
  output for :meth:`DockerRuntime.logs`. ``None`` keeps them forever.

Reported states (:meth:`DockerRuntime.observe`):

- RUNNING while the container runs (also paused or restarting). A kill in progress is still
  RUNNING until the container has exited.
- STARTING for a container that was created but not started yet (Dromos died between the two).
- KILLED once exited after :meth:`DockerRuntime.kill`, whatever its exit code (which is kept).
- FINISHED on exit code 0.
- FAILED on a non-zero exit code (``128 + n`` after death by signal ``n``; 127 for a command
  that was not found, as from a shell), when the container could not be started (the engine's
  reason), or when the kernel's OOM killer ended it (message ``OOM killed``).
- LOST when there is no container for the task and no recorded end.

When the engine cannot be reached, :meth:`~DockerRuntime.launch`,
:meth:`~DockerRuntime.observe`, :meth:`~DockerRuntime.kill` and :meth:`~DockerRuntime.logs`
raise :class:`RuntimeUnavailable` (nothing is guessed; :meth:`~DockerRuntime.nodes` answers
with the host's last known figures, or no node at all); the orchestrator keeps serving, shows
the runtime as unavailable and retries on its next passes. The runtime backs off meanwhile: after
a failure the engine is tried again after 1 s, then 2, 4... up to 30 s between attempts (calls
in between raise at once), so a dead or hung engine does not slow the control loop down.

The package, by part: :mod:`.names` (container names), :mod:`.containers` (a container from a
LaunchSpec; images), :mod:`.engine` (the connection and its backoff), :mod:`.records` (what
is kept per task; how a container ended), :mod:`.observing` (the states that follow;
housekeeping) and :mod:`.runtime` (:class:`DockerRuntime`). Kill records and the retry
pacing are the runtimes' shared :mod:`scheduler.runtimes.kills` and
:mod:`scheduler.runtimes.backoff`.
"""

from scheduler.runtimes.base import LABEL_APP, LABEL_JOB, LABEL_RUN, LABEL_TASK, LABEL_VERSION
from scheduler.runtimes.docker.engine import default_client
from scheduler.runtimes.docker.names import container_name
from scheduler.runtimes.docker.runtime import DockerRuntime

__all__ = ["LABEL_APP", "LABEL_JOB", "LABEL_RUN", "LABEL_TASK", "LABEL_VERSION",
           "DockerRuntime", "container_name", "default_client"]
