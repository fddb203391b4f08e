"""`amanat-review report`, run as the real CLI over a vault of generated, signed submissions:
the counts add up, no small count shows, sources who did not consent change nothing, nothing
but structured answers reaches the folder, and the custody log records the report."""

from __future__ import annotations

import csv
import hashlib
import io
import random
import re
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_review_kit import PASSPHRASE, Org, Submission, build_bundle, make_org, make_vault, review

from review.vault import Vault, verify_chain

ROOT = Path(__file__).resolve().parent.parent
QUESTIONNAIRE = tomllib.loads(
    (ROOT / "dropbox" / "questionnaires" / "default.toml").read_text("utf-8"))
OPTIONS = {f["key"]: [o["value"] for o in f.get("option", [])] for f in QUESTIONNAIRE["field"]}
LABELS = {f["key"]: {o["value"]: o["label"]["en"] for o in f.get("option", [])}
          for f in QUESTIONNAIRE["field"]}
QUESTIONS = {f["key"]: f["label"]["en"] for f in QUESTIONNAIRE["field"]}
TYPES = {f["key"]: f["type"] for f in QUESTIONNAIRE["field"]}
W3C = {b"http://www.w3.org/2000/svg", b"http://www.w3.org/1999/xlink",
       b"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd"}
MONTHS = ["2026-07", "2026-08", "2026-09", "2026-10"]
SECRETS = ["Peshawar-Hayatabad-Street-9", "secret-photo-of-camp.jpg", "Tell-no-one-story",
           "+92-300-5550101", "Quetta-crafted-province", "Hamal 1403 at dawn"]


def structured(rng: random.Random, consent: bool | None) -> dict[str, Any]:
    answers: dict[str, Any] = {
        "what_happened": f"{SECRETS[2]} {rng.random()}",
        "when": {"typed": SECRETS[5]},
        "city": SECRETS[0],
        "contact": SECRETS[3],
        "province": rng.choice([*OPTIONS["province"][:4], None]),
        "at_risk": rng.sample(OPTIONS["at_risk"], rng.randint(1, 2)),
        "groups": rng.sample(OPTIONS["groups"], rng.randint(0, 2)) or None,
        "documents": [rng.choice(OPTIONS["documents"])],
        "urgency": rng.choice(OPTIONS["urgency"]),
    }
    if consent is not None:
        answers["consent_uses"] = {"advocacy": consent, "referral": True, "legal": False}
    return {k: v for k, v in answers.items() if v is not None}


def make_submission(rng: random.Random, source: str, consent: bool | None) -> Submission:
    answers = structured(rng, consent)
    day = f"{rng.choice(MONTHS)}-{rng.randint(1, 28):02d}"

    def record(manifest: dict[str, Any]) -> None:  # the record dropbox/questionnaire.py writes
        manifest["questionnaire"] = {
            "questionnaire": "amanat-pk-default", "version": 1, "locale": "fa_AF",
            "answers": [{"key": k, "type": TYPES[k], "question": QUESTIONS[k], "value": v}
                        for k, v in answers.items()]}
        manifest["answers"] = {f"q_{k}": [str(v)] for k, v in answers.items()}

    sub = Submission(answers["what_happened"], source_id=source, day=day, tamper=record,
                     files=[(SECRETS[1], b"\xff\xd8 not really a photo", "image/jpeg")])
    sub.answers = answers  # kept for the expected counts
    return sub


@pytest.fixture(scope="module")
def org() -> Org:
    return make_org(("Alice",))


@pytest.fixture(scope="module")
def consenting() -> list[Submission]:
    rng = random.Random(18)
    subs = [make_submission(rng, f"src{n % 23}", True) for n in range(60)]
    # A crafted-but-signed value that is no option: counted as not answered, never shown.
    subs[0].answers["province"] = SECRETS[4]
    return subs


@pytest.fixture(scope="module")
def refusing() -> list[Submission]:
    rng = random.Random(81)
    return [make_submission(rng, f"other{n}", consent) for n, consent in
            enumerate([False, None, False, None, False, False, None, False])]


def report_of(tmp: Path, org: Org, subs: list[Submission], *extra: str,
              name: str = "report") -> tuple[Path, Path, Path]:
    vault, passfile = make_vault(tmp, org)
    (tmp / "b.tar").write_bytes(build_bundle(org, subs))
    result = review("import", "--vault", vault, "--passphrase-file", passfile, tmp / "b.tar")
    assert result.returncode == 0, result.stderr
    out = tmp / name
    result = review("report", "--vault", vault, "--passphrase-file", passfile, "--out", out,
                    *extra)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return vault, passfile, out


def read_csv(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((folder / "report.csv").read_text("utf-8-sig"))))


def expected_counts(subs: list[Submission]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {}
    for key in ("province", "at_risk", "groups", "documents", "urgency"):
        counter: Counter[str] = Counter()
        for sub in subs:
            value = sub.answers.get(key)
            values = value if isinstance(value, list) else [value]
            named = [LABELS[key][v] for v in values if v in LABELS[key]]
            counter.update(named or ["Not answered"])
        counts[QUESTIONS[key]] = counter
    counts["Month received"] = Counter(sub.day[:7] for sub in subs)
    return counts


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, org: Org,
         consenting: list[Submission]) -> tuple[Path, Path, Path]:
    return report_of(tmp_path_factory.mktemp("made"), org, consenting)


def test_every_table_adds_up_to_the_consented_submissions(
        made: tuple[Path, Path, Path], consenting: list[Submission]) -> None:
    rows = read_csv(made[2])
    expected = expected_counts(consenting)
    for title, counts in expected.items():
        table = [r for r in rows if r["table"] == f"Submissions by: {title}"]
        assert table, title
        total = next(r for r in table if r["row"] in ("Total", "Answers given (one submission "
                                                                 "may give several)"))
        assert int(total["count"]) == sum(counts.values())
        shown = {r["row"]: r["count"] for r in table if r is not total}
        assert set(counts) <= set(shown)  # every answer given has its row
        for row, value in shown.items():
            assert value == "< 5" or int(value) == counts[row], (title, row)
        # Visible counts plus what the hidden ones stand for add up to the total.
        hidden = sum(counts[row] for row, value in shown.items() if value == "< 5")
        visible = sum(int(v) for v in shown.values() if v != "< 5")
        assert visible + hidden == sum(counts.values())
    single = [t for t in expected if t in (QUESTIONS["province"], QUESTIONS["urgency"],
                                           "Month received")]
    for title in single:
        assert sum(expected[title].values()) == len(consenting)


def test_cross_tables_agree_with_the_one_way_tables(made: tuple[Path, Path, Path],
                                                    consenting: list[Submission]) -> None:
    rows = read_csv(made[2])
    cross = [r for r in rows if r["table"] == f"{QUESTIONS['province']} × Month received"]
    assert {r["column"] for r in cross} == {*sorted({s.day[:7] for s in consenting}), "Total"}
    by_province = {r["row"]: r["count"] for r in rows
                   if r["table"] == f"Submissions by: {QUESTIONS['province']}"}
    for r in cross:
        if r["column"] == "Total" and r["row"] != "Total":
            assert r["count"] == by_province[r["row"]]
    truth = Counter((LABELS["province"].get(s.answers.get("province"), "Not answered"),
                     s.day[:7]) for s in consenting)
    for r in cross:
        if "Total" not in (r["row"], r["column"]) and r["count"] != "< 5":
            assert int(r["count"]) == truth[(r["row"], r["column"])]
    assert any(r["table"].startswith(QUESTIONS["groups"] + " × ") for r in rows)


def test_no_count_below_the_threshold_is_shown(made: tuple[Path, Path, Path]) -> None:
    rows = read_csv(made[2])
    values = [r["count"] for r in rows]
    assert "< 5" in values  # the vault is small enough to have small cells
    assert all(v == "< 5" or int(v) >= 5 for v in values)


def test_nothing_but_structured_answers_reaches_the_folder(
        made: tuple[Path, Path, Path], consenting: list[Submission]) -> None:
    folder = made[2]
    names = sorted(p.name for p in folder.iterdir())
    assert names[:2] == ["SHA256SUMS", "chart-01-month.svg"]
    assert {"report.html", "report.csv"} <= set(names)
    assert len([n for n in names if n.endswith(".svg")]) == 8
    forbidden = [*SECRETS, *(s.source_id for s in consenting),
                 *(s.submission_id for s in consenting), *(s.day for s in consenting)]
    for path in folder.iterdir():
        data = path.read_bytes()
        for secret in forbidden:
            assert secret.encode() not in data, (path.name, secret)
        # Addresses only as XML namespace and DTD names (never fetched), no links or loads.
        assert set(re.findall(rb"https?://[^\"'> ]*", data)) <= W3C, path.name
        assert b"src=" not in data, path.name
        assert b"@import" not in data, path.name
        assert not re.search(rb"href=\"[^#]|url\([^#]", data), path.name  # only #id inside


def test_the_custody_log_records_the_report(made: tuple[Path, Path, Path]) -> None:
    vault_dir, _, folder = made
    with Vault.open(vault_dir, PASSPHRASE.encode()) as vault:
        custody = vault.custody
    verify_chain(custody)
    entry = custody[-1]
    assert entry["action"] == "report"
    details = entry["details"]
    html = (folder / "report.html").read_bytes()
    assert details["report_sha256"] == hashlib.sha256(html).hexdigest()
    assert details["threshold"] == 5
    assert details["period"] == {"from": None, "to": None}
    assert details["out"] == str(folder.resolve())
    assert details["purpose"]
    assert details["counted"] == 60
    assert details["left_out"] == 0
    # The method section names the log's head before this entry.
    assert custody[-2]["hash"].encode() in html
    sums = (folder / "SHA256SUMS").read_text()
    for name, sha in details["files"].items():
        assert f"{sha}  {name}" in sums
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha


def test_sources_who_did_not_consent_change_nothing(
        tmp_path: Path, org: Org, made: tuple[Path, Path, Path], consenting: list[Submission],
        refusing: list[Submission]) -> None:
    _, _, out = report_of(tmp_path, org, [*refusing[:4], *consenting, *refusing[4:]])
    first = made[2]
    for path in first.iterdir():
        if path.suffix in (".csv", ".svg"):
            assert path.read_bytes() == (out / path.name).read_bytes(), path.name
    html = (out / "report.html").read_text("utf-8")
    assert "Left out for lack of consent: 8" in html
    assert "<dt>Counted (source agreed to anonymized advocacy)</dt><dd>60</dd>" in html


def test_period_threshold_and_language(tmp_path: Path, org: Org,
                                       consenting: list[Submission]) -> None:
    _, _, out = report_of(tmp_path, org, consenting, "--from", "2026-08-01", "--to",
                          "2026-09-30", "--threshold", "3", "--lang", "fa_AF")
    rows = read_csv(out)
    in_period = [s for s in consenting if "2026-08-01" <= s.day <= "2026-09-30"]
    months = {r["row"] for r in rows if r["table"] == "فرستاده‌ها بر اساس: ماه دریافت"} - {"مجموع"}
    assert months == {"2026-08", "2026-09"}
    assert all(v == "< 3" or int(v) >= 3 for v in (r["count"] for r in rows))
    html = (out / "report.html").read_text("utf-8")
    assert "dir='rtl'" in html
    assert "lang='fa-AF'" in html
    assert "خیبر پښتونخوا" in html  # option labels from the questionnaire, in Dari
    assert f"<dd>{len(in_period)}</dd>" in html


@pytest.mark.parametrize(("args", "message"), [
    (["--threshold", "2"], "at least 3"),
    (["--threshold", "x"], "not a whole number"),
    (["--from", "2026-13-01"], "not a day"),
    (["--lang", "de"], "invalid choice"),
])
def test_bad_options_are_refused_with_a_sentence(tmp_path: Path, args: list[str],
                                                 message: str) -> None:
    result = review("report", "--vault", tmp_path / "v", "--out", tmp_path / "o", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_an_output_folder_in_use_is_refused_and_kept(tmp_path: Path, org: Org) -> None:
    vault, passfile = make_vault(tmp_path, org)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = review("report", "--vault", vault, "--passphrase-file", passfile, "--out", out)
    assert result.returncode == 1
    assert "not an empty folder" in result.stderr
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_a_missing_questionnaire_is_a_sentence(tmp_path: Path, org: Org) -> None:
    vault, passfile = make_vault(tmp_path, org)
    result = review("report", "--vault", vault, "--passphrase-file", passfile, "--out",
                    tmp_path / "o", "--questionnaire", tmp_path / "nope.toml")
    assert result.returncode == 1
    assert "cannot read questionnaire" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_matplotlib_the_report_says_what_to_install(tmp_path: Path, org: Org) -> None:
    vault, passfile = make_vault(tmp_path, org)
    hide = tmp_path / "hide"
    (hide / "matplotlib").mkdir(parents=True)
    (hide / "matplotlib" / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {"PYTHONPATH": str(hide)}
    result = review("report", "--vault", vault, "--passphrase-file", passfile, "--out",
                    tmp_path / "o", env=env)
    assert result.returncode == 1
    assert "needs matplotlib" in result.stderr
    assert "review" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()
    # Every other command runs without it.
    assert review("list", "--vault", vault, "--passphrase-file", passfile,
                  env=env).returncode == 0


def test_an_empty_vault_makes_a_report_of_hidden_zeros(tmp_path: Path, org: Org) -> None:
    vault, passfile = make_vault(tmp_path, org)
    result = review("report", "--vault", vault, "--passphrase-file", passfile, "--out",
                    tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert {r["count"] for r in read_csv(tmp_path / "o")} == {"< 5"}
