"""The advocacy report in a real browser (Debian's headless Chromium, driven by
tests/browser/report.js), opened from disk as on the offline workstation: it makes no request at
all, lays out right to left in Dari, and its charts are inline SVG with text the browser shapes.

Full-page screenshots (print media) in en and fa_AF are saved in test-artifacts/screenshots/
(git-ignored) for people to look at.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from browser_support import BROWSER_MARKS, CHROMIUM, SCREENSHOTS, run_node
from test_review_kit import build_bundle, make_org, make_vault, review
from test_review_report import make_submission

pytestmark = BROWSER_MARKS


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
    answer = asyncio.run(run_node("report.js", {"chromium": CHROMIUM, "pages": pages},
                                  tmp_path / "job.json", timeout=300))
    en, fa = answer["pages"]
    for page in (en, fa):
        assert page["requests"] == []  # nothing fetched: no fonts, images, scripts or styles
        assert page["tables"] == 8
        assert page["charts"] == 8
        assert page["chartTexts"] > 50  # labels are text elements, not paths
    assert (en["lang"], en["dir"], en["direction"]) == ("en", "ltr", "ltr")
    assert (fa["lang"], fa["dir"], fa["direction"]) == ("fa-AF", "rtl", "rtl")
    for item in pages:
        assert Path(item["screenshot"]).stat().st_size > 20_000
