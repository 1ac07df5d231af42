"""The Docker runtime's GPU mapping: assigned devices become one device request for those
indices; a GPU task without devices is refused. Pure (the client only builds the config)."""

from __future__ import annotations

from dataclasses import replace

import docker
import pytest

from scheduler.runtimes.base import LaunchSpec, launch_spec
from scheduler.runtimes.docker.containers import create_args
from tests.factories import make_app, make_task


def _spec(gpus: float, devices: tuple[int, ...]) -> LaunchSpec:
    app = make_app("/ml/infer", cmd="sleep 1", gpus=gpus)
    return replace(launch_spec(app, make_task(app)), gpu_devices=devices)


def _api() -> docker.APIClient:
    return docker.APIClient(base_url="unix:///nonexistent.sock", version="1.43")


def test_assigned_devices_become_a_device_request() -> None:
    args = create_args(_api(), _spec(2, (1, 3)), "c", "busybox", bind_address="127.0.0.1",
                       extra_labels={}, ncpu=4)
    [request] = args["host_config"]["DeviceRequests"]
    assert request["DeviceIDs"] == ["1", "3"]
    assert request["Capabilities"] == [["gpu"]]


def test_no_gpus_no_device_request() -> None:
    args = create_args(_api(), _spec(0, ()), "c", "busybox", bind_address="127.0.0.1",
                       extra_labels={}, ncpu=4)
    assert "DeviceRequests" not in args["host_config"]


def test_a_gpu_task_without_devices_is_refused() -> None:
    with pytest.raises(ValueError, match="no devices"):
        create_args(_api(), _spec(1, ()), "c", "busybox", bind_address="127.0.0.1",
                    extra_labels={}, ncpu=4)
