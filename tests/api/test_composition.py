"""The composition root and the runtime registry: what `dromos serve` builds from its config."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler import composition
from scheduler.cli import build_parser, main
from scheduler.config import ConfigError, ServeConfig
from scheduler.model.node import Node
from scheduler.model.resources import Resources
from scheduler.runtimes import registry
from scheduler.runtimes.base import Runtime
from scheduler.runtimes.local import LocalRuntime
from scheduler.services.balancer import Balancer
from tests.runtimes.conftest import cleanup_local_state

NODE = Node("only", Resources(2, 1024, 1000), ((37000, 37009),))


def test_the_built_in_runtimes_are_registered_local_first() -> None:
    assert registry.names()[:3] == ["local", "docker", "kubernetes"]
    assert build_parser().parse_args(["serve"]).runtime == "local"
    assert [registry.entry(n).local_ports for n in ("local", "docker", "kubernetes")] == [
        True, True, False]


def test_an_unknown_runtime_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match="unknown runtime 'nope'; one of local, docker"):
        registry.create("nope", ServeConfig())


def test_a_new_runtime_is_one_registration(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[ServeConfig] = []

    def factory(config: ServeConfig) -> Runtime:
        built.append(config)
        return LocalRuntime(config.state_dir, [NODE])

    monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    registry.register("mine", factory)
    # The CLI offers it, and the composition root builds it, with no other edit.
    assert build_parser().parse_args(["serve", "--runtime", "mine"]).runtime == "mine"
    config = ServeConfig(runtime="mine", state_dir=tmp_path)
    runtime = composition.build_runtime(config)
    try:
        assert built == [config] and runtime.nodes() == [NODE]
        # Not registered with local_ports: no built-in balancer for it.
        o = composition.build_orchestrator(config)
        assert composition.build_balancer(config, o) is None
        o.runtime.close()
        o.store.close()
    finally:
        runtime.close()
        cleanup_local_state(tmp_path)


def test_a_runtime_constructor_refusal_becomes_a_config_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(config: ServeConfig) -> Runtime:
        raise ValueError("no usable node")

    monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    registry.register("refuses", refuse)
    with pytest.raises(ConfigError, match="no usable node"):
        composition.build_runtime(ServeConfig(runtime="refuses", state_dir=tmp_path))


def test_build_wires_the_parts_and_the_balancer_follows_the_registry(tmp_path: Path) -> None:
    config = ServeConfig(state_dir=tmp_path, nodes=(NODE,), service_ports=(15000, 15010))
    dromos = composition.build(config)
    try:
        o = dromos.orchestrator
        assert isinstance(o.runtime, LocalRuntime) and o.nodes() == [NODE]
        assert (tmp_path / "dromos.db").exists()
        assert o.service_ports.port_range == (15000, 15010)
        assert o.health is not None
        assert isinstance(dromos.balancer, Balancer)  # local tasks bind ports here
        off = ServeConfig(state_dir=tmp_path, nodes=(NODE,), service_bind="off")
        assert composition.build_balancer(off, o) is None
    finally:
        o.runtime.close()
        o.store.close()
        cleanup_local_state(tmp_path)


def test_the_cli_alone_cannot_serve(capsys: pytest.CaptureFixture[str]) -> None:
    # scheduler.cli imports nothing of the server side; `serve` is wired in by the program.
    assert main(["serve"]) == 2
    assert "cannot serve" in capsys.readouterr().err


def test_health_comes_from_dromos_probes_except_kubernetes_told_to_read_the_api(
        tmp_path: Path) -> None:
    from scheduler.clock import SystemClock
    from scheduler.services.health import HealthMonitor

    rt = LocalRuntime(tmp_path / "state")
    try:
        made = composition.build_health(ServeConfig(runtime="local", kube_health="api"), rt,
                                        SystemClock())
        assert type(made) is HealthMonitor and made.source == "dromos"
        with pytest.raises(ConfigError, match="kube health must be one of auto, api, probe"):
            composition.build_health(ServeConfig(runtime="kubernetes", kube_health="bogus"),
                                     rt, SystemClock())
    finally:
        rt.close()
        cleanup_local_state(tmp_path / "state")


def test_kube_health_flag_reaches_the_config() -> None:
    args = build_parser().parse_args(["serve", "--kube-health", "probe"])
    assert args.kube_health == "probe"
    assert build_parser().parse_args(["serve"]).kube_health is None
