"""The review tool runs on an air-gapped workstation without the server's dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from roles import networked_packages
from test_review_kit import PASSPHRASE, ROOT, Submission, build_bundle, make_org

from keys.identity_file import protect_identity

BLOCKED = networked_packages()

# Installed before anything else: importing any blocked package (or a submodule) fails.
BLOCKER = f"""
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is blocked on the review workstation")
        return None
sys.meta_path.insert(0, _Block())
"""


def _python(code: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_blocker_really_blocks() -> None:
    result = _python("import aiohttp")
    assert result.returncode != 0
    assert "blocked on the review workstation" in result.stderr


def test_import_review_cli_pulls_in_no_server_dependency() -> None:
    code = (
        "import review.cli, review.vault, review.importer, review.case, review.replies, "
        "review.search, keys.sanitize\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}]\n"
        "assert not bad, bad\n"
        "assert 'dropbox' not in sys.modules and 'onion' not in sys.modules\n"
        "assert 'matplotlib' not in sys.modules  # loaded by the report command only\n"
        "assert 'textual' not in sys.modules  # loaded by the open command only\n"
        "print('clean')\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_the_workbench_pulls_in_no_server_dependency() -> None:
    code = (
        "import review.workbench, review.workbench.app\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}]\n"
        "assert not bad, bad\n"
        "assert 'dropbox' not in sys.modules and 'onion' not in sys.modules\n"
        "assert 'textual' in sys.modules\n"
        "print('clean')\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_whole_workflow_runs_with_server_dependencies_blocked(tmp_path: Path) -> None:
    org = make_org(("Alice",))
    identity = tmp_path / "id.age"
    identity.write_bytes(protect_identity(org.investigators[0], PASSPHRASE, work_factor=10))
    (tmp_path / "keyring.json").write_bytes(org.keyring_doc)
    (tmp_path / "org.pub").write_bytes(org.org_pub_doc)
    (tmp_path / "pass").write_text(PASSPHRASE)
    sub = Submission("testimony", files=[("a.txt", b"attached", "text/plain")], source_id="s1")
    (tmp_path / "b.tar").write_bytes(build_bundle(org, [sub]))
    cli = "from review.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    common = ["--vault", tmp_path / "v", "--passphrase-file", tmp_path / "pass"]
    steps = [
        [
            "init",
            "--identity",
            identity,
            "--keyring",
            tmp_path / "keyring.json",
            "--org-pub",
            tmp_path / "org.pub",
        ],
        ["import", tmp_path / "b.tar"],
        ["list", "--json"],
        ["search", "testimony"],
        ["extract", sub.submission_id, "--out", tmp_path / "out"],
        ["export-case", sub.submission_id, "--out", tmp_path / "case", "--purpose", "advocacy",
         "--override-consent", "test"],
        ["reply", "s1", "--message", "thanks", "--out", tmp_path / "outbox"],
        ["report", "--out", tmp_path / "report", "--lang", "ps"],
        ["verify"],
    ]
    for step in steps:
        result = _python(cli, *step, *common)
        assert result.returncode == 0, (step, result.stderr)
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"attached"
