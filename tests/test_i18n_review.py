"""Answers typed in Dari and Pashto come back intact from the review tool: the server exports a
bundle (`amanat export`), the air-gapped workstation imports it (`amanat-review import`) and shows
each submission (`amanat-review show`), exactly as an investigator would read it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import SourceClient
from test_i18n_pages import DARI, PASHTO, post_submission

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not (ROOT / "review" / "cli.py").exists(),
                                reason="review/cli.py (amanat-review) is not there yet")


def run(module: str, *args: object) -> str:
    result = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_dari_and_pashto_answers_come_back_from_the_review_tool(running_server: Any,
                                                                      tmp_path: Path) -> None:
    typed = {"fa_AF": DARI, "ps": PASHTO}
    async with running_server() as server:
        for code, answers in typed.items():
            async with SourceClient(server.url) as source:
                await source.get(f"/?l={code}")
                await source.start()
                fields = [(name, v) for name, value in answers.items()
                          for v in (value if isinstance(value, list) else [value])]
                status, page = await post_submission(source, fields, [])
                assert status == 200, page
        config, org = server.config, server.org

    bundle, vault, passfile = tmp_path / "export.tar", tmp_path / "vault", tmp_path / "pass"
    passfile.write_text(org.passphrase + "\n", "utf-8")
    run("dropbox.cli", "export", "--config", org.config_path, "--out", bundle)
    common = ("--vault", vault, "--passphrase-file", passfile)
    run("review.cli", "init", *common, "--identity", org.identity_path,
        "--keyring", config.keys.keyring, "--org-pub", config.keys.org_public_key)
    run("review.cli", "import", *common, bundle)
    listed = json.loads(run("review.cli", "list", *common, "--json"))
    assert len(listed) == 2

    for row in listed:
        shown = json.loads(run("review.cli", "show", row["id"], *common, "--json"))
        code = next(c for c, a in typed.items() if a["message"] == shown["message"])
        sent = typed[code]
        record = shown["questionnaire"]
        assert (record["questionnaire"], record["locale"]) == ("amanat-pk-default", code)
        answers = {a["key"]: a["value"] for a in record["answers"]}
        assert answers["city"] == sent["q_city"]
        assert answers["when"]["raw"] == sent["q_when"]
        assert answers["at_risk"] == sent["q_at_risk"]
        assert answers["urgency"] == sent["q_urgency"]
        assert answers.get("contact") == (sent["q_contact"] or None)
        # The readable view an investigator prints shows the questions and the typed words.
        printed = run("review.cli", "show", row["id"], *common)
        assert "Province or territory where it happened" in printed
        assert sent["q_city"] in printed
        assert sent["message"].split("\n")[0] in printed
