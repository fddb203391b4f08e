"""Each role installs offline from its wheelhouse exactly as docs/deploy.md writes it, and runs
its commands there. The install lines are read from the guide itself (the block after
`<!-- role-install -->`), so the guide and this test cannot drift apart.

The wheelhouses are built by deploy/build-wheelhouse.sh without a network: pip reads the wheels
`./dev test` put in `.venv/wheel-cache` (PIP_NO_INDEX, PIP_FIND_LINKS), as a build machine would
read PyPI.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from roles import ROOT
from server_process import make_org as make_server_org
from server_process import running
from test_review_kit import PASSPHRASE, Submission, build_bundle, make_org

from keys.identity_file import protect_identity

WHEEL_CACHE = Path(sys.prefix) / "wheel-cache"
GUIDE = ROOT / "docs" / "deploy.md"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not WHEEL_CACHE.is_dir(), reason="run ./dev test (fills .venv/wheel-cache)"),
]


def guide_install_lines() -> str:
    text = GUIDE.read_text("utf-8")
    found = re.search(r"<!-- role-install -->\n```sh\n(.*?)```", text, re.S)
    assert found, "docs/deploy.md lost its role-install block"
    return found.group(1)


def _offline_env(home: Path) -> dict[str, str]:
    # No index: the only place pip may look is the local cache (building) or the wheelhouse.
    return {"PATH": os.environ["PATH"], "HOME": str(home), "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(WHEEL_CACHE), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PYTHON": sys.executable}


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result


def install_role(role: str, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """Build the role's wheelhouse, then install it as the guide says; returns the venv's bin
    folder, the wheelhouse (the guide's working folder) and the environment."""
    home = tmp_path / "home"
    home.mkdir()
    env = _offline_env(home)
    wheelhouse = tmp_path / "wheelhouse"
    _run([str(ROOT / "deploy" / "build-wheelhouse.sh"), "--role", role, str(wheelhouse)],
         ROOT, env)
    lines = guide_install_lines().replace("/media/usb/wheelhouse", str(wheelhouse))
    # The guide's `python3` is the target's interpreter: here, the one running the tests.
    lines = re.sub(r"^python3 ", f"{sys.executable} ", lines, flags=re.M)
    _run(["bash", "-euo", "pipefail", "-c", lines], tmp_path, env)
    # PIP_FIND_LINKS pointed at the cache only while building: the install above read the
    # wheelhouse alone (--no-index --find-links .).
    return home / "amanat" / "bin", wheelhouse, {**env, "PIP_FIND_LINKS": ""}


def _cannot_import(python: Path, module: str, env: dict[str, str]) -> bool:
    result = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True,
                            env=env, timeout=60)
    return result.returncode != 0


def test_offline_role_installs_and_runs_the_org_and_review_commands(tmp_path: Path) -> None:
    bin_dir, here, env = install_role("offline", tmp_path)
    for module in ("aiohttp", "stem", "sqlalchemy"):
        assert _cannot_import(bin_dir / "python", module, env), module

    # The organization-key machine: an organization and an investigator.
    (here / "pass").write_text(PASSPHRASE + "\n")
    amanat = str(bin_dir / "amanat")
    _run([amanat, "keys", "init-org", "--dir", "org"], here, env)
    _run([amanat, "keys", "add-investigator", "--dir", "org", "--label", "A", "--identity-out",
          "a.age", "--credential-out", "a.cred", "--passphrase-file", "pass",
          "--credential-passphrase-file", "pass", "--work-factor", "10"], here, env)
    assert "A" in _run([amanat, "keys", "show", "--dir", "org"], here, env).stdout

    # The review workstation: init and import a signed bundle.
    org = make_org(("Alice",))
    (here / "alice.age").write_bytes(
        protect_identity(org.investigators[0], PASSPHRASE, work_factor=10))
    (here / "keyring.json").write_bytes(org.keyring_doc)
    (here / "org.pub").write_bytes(org.org_pub_doc)
    sub = Submission("testimony", source_id="s1")
    (here / "b.tar").write_bytes(build_bundle(org, [sub]))
    review = [str(bin_dir / "amanat-review")]
    common = ["--vault", str(tmp_path / "vault"), "--passphrase-file", "pass"]
    _run([*review, "init", "--identity", "alice.age", "--keyring", "keyring.json",
          "--org-pub", "org.pub", *common], here, env)
    _run([*review, "import", "b.tar", *common], here, env)
    assert sub.submission_id in _run([*review, "list", *common], here, env).stdout
    # The advocacy report draws its charts with the wheelhouse's matplotlib (the review extra).
    made = _run([*review, "report", "--out", "report", "--lang", "fa_AF", *common], here, env)
    assert "custody log" in made.stdout
    assert (here / "report" / "report.html").is_file()
    assert len(list((here / "report").glob("*.svg"))) == 8
    # The workbench's Textual comes from the wheelhouse too (the review extra).
    assert "workbench" in _run([*review, "open", "--help"], here, env).stdout
    _run([str(bin_dir / "python"), "-c", "import review.workbench.app"], here, env)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_workstation_role_installs_and_asks_a_server_what_waits(tmp_path: Path) -> None:
    bin_dir, here, env = install_role("workstation", tmp_path)
    for module in ("stem", "sqlalchemy", "alembic", "jinja2"):
        assert _cannot_import(bin_dir / "python", module, env), module
    assert not _cannot_import(bin_dir / "python", "aiohttp_socks", env)

    # The online workstation holds the transfer credential only, and asks a real server.
    port = _free_port()
    org = make_server_org(tmp_path / "server", transfer={"listen": f"127.0.0.1:{port}"})
    (here / "transfer.cred").write_bytes(org.credential_path.read_bytes())
    (here / "pass").write_text(org.passphrase + "\n")
    with running(org, tmp_path / "server-tmp"):
        answer = _run([str(bin_dir / "amanat"), "transfer", "status", "--url",
                       f"http://127.0.0.1:{port}", "--credential", "transfer.cred",
                       "--passphrase-file", "pass", "--json"], here, env)
    status = json.loads(answer.stdout)
    assert status["waiting"]["submissions"] == 0
    assert status["acknowledged_by_me"] == 0
