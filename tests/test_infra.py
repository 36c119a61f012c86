"""infra/: the compose stack and prefect.yaml, checked without docker.

The compose rules live in infra/compose_rules.py and run through infra/check_compose.py; here
they run on the real file and on broken copies, each of which must be reported. Where a compose
CLI is installed, the file is also validated against the Compose Specification
(`docker compose config -q`).
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
COMPOSE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_compose", INFRA / "check_compose.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_compose = _load_checker()


def _broken_copy(tmp_path: Path, edit, env_text: str | None = None) -> Path:
    """A copy of infra/ (compose, .env.example, Dockerfiles, scripts) with ``edit`` applied.

    Args:
        tmp_path: where the copy goes.
        edit: called with the parsed compose dict; mutates it.
        env_text: replacement .env.example content, if given.

    Returns:
        The copied compose file.
    """
    infra = tmp_path / "infra"
    shutil.copytree(INFRA, infra, ignore=shutil.ignore_patterns("local", "__pycache__", ".env"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    compose = infra / "docker-compose.yml"
    doc = yaml.safe_load(compose.read_text())
    edit(doc)
    compose.write_text(yaml.safe_dump(doc, sort_keys=False))
    if env_text is not None:
        (infra / ".env.example").write_text(env_text)
    return compose


def _problems(compose: Path) -> str:
    return "\n".join(check_compose.check_compose(compose))


def test_real_compose_file_passes():
    assert check_compose.check_compose(COMPOSE) == []


def test_unchanged_copy_passes(tmp_path):
    """The broken-variant tests below start from a copy that passes: only their edit fails."""
    assert _problems(_broken_copy(tmp_path, lambda doc: None)) == ""


def test_cli_entry_point_exit_codes(tmp_path):
    ok = subprocess.run(
        [sys.executable, str(INFRA / "check_compose.py"), str(COMPOSE)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr

    def unpin(doc):
        doc["services"]["postgres"]["image"] = "postgres"

    bad = subprocess.run(
        [sys.executable, str(INFRA / "check_compose.py"), str(_broken_copy(tmp_path, unpin))],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert "services.postgres" in bad.stdout and "no tag" in bad.stdout


def test_missing_variable_reported(tmp_path):
    env = ENV_EXAMPLE.read_text().replace("PREFECT_DB_PASSWORD=", "# PREFECT_DB_PASSWORD=")
    out = _problems(_broken_copy(tmp_path, lambda doc: None, env_text=env))
    assert "${PREFECT_DB_PASSWORD} is not defined in .env.example" in out


def test_variable_with_default_must_be_defined_too(tmp_path):
    def edit(doc):
        doc["services"]["mlflow"]["environment"]["PIMC_EXTRA"] = "${PIMC_NOT_IN_ENV:-x}"

    assert "${PIMC_NOT_IN_ENV} is not defined" in _problems(_broken_copy(tmp_path, edit))


def test_unused_env_entry_reported(tmp_path):
    env = ENV_EXAMPLE.read_text() + "\nSTALE_SETTING=1\n"
    out = _problems(_broken_copy(tmp_path, lambda doc: None, env_text=env))
    assert "defines STALE_SETTING, which docker-compose.yml never uses" in out


@pytest.mark.parametrize("image", ["postgres", "postgres:latest", "minio/minio:"])
def test_unpinned_image_reported(tmp_path, image):
    def edit(doc):
        doc["services"]["postgres"]["image"] = image

    assert "services.postgres: image" in _problems(_broken_copy(tmp_path, edit))


def test_digest_pinned_image_accepted(tmp_path):
    def edit(doc):
        doc["services"]["postgres"]["image"] = "postgres@sha256:" + "0" * 64

    assert _problems(_broken_copy(tmp_path, edit)) == ""


def test_unpinned_dockerfile_base_reported(tmp_path):
    compose = _broken_copy(tmp_path, lambda doc: None)
    dockerfile = compose.parent / "mlflow.Dockerfile"
    text = dockerfile.read_text()
    dockerfile.write_text(text.replace("FROM python:3.11.13-slim-bookworm", "FROM python"))
    assert "mlflow.Dockerfile: FROM image 'python' has no tag" in _problems(compose)


def test_missing_dockerfile_reported(tmp_path):
    def edit(doc):
        doc["services"]["mlflow"]["build"]["dockerfile"] = "nope.Dockerfile"

    assert "nope.Dockerfile does not exist" in _problems(_broken_copy(tmp_path, edit))


def test_dangling_depends_on_reported(tmp_path):
    def edit(doc):
        doc["services"]["mlflow"]["depends_on"]["redis"] = {"condition": "service_started"}

    assert "services.mlflow.depends_on: unknown service 'redis'" in _problems(
        _broken_copy(tmp_path, edit)
    )


def test_healthy_dependency_needs_healthcheck(tmp_path):
    def edit(doc):
        del doc["services"]["postgres"]["healthcheck"]

    out = _problems(_broken_copy(tmp_path, edit))
    assert "'postgres' must be healthy but has no healthcheck" in out
    assert "services.postgres: long-running service without healthcheck.test" in out


def test_one_shot_job_must_not_restart(tmp_path):
    def edit(doc):
        doc["services"]["minio-init"]["restart"] = "unless-stopped"

    assert "services.minio-init: one-shot job has restart" in _problems(
        _broken_copy(tmp_path, edit)
    )


def test_undeclared_named_volume_reported(tmp_path):
    def edit(doc):
        del doc["volumes"]["minio-data"]

    assert "named volume 'minio-data' not declared" in _problems(_broken_copy(tmp_path, edit))


def test_missing_bind_source_reported(tmp_path):
    compose = _broken_copy(tmp_path, lambda doc: None)
    (compose.parent / "postgres" / "init-databases.sh").unlink()
    assert "bind-mount source './postgres/init-databases.sh' does not exist" in _problems(compose)


@pytest.mark.parametrize("port", ["5000:5000", "0.0.0.0:5000:5000", "5000"])
def test_port_on_all_interfaces_reported(tmp_path, port):
    def edit(doc):
        doc["services"]["mlflow"]["ports"] = [port]

    assert "services.mlflow.ports" in _problems(_broken_copy(tmp_path, edit))


def test_literal_secret_reported(tmp_path):
    def edit(doc):
        doc["services"]["minio"]["environment"]["MINIO_ROOT_PASSWORD"] = "hunter22"
        cmd = doc["services"]["mlflow"]["command"]
        i = cmd.index("--backend-store-uri")
        cmd[i + 1] = "postgresql://mlflow:hunter22@postgres:5432/mlflow"

    out = _problems(_broken_copy(tmp_path, edit))
    assert "MINIO_ROOT_PASSWORD is a literal secret" in out
    assert "URL has a literal password" in out


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--backend-store-uri", "sqlite:///mlflow.db", "needs --backend-store-uri postgresql"),
        ("--artifacts-destination", "/mlartifacts", "needs --artifacts-destination s3://"),
        ("--allowed-hosts", None, "needs --allowed-hosts"),
    ],
)
def test_mlflow_command_rules(tmp_path, flag, value, expected):
    def edit(doc):
        cmd = doc["services"]["mlflow"]["command"]
        i = cmd.index(flag)
        if value is None:
            del cmd[i : i + 2]
        else:
            cmd[i + 1] = value

    assert expected in _problems(_broken_copy(tmp_path, edit))


def test_mlflow_environment_rules(tmp_path):
    def edit(doc):
        env = doc["services"]["mlflow"]["environment"]
        del env["MLFLOW_S3_ENDPOINT_URL"]
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true"

    out = _problems(_broken_copy(tmp_path, edit))
    assert "MLFLOW_S3_ENDPOINT_URL is needed" in out
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION" in out


def test_prefect_version_must_match_pyproject(tmp_path):
    def edit(doc):
        doc["services"]["prefect-server"]["image"] = "prefecthq/prefect:3.4.0-python3.11"

    assert "Prefect 3.4.0 but pyproject.toml pins prefect==" in _problems(
        _broken_copy(tmp_path, edit)
    )


@pytest.mark.parametrize(
    ("dockerfile", "pin", "stale"),
    [("mlflow.Dockerfile", "mlflow", "3.1.0"), ("worker.Dockerfile", "torch", "2.5.0")],
)
def test_dockerfile_pins_must_match_pyproject(tmp_path, dockerfile, pin, stale):
    compose = _broken_copy(tmp_path, lambda doc: None)
    pins = check_compose.project_pins(REPO / "pyproject.toml")
    path = compose.parent / dockerfile
    path.write_text(path.read_text().replace(f"{pin}=={pins[pin]}", f"{pin}=={stale}"))
    assert f"{dockerfile}: {pin}=={stale} but pyproject.toml pins {pin}=={pins[pin]}" in (
        _problems(compose)
    )


def test_worker_must_reach_the_server(tmp_path):
    def edit(doc):
        doc["services"]["prefect-worker"]["environment"]["PREFECT_API_URL"] = (
            "http://127.0.0.1:4200/api"
        )

    assert "PREFECT_API_URL 'http://127.0.0.1:4200/api' is not the server" in _problems(
        _broken_copy(tmp_path, edit)
    )


def test_interpolation_follows_compose():
    env = {"SET": "v", "EMPTY": ""}
    i = check_compose.interpolate
    assert i("${SET}-${UNSET}", env) == "v-"
    assert i("${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == "d  d"
    assert i("${SET:+alt} ${UNSET:+alt}", env) == "alt "
    assert i("$$HOME $SET", env) == "$HOME v"
    assert i("${UNSET:-${SET}x}", env) == "vx"
    assert check_compose.compose_variables("$${ESCAPED} ${A:-${B}} $C") == {"A", "B", "C"}


def test_init_scripts_are_valid_shell():
    for script in (INFRA / "postgres" / "init-databases.sh", INFRA / "minio" / "init-buckets.sh"):
        proc = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


def test_infra_env_is_gitignored():
    """infra/.env holds the real secrets: git must ignore it (infra/.env.example is committed)."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    proc = subprocess.run(
        ["git", "check-ignore", "-q", "infra/.env"], cwd=REPO, capture_output=True
    )
    if proc.returncode == 128:
        pytest.skip("not a git checkout")
    assert proc.returncode == 0, "infra/.env is not git-ignored; add it to infra/.gitignore"


def test_compose_spec_schema_with_cli():
    """Full Compose Specification validation; runs where a compose CLI is installed."""
    cli = check_compose.compose_cli()
    if cli is None:
        pytest.skip("no `docker compose`/`docker-compose` CLI; pure-Python checks still ran")
    assert check_compose.check_with_cli(COMPOSE, ENV_EXAMPLE, cli) == []


def test_compose_cli_rejects_schema_violations(tmp_path):
    """Guards the test above: the CLI route must actually fail on an invalid file."""
    cli = check_compose.compose_cli()
    if cli is None:
        pytest.skip("no `docker compose`/`docker-compose` CLI")

    def edit(doc):
        doc["services"]["mlflow"]["healthcheck"]["retries"] = "many"

    problems = check_compose.check_with_cli(_broken_copy(tmp_path, edit), ENV_EXAMPLE, cli)
    assert problems and "compose config" in problems[0]


# --- prefect.yaml ------------------------------------------------------------------------------


def _retrain_module() -> ast.Module:
    path = REPO / "flows" / "retrain.py"
    assert path.is_file(), "prefect.yaml deploys flows/retrain.py, which does not exist"
    return ast.parse(path.read_text())


def _module_constant(module: ast.Module, name: str):
    for node in module.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"flows/retrain.py defines no {name}")


def test_prefect_yaml_is_valid_for_prefect_deploy():
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.client.schemas.schedules import CronSchedule

    raw = yaml.safe_load((REPO / "prefect.yaml").read_text())
    model = PrefectYamlModel.model_validate(raw)
    pins = check_compose.project_pins(REPO / "pyproject.toml")
    assert model.prefect_version == pins["prefect"], "prefect.yaml prefect-version != pyproject"
    assert model.pull == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/pimc"}}
    ], "pull step must cd into the worker image's repo (WORKDIR of infra/worker.Dockerfile)"
    assert "WORKDIR /opt/pimc" in (INFRA / "worker.Dockerfile").read_text()

    (deployment,) = model.deployments
    assert deployment.name == "pimc-retrain"
    assert deployment.entrypoint == "flows/retrain.py:retrain_flow"
    assert deployment.work_pool.name == "pimc-process"
    (schedule,) = raw["deployments"][0]["schedules"]
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # raises if invalid
    assert schedule["cron"] == "0 3 * * 1"

    worker = yaml.safe_load(COMPOSE.read_text())["services"]["prefect-worker"]["command"]
    assert worker[worker.index("--pool") + 1] == deployment.work_pool.name


def test_prefect_yaml_matches_flows_retrain():
    """Entrypoint, deployment name and cron agree with flows/retrain.py (read, not imported)."""
    raw = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"][0]
    path, func = raw["entrypoint"].split(":")
    module = _retrain_module()
    assert path == "flows/retrain.py"
    flows = {
        node.name
        for node in module.body
        if isinstance(node, ast.FunctionDef)
        and any(
            (isinstance(d, ast.Call) and getattr(d.func, "id", None) == "flow")
            or getattr(d, "id", None) == "flow"
            for d in node.decorator_list
        )
    }
    assert func in flows, f"flows/retrain.py has no @flow function {func!r} (has {flows})"
    assert raw["name"] == _module_constant(module, "DEPLOYMENT")
    assert raw["schedules"][0]["cron"] == _module_constant(module, "DEFAULT_CRON")
