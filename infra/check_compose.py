"""Check infra/docker-compose.yml without docker: the rules this project relies on.

    python infra/check_compose.py infra/docker-compose.yml [--env-file F] [--pyproject F]

Prints one line per problem and exits 1 if there are any. The Compose Specification schema
itself is checked by ``docker compose config -q`` where a compose CLI is installed (``--cli``);
these checks are the project's own rules on top and need only PyYAML. Each rule is one function
in compose_rules.py beside this file:

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
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import yaml


def _load_rules() -> ModuleType:
    """compose_rules.py from this file's folder, imported by path.

    infra/ is not a package, and its folder is on ``sys.path`` only when this file runs as a
    script, not when it is itself loaded by path (as tests/test_infra.py does).
    """
    spec = importlib.util.spec_from_file_location(
        "compose_rules", Path(__file__).with_name("compose_rules.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rules = _load_rules()
# Part of this module's interface from before the rules moved out.
image_problem = rules.image_problem
dockerfile_from_images = rules.dockerfile_from_images

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OP_RE = re.compile(r":?[-?+]")


def _strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
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
        m = rules.PIN_RE.fullmatch(dep.replace(" ", ""))
        if m:
            pins[m["name"].lower()] = m["version"]
    return pins


class Compose(NamedTuple):
    """A compose file, parsed, with everything the rules check it against.

    Attributes:
        file: the compose file; build contexts and bind mounts are relative to its folder.
        raw: the document as written.
        doc: the document interpolated with ``env``, as compose would use it.
        services: the services of ``doc`` by name (an empty one as ``{}``).
        strings: ``(path, text)`` of every string in ``raw``, e.g. ``("services.x.image", …)``.
        variables: ``(path, name)`` of every variable ``raw`` interpolates, string by string.
        env_file: the dotenv file that must define every variable.
        env: its entries, or ``None`` when it does not exist.
        pins: exact ``name==version`` pins of ``pyproject.toml``; empty without one.
    """

    file: Path
    raw: dict
    doc: dict
    services: dict[str, dict]
    strings: list[tuple[str, str]]
    variables: list[tuple[str, str]]
    env_file: Path
    env: dict[str, str] | None
    pins: dict[str, str]


def load_compose(
    compose_file: Path, env_file: Path | None = None, pyproject: Path | None = None
) -> Compose:
    """Parse a compose file into what the rules check.

    Args:
        compose_file: the compose YAML.
        env_file: dotenv file defining every variable; default ``.env.example`` beside it.
        pyproject: the project's ``pyproject.toml`` for version pins; default: the nearest one
            in the compose file's folder or its parents. Pin checks are skipped if none.

    Returns:
        The file as written and interpolated, with its variables, dotenv entries and pins.

    Raises:
        ValueError: the file is not YAML or has no ``services`` mapping; no rule can run.
    """
    compose_file = Path(compose_file)
    base = compose_file.parent
    env_file = Path(env_file) if env_file else base / ".env.example"
    if pyproject is None:
        found = [p / "pyproject.toml" for p in [base.resolve(), *base.resolve().parents]]
        pyproject = next((p for p in found if p.is_file()), None)
    try:
        raw = yaml.safe_load(compose_file.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"not valid YAML: {e}") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict):
        raise ValueError("no 'services' mapping at the top level")
    env = read_env_file(env_file) if env_file.is_file() else None
    doc = _interpolate_tree(raw, env or {})
    strings = list(_strings(raw))
    return Compose(
        file=compose_file,
        raw=raw,
        doc=doc,
        services={name: service or {} for name, service in doc["services"].items()},
        strings=strings,
        variables=[
            (path, name) for path, text in strings for name in sorted(compose_variables(text))
        ],
        env_file=env_file,
        env=env,
        pins=project_pins(pyproject) if pyproject else {},
    )


def check_compose(
    compose_file: Path, env_file: Path | None = None, pyproject: Path | None = None
) -> list[str]:
    """All rule violations of a compose file, as messages naming the file and the fix.

    Arguments as in :func:`load_compose`. Returns the problems, empty when the file passes.
    """
    where = Path(compose_file).name
    try:
        compose = load_compose(compose_file, env_file, pyproject)
    except ValueError as e:
        return [f"{where}: {e}"]
    return [f"{where}: {problem}" for rule in rules.RULES for problem in rule(compose)]


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
