"""The advocacy report in a real browser (Debian's headless Chromium, driven by
tests/browser/report.js), opened from disk as on the offline workstation: it makes no request at
all, lays out right to left in Dari, and its charts are inline SVG with text the browser shapes.

Full-page screenshots (print media) in en and fa_AF are saved in test-artifacts/screenshots/
(git-ignored) for people to look at.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from test_review_kit import build_bundle, make_org, make_vault, review
from test_review_report import make_submission

ROOT = Path(__file__).resolve().parent.parent
BROWSER_DIR = ROOT / "tests" / "browser"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"),
    pytest.mark.skipif(not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(),
                       reason="run ./dev test (npm install in tests/browser) first"),
]


def test_the_report_renders_offline_in_en_and_dari(tmp_path: Path) -> None:
    org = make_org(("Alice",))
    vault, passfile = make_vault(tmp_path, org)
    rng = random.Random(7)
    subs = [make_submission(rng, f"s{n}", True) for n in range(40)]
    (tmp_path / "b.tar").write_bytes(build_bundle(org, subs))
    assert review("import", "--vault", vault, "--passphrase-file", passfile,
                  tmp_path / "b.tar").returncode == 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages = []
    for lang in ("en", "fa_AF"):
        out = tmp_path / f"report-{lang}"
        result = review("report", "--vault", vault, "--passphrase-file", passfile, "--out", out,
                        "--lang", lang)
        assert result.returncode == 0, result.stderr
        pages.append({"file": str(out / "report.html"),
                      "screenshot": str(SCREENSHOTS / f"report-{lang}.png")})
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"chromium": CHROMIUM, "pages": pages}), "utf-8")
    result = subprocess.run(["node", str(BROWSER_DIR / "report.js"), str(job)], cwd=BROWSER_DIR,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    en, fa = json.loads(result.stdout)
    for page in (en, fa):
        assert page["requests"] == []  # nothing fetched: no fonts, images, scripts or styles
        assert page["tables"] == 8
        assert page["charts"] == 8
        assert page["chartTexts"] > 50  # labels are text elements, not paths
    assert (en["lang"], en["dir"], en["direction"]) == ("en", "ltr", "ltr")
    assert (fa["lang"], fa["dir"], fa["direction"]) == ("fa-AF", "rtl", "rtl")
    for item in pages:
        assert Path(item["screenshot"]).stat().st_size > 20_000
