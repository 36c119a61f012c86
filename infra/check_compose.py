"""Check infra/docker-compose.yml without docker: the rules this project relies on.

    python infra/check_compose.py infra/docker-compose.yml [--env-file F] [--pyproject F]

Prints one line per problem and exits 1 if there are any. The Compose Specification schema
itself is checked by ``docker compose config -q`` where a compose CLI is installed (``--cli``);
these checks are the project's own rules on top and need only PyYAML:

- every ``${VAR}`` (with or without ``:-default``) is defined in ``.env.example``, and every
  entry there is used;
- secrets are never literal: password/secret/key variables and credentials in URLs are
  ``${VAR}`` references;
- every image has an exact tag (not ``latest``) or a digest, or the service builds from a
  Dockerfile that exists and whose ``FROM`` images are pinned the same way;
- ``depends_on`` targets exist; ``service_healthy`` targets have a health check;
  ``service_completed_successfully`` targets are one-shot jobs (no restart policy);
- every long-running service (all but such one-shot jobs) has a health check with ``test``;
- named volumes are declared at the top level; bind-mount sources exist;
- published ports bind 127.0.0.1;
- the MLflow server uses ``--backend-store-uri postgresql…``, ``--artifacts-destination s3://…``
  and ``--allowed-hosts``, with ``MLFLOW_S3_ENDPOINT_URL`` and job execution off;
- Prefect server image, mlflow/prefect/torch pins in the Dockerfiles match ``pyproject.toml``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OP_RE = re.compile(r":?[-?+]")
_SECRET_NAME_RE = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|API_KEY", re.I)
_URL_CREDENTIALS_RE = re.compile(r"://[^/\s:@]+:(?P<password>[^@\s]+)@")
_NAMED_VOLUME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PIN_RE = re.compile(r"""(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)==(?P<version>[^\s"',;\]]+)""")
_LOOPBACK = "127.0.0.1"


def _strings(node: Any, path: str = ""):
    """Yield ``(path, string)`` for every string value in a parsed YAML tree."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")


def _expressions(text: str):
    """Yield ``(start, end, name, op, arg)`` for each top-level variable reference in ``text``.

    Handles ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``, ``${VAR?err}``,
    ``${VAR:+alt}``, ``${VAR+alt}`` (the argument may nest references) and ``$VAR``. ``$$`` is
    compose's escape for a literal ``$`` and yields ``name=None``.
    """
    i = 0
    while (i := text.find("$", i)) != -1:
        if text.startswith("$$", i):
            yield i, i + 2, None, None, None
            i += 2
            continue
        if text.startswith("${", i):
            depth, j = 1, i + 2
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:  # unterminated: compose rejects it; leave it to `docker compose config`
                return
            body = text[i + 2 : j - 1]
            name = _NAME_RE.match(body)
            if name:
                rest = body[name.end() :]
                op = _OP_RE.match(rest)
                if op or not rest:
                    arg = rest[op.end() :] if op else None
                    yield i, j, name.group(), op.group() if op else None, arg
            i = j
            continue
        name = _NAME_RE.match(text, i + 1)
        if name:
            yield i, name.end(), name.group(), None, None
            i = name.end()
        else:
            i += 1


def compose_variables(text: str) -> set[str]:
    """Names of the variables a compose string interpolates (``$$`` escapes excluded)."""
    names = set()
    for _, _, name, _, arg in _expressions(text):
        if name:
            names.add(name)
            names |= compose_variables(arg or "")  # ${A:-${B}}
    return names


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-style interpolation of ``text`` with ``env`` (enough for checking values).

    Unset variables without a default become empty strings, as compose does (with a warning).
    """
    out, last = [], 0
    for start, end, name, op, arg in _expressions(text):
        out.append(text[last:start])
        last = end
        if name is None:
            out.append("$")
            continue
        arg = interpolate(arg or "", env)
        value = env.get(name)
        if op in (":-", ":?"):
            out.append(value if value else (arg if op == ":-" else ""))
        elif op in ("-", "?"):
            out.append(value if value is not None else (arg if op == "-" else ""))
        elif op == ":+":
            out.append(arg if value else "")
        elif op == "+":
            out.append(arg if value is not None else "")
        else:
            out.append(value or "")
    out.append(text[last:])
    return "".join(out)


def _interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(v, env) for v in node]
    return node


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a dotenv file (comments and blank lines skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        env[key.removeprefix("export ").strip()] = value.strip().strip("'\"")
    return env


def project_pins(pyproject: Path) -> dict[str, str]:
    """Exact ``name==version`` pins of ``[project].dependencies``, names lower-cased."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        m = _PIN_RE.fullmatch(dep.replace(" ", ""))
        if m:
            pins[m["name"].lower()] = m["version"]
    return pins


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


def check_compose(
    compose_file: Path, env_file: Path | None = None, pyproject: Path | None = None
) -> list[str]:
    """All rule violations of a compose file, as messages naming the file and the fix.

    Args:
        compose_file: the compose YAML.
        env_file: dotenv file defining every variable; default ``.env.example`` beside it.
        pyproject: the project's ``pyproject.toml`` for version pins; default: the nearest one
            in the compose file's folder or its parents. Pin checks are skipped if none.

    Returns:
        Problems, empty when the file passes.
    """
    compose_file = Path(compose_file)
    where = compose_file.name
    base = compose_file.parent
    env_file = Path(env_file) if env_file else base / ".env.example"
    if pyproject is None:
        found = [p / "pyproject.toml" for p in [base.resolve(), *base.resolve().parents]]
        pyproject = next((p for p in found if p.is_file()), None)

    try:
        raw = yaml.safe_load(compose_file.read_text())
    except yaml.YAMLError as e:
        return [f"{where}: not valid YAML: {e}"]
    if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict):
        return [f"{where}: no 'services' mapping at the top level"]

    problems: list[str] = []

    def problem(msg: str) -> None:
        problems.append(f"{where}: {msg}")

    # --- variables and secrets, on the file as written --------------------------------------
    if env_file.is_file():
        env = read_env_file(env_file)
    else:
        env = {}
        problem(f"{env_file} not found; create it with a value for every ${{VAR}} used")
    used: set[str] = set()
    for path, text in _strings(raw):
        for name in sorted(compose_variables(text)):
            used.add(name)
            if env_file.is_file() and name not in env:
                problem(f"{path}: ${{{name}}} is not defined in {env_file.name}; add {name}=…")
        m = _URL_CREDENTIALS_RE.search(text)
        if m and "$" not in m["password"]:
            problem(f"{path}: URL has a literal password; use ${{VAR}} from {env_file.name}")
    for name in sorted(set(env) - used):
        problem(f"{env_file.name} defines {name}, which {where} never uses; remove it")

    for name, service in raw["services"].items():
        for key, value in _environment(service or {}).items():
            if _SECRET_NAME_RE.search(key) and value is not None and "$" not in value:
                problem(
                    f"services.{name}.environment.{key} is a literal secret; "
                    f"use ${{{key}}} and define it in {env_file.name}"
                )

    # --- everything else, on the values compose would use -----------------------------------
    doc = _interpolate_tree(raw, env)
    services: dict[str, dict] = {k: v or {} for k, v in doc["services"].items()}
    declared_volumes = set((doc.get("volumes") or {}).keys())
    pins = project_pins(pyproject) if pyproject else {}

    one_shot = {
        target
        for service in services.values()
        for target, cond in _depends_on(service).items()
        if cond == "service_completed_successfully"
    }

    dockerfiles: dict[str, Path] = {}
    for name, service in services.items():
        at = f"services.{name}"

        # images
        build = service.get("build")
        if isinstance(service.get("image"), str):
            why = image_problem(service["image"])
            if why:
                problem(f"{at}: {why}")
        elif not build:
            problem(f"{at}: neither image nor build; add a pinned image")
        if build:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            path = base / context / (dockerfile or "Dockerfile")
            if not path.is_file():
                problem(f"{at}.build: Dockerfile {path} does not exist")
            else:
                dockerfiles[name] = path
                for image in dockerfile_from_images(path):
                    why = image_problem(image)
                    if why:
                        problem(f"{path.name}: FROM {why}")

        # dependencies
        for target, cond in _depends_on(service).items():
            if target not in services:
                problem(f"{at}.depends_on: unknown service {target!r}")
            elif cond == "service_healthy" and _healthcheck_test(services[target]) is None:
                problem(
                    f"{at}.depends_on: {target!r} must be healthy but has no healthcheck; "
                    f"add one or use another condition"
                )

        # health checks and restart policies
        if name in one_shot:
            if service.get("restart") not in (None, "no", False):  # YAML 1.1: no is False
                problem(f"{at}: one-shot job has restart {service['restart']!r}; use 'no'")
        elif _healthcheck_test(service) is None:
            problem(f"{at}: long-running service without healthcheck.test; add one")

        # volumes
        for volume in _as_list(service.get("volumes")):
            if isinstance(volume, dict):
                kind, source = volume.get("type"), volume.get("source")
            else:
                source = str(volume).split(":", 1)[0] if ":" in str(volume) else None
                kind = "volume" if source and _NAMED_VOLUME_RE.match(source) else "bind"
            if not source:
                continue  # anonymous volume
            if kind == "volume" and source not in declared_volumes:
                problem(f"{at}.volumes: named volume {source!r} not declared under 'volumes:'")
            if kind == "bind" and not (base / Path(source).expanduser()).exists():
                problem(f"{at}.volumes: bind-mount source {source!r} does not exist")

        # ports
        for port in _as_list(service.get("ports")):
            why = _port_problem(port)
            if why:
                problem(f"{at}.ports: {why}; prefix with {_LOOPBACK}:")

    # --- the servers ---------------------------------------------------------------------------
    mlflow = [n for n, s in services.items() if _command_tokens(s)[:2] == ["mlflow", "server"]]
    if not mlflow:
        problem("no service runs `mlflow server`")
    for name in mlflow:
        at = f"services.{name}"
        tokens = _command_tokens(services[name])
        for flag, prefix in (
            ("--backend-store-uri", "postgresql"),
            ("--artifacts-destination", "s3://"),
            ("--allowed-hosts", ""),
        ):
            value = _option(tokens, flag)
            if value is None or not value.startswith(prefix):
                problem(f"{at}.command: needs {flag} {prefix}… (got {value!r})")
        env_vars = _environment(services[name])
        if not env_vars.get("MLFLOW_S3_ENDPOINT_URL"):
            problem(f"{at}.environment: MLFLOW_S3_ENDPOINT_URL is needed for MinIO artifacts")
        if str(env_vars.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION")).lower() != "false":
            problem(f"{at}.environment: set MLFLOW_SERVER_ENABLE_JOB_EXECUTION: 'false'")
        if "mlflow" in pins:
            df = dockerfiles.get(name)
            if df and f"mlflow=={pins['mlflow']}" not in df.read_text():
                problem(f"{df.name}: must install mlflow=={pins['mlflow']} (pyproject.toml pin)")

    prefect_servers = [
        n for n, s in services.items() if _command_tokens(s)[:3] == ["prefect", "server", "start"]
    ]
    workers = [
        n for n, s in services.items() if _command_tokens(s)[:3] == ["prefect", "worker", "start"]
    ]
    if not prefect_servers:
        problem("no service runs `prefect server start`")
    for name in workers:
        if not _option(_command_tokens(services[name]), "--pool"):
            problem(f"services.{name}.command: prefect worker needs --pool")
        api = _environment(services[name]).get("PREFECT_API_URL") or ""
        if not any(f"//{server}:" in api for server in prefect_servers):
            problem(f"services.{name}.environment: PREFECT_API_URL {api!r} is not the server")
    for name, service in services.items():
        image = service.get("image") or ""
        if "prefect" in pins and image.split(":")[0].endswith("prefecthq/prefect"):
            version = image.split(":", 1)[-1].split("-", 1)[0]
            if version != pins["prefect"]:
                problem(
                    f"services.{name}.image: Prefect {version} but pyproject.toml pins "
                    f"prefect=={pins['prefect']}; use the same version"
                )

    # Any exact pin a Dockerfile shares with pyproject must agree with it.
    for path in sorted(set(dockerfiles.values())):
        for m in _PIN_RE.finditer(path.read_text()):
            name = m["name"].lower()
            if name in pins and m["version"] != pins[name]:
                problem(
                    f"{path.name}: {name}=={m['version']} but pyproject.toml pins "
                    f"{name}=={pins[name]}; use the same version"
                )
    return problems


def compose_cli() -> list[str] | None:
    """A compose command that can run ``config`` offline, or ``None`` if there is none."""
    if shutil.which("docker"):
        try:
            ok = subprocess.run(
                ["docker", "compose", "version"], capture_output=True, timeout=30
            ).returncode
        except (OSError, subprocess.TimeoutExpired):
            ok = 1
        if ok == 0:
            return ["docker", "compose"]
    exe = shutil.which("docker-compose")
    return [exe] if exe else None


def check_with_cli(compose_file: Path, env_file: Path, cli: list[str]) -> list[str]:
    """Validate against the Compose Specification with ``<cli> config -q`` (no daemon needed)."""
    proc = subprocess.run(
        [*cli, "-f", str(compose_file), "--env-file", str(env_file), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode == 0:
        return []
    return [f"{Path(compose_file).name}: compose config: {proc.stderr.strip() or proc.stdout}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("compose_file", type=Path)
    parser.add_argument("--env-file", type=Path, help="default: .env.example beside the file")
    parser.add_argument("--pyproject", type=Path, help="default: nearest pyproject.toml")
    parser.add_argument(
        "--cli",
        action="store_true",
        help="also run `docker compose config -q` (fails if no compose CLI is installed)",
    )
    args = parser.parse_args(argv)
    problems = check_compose(args.compose_file, args.env_file, args.pyproject)
    if args.cli:
        cli = compose_cli()
        env_file = args.env_file or args.compose_file.parent / ".env.example"
        if cli is None:
            problems.append("--cli: no `docker compose` or `docker-compose` on PATH")
        else:
            problems += check_with_cli(args.compose_file, env_file, cli)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {args.compose_file}", file=sys.stderr)
        return 1
    print(f"{args.compose_file}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
