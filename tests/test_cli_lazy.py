"""`amanat` imports only the command group it runs: the organization-key machine has neither
aiohttp nor stem, and `amanat keys` must work there (docs/deploy.md section 2)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from roles import ROOT, networked_packages

from dropbox.cli import COMMANDS, build_parser

SERVER_ONLY = networked_packages()
BLOCKER = f"""
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_ONLY!r}:
            raise ImportError(f"{{name}} is not installed on the organization-key machine")
        return None
sys.meta_path.insert(0, _Block())
from dropbox.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _amanat_without_server_packages(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_blocker_blocks_a_server_command() -> None:
    result = _amanat_without_server_packages("serve", "--help")
    assert result.returncode != 0
    assert "not installed on the organization-key machine" in result.stderr


@pytest.mark.parametrize("args", [("--help",), ("keys", "--help"), ("keys", "init-org", "--help")])
def test_keys_and_help_run_without_server_packages(args: tuple[str, ...]) -> None:
    result = _amanat_without_server_packages(*args)
    assert result.returncode == 0, result.stderr
    assert "usage: amanat" in result.stdout


def test_keys_creates_an_org_without_server_packages(tmp_path: Path) -> None:
    result = _amanat_without_server_packages("keys", "init-org", "--dir", str(tmp_path / "org"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "org" / "org.pub").is_file()


def _help_lines(parser: argparse.ArgumentParser) -> dict[str, str]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {choice.dest: str(choice.help) for choice in action._choices_actions}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_lazy_help_line_is_the_modules_own(command: str) -> None:
    # `amanat --help` shows COMMANDS' text; the module's register() has its own: they must agree.
    assert _help_lines(build_parser([command]))[command] == COMMANDS[command][1]
