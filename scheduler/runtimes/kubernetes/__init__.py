"""The Kubernetes runtime: every task is one Pod that Dromos places itself (``--runtime
kubernetes``).

Dromos is the scheduler. It reads the cluster's Nodes, places tasks with its own pipeline and
creates each Pod with ``spec.nodeName`` already set, so kube-scheduler never sees it.

Identity
    A task's pod is named :func:`pod_name` of its task id: the id lowercased, every character
    outside ``[a-z0-9-]`` turned into ``-``, plus ``-`` and 8 hex digits of the id's SHA-256
    whenever that changed the id (or it had to be cut to 63 characters), so ``etl:1`` and
    ``etl-1`` still get different pods. A job run's task id is ``<job>:<scheduled time>``
    (``etl:20261201T010000Z``, retries ``....retry1``), so its pod name follows from the job
    and the occurrence: a create that is retried after a crash or a timeout gets ``409
    AlreadyExists`` and the existing pod is adopted instead of a twin being made.

    Labels (values must be label-safe, see :func:`label_value`): ``dromos.io/task`` on every
    pod; ``dromos.io/app`` (:func:`app_label`: the app id without its leading ``/``, ``/``
    replaced by ``_`` -- ``/prod/web`` is ``prod_web``, the prefix of its task ids) and
    ``dromos.io/version`` on app pods; ``dromos.io/job`` and ``dromos.io/run`` on job-run pods.
    The exact values are kept in annotations (``dromos.io/app-id``, ``dromos.io/task-id``,
    ``dromos.io/version``, ``dromos.io/job-name``, ``dromos.io/run-id``), which is what the
    runtime itself reads. ``kubectl get pods -l dromos.io/app=prod_web`` lists an app's pods.

Mapping of a LaunchSpec to a Pod (:func:`build_pod`)
    - ``restartPolicy: Never``: a task id runs at most once. A task that exits, or whose
      liveness probe fails, ends its pod (Succeeded/Failed) and Dromos starts a new task, as
      Marathon does; the kubelet never restarts it in place.
    - resources: requests = limits (``cpu`` in millicores, ``memory`` and
      ``ephemeral-storage`` from MiB, whole ``gpus`` as ``nvidia.com/gpu``), so the pod is
      Guaranteed and the figures Dromos placed with are the ones the node enforces.
    - ``cmd`` runs as ``/bin/sh -c <cmd>`` (the image's entrypoint is replaced); ``args`` are
      the container's args (the image's entrypoint gets them, Marathon's meaning).
    - image: the app's ``container.docker.image`` (a job's ``container.image``); apps and jobs
      without a container run in ``default_image`` (``DROMOS_KUBE_DEFAULT_IMAGE``, default
      :data:`DEFAULT_IMAGE`), which must contain ``/bin/sh``. ``imagePullPolicy:
      IfNotPresent`` (``forcePullImage`` gives ``Always``).
    - env: exactly the LaunchSpec's (Marathon's variables); ``enableServiceLinks: false`` keeps
      Kubernetes' Docker-link variables out of it.
    - ports: one container port per task port, named after the port's Marathon name when that
      is a valid port name, else ``port<i>``. Pods have their own IP, so there are no host
      ports (they are also forbidden by Pod Security ``restricted``): ``containerPort`` is the
      mapping's ``containerPort``, or the number Dromos allocated (``$PORT0``...) when that is
      0 or there are no mappings, so a task that binds ``$PORT0`` listens on its container port.
    - security: what Pod Security ``restricted`` demands (non-root -- ``run_as_user``, 65534 by
      default, because most images would run as root --, no privilege escalation, all
      capabilities dropped, the runtime's default seccomp profile) and no service-account
      token. ``privileged``, container volumes, docker parameters and ``network: HOST`` are
      refused with a ``ValueError``.
    - health checks (``LaunchSpec.extra["healthChecks"]``, Marathon JSON): the first one whose
      port resolves becomes the liveness probe (``failureThreshold`` =
      ``maxConsecutiveFailures``; none when that is 0, which never kills), preceded by a
      startup probe that allows ``gracePeriodSeconds`` plus ``maxConsecutiveFailures``
      failures before the first success, which is Marathon's grace period. HTTP(S) becomes
      ``httpGet``, TCP ``tcpSocket``, COMMAND ``exec`` of ``/bin/sh -c``. The readiness probe
      is the app's readiness check (``extra["readinessChecks"]``) or else its first health
      check with ``failureThreshold`` 1: only ready pods are endpoints of the app's Service,
      which is how "only healthy tasks get traffic" carries over. Further health checks have
      no Kubernetes equivalent and are left to Dromos's own health monitor.
    - ``LaunchSpec.extra["portDefinitions"]`` (the app's effective port definitions, Marathon
      JSON, one per task port) names the ports and gives their service ports; without it
      ports are ``port<i>`` with service port ``10000 + i``.

Services
    An app with ports gets a ClusterIP Service named :func:`service_name` of its id, selecting
    ``dromos.io/app``, one port per task port: the Marathon service port (``portDefinitions[i]
    .port`` or ``portMappings[i].servicePort``; ``10000 + i`` when that is 0 -- every Service
    has its own IP, so apps cannot clash) targeting the named container port, so pods whose
    dynamic ports differ are all reached. It is created, or updated when the ports changed,
    when a runtime instance first launches a task of the app, and deleted once the app has had
    no pod for :data:`SERVICE_IDLE_SECONDS`. Kubernetes only routes to ready pods.

Nodes (:meth:`KubernetesRuntime.nodes`)
    Every Node that is schedulable (not cordoned, no ``NoSchedule``/``NoExecute`` taint, Ready)
    becomes a Dromos node. Its ``hostname`` is its ``kubernetes.io/hostname`` label (the Node's
    name when it has none; the pod's ``nodeName`` is always the Node's name), its attributes
    are all of its labels under their own names plus ``zone`` and ``region`` for
    ``topology.kubernetes.io/zone`` and ``/region`` (a literal ``zone`` label wins), so
    constraints like ``["rack", "GROUP_BY"]`` or ``["zone", "IS", "z1"]`` work. Ports are
    :data:`NODE_PORTS` (numbers for ``$PORTn``; pods do not share a network namespace).

    The Runtime protocol's ``nodes()`` is the capacity Dromos places into, and Dromos
    subtracts its own tasks itself. So the resources reported are the Node's *allocatable*
    minus the requests of every other pod bound to it that has not ended: pods of other
    namespaces (when the runtime may list pods cluster-wide; the shipped manifests only allow
    its own namespace, so pods of other namespaces are then invisible -- grant ``list/watch``
    on pods cluster-wide to account for them) and pods in its namespace that are not Dromos
    tasks. Dromos's own pods are *not* subtracted: that would count them twice. The
    ``pods`` limit of a node is not modelled: a node full by count rejects the pod and the
    task fails (``OutOfpods``).

Watching
    A background thread keeps a cache of the namespace's pods (all namespaces' when allowed)
    by list + watch: the watch resumes from the last resourceVersion it saw (bookmarks keep
    that fresh) and, when the API server answers ``410 Gone`` (the version was compacted), the
    pods are listed again (a relist; pods that vanished meanwhile are treated as deleted).
    Another keeps the Nodes. :meth:`~KubernetesRuntime.observe` reads the cache and makes no
    API call except one GET for a task whose pod the cache does not know (so a pod another
    instance created a moment ago is not declared LOST). This is what makes observing many
    tasks every half second cheap.

What the runtime remembers beside the cluster, in ``<state_dir>/kubernetes/<namespace>/tasks/
<pod name>/``: ``kill.json`` (a kill was requested, and its deadline), ``exit.json`` (how the
task ended, with its pod's uid: written when the end is first seen -- by an observe, or by the
watch when a pod of the namespace is deleted -- and also when an observed task has no pod at
all) and ``output.log`` (the tail of the output, saved when an ended pod is deleted). Nothing
is written at launch: while the pod exists it is the record of the launch (an fsync per
create would cost more than the create). Ended pods stay ``keep_ended_seconds`` (default an
hour, for ``kubectl logs``/``describe``) and are then deleted by a later observe; the records
make a task id run at most once (a launch of an id whose end is recorded returns its handle
and creates nothing) and keep outcomes across restarts.

Reported states (:meth:`~KubernetesRuntime.observe`)
    - STARTING while the pod is Pending (image pull, container creation...; the waiting reason
      is the message, e.g. ``ErrImagePull``, which Kubernetes keeps retrying).
    - RUNNING while it is Running (also while it terminates after a kill), or Unknown (its node
      stopped reporting; the message says so).
    - FINISHED when it Succeeded (exit code 0).
    - FAILED when it Failed: the container's exit code and reason (``OOMKilled`` becomes ``OOM
      killed``), or the pod's reason when no container ran (``Evicted``, ``OutOfcpu``...).
    - KILLED when it ended or disappeared after :meth:`~KubernetesRuntime.kill` (or with the
      task's ``kill_requested_at`` set), keeping the exit code when one was seen.
    - LOST when there is no pod and no recorded end (deleted by someone else, or never created).

When the API server cannot be reached (refused, timed out, 5xx, or credentials refused),
:meth:`~KubernetesRuntime.launch`, :meth:`~KubernetesRuntime.kill`,
:meth:`~KubernetesRuntime.observe` and :meth:`~KubernetesRuntime.logs` raise
:class:`RuntimeUnavailable`; the orchestrator keeps serving its API, shows the runtime as
unavailable and retries on its next passes. Calls back off (1 s, 2, 4... 30 s between
attempts; calls in between raise at once) and the watch threads retry likewise, relisting
once the API server is back, so observe reconciles with whatever happened meanwhile (the
pacing is :mod:`scheduler.runtimes.backoff`, shared with the Docker runtime). A kill that
raised can be sent again: kills are idempotent and never extend an earlier deadline.
:meth:`~KubernetesRuntime.nodes` never raises: it answers from its cache (``[]`` before the
first successful list).

The package, by part: :mod:`.names` (names, labels, annotations), :mod:`.pods` (the Pod and
Service builders, quantities), :mod:`.cache` (pod and Node views, the list + watch cache),
:mod:`.nodes` (the node inventory), :mod:`.records` (what is kept per task, and the states
that follow), :mod:`.services` (app Services), :mod:`.client` (the API connection) and
:mod:`.runtime` (:class:`KubernetesRuntime`).
"""

from scheduler.runtimes.kubernetes.cache import PodView, Reflector, node_view, outcome, pod_view
from scheduler.runtimes.kubernetes.client import load_client_configuration
from scheduler.runtimes.kubernetes.names import (
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    app_label,
    label_value,
    pod_name,
    service_name,
)
from scheduler.runtimes.kubernetes.pods import (
    build_pod,
    build_service,
    parse_quantity,
    pod_requests,
    port_plan,
    probes,
)
from scheduler.runtimes.kubernetes.runtime import KubernetesRuntime

__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_NAMESPACE",
    "KubernetesRuntime",
    "PodView",
    "Reflector",
    "app_label",
    "build_pod",
    "build_service",
    "label_value",
    "load_client_configuration",
    "node_view",
    "outcome",
    "parse_quantity",
    "pod_name",
    "pod_requests",
    "pod_view",
    "port_plan",
    "probes",
    "service_name",
]
