"""What every test that drives Debian's headless Chromium through tests/browser/*.js shares: the
marks that skip it where node, chromium or the npm packages are missing, and running one script
on a job file while the test's own server keeps serving in the same event loop."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROWSER_DIR = ROOT / "tests" / "browser"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"),
    pytest.mark.skipif(not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(),
                       reason="run ./dev test (npm install in tests/browser) first"),
]


async def run_node(script: str, job: dict[str, Any], job_file: Path,
                   timeout: float) -> dict[str, Any]:
    """Run tests/browser/`script` on `job` (written to `job_file`); its JSON answer. Awaited,
    never waited for: the server under test runs in this same event loop."""
    job_file.write_text(json.dumps(job), "utf-8")
    process = await asyncio.create_subprocess_exec(
        "node", str(BROWSER_DIR / script), str(job_file), cwd=BROWSER_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode()
    result: dict[str, Any] = json.loads(stdout)
    return result
