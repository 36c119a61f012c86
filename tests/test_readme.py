"""Every command the README documents works verbatim from a fresh shell without the venv on PATH.

Each fenced ``bash`` line is checked: ``make`` lines name a Makefile target; ``.venv/bin/X``
lines name an executable the install provides, and run (with ``--help`` instead of their
arguments, so nothing long starts) from an environment whose PATH has no Python at all.
Stage-running DVC commands are refused: DVC starts stage commands (``python -m flows.<stage>``)
from PATH, so without an activated venv they would fail after DVC deleted the outputs.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: .venv/bin in a checkout


def _commands() -> list[str]:
    """The README's fenced bash commands, continuation lines joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in text.splitlines() if line.strip()]


COMMANDS = _commands()


def test_the_readme_documents_commands():
    assert any(c.startswith("make run") for c in COMMANDS)
    assert any(c.startswith(".venv/bin/pimc predict") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_works_without_the_venv_on_path(command, tmp_path):
    for part in command.split("&&"):
        argv = shlex.split(part.strip())
        if argv[0] == "make":
            targets = re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M)
            assert set(argv[1:]) <= set(targets), part
            continue
        if argv[0] == "eval":
            continue  # the environment of servers.sh: covered by tests/test_infra.py
        assert argv[0].startswith(".venv/bin/"), f"{part}: needs an activated venv"
        exe = BIN / argv[0].removeprefix(".venv/bin/")
        assert exe.is_file(), f"{part}: {exe.name} is not installed in the venv"
        if exe.name == "dvc":
            assert argv[1] not in {"repro", "exp"}, f"{part}: stage commands need `python` on PATH"
        # Keep `-m module` and a subcommand (predict, serve, ui), then ask for help.
        head = argv[:3] if argv[1:2] == ["-m"] else argv[:1]
        rest = argv[len(head) :]
        if rest and not rest[0].startswith("-"):
            head.append(rest[0])
        cmd = [str(exe), *head[1:], "--help"]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "PREFECT_HOME": str(tmp_path / "prefect"),
        }
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{cmd}: {proc.stdout[-1500:]}{proc.stderr[-1500:]}"
        assert "usage" in (proc.stdout + proc.stderr).lower(), cmd
        # Each documented option exists (a launcher's, e.g. torchrun's, up to its -m module).
        own = part if exe.name.startswith("python") else part.split(" -m ")[0]
        for option in re.findall(r"(?<!\S)(--[\w-]+)", own):
            assert option in proc.stdout + proc.stderr, f"{part}: {option} is not an option"
