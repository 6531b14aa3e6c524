"""The production image and compose stack in docker/, checked without a Docker engine.

CI has neither an engine nor the compose plugin, so the stack is checked three ways:

- the compose file against the Compose Specification's JSON schema (the copy shipped in
  check-jsonschema), and with ``docker compose config`` as well wherever the plugin is installed;
- the wiring, read from the files themselves: what each service needs from the others, every
  variable a container gets being one its program reads, the balancer and Prometheus reaching
  every replica;
- the commands the containers run, run here as processes with the environment compose gives
  them, against the test session's real Postgres and Redis: the one-shot migration, a replica
  (bound beyond loopback, never starting servers of its own) and the image's healthcheck.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from ruamel.yaml import YAML

from app import db, logs
from app.config import Settings
from app.dev.devstack import free_port
from app.dev.sandbox_psp.server import config_from_env
from tests.fixtures.servers import Services
from tests.support.processes import wait_for

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"


# ---------------------------------------------------------------------------------------------
# Reading the files


def load_yaml(path: Path) -> Any:
    # YAML 1.2, as compose reads it (PyYAML's 1.1 would turn a bare 1:30 or `no` into numbers and
    # booleans); merge keys (<<) resolved.
    return YAML(typ="safe", pure=True).load(path)


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines, as compose reads a simple env file (no quoting used in ours)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"not NAME=value: {line!r}"
            env[name.strip()] = value.strip()
    return env


# Compose's interpolation forms that docker/compose.yml may use: $$, ${NAME}, ${NAME:-default},
# ${NAME-default}, ${NAME:?message}, ${NAME?message}. Any other `$` fails the test, so this
# stand-in for compose never silently reads something differently.
_VARIABLE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class MissingVariables(Exception):
    def __init__(self, names: set[str]) -> None:
        super().__init__(f"required variables unset: {sorted(names)}")
        self.names = names


def variables(doc: Any) -> dict[str, str | None]:
    """Each variable the document refers to, with its operator (None for a bare ${NAME})."""
    found: dict[str, str | None] = {}
    for text in _strings(doc):
        for m in _VARIABLE.finditer(text):
            if m["name"]:
                found[m["name"]] = found.get(m["name"]) or m["op"]
    return found


def _strings(doc: Any) -> Iterator[str]:
    if isinstance(doc, dict):
        for value in doc.values():
            yield from _strings(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from _strings(value)
    elif isinstance(doc, str):
        yield doc


def interpolate(doc: Any, env: Mapping[str, str]) -> Any:
    """``doc`` with variables substituted from ``env`` as compose would; raises
    :class:`MissingVariables` naming every required variable that is unset or empty."""
    missing: set[str] = set()

    def one(m: re.Match[str]) -> str:
        if m["dollar"]:
            return "$"
        name, op, arg = m["name"], m["op"], m["arg"]
        value = env.get(name)
        if op in (":-", ":?") and not value or op in ("-", "?") and value is None:
            if op.endswith("?"):
                missing.add(name)
                return ""
            return str(arg)
        return value or ""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        if isinstance(node, str):
            assert "$" not in _VARIABLE.sub("", node), f"unsupported interpolation in {node!r}"
            return _VARIABLE.sub(one, node)
        return node

    result = walk(doc)
    if missing:
        raise MissingVariables(missing)
    return result


def filled_env() -> dict[str, str]:
    """.env.example with every empty secret filled in, as an operator would."""
    env = read_env_file(ENV_EXAMPLE)
    raw = load_yaml(COMPOSE)
    for name, op in variables(raw).items():
        if op and op.endswith("?") and not env.get(name):
            # URL-safe, as the example asks; the master key is base64 of 32 bytes instead.
            master = name == "WALLET_MASTER_KEY"
            env[name] = (
                base64.b64encode(os.urandom(32)).decode() if master else secrets.token_urlsafe(24)
            )
    return env


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    """The compose file as compose resolves it with a filled-in .env."""
    doc: dict[str, Any] = interpolate(load_yaml(COMPOSE), filled_env())
    return doc


def services_running(stack: dict[str, Any], *argv: str) -> list[str]:
    """The services whose command starts with ``argv`` (e.g. "wallet", "serve")."""
    return [
        name
        for name, svc in stack["services"].items()
        if svc.get("command", [])[: len(argv)] == list(argv)
    ]


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    instructions = []
    for line in lines:
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    env = {}
    for word, rest in final_stage():
        if word == "ENV":
            for pair in rest.split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def healthcheck_command() -> list[str]:
    (rest,) = [rest for word, rest in final_stage() if word == "HEALTHCHECK"]
    command: list[str] = json.loads(rest.partition("CMD")[2])
    return command


class Recorder(dict[str, str]):
    """An environment that remembers every name looked up in it."""

    def __init__(self, data: Mapping[str, str]) -> None:
        super().__init__(data)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def wallet_reads(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The variables ``wallet serve`` and ``wallet migrate`` read: the settings, the log format,
    the SQL folder (the last two outside app/config.py), and uvicorn's own (the proxies it
    trusts, ``FORWARDED_ALLOW_IPS``)."""
    recorder = Recorder(env)
    Settings.from_env(recorder)
    logs.json_from_env(recorder)
    with monkeypatch.context() as m:
        m.setattr(os, "environ", recorder)
        db.sql_dir()
        uvicorn.Config("app.main:create_app", factory=True)
    return recorder.read


def sandbox_reads(env: Mapping[str, str]) -> set[str]:
    recorder = Recorder(env)
    config_from_env(recorder, "0.0.0.0", 8090)
    return recorder.read


def container_port(mapping: str) -> int:
    """The container side of a ports entry like "127.0.0.1:9090:9090"."""
    return int(mapping.rsplit(":", 1)[1])


# ---------------------------------------------------------------------------------------------
# The compose file is valid


def check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=120,
    )


def compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return version.returncode == 0


def test_compose_file_follows_the_compose_spec(tmp_path: Path, stack: dict[str, Any]) -> None:
    # The file as written, and as compose sees it once the variables are substituted.
    resolved = tmp_path / "compose.json"
    resolved.write_text(json.dumps(stack))
    checked = check_jsonschema(COMPOSE, resolved)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # The check is not a formality: one wrong word in a dependency fails it.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        COMPOSE.read_text().replace("service_completed_successfully", "service_completed")
    )
    refused = check_jsonschema(broken)
    assert refused.returncode == 1
    assert "service_completed" in refused.stdout

    if compose_plugin():
        env_file = tmp_path / ".env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in filled_env().items()))
        config = subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(env_file)]
            + ["config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert config.returncode == 0, config.stderr


def test_env_example_documents_every_variable_and_leaves_the_secrets_to_fill() -> None:
    raw = load_yaml(COMPOSE)
    example = read_env_file(ENV_EXAMPLE)
    used = variables(raw)
    assert set(example) == set(used), "docker/.env.example and compose.yml disagree"

    # No working secret ships: every required variable is empty in the example, and the stack
    # refuses to resolve until each is set.
    required = {name for name, op in used.items() if op and op.endswith("?")}
    assert {"POSTGRES_PASSWORD", "WALLET_ADMIN_API_KEY"} <= required
    assert all(example[name] == "" for name in required)
    with pytest.raises(MissingVariables) as refused:
        interpolate(raw, example)
    assert refused.value.names == required

    # The filled-in copy, docker/.env, stays out of git.
    assert ".env" in (DOCKER / ".gitignore").read_text().splitlines()


# ---------------------------------------------------------------------------------------------
# The wiring


def test_services_start_in_order_and_report_their_health(stack: dict[str, Any]) -> None:
    services = stack["services"]
    (serve,) = services_running(stack, "wallet", "serve")
    (migrate,) = services_running(stack, "wallet", "migrate")
    (sandbox,) = services_running(stack, "wallet", "sandbox-psp")
    expected = {"lb", serve, migrate, sandbox, "postgres", "redis", "prometheus", "grafana"}
    assert set(services) == expected

    wallet = services[serve]
    assert wallet["deploy"]["replicas"] == 2
    assert "container_name" not in wallet  # a fixed name would forbid a second replica
    assert wallet["depends_on"] == {
        migrate: {"condition": "service_completed_successfully"},
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert services[migrate]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services[migrate]["restart"] == "no"
    assert services["lb"]["depends_on"] == {serve: {"condition": "service_healthy"}}

    # One image, built once from this checkout, runs the three wallet commands.
    build = services[serve]["build"]
    assert all(services[name]["build"] == build for name in (migrate, sandbox))
    assert (DOCKER / build["context"]).resolve() == ROOT
    assert (DOCKER / build["context"] / build["dockerfile"]).samefile(DOCKER / "Dockerfile")

    # A healthcheck wherever a dependant waits for "healthy" or a balancer routes: the wallet's
    # comes from its image (and is left enabled), the others' from compose.
    assert "healthcheck" not in wallet
    assert any(word == "HEALTHCHECK" for word, _ in final_stage())
    for name in ("postgres", "redis", sandbox):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    assert services[migrate]["healthcheck"] == {"disable": True}

    # Postgres 16 keeps its data in a named volume; Redis, a cache, keeps nothing.
    postgres = services["postgres"]
    assert postgres["image"].split(":")[1].startswith("16")
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]
    assert "postgres-data" in stack["volumes"]
    assert "--host=127.0.0.1" in postgres["healthcheck"]["test"]
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "no"
    assert redis[redis.index("--save") + 1] == ""

    # Only the balancer is public; the sandbox page, Prometheus and Grafana are on loopback;
    # Postgres, Redis and the replicas publish nothing.
    published = {name: svc["ports"] for name, svc in services.items() if "ports" in svc}
    assert set(published) == {"lb", sandbox, "prometheus", "grafana"}
    loopback = published[sandbox] + published["prometheus"] + published["grafana"]
    assert all(p.startswith("127.0.0.1:") for p in loopback)


def test_every_variable_a_container_gets_is_one_its_program_reads(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = stack["services"]
    wallet_services = services_running(stack, "wallet", "serve")
    wallet_services += services_running(stack, "wallet", "migrate")
    for name in wallet_services:
        env = services[name]["environment"]
        unread = set(env) - wallet_reads({**image_env(), **env}, monkeypatch)
        assert not unread, f"{name} gets variables nothing reads: {unread}"
    (sandbox,) = services_running(stack, "wallet", "sandbox-psp")
    env = services[sandbox]["environment"]
    assert set(env) - sandbox_reads(env) == set()
    # The image's own defaults are settings too, and none of them is a secret.
    assert set(image_env()) - {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"} <= (
        wallet_reads(image_env(), monkeypatch)
    )


def test_the_wallet_settings_reach_the_other_services(stack: dict[str, Any]) -> None:
    services = stack["services"]
    (serve,) = services_running(stack, "wallet", "serve")
    (migrate,) = services_running(stack, "wallet", "migrate")
    (sandbox,) = services_running(stack, "wallet", "sandbox-psp")
    settings = Settings.from_env({**image_env(), **services[serve]["environment"]})
    assert settings.admin_api_key

    # Postgres: its service, its port, the role, password and database it creates.
    database = urlsplit(settings.database_url or "")
    pg_env = services["postgres"]["environment"]
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert database.username == pg_env["POSTGRES_USER"]
    assert database.password == pg_env["POSTGRES_PASSWORD"]
    assert database.path == "/" + pg_env["POSTGRES_DB"]
    assert services[migrate]["environment"]["WALLET_DATABASE_URL"] == settings.database_url
    redis = urlsplit(settings.redis_url or "")
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)

    # The sandbox route: the sandbox service's port, and the key and secret that service has.
    (route,) = settings.psps
    psp = services[sandbox]
    base = urlsplit(route.base_url)
    assert base.hostname == sandbox
    assert base.port == int(psp["command"][psp["command"].index("--port") + 1])
    assert route.api_key == psp["environment"]["WALLET_SANDBOX_API_KEY"]
    assert route.webhook_secret == psp["environment"]["WALLET_SANDBOX_WEBHOOK_SECRET"]

    # PSP webhooks come back through the balancer, to whichever replica is up.
    public = urlsplit(settings.public_url or "")
    assert public.hostname == "lb"
    assert public.port == container_port(services["lb"]["ports"][0])


def haproxy_config() -> dict[str, list[list[str]]]:
    """Sections (header line -> lines of words) of docker/haproxy.cfg."""
    sections: dict[str, list[list[str]]] = {}
    current: list[list[str]] = []
    for line in (DOCKER / "haproxy.cfg").read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if not line[0].isspace():
            current = sections.setdefault(" ".join(words), [])
        else:
            current.append(words)
    return sections


def test_load_balancer_routes_to_every_healthy_replica(stack: dict[str, Any]) -> None:
    services = stack["services"]
    (serve,) = services_running(stack, "wallet", "serve")
    port = int(services[serve]["environment"]["WALLET_PORT"])
    lb = services["lb"]
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"]

    cfg = haproxy_config()
    (frontend,) = [words for header, words in cfg.items() if header.startswith("frontend ")]
    assert ["bind", f":{container_port(lb['ports'][0])}"] in frontend
    (backend_name,) = [line[1] for line in frontend if line[0] == "default_backend"]
    backend = cfg[f"backend {backend_name}"]

    # One slot per replica and more, filled from Docker's DNS answer for the service name.
    (template,) = [line for line in backend if line[0] == "server-template"]
    assert template[3] == f"{serve}:{port}" and "check" in template
    assert int(template[2]) >= services[serve]["deploy"]["replicas"]
    (defaults,) = [line for line in backend if line[0] == "default-server"]
    options = template + defaults
    resolvers = options[options.index("resolvers") + 1]
    assert ["nameserver", "docker", "127.0.0.11:53"] in cfg[f"resolvers {resolvers}"]
    # Starts before any replica resolves, instead of refusing to start.
    assert options[options.index("init-addr") + 1] == "none"

    # An HTTP health check on the path the image's own healthcheck uses.
    assert ["option", "httpchk"] in backend
    (check,) = [line for line in backend if line[:2] == ["http-check", "send"]]
    assert check[check.index("uri") + 1] == "/healthz" == healthcheck_path()
    # /metrics is for Prometheus inside the stack, not for the public entry.
    (deny,) = [line for line in frontend if line[:2] == ["http-request", "deny"]]
    assert "/metrics" in deny


def healthcheck_path() -> str:
    (path,) = re.findall(r"'(/[a-z]+)'", healthcheck_command()[-1])
    return path


def test_prometheus_scrapes_every_replica(stack: dict[str, Any]) -> None:
    services = stack["services"]
    (serve,) = services_running(stack, "wallet", "serve")
    prometheus = services["prometheus"]
    (config_flag,) = [a for a in prometheus["command"] if a.startswith("--config.file=")]
    assert f"./prometheus.yml:{config_flag.partition('=')[2]}:ro" in prometheus["volumes"]

    config = load_yaml(DOCKER / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "wallet"]
    assert job["metrics_path"] == "/metrics"
    # An A-record lookup of the service name yields one target per replica.
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == [serve] and discovery["type"] == "A"
    assert discovery["port"] == int(services[serve]["environment"]["WALLET_PORT"])


# ---------------------------------------------------------------------------------------------
# The image


def test_image_is_multi_stage_slim_and_runs_as_a_user() -> None:
    instructions = dockerfile()
    (python_image,) = [rest for word, rest in instructions if word == "ARG"]
    assert python_image == "PYTHON_IMAGE=python:3.11-slim"
    stages = [rest for word, rest in instructions if word == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]

    final = final_stage()
    assert ("COPY", "--from=build /opt/wallet /opt/wallet") in final
    assert not any(word == "RUN" and "pip" in rest for word, rest in final)
    (user,) = [rest for word, rest in final if word == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    (adduser,) = [rest for word, rest in final if word == "RUN" and "useradd" in rest]
    assert f"--uid {uid}" in adduser and f"--gid {gid}" in adduser

    (cmd,) = [rest for word, rest in final if word == "CMD"]
    assert json.loads(cmd) == ["wallet", "serve", "--host", "0.0.0.0"]
    # The healthcheck needs no curl, which the slim image lacks.
    assert healthcheck_command()[:2] == ["python", "-c"]


def test_image_bakes_in_no_secret_and_finds_its_sql() -> None:
    baked = [rest.split("=")[0] for word, rest in dockerfile() if word == "ARG"]
    baked += list(image_env())
    assert not [n for n in baked if re.search(r"KEY|SECRET|PASSWORD|TOKEN|_URL|PSPS", n)]
    copies = [rest.split() for word, rest in final_stage() if word == "COPY"]
    (sql_target,) = [dest for src, dest, *_ in copies if src == "sql"]
    assert image_env()["WALLET_SQL_DIR"] == sql_target


def dockerignore_includes(path: str) -> bool:
    """Whether Docker sends ``path`` in the build context: the last matching pattern of
    .dockerignore decides, and a pattern matching a parent folder matches its contents."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", glob):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                part, re.escape(part)
            )
        patterns.append((negated, re.compile(regex)))
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negated, regex in patterns:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = negated
    return included


def test_build_context_holds_what_the_image_copies_and_nothing_secret() -> None:
    sources = [
        src
        for word, rest in dockerfile()
        if word == "COPY" and not rest.startswith("--from")
        for src in rest.split()[:-1]
    ]
    # The wheel build reads the readme that pyproject.toml names.
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert {"pyproject.toml", readme, "app", "sql"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), src
        files = (
            [src]
            if (ROOT / src).is_file()
            else [
                str(p.relative_to(ROOT))
                for p in (ROOT / src).rglob("*")
                if p.is_file() and "__pycache__" not in p.parts
            ]
        )
        assert files and all(dockerignore_includes(f) for f in files), src
    for kept_out in (
        "docker/.env",
        ".env",
        ".data/pg/PG_VERSION",
        ".venv/bin/python",
        ".git/config",
        "tests/conftest.py",
        "app/__pycache__/main.cpython-311.pyc",
    ):
        assert not dockerignore_includes(kept_out), kept_out


# ---------------------------------------------------------------------------------------------
# The containers' commands, run as processes


def process_env(container_env: Mapping[str, str]) -> dict[str, str]:
    """The host environment without WALLET_* settings, plus the container's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    return {**env, **container_env}


def argv(command: list[str]) -> list[str]:
    # The image puts the project's console script on PATH; here it is the venv's.
    wallet = shutil.which("wallet", path=str(Path(sys.executable).parent))
    assert wallet is not None and command[0] == "wallet"
    return [wallet, *command[1:]]


@pytest.mark.slow
async def test_the_containers_commands_run_against_real_servers(
    services: Services, stack: dict[str, Any], tmp_path: Path
) -> None:
    composed = stack["services"]
    (serve,) = services_running(stack, "wallet", "serve")
    (migrate,) = services_running(stack, "wallet", "migrate")
    (sandbox,) = services_running(stack, "wallet", "sandbox-psp")
    # A fresh database, as on a first `docker compose up`; the service hostnames become the test
    # session's servers, and the image's SQL folder this checkout's.
    database_url = await db.ensure_database(
        services.database_url, "wallet_docker_" + secrets.token_hex(4)
    )
    port = free_port()
    local = {
        "WALLET_DATABASE_URL": database_url,
        "WALLET_REDIS_URL": services.redis_url,
        "WALLET_SQL_DIR": str(ROOT / "sql"),
        "WALLET_PORT": str(port),
    }
    workdir = tmp_path / "workdir"  # where local servers would keep data, were any started
    workdir.mkdir()

    # The one-shot migration applies every migration and function file, and on a second run (an
    # upgrade with nothing new, a restart) nothing.
    migrate_env = process_env({**image_env(), **composed[migrate]["environment"], **local})
    names = [m.name for m in db.migrations()] + [f.name for f in db.function_files()]
    for expected in ("applied: " + ", ".join(names), "schema is up to date"):
        done = subprocess.run(
            argv(composed[migrate]["command"]),
            env=migrate_env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expected

    # A replica, with the environment and command compose gives it.
    serve_env = process_env({**image_env(), **composed[serve]["environment"], **local})
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv(composed[serve]["command"]),
            env=serve_env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    healthcheck = [sys.executable, *healthcheck_command()[1:]]
    try:
        wait_for(f"http://127.0.0.1:{port}/readyz", proc)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
        assert ready == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
        # Bound to every address, not loopback's 127.0.0.1 only: reachable on 127.0.0.2 too.
        assert httpx.get(f"http://127.0.0.2:{port}/healthz").json() == {"status": "ok"}
        # What the balancer checks and Prometheus scrapes.
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert metrics.status_code == 200 and "# TYPE wallet_" in metrics.text
        # The image's healthcheck passes against it.
        check = subprocess.run(healthcheck, env=serve_env, capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr
    finally:
        # `docker stop` sends SIGTERM and kills what is still running after stop_grace_period.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(int(composed[serve]["stop_grace_period"].rstrip("s")))
        finally:
            killed = proc.poll() is None
            if killed:
                proc.kill()
                proc.wait()
    printed = log.read_text()
    # A graceful stop within the grace period, ending with status 0 (`wallet serve` turns SIGTERM
    # into the same clean exit as Ctrl+C).
    assert not killed and proc.returncode == 0, printed
    assert "Application shutdown complete" in printed
    # The migration service had done the work, and no local server was started for it.
    assert "applied migrations" not in printed and "started local" not in printed
    assert list(workdir.iterdir()) == []
    # With the replica gone, the healthcheck fails, as Docker needs it to.
    failed = subprocess.run(healthcheck, env=serve_env, capture_output=True, timeout=30)
    assert failed.returncode != 0

    # The sandbox PSP, on a free port instead of its fixed one, and its compose healthcheck.
    psp = composed[sandbox]
    psp_port = free_port()
    command = psp["command"]
    fixed = command[command.index("--port") + 1]
    command = [str(psp_port) if arg == fixed else arg for arg in command]
    check_code = psp["healthcheck"]["test"][-1]
    assert f":{fixed}/healthz" in check_code
    proc = subprocess.Popen(
        argv(command),
        env=process_env(psp["environment"]),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(f"http://127.0.0.1:{psp_port}/healthz", proc)
        assert httpx.get(f"http://127.0.0.2:{psp_port}/healthz").status_code == 200
        psp_check = subprocess.run(
            [sys.executable, "-c", check_code.replace(f":{fixed}/", f":{psp_port}/")],
            capture_output=True,
            timeout=30,
        )
        assert psp_check.returncode == 0, psp_check.stderr
    finally:
        proc.terminate()
        proc.wait(15)
