"""Advocacy report (`amanat-review report`) over 10,000 submissions.

Prints absolute numbers and ratios measured side by side in this one run (the machine is shared
and noisy, so compare ratios across runs rather than raw times):
  - counting the tables vs. the small-cell suppression over them vs. drawing the charts;
  - the whole report in-process (tables, charts, files, custody entry, vault save);
  - a cold `amanat-review report` process vs. a cold `amanat-review list` over the same vault
    (what the report costs on top of opening the vault: matplotlib's import and the drawing).

    .venv/bin/python bench/bench_report.py [N]
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_review_kit import PASSPHRASE, build_bundle, make_org  # noqa: E402
from test_review_report import make_submission  # noqa: E402

from keys.identity_file import protect_identity  # noqa: E402
from review.answers import questionnaire_labels  # noqa: E402
from review.importer import import_bundle  # noqa: E402
from review.report import (  # noqa: E402
    ReportRequest,
    build_report,
    choose,
    make_report,
)
from review.report_charts import chart_svg  # noqa: E402
from review.vault import Vault  # noqa: E402


def _cold(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "review.cli", *args], check=True,
                   capture_output=True, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rng = random.Random(1818)
    org = make_org(("Alice",))
    labels = questionnaire_labels(None, "fa_AF")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        subs = [make_submission(rng, f"src{i % 997}", rng.random() < 0.8) for i in range(n)]
        (tmp / "b.tar").write_bytes(build_bundle(org, subs))
        identity = protect_identity(org.investigators[0], PASSPHRASE, work_factor=10)
        with Vault.create(tmp / "vault", identity, org.keyring_doc, org.org_pub_doc,
                          PASSPHRASE.encode()) as vault:
            import_bundle(vault, tmp / "b.tar")
        print(f"vault of {n} submissions built in {time.perf_counter() - t0:.1f} s "
              "(setup, not measured)")

        with Vault.open(tmp / "vault", PASSPHRASE.encode()) as vault:
            request = ReportRequest(tmp / "in-process", labels, 5)
            chosen, counts = choose(vault, request)
            t0 = time.perf_counter()
            report = build_report(chosen, labels, 5, counts)
            tables_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for table in report.tables:
                chart_svg(report, table)
            charts_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            make_report(vault, request)
            whole_s = time.perf_counter() - t0

        passfile = tmp / "pass"
        passfile.write_text(PASSPHRASE)
        common = ["--vault", str(tmp / "vault"), "--passphrase-file", str(passfile)]
        cold_list = min(_cold("list", "--json", *common) for _ in range(2))
        cold_report = min(_cold("report", "--out", str(tmp / f"cold{i}"), *common)
                          for i in range(2))

    print(f"consented: {counts['counted']} of {counts['in_period']}; "
          f"{len(report.hidden)} of {len(report.values)} counts hidden")
    print(f"tables + suppression:   {tables_s * 1000:8.0f} ms "
          f"({counts['counted'] / tables_s:.0f} submissions/s)")
    print(f"charts ({len(report.tables)} SVG):       {charts_s * 1000:8.0f} ms "
          f"({charts_s / tables_s:.1f}x the tables)")
    print(f"whole report in-process: {whole_s * 1000:7.0f} ms (tables, charts, files, "
          "custody entry, vault save)")
    print(f"cold `report` process:  {cold_report:8.2f} s vs cold `list` {cold_list:.2f} s: "
          f"{cold_report / cold_list:.1f}x")


if __name__ == "__main__":
    main()
