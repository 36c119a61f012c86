"""The rules of infra/check_compose.py, one function each.

A rule takes the parsed compose file (a ``check_compose.Compose``) and yields one message per
problem, saying what is wrong and how to fix it; ``check_compose`` runs every rule in ``RULES``
and prefixes the compose file's name. The variable and secret rules read the file as written
(once interpolated, every value is literal); all others read the values compose would use.

This file sits beside check_compose.py, which loads it by path: infra/ is not a package.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # check_compose loads this module, so it cannot be imported at run time
    from check_compose import Compose

_SECRET_NAME_RE = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|API_KEY", re.I)
_URL_CREDENTIALS_RE = re.compile(r"://[^/\s:@]+:(?P<password>[^@\s]+)@")
_NAMED_VOLUME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PIN_RE = re.compile(r"""(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)==(?P<version>[^\s"',;\]]+)""")
_LOOPBACK = "127.0.0.1"


# --- reading compose and Dockerfile values ----------------------------------------------------


def image_problem(image: str) -> str | None:
    """Why ``image`` is not pinned, or ``None`` when it has an exact tag or a digest."""
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag; pin an exact version tag"
    tag = last.split(":", 1)[1]
    if not tag or tag == "latest":
        return f"image {image!r} uses a moving tag; pin an exact version tag"
    return None


def dockerfile_from_images(dockerfile: Path) -> list[str]:
    """Base images of a Dockerfile's ``FROM`` lines, without build-stage references."""
    stages: set[str] = set()
    images = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if len(words) < 2 or words[0].upper() != "FROM":
            continue
        words = [w for w in words[1:] if not w.startswith("--")]
        image = words[0]
        if image != "scratch" and image.lower() not in stages:
            images.append(image)
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
    return images


def _dockerfile(base: Path, build: str | dict) -> Path:
    """The Dockerfile of a ``build`` entry, short (a context folder) or long form."""
    if isinstance(build, str):
        return base / build / "Dockerfile"
    return base / build.get("context", ".") / (build.get("dockerfile") or "Dockerfile")


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _depends_on(service: dict) -> dict[str, str]:
    """``depends_on`` as ``{target: condition}`` for both the list and the mapping form."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _environment(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def _command_tokens(service: dict) -> list[str]:
    command = service.get("command") or []
    tokens = command.split() if isinstance(command, str) else [str(c) for c in command]
    # --flag=value and --flag value read the same.
    out = []
    for token in tokens:
        if token.startswith("--") and "=" in token:
            out.extend(token.split("=", 1))
        else:
            out.append(token)
    return out


def _option(tokens: list[str], flag: str) -> str | None:
    if flag in tokens:
        i = tokens.index(flag)
        return tokens[i + 1] if i + 1 < len(tokens) else ""
    return None


def _healthcheck_test(service: dict) -> Any:
    hc = service.get("healthcheck") or {}
    if hc.get("disable"):
        return None
    test = hc.get("test")
    if not test or test in (["NONE"], "NONE"):
        return None
    return test


def _volumes(service: dict) -> Iterator[tuple[str, str]]:
    """``(kind, source)`` of a service's volumes but anonymous ones; kind volume or bind."""
    for volume in _as_list(service.get("volumes")):
        if isinstance(volume, dict):
            kind, source = volume.get("type"), volume.get("source")
        else:
            source = str(volume).split(":", 1)[0] if ":" in str(volume) else None
            kind = "volume" if source and _NAMED_VOLUME_RE.match(source) else "bind"
        if source:
            yield kind, source


def _port_problem(port: Any) -> str | None:
    if isinstance(port, dict):  # long syntax
        if "published" not in port:
            return None
        host_ip = port.get("host_ip")
        return None if host_ip == _LOOPBACK else f"port {port} has host_ip {host_ip!r}"
    text = str(port)
    if text.count(":") < 2:  # "5000" or "5000:5000" publish on every interface
        return f"port {text!r} publishes on all interfaces"
    host_ip = text.rsplit(":", 2)[0]
    return None if host_ip == _LOOPBACK else f"port {text!r} binds {host_ip!r}"


def _one_shot(c: Compose) -> set[str]:
    """Services that others wait on with ``service_completed_successfully``: jobs."""
    return {
        target
        for service in c.services.values()
        for target, cond in _depends_on(service).items()
        if cond == "service_completed_successfully"
    }


def _dockerfiles(c: Compose) -> dict[str, Path]:
    """The Dockerfile of each service that builds, by service name, whether it exists or not."""
    return {
        name: _dockerfile(c.file.parent, service["build"])
        for name, service in c.services.items()
        if service.get("build")
    }


def _running(c: Compose, *command: str) -> list[str]:
    """Names of the services whose command starts with ``command``."""
    n = len(command)
    return [name for name, s in c.services.items() if _command_tokens(s)[:n] == [*command]]


# --- variables and secrets, on the file as written ---------------------------------------------


def variables_defined(c: Compose) -> Iterator[str]:
    """The dotenv file exists and has every ``${VAR}``, with or without a default."""
    if c.env is None:
        yield f"{c.env_file} not found; create it with a value for every ${{VAR}} used"
        return
    for path, name in c.variables:
        if name not in c.env:
            yield f"{path}: ${{{name}}} is not defined in {c.env_file.name}; add {name}=…"


def url_passwords_not_literal(c: Compose) -> Iterator[str]:
    """A password inside a URL (``scheme://user:password@host``) is a ``${VAR}`` reference."""
    for path, text in c.strings:
        m = _URL_CREDENTIALS_RE.search(text)
        if m and "$" not in m["password"]:
            yield f"{path}: URL has a literal password; use ${{VAR}} from {c.env_file.name}"


def env_entries_used(c: Compose) -> Iterator[str]:
    """Every dotenv entry is used, so that the file lists exactly what the stack needs."""
    used = {name for _, name in c.variables}
    for name in sorted(set(c.env or {}) - used):
        yield f"{c.env_file.name} defines {name}, which {c.file.name} never uses; remove it"


def secrets_not_literal(c: Compose) -> Iterator[str]:
    """Password, secret and key variables in ``environment`` are ``${VAR}`` references."""
    for name, service in c.raw["services"].items():
        for key, value in _environment(service or {}).items():
            if _SECRET_NAME_RE.search(key) and value is not None and "$" not in value:
                yield (
                    f"services.{name}.environment.{key} is a literal secret; "
                    f"use ${{{key}}} and define it in {c.env_file.name}"
                )


# --- services, on the values compose would use --------------------------------------------------


def images_pinned(c: Compose) -> Iterator[str]:
    """Every ``image`` has an exact tag or a digest; a service without one builds."""
    for name, service in c.services.items():
        if isinstance(service.get("image"), str):
            why = image_problem(service["image"])
            if why:
                yield f"services.{name}: {why}"
        elif not service.get("build"):
            yield f"services.{name}: neither image nor build; add a pinned image"


def dockerfiles_pinned(c: Compose) -> Iterator[str]:
    """Every ``build`` Dockerfile exists and its ``FROM`` images are pinned like ``image``."""
    for name, path in _dockerfiles(c).items():
        if not path.is_file():
            yield f"services.{name}.build: Dockerfile {path} does not exist"
            continue
        for image in dockerfile_from_images(path):
            why = image_problem(image)
            if why:
                yield f"{path.name}: FROM {why}"


def dependencies_exist(c: Compose) -> Iterator[str]:
    """``depends_on`` targets exist; ``service_healthy`` targets have a health check."""
    for name, service in c.services.items():
        for target, cond in _depends_on(service).items():
            if target not in c.services:
                yield f"services.{name}.depends_on: unknown service {target!r}"
            elif cond == "service_healthy" and _healthcheck_test(c.services[target]) is None:
                yield (
                    f"services.{name}.depends_on: {target!r} must be healthy but has no "
                    f"healthcheck; add one or use another condition"
                )


def one_shot_jobs_do_not_restart(c: Compose) -> Iterator[str]:
    """A job others wait to complete has no restart policy, which would rerun it when done."""
    one_shot = _one_shot(c)
    for name, service in c.services.items():
        restart = service.get("restart")
        if name in one_shot and restart not in (None, "no", False):  # YAML 1.1: no is False
            yield f"services.{name}: one-shot job has restart {restart!r}; use 'no'"


def services_have_healthchecks(c: Compose) -> Iterator[str]:
    """Every long-running service (all but one-shot jobs) has a ``healthcheck.test``."""
    one_shot = _one_shot(c)
    for name, service in c.services.items():
        if name not in one_shot and _healthcheck_test(service) is None:
            yield f"services.{name}: long-running service without healthcheck.test; add one"


def named_volumes_declared(c: Compose) -> Iterator[str]:
    """Every named volume a service mounts is declared under the top-level ``volumes:``."""
    declared = set((c.doc.get("volumes") or {}).keys())
    for name, service in c.services.items():
        for kind, source in _volumes(service):
            if kind == "volume" and source not in declared:
                yield (
                    f"services.{name}.volumes: named volume {source!r} not declared under "
                    "'volumes:'"
                )


def bind_sources_exist(c: Compose) -> Iterator[str]:
    """Every bind-mount source exists (docker would mount a new empty folder in its place)."""
    for name, service in c.services.items():
        for kind, source in _volumes(service):
            if kind == "bind" and not (c.file.parent / Path(source).expanduser()).exists():
                yield f"services.{name}.volumes: bind-mount source {source!r} does not exist"


def ports_on_loopback(c: Compose) -> Iterator[str]:
    """Published ports bind 127.0.0.1: the stack is exposed only through a proxy."""
    for name, service in c.services.items():
        for port in _as_list(service.get("ports")):
            why = _port_problem(port)
            if why:
                yield f"services.{name}.ports: {why}; prefix with {_LOOPBACK}:"


# --- the servers ------------------------------------------------------------------------------


def mlflow_server(c: Compose) -> Iterator[str]:
    """A service runs ``mlflow server`` on Postgres and S3 with ``--allowed-hosts``."""
    mlflow = _running(c, "mlflow", "server")
    if not mlflow:
        yield "no service runs `mlflow server`"
    for name in mlflow:
        tokens = _command_tokens(c.services[name])
        for flag, prefix in (
            ("--backend-store-uri", "postgresql"),
            ("--artifacts-destination", "s3://"),
            ("--allowed-hosts", ""),
        ):
            value = _option(tokens, flag)
            if value is None or not value.startswith(prefix):
                yield f"services.{name}.command: needs {flag} {prefix}… (got {value!r})"


def mlflow_environment(c: Compose) -> Iterator[str]:
    """The MLflow server reaches MinIO and runs no jobs (they outlive a stopped server)."""
    for name in _running(c, "mlflow", "server"):
        at = f"services.{name}.environment"
        env = _environment(c.services[name])
        if not env.get("MLFLOW_S3_ENDPOINT_URL"):
            yield f"{at}: MLFLOW_S3_ENDPOINT_URL is needed for MinIO artifacts"
        if str(env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION")).lower() != "false":
            yield f"{at}: set MLFLOW_SERVER_ENABLE_JOB_EXECUTION: 'false'"


def mlflow_image_installs_pin(c: Compose) -> Iterator[str]:
    """The MLflow server's Dockerfile installs the mlflow version ``pyproject.toml`` pins."""
    if "mlflow" not in c.pins:
        return
    pin = f"mlflow=={c.pins['mlflow']}"
    dockerfiles = _dockerfiles(c)
    for name in _running(c, "mlflow", "server"):
        path = dockerfiles.get(name)
        if path and path.is_file() and pin not in path.read_text():
            yield f"{path.name}: must install {pin} (pyproject.toml pin)"


def prefect_server_and_workers(c: Compose) -> Iterator[str]:
    """A service runs the Prefect server; every worker polls a ``--pool`` of that server."""
    servers = _running(c, "prefect", "server", "start")
    if not servers:
        yield "no service runs `prefect server start`"
    for name in _running(c, "prefect", "worker", "start"):
        if not _option(_command_tokens(c.services[name]), "--pool"):
            yield f"services.{name}.command: prefect worker needs --pool"
        api = _environment(c.services[name]).get("PREFECT_API_URL") or ""
        if not any(f"//{server}:" in api for server in servers):
            yield f"services.{name}.environment: PREFECT_API_URL {api!r} is not the server"


def prefect_image_matches_pin(c: Compose) -> Iterator[str]:
    """A ``prefecthq/prefect`` image has the version ``pyproject.toml`` pins."""
    if "prefect" not in c.pins:
        return
    for name, service in c.services.items():
        image = service.get("image") or ""
        if image.split(":")[0].endswith("prefecthq/prefect"):
            version = image.split(":", 1)[-1].split("-", 1)[0]
            if version != c.pins["prefect"]:
                yield (
                    f"services.{name}.image: Prefect {version} but pyproject.toml pins "
                    f"prefect=={c.pins['prefect']}; use the same version"
                )


def dockerfile_pins_match(c: Compose) -> Iterator[str]:
    """Any exact pin a Dockerfile shares with ``pyproject.toml`` has the same version."""
    for path in sorted({path for path in _dockerfiles(c).values() if path.is_file()}):
        for m in PIN_RE.finditer(path.read_text()):
            name = m["name"].lower()
            if name in c.pins and m["version"] != c.pins[name]:
                yield (
                    f"{path.name}: {name}=={m['version']} but pyproject.toml pins "
                    f"{name}=={c.pins[name]}; use the same version"
                )


RULES: list[Callable[[Compose], Iterator[str]]] = [
    variables_defined,
    url_passwords_not_literal,
    env_entries_used,
    secrets_not_literal,
    images_pinned,
    dockerfiles_pinned,
    dependencies_exist,
    one_shot_jobs_do_not_restart,
    services_have_healthchecks,
    named_volumes_declared,
    bind_sources_exist,
    ports_on_loopback,
    mlflow_server,
    mlflow_environment,
    mlflow_image_installs_pin,
    prefect_server_and_workers,
    prefect_image_matches_pin,
    dockerfile_pins_match,
]
