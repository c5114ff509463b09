"""Every command the README shows parses with the real CLI parsers (a renamed flag breaks this, not the user)."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
CLIS = {"smpler-export": "export", "smpler-bench": "bench", "smpler-demo": "demo", "smpler-run": "run",
        "smpler-check-gpu": "check_gpu", "smpler-aot": "aot"}


def readme_commands() -> list[list[str]]:
    text = README.read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("#")[0].split("&&"):  # chained commands: each one separately
                words = shlex.split(part)
                if words and words[0] in CLIS:
                    cmds.append(words)
    return cmds


def test_readme_shows_every_cli():
    assert {c[0] for c in readme_commands()} == set(CLIS)


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses(argv):
    module = importlib.import_module(f"smpler_deploy.cli.{CLIS[argv[0]]}")
    parser = module.build_parser()

    def fail(msg):
        pytest.fail(f"README: {' '.join(argv)}: {msg}")

    parser.error = fail
    parser.parse_args(argv[1:])
