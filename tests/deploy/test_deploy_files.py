"""The deployment files of docs/deploy: parsed and checked against the project itself.

Nothing here starts a container. The files are checked for what would break a deployment:
settings that do not exist, commands the CLI does not have, metrics the gateway does not
export, ports and names that do not match between the compose files, Prometheus, HAProxy
and Grafana, volumes that are not declared or are shared by two processes.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli.main import build_parser
from gateway.metrics import Metrics
from gateway.settings import SETTINGS, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "docs" / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
SINGLE = "docker-compose.yml"
SCALED = "docker-compose.scaled.yml"
COMPOSE_FILES = (SINGLE, SCALED)

SPECS = {spec.env: spec for spec in SETTINGS}
# Read by the stream log backends (Redis, Fluvio) rather than listed in SETTINGS yet.
BACKEND_VARIABLES = {"AGENTMEM_FLUVIO_ENDPOINT", "AGENTMEM_REDIS_URL", "AGENTMEM_STREAM_BACKEND"}
KNOWN_VARIABLES = set(SPECS) | BACKEND_VARIABLES
BACKENDS = {"embedded", "redis", "fluvio"}
DEFAULTS = Settings()
# Fluvio's SC listens for clients on 9003 and for SPUs on 9004.
SC_PUBLIC_PORT = 9003
SC_PRIVATE_PORT = 9004
CLI = "agentmem-gateway"


# -- loading -------------------------------------------------------------------------------


@functools.cache
def compose(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def services(name: str) -> dict[str, dict[str, Any]]:
    found = compose(name)["services"]
    assert isinstance(found, dict)
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def resolved(value: str) -> str | None:
    """A compose value with ``${VAR:-default}`` replaced by its default; ``None`` when it
    depends on a variable without a default (``${VAR}``, ``${VAR:?message}``)."""
    unresolved = False

    def replace(match: re.Match[str]) -> str:
        nonlocal unresolved
        if match.group(2) == "-":
            return match.group(3)
        unresolved = True
        return ""

    text = _INTERPOLATION.sub(replace, value)
    return None if unresolved else text


def role(service: dict[str, Any]) -> str | None:
    """``serve`` or ``agents`` for the project's processes, else ``None``."""
    argv = command(service)
    if len(argv) >= 2 and argv[0] == CLI:
        return argv[1]
    return None


def named(name: str, wanted: str) -> list[str]:
    return sorted(s for s, spec in services(name).items() if role(spec) == wanted)


def gateways(name: str) -> list[str]:
    return named(name, "serve")


def workers(name: str) -> list[str]:
    return named(name, "agents")


def port_of(service: dict[str, Any]) -> int:
    """The port a gateway or worker listens on inside its container."""
    env = environment(service)
    if "AGENTMEM_PORT" in env:
        value = resolved(env["AGENTMEM_PORT"])
        assert value is not None
        return int(value)
    image_env = dockerfile().stage(service["build"]["target"]).env()
    if "AGENTMEM_PORT" in image_env:
        return int(image_env["AGENTMEM_PORT"])
    return DEFAULTS.port


def setting(service: dict[str, Any], field_name: str) -> Any:
    env = environment(service)
    spec = next(s for s in SETTINGS if s.field == field_name)
    if spec.env in env:
        value = resolved(env[spec.env])
        assert value is not None
        return spec.parse(value)
    return getattr(DEFAULTS, field_name)


def duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(number) * units[unit]
    assert total > 0, text
    return total


def healthcheck_url(service: dict[str, Any]) -> str:
    test = " ".join(service["healthcheck"]["test"])
    match = re.search(r"https?://[^'\" ]+", test)
    assert match, test
    return match.group()


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def check_cli(argv: list[str]) -> None:
    """``argv`` is a command line the installed ``agentmem-gateway`` accepts."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts, f"{argv[0]} is not a script of the project"
    assert len(argv) >= 2, argv
    if argv[1] == "agents" and "agents" not in subcommands():
        pytest.skip("`agentmem-gateway agents` is not registered in gateway/cli yet")
    assert argv[1] in subcommands(), f"{CLI} has no command {argv[1]!r}"
    build_parser().parse_args(argv[1:])  # unknown flags exit with status 2


@functools.cache
def app_routes() -> set[str]:
    import tempfile

    from gateway.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp), jwt_secret="x" * 32))
        return {route.path for route in app.routes if hasattr(route, "path")}


# -- the Dockerfile ------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    parent: Stage | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def own(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def lineage(self) -> Iterator[Stage]:
        stage: Stage | None = self
        while stage is not None:
            yield stage
            stage = stage.parent

    def last(self, keyword: str) -> str | None:
        for stage in self.lineage():
            values = stage.own(keyword)
            if values:
                return values[-1]
        return None

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for stage in reversed(list(self.lineage())):
            for args in stage.own("ENV"):
                for part in shlex.split(args):
                    key, _, value = part.partition("=")
                    env[key] = value
        return env

    def root_image(self) -> str:
        return list(self.lineage())[-1].base


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: dict[str, Stage]

    def stage(self, name: str) -> Stage:
        assert name in self.stages, f"the Dockerfile has no stage {name!r}"
        return self.stages[name]


@functools.cache
def dockerfile() -> Dockerfile:
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and current is None:
            key, _, value = rest.partition("=")
            args[key] = value.strip('"')
        elif keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match, line
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], match.group(1))
            name = match.group(2) or f"stage-{len(stages)}"
            current = Stage(name, base, stages.get(base))
            stages[name] = current
        else:
            assert current is not None, f"{keyword} before the first FROM"
            current.instructions.append((keyword, rest))
    return Dockerfile(args, stages)


def exec_form(args: str) -> list[str]:
    argv = json.loads(args)
    assert isinstance(argv, list)
    return [str(a) for a in argv]


# -- PromQL --------------------------------------------------------------------------------

_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
}
# Series Prometheus adds to every scrape target itself.
PROMETHEUS_SERIES = {"up"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function
        if match.group() not in _PROMQL_WORDS:
            names.add(match.group())
    return names


@functools.cache
def exported_families() -> dict[str, str]:
    """Family name (without ``_total``) -> type, from the gateway's own registry."""
    return {family.name: family.type for family in Metrics().registry.collect()}


_SUFFIXES = (
    ("_bucket", {"histogram"}),
    ("_sum", {"histogram", "summary"}),
    ("_count", {"histogram", "summary"}),
    ("_total", {"counter"}),
    ("_created", {"counter", "histogram", "summary"}),
)


def exported_family(series: str) -> str | None:
    """The exported family a series name belongs to, or ``None`` when the gateway exposes
    no such series (an unknown name, or a suffix that does not fit the family's type)."""
    families = exported_families()
    for suffix, types in _SUFFIXES:
        if series.endswith(suffix) and families.get(series.removesuffix(suffix)) in types:
            return series.removesuffix(suffix)
    if families.get(series) == "gauge":
        return series
    return None


@functools.cache
def dashboard() -> dict[str, Any]:
    loaded = json.loads((DEPLOY / "grafana" / "dashboards" / "agentmem.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def panel_exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p.get("targets", [])]


def template_metrics() -> set[str]:
    names = set()
    for variable in dashboard()["templating"]["list"]:
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\(\s*([^,]+?)\s*,\s*\w+\s*\)", text)
        assert match, f"unexpected variable query {text!r}"
        names |= metric_names(match.group(1))
    return names


# -- PromQL helpers: they must tell a real name from a made-up one --------------------------


def test_metric_names_reads_selectors_not_functions_labels_or_variables() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, code) (rate(agentmem_ws_ack_latency_seconds_bucket"
        '{job="gateway", instance=~"$instance"}[$__rate_interval]))) / on(instance) group_left '
        "sum(agentmem_ws_connections) without (op)"
    )
    assert metric_names(expr) == {
        "agentmem_ws_ack_latency_seconds_bucket",
        "agentmem_ws_connections",
    }


def test_exported_family_rejects_unknown_names_and_wrong_suffixes() -> None:
    assert exported_family("agentmem_errors_total") == "agentmem_errors"
    assert exported_family("agentmem_ws_ack_latency_seconds_bucket") == (
        "agentmem_ws_ack_latency_seconds"
    )
    assert exported_family("agentmem_ws_connections") == "agentmem_ws_connections"
    assert exported_family("agentmem_made_up_total") is None
    assert exported_family("agentmem_errors") is None  # a counter is exposed as _total
    assert exported_family("agentmem_ws_connections_total") is None  # a gauge has no _total
    assert exported_family("agentmem_errors_bucket") is None  # not a histogram


def test_resolved_takes_defaults_and_refuses_required_variables() -> None:
    assert resolved("${AGENTMEM_STREAM_BACKEND:-fluvio}") == "fluvio"
    assert resolved("redis://redis:6379/0") == "redis://redis:6379/0"
    assert resolved("${AGENTMEM_JWT_SECRET:?set it}") is None
    assert resolved("${SOMETHING}") is None


# -- compose: services, settings, commands --------------------------------------------------


def test_single_machine_services() -> None:
    assert set(services(SINGLE)) == {
        "fluvio-sc",
        "fluvio-spu-1",
        "fluvio-setup",
        "gateway",
        "worker",
        "redis",
        "qdrant",
        "prometheus",
        "grafana",
    }
    assert gateways(SINGLE) == ["gateway"]
    assert workers(SINGLE) == ["worker"]


def test_scaled_variant_has_several_gateways_behind_a_balancer_and_several_spus() -> None:
    found = services(SCALED)
    assert len(gateways(SCALED)) >= 2
    assert len([s for s in found if spu_command(found[s]) is not None]) >= 2
    assert {"lb", "fluvio-sc", "fluvio-setup", "redis", "qdrant", "prometheus", "grafana"} <= set(
        found
    )
    # One worker: its memory database and consumer offsets live in its own volume.
    assert workers(SCALED) == ["worker"]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_agentmem_variables_are_real_settings_with_valid_values(name: str) -> None:
    checked = 0
    for service_name, service in services(name).items():
        for key, raw in environment(service).items():
            if not key.startswith("AGENTMEM_"):
                continue
            assert key in KNOWN_VARIABLES, f"{name}: {service_name} sets unknown {key}"
            value = resolved(raw)
            if value is None:
                continue
            checked += 1
            if key == "AGENTMEM_STREAM_BACKEND":
                assert value in BACKENDS, f"{service_name}: backend {value!r}"
            elif key in SPECS:
                SPECS[key].parse(value)  # raises ValueError on a value the gateway refuses
    assert checked > 0


def test_image_variables_are_real_settings_with_valid_values() -> None:
    for stage in dockerfile().stages.values():
        for key, value in stage.env().items():
            if key.startswith("AGENTMEM_"):
                assert key in KNOWN_VARIABLES, f"stage {stage.name} sets unknown {key}"
                if key in SPECS:
                    SPECS[key].parse(value)


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_gateways_and_workers_run_real_commands(name: str) -> None:
    for service_name in gateways(name) + workers(name):
        service = services(name)[service_name]
        check_cli(command(service))
        expected = "gateway" if role(service) == "serve" else "worker"
        assert service["build"]["target"] == expected, service_name


@pytest.mark.parametrize("target", ["gateway", "worker"])
def test_image_commands_are_real_cli_commands(target: str) -> None:
    cmd = dockerfile().stage(target).last("CMD")
    assert cmd is not None
    argv = exec_form(cmd)
    assert argv[1] == {"gateway": "serve", "worker": "agents"}[target]
    check_cli(argv)


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_gateways_and_workers_use_the_fluvio_cluster(name: str) -> None:
    sc = [s for s, spec in services(name).items() if command(spec)[1:2] == ["sc"]]
    assert len(sc) == 1, sc
    for service_name in gateways(name) + workers(name):
        env = environment(services(name)[service_name])
        assert resolved(env["AGENTMEM_STREAM_BACKEND"]) == "fluvio", service_name
        endpoint = resolved(env["AGENTMEM_FLUVIO_ENDPOINT"])
        assert endpoint is not None
        assert host_port(endpoint) == (sc[0], SC_PUBLIC_PORT), service_name
        redis_url = resolved(env["AGENTMEM_REDIS_URL"])
        assert redis_url is not None
        assert re.fullmatch(r"redis://redis:6379/\d+", redis_url), redis_url
    sc_service = services(name)[sc[0]]
    assert f"{SC_PUBLIC_PORT}:{SC_PUBLIC_PORT}" in sc_service["ports"]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_the_shared_secret_is_required_and_the_same_everywhere(name: str) -> None:
    secrets = {environment(services(name)[s])["AGENTMEM_JWT_SECRET"] for s in gateways(name)}
    assert len(secrets) == 1, secrets
    (secret,) = secrets
    assert re.fullmatch(r"\$\{AGENTMEM_JWT_SECRET:\?[^}]+\}", secret), secret


def test_env_example_lists_every_required_variable() -> None:
    example = (DEPLOY / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    for name in COMPOSE_FILES:
        text = (DEPLOY / name).read_text()
        used = {m.group(1) for m in _INTERPOLATION.finditer(text)}
        assert used <= listed, f"{name}: {sorted(used - listed)} missing from .env.example"
        required = {m.group(1) for m in _INTERPOLATION.finditer(text) if m.group(2) == "?"}
        for variable in required:
            assert re.search(rf"^{variable}=", example, re.MULTILINE), variable


# -- compose: Fluvio ---------------------------------------------------------------------


@dataclass(frozen=True)
class Spu:
    id: int
    public: str
    private: str
    sc: str | None = None


def spu_command(service: dict[str, Any]) -> Spu | None:
    argv = command(service)
    if argv[1:2] != ["spu"]:
        return None
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    return Spu(int(options["-i"]), options["-p"], options["-v"], options["--sc-addr"])


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_spu_is_registered_as_it_runs(name: str) -> None:
    found = services(name)
    running = {}
    for service_name, service in found.items():
        spu = spu_command(service)
        if spu is None:
            continue
        assert command(service)[0] == "./fluvio-run", service_name
        assert service.get("hostname") == service_name
        assert host_port(spu.public)[0] == service_name
        assert host_port(spu.private)[0] == service_name
        assert spu.sc == f"fluvio-sc:{SC_PRIVATE_PORT}"
        running[spu.id] = Spu(spu.id, spu.public, spu.private)
    setup = command(found["fluvio-setup"])
    assert setup[0] == f"fluvio-sc:{SC_PUBLIC_PORT}"
    registered = {}
    for spec in setup[1:]:
        match = re.fullmatch(r"(\d+)=([\w.-]+):(\d+):(\d+)", spec)
        assert match, spec
        spu_id, host, public, private = match.groups()
        registered[int(spu_id)] = Spu(int(spu_id), f"{host}:{public}", f"{host}:{private}")
    assert registered == running
    assert found["fluvio-setup"]["restart"] == "no"
    assert (DEPLOY / found["fluvio-setup"]["build"]["context"] / "Dockerfile").is_file()
    assert (DEPLOY / "fluvio" / "register-spus.sh").is_file()


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_fluvio_servers_use_the_official_image_and_keep_their_data(name: str) -> None:
    for service_name, service in services(name).items():
        argv = command(service)
        if argv[1:2] not in (["sc"], ["spu"]):
            continue
        assert "infinyon/fluvio" in service["image"], service_name
        flag = "--local" if argv[1] == "sc" else "--log-base-dir"
        store = argv[argv.index(flag) + 1]
        targets = {target for _, target, _ in mounts(service)}
        assert store in targets, f"{service_name} keeps {store} outside its volume"


# -- compose: volumes, ports, healthchecks, dependencies --------------------------------------


def mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume entry (short syntax)."""
    result = []
    for entry in service.get("volumes", []):
        parts = entry.split(":")
        result.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return result


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_named_volumes_are_declared_used_and_owned_by_one_service(name: str) -> None:
    declared = set(compose(name).get("volumes") or {})
    owners: dict[str, str] = {}
    for service_name, service in services(name).items():
        for source, target, read_only in mounts(service):
            assert target.startswith("/"), f"{service_name}: {target}"
            if source.startswith((".", "/")):
                path = (DEPLOY / source).resolve()
                assert path.exists(), f"{service_name} mounts missing {source}"
                assert read_only, f"{service_name} mounts {source} writable"
                continue
            assert source in declared, f"{service_name} uses undeclared volume {source}"
            assert source not in owners, f"{source} shared by {owners[source]} and {service_name}"
            owners[source] = service_name
    assert set(owners) == declared, f"declared but unused: {declared - set(owners)}"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_gateways_and_workers_keep_their_data_directory_in_a_volume(name: str) -> None:
    data_dir = dockerfile().stage("gateway").env()["AGENTMEM_DATA_DIR"]
    for service_name in gateways(name) + workers(name):
        targets = {target for _, target, _ in mounts(services(name)[service_name])}
        assert data_dir in targets, service_name


def published(service: dict[str, Any]) -> list[tuple[int, int]]:
    result = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        result.append((int(parts[-2]), int(parts[-1])))
    return result


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_published_ports_are_distinct(name: str) -> None:
    host_ports = [host for s in services(name).values() for host, _ in published(s)]
    assert len(host_ports) == len(set(host_ports)), host_ports
    found = services(name)
    assert (3000, 3000) in published(found["grafana"])
    assert (9090, 9090) in published(found["prometheus"])


def test_single_gateway_is_published_on_its_port() -> None:
    service = services(SINGLE)["gateway"]
    assert published(service) == [(8080, port_of(service))]


def test_scaled_gateways_are_reached_only_through_the_balancer() -> None:
    found = services(SCALED)
    for service_name in gateways(SCALED):
        assert not found[service_name].get("ports"), f"{service_name} bypasses the balancer"
    assert published(found["lb"]) == [(8080, haproxy().bind_port)]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_long_running_services_have_healthchecks(name: str) -> None:
    for service_name, service in services(name).items():
        if service.get("restart") == "no":
            continue  # runs once
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{service_name} has no healthcheck"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_dependencies_wait_for_something_that_can_be_reached(name: str) -> None:
    found = services(name)
    for service_name, service in found.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in found, f"{service_name} depends on missing {dependency}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in found[dependency], dependency
            elif condition == "service_completed_successfully":
                assert found[dependency]["restart"] == "no", dependency
            else:
                pytest.fail(f"{service_name}: unexpected condition {condition}")


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_gateway_healthchecks_ask_their_own_port(name: str) -> None:
    routes = app_routes()
    for service_name in gateways(name):
        service = services(name)[service_name]
        host, _, rest = healthcheck_url(service).removeprefix("http://").partition("/")
        assert host == f"127.0.0.1:{port_of(service)}", service_name
        assert f"/{rest}" in routes and rest in ("health", "ready"), service_name


def worker_checks() -> list[str]:
    """The worker's healthcheck commands: the image's and each compose file's."""
    checks = []
    image_check = dockerfile().stage("worker").last("HEALTHCHECK")
    assert image_check is not None
    checks.append(image_check.split(" CMD ", 1)[1])
    for name in COMPOSE_FILES:
        for service_name in workers(name):
            kind, shell = services(name)[service_name]["healthcheck"]["test"]
            assert kind == "CMD-SHELL"
            checks.append(shell.replace("$$", "$"))  # compose's escape of a literal $
    return checks


def run_check(check: str, data_dir: Path) -> int:
    env = {"PATH": "/usr/bin:/bin", "AGENTMEM_DATA_DIR": str(data_dir)}
    return subprocess.run(["sh", "-c", check], env=env, capture_output=True).returncode


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_worker_healthcheck_is_healthy_exactly_while_the_pipeline_holds_its_lock(
    tmp_path: Path,
) -> None:
    runner = pytest.importorskip("agents.runner")
    checks = worker_checks()
    assert len(checks) == 1 + len(COMPOSE_FILES)
    for check in checks:
        assert run_check(check, tmp_path) != 0  # not started: no lock file
    lock = runner.DirectoryLock(tmp_path)
    lock.acquire()
    try:
        for check in checks:
            assert run_check(check, tmp_path) == 0, check
    finally:
        lock.release()
    for check in checks:
        assert run_check(check, tmp_path) != 0, check  # stopped: the file stays, unlocked


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_stop_grace_period_covers_the_drain(name: str) -> None:
    for service_name in gateways(name) + workers(name):
        service = services(name)[service_name]
        grace = duration_s(service["stop_grace_period"])
        # serve gives uvicorn the drain timeout plus 5 s to close; the worker's stop waits
        # up to the drain timeout.
        assert grace > setting(service, "drain_timeout_s") + 5, service_name


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_builds_point_at_existing_files_and_stages(name: str) -> None:
    for service_name, service in services(name).items():
        build = service.get("build")
        if build is None:
            continue
        context = (DEPLOY / build["context"]).resolve()
        assert context.is_dir(), service_name
        assert (context / build.get("dockerfile", "Dockerfile")).is_file(), service_name
        if "target" in build:
            assert context == ROOT
            dockerfile().stage(build["target"])


def test_redis_is_a_version_the_redis_backend_accepts() -> None:
    for name in COMPOSE_FILES:
        image = services(name)["redis"]["image"]
        match = re.fullmatch(r"redis:(\d+)\.(\d+)(?:\.\d+)?(?:-alpine)?", image)
        assert match, image
        assert (int(match.group(1)), int(match.group(2))) >= (7, 0)


# -- the Dockerfile ----------------------------------------------------------------------


def test_images_are_python_311_slim() -> None:
    assert dockerfile().args["PYTHON_IMAGE"] == "python:3.11-slim"
    for stage in dockerfile().stages.values():
        assert stage.root_image() == "python:3.11-slim", stage.name


@pytest.mark.parametrize("target", ["gateway", "worker"])
def test_images_run_unprivileged_with_a_data_volume(target: str) -> None:
    stage = dockerfile().stage(target)
    user = stage.last("USER")
    assert user is not None and user.split(":")[0] not in ("root", "0")
    env = stage.env()
    assert env["AGENTMEM_HOST"] == "0.0.0.0"
    volume = stage.last("VOLUME")
    assert volume is not None and exec_form(volume) == [env["AGENTMEM_DATA_DIR"]]
    check = stage.last("HEALTHCHECK")
    assert check is not None and " CMD " in check


def test_gateway_image_exposes_its_port_and_checks_health() -> None:
    stage = dockerfile().stage("gateway")
    port = int(stage.env().get("AGENTMEM_PORT", DEFAULTS.port))
    assert stage.last("EXPOSE") == str(port)
    check = stage.last("HEALTHCHECK")
    assert check is not None
    assert f"http://127.0.0.1:${{AGENTMEM_PORT:-{DEFAULTS.port}}}/health" in check
    assert "/health" in app_routes()
    assert list(dockerfile().stages)[-1] == "gateway"  # the default target


def test_image_installs_the_project_from_the_repository() -> None:
    copies = [args for stage in dockerfile().stages.values() for args in stage.own("COPY")]
    sources = []
    for args in copies:
        if args.startswith("--from="):
            continue
        *srcs, _dest = args.split()
        sources += srcs
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    assert "pyproject.toml" in sources
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pattern in packages["packages"]["find"]["include"]:
        assert f"{pattern.rstrip('*')}/" in sources, f"the image does not copy {pattern}"
    runs = " ".join(run for stage in dockerfile().stages.values() for run in stage.own("RUN"))
    assert re.search(r"pip install /src\b", runs)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for source in sources:
        assert f"!{source}" in ignore, f"{source} is excluded from the build context"


def test_image_ships_the_project_smartmodules_where_the_setting_points() -> None:
    stage = dockerfile().stage("gateway")
    directory = stage.env()["AGENTMEM_SMARTMODULE_DIR"]
    copies = [args.split() for s in stage.lineage() for args in s.own("COPY")]
    assert ["smartmodules/dist/", f"{directory}/"] in copies
    assert {p.stem for p in (ROOT / "smartmodules" / "dist").glob("*.wasm")} >= {
        "event-filter",
        "data-transform",
    }


# -- Prometheus --------------------------------------------------------------------------


def prometheus_config(name: str) -> tuple[str, dict[str, Any]]:
    service = services(name)["prometheus"]
    flags = dict(arg.split("=", 1) for arg in command(service) if "=" in arg)
    target = flags["--config.file"]
    (source,) = [src for src, dst, _ in mounts(service) if dst == target]
    loaded = yaml.safe_load((DEPLOY / source).read_text())
    assert isinstance(loaded, dict)
    return source, loaded


def scrape_targets(config: dict[str, Any], job: str) -> set[str]:
    (scrape,) = [j for j in config["scrape_configs"] if j["job_name"] == job]
    assert scrape.get("metrics_path", "/metrics") == "/metrics"
    return {t for group in scrape["static_configs"] for t in group["targets"]}


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_prometheus_scrapes_every_gateway_directly(name: str) -> None:
    _, config = prometheus_config(name)
    found = services(name)
    expected = {f"{s}:{port_of(found[s])}" for s in gateways(name)}
    assert scrape_targets(config, "gateway") == expected
    assert "/metrics" in app_routes()
    # Every other target is Prometheus itself: the worker serves no HTTP.
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"gateway", "prometheus"}
    assert scrape_targets(config, "prometheus") == {"localhost:9090"}


def test_each_compose_file_has_its_own_prometheus_file() -> None:
    sources = {prometheus_config(name)[0] for name in COMPOSE_FILES}
    assert len(sources) == len(COMPOSE_FILES)


# -- HAProxy -----------------------------------------------------------------------------


@dataclass
class HAProxy:
    sections: dict[str, list[str]]

    @property
    def bind_port(self) -> int:
        (bind,) = [line for line in self.sections["frontend agentmem"] if line.startswith("bind")]
        return int(bind.split(":")[-1])

    def option(self, section: str, prefix: str) -> list[str]:
        return [line for line in self.sections[section] if line.startswith(prefix)]


@functools.cache
def haproxy() -> HAProxy:
    sections: dict[str, list[str]] = {}
    current = None
    for raw in (DEPLOY / "haproxy.cfg").read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = line.strip()
            sections[current] = []
        else:
            assert current is not None
            sections[current].append(" ".join(line.split()))
    return HAProxy(sections)


def test_haproxy_balances_over_every_scaled_gateway() -> None:
    servers = {line.split()[2] for line in haproxy().option("backend gateways", "server ")}
    found = services(SCALED)
    assert servers == {f"{s}:{port_of(found[s])}" for s in gateways(SCALED)}
    mounted = [dst for src, dst, _ in mounts(found["lb"]) if src == "./haproxy.cfg"]
    assert mounted == ["/usr/local/etc/haproxy/haproxy.cfg"]


def test_haproxy_sends_new_connections_only_to_ready_gateways() -> None:
    backend = "backend gateways"
    assert haproxy().option(backend, "option httpchk") == ["option httpchk GET /ready"]
    assert "/ready" in app_routes()
    assert haproxy().option(backend, "http-check expect") == ["http-check expect status 200"]
    (defaults,) = haproxy().option(backend, "default-server")
    assert " check" in f" {defaults}"
    assert haproxy().option(backend, "balance") == ["balance leastconn"]


def test_haproxy_keeps_websocket_sessions_open_between_heartbeats() -> None:
    (tunnel,) = haproxy().option("defaults", "timeout tunnel")
    # The gateway pings every heartbeat and closes a session silent for two of them.
    assert duration_s(tunnel.split()[-1]) > 2 * DEFAULTS.ws_heartbeat_s
    for side in ("client", "server"):
        (timeout,) = haproxy().option("defaults", f"timeout {side} ")
        assert duration_s(timeout.split()[-1]) > DEFAULTS.ws_heartbeat_s


def test_haproxy_health_endpoint_matches_its_healthcheck() -> None:
    (bind,) = haproxy().option("frontend health", "bind")
    (uri,) = haproxy().option("frontend health", "monitor-uri")
    url = healthcheck_url(services(SCALED)["lb"])
    assert url == f"http://127.0.0.1:{bind.split(':')[-1]}{uri.split()[-1]}"


# -- Grafana -----------------------------------------------------------------------------


def grafana_mount(name: str, source: str) -> str:
    (target,) = [dst for src, dst, _ in mounts(services(name)["grafana"]) if src == source]
    return target


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    for name in COMPOSE_FILES:
        assert grafana_mount(name, "./grafana/provisioning") == "/etc/grafana/provisioning"
        prometheus_port = published(services(name)["prometheus"])[0][1]
        assert source["url"] == f"http://prometheus:{prometheus_port}"
    uids = {
        ref["uid"]
        for panel in panels()
        for ref in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
    }
    assert uids == {source["uid"]}


def test_grafana_loads_the_dashboards_directory() -> None:
    provider_file = DEPLOY / "grafana" / "provisioning" / "dashboards" / "agentmem.yml"
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    for name in COMPOSE_FILES:
        assert grafana_mount(name, "./grafana/dashboards") == provider["options"]["path"]
    assert list((DEPLOY / "grafana" / "dashboards").glob("*.json"))


# -- the dashboard -------------------------------------------------------------------------


def test_every_queried_metric_is_exported_by_the_gateway() -> None:
    jobs = {
        job["job_name"]
        for name in COMPOSE_FILES
        for job in prometheus_config(name)[1]["scrape_configs"]
    }
    queried: set[str] = set()
    for expr in panel_exprs():
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        for series in names:
            if series in PROMETHEUS_SERIES:
                job = re.search(rf'{series}\{{job="([\w-]+)"\}}', expr)
                assert job and job.group(1) in jobs, expr
                continue
            family = exported_family(series)
            assert family is not None, f"{series} (in {expr!r}) is not exported by the gateway"
            queried.add(family)
    for series in template_metrics():
        assert exported_family(series) is not None, series
    assert queried >= {
        "agentmem_ws_connections",
        "agentmem_ws_frames_in",
        "agentmem_ws_frames_out",
        "agentmem_ws_ack_latency_seconds",
        "agentmem_records_produced",
        "agentmem_errors",
        "agentmem_ws_send_queue_frames",
        "agentmem_ws_deliveries",
        "agentmem_ws_disconnects",
        "agentmem_produce_queue_records",
        "agentmem_log_group_commits",
        "agentmem_log_committed_records",
    }


def test_labels_the_panels_group_by_exist_on_their_metrics() -> None:
    metrics = Metrics()
    # Give every labelled family one child so its label names appear in the samples.
    for attribute in vars(metrics).values():
        names = getattr(attribute, "_labelnames", ())
        if names:
            attribute.labels(*["x"] * len(names))
    labels = {
        family.name: {
            label for sample in family.samples for label in sample.labels if label != "le"
        }
        for family in metrics.registry.collect()
    }
    for expr in panel_exprs():
        grouped = {
            label.strip()
            for group in re.findall(r"\bby\s*\(([^)]*)\)", expr)
            for label in group.split(",")
        }
        grouped -= {"instance", "job", "le"}  # added by Prometheus, or the histogram's own
        for series in metric_names(expr) - PROMETHEUS_SERIES:
            family = exported_family(series)
            assert family is not None
            assert grouped <= labels[family], f"{expr!r} groups by {grouped - labels[family]}"


def test_quantile_panels_aggregate_buckets_by_le() -> None:
    quantile_exprs = [e for e in panel_exprs() if "histogram_quantile" in e]
    assert quantile_exprs
    for expr in quantile_exprs:
        assert re.search(r"by\s*\([^)]*\ble\b[^)]*\)", expr), expr
        names = metric_names(expr)
        assert names and all(n.endswith("_bucket") for n in names), expr
    ack = " ".join(e for e in quantile_exprs if "agentmem_ws_ack_latency_seconds_bucket" in e)
    assert set(re.findall(r"histogram_quantile\(([\d.]+)", ack)) >= {"0.5", "0.99"}


def test_panels_by_code_group_by_code() -> None:
    for family in ("agentmem_errors_total", "agentmem_ws_disconnects_total"):
        grouped = [e for e in panel_exprs() if family in e and re.search(r"by \(code\)", e)]
        assert grouped, f"no panel shows {family} by code"


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    all_panels = dashboard()["panels"]
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], int] = {}
    for panel in all_panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]
