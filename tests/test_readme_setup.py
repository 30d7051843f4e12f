"""The README's set-up promise: exactly two commands before the first section heading,
one that runs the main job and one that runs the tests, both installing PyTorch's CPU
build first (issue: a plain `pip install -e .` on a CPU box pulls the CUDA wheels), and
CI running the second one verbatim."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_TORCH = 'pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu && '


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    first_section = readme.split("\n## ", 1)[0]
    return re.findall(r"^    (\S.*)$", first_section, flags=re.MULTILINE)


def test_readme_gives_exactly_two_setup_commands_on_the_cpu_build() -> None:
    commands = _setup_commands()
    assert len(commands) == 2, commands
    run_cmd, test_cmd = commands
    assert run_cmd.startswith(CPU_TORCH) and run_cmd.endswith("&& lazydp-bench run")
    assert test_cmd.startswith(CPU_TORCH) and test_cmd.endswith("&& python3 -m pytest -q -n 2")


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    # The line of .ci/run that extracts the command, run here against the real README.
    extract = next(line for line in script.splitlines() if line.startswith("test_cmd="))
    out = subprocess.run(
        ["bash", "-c", f"{extract}; printf '%s' \"$test_cmd\""],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == _setup_commands()[1]
    assert 'bash -c "$test_cmd"' in script
