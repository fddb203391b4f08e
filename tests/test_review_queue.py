"""review/queue.py and the labelled answers, without a vault or a screen: the triage record
taken at import, the urgency order, sorting, the filter syntax, and values a crafted bundle could
carry."""

from __future__ import annotations

from typing import Any

from keys.manifest import IntakeManifest
from review.answers import labelled_answers, questionnaire_labels
from review.queue import (
    MAX_TRIAGE_ITEMS,
    Filter,
    Row,
    matches,
    parse_filter,
    rows,
    select,
    sort_rows,
    triage,
    urgency_rank,
)


def intake(answers: list[dict[str, Any]] | None) -> IntakeManifest:
    record = None if answers is None else {"questionnaire": "q", "version": 1, "answers": answers}
    return IntakeManifest(received_day="2026-11-01", message=None, files=(), answers={},
                          questionnaire=record)


def sub(sid: str, day: str, urgency: object = None, **extra: Any) -> dict[str, Any]:
    return {"id": sid, "day": day, "source": f"src-{sid}", "tags": [], "notes": [],
            "triage": {"urgency": urgency, "groups": [], "consent": []}, **extra}


def test_triage_takes_urgency_groups_and_consented_uses() -> None:
    found = triage(intake([
        {"key": "urgency", "type": "choice", "question": "?", "value": "weeks"},
        {"key": "groups", "type": "multichoice", "question": "?", "value": ["woman", "woman"]},
        {"key": "consent_uses", "type": "consent", "question": "?",
         "value": {"advocacy": True, "referral": False, "legal": "yes"}},
        {"key": "city", "type": "text", "question": "?", "value": "Peshawar"},
    ]))
    assert found == {"urgency": "weeks", "groups": ["woman"], "consent": ["advocacy"]}


def test_triage_of_a_submission_without_questionnaire_is_empty() -> None:
    assert triage(intake(None)) == {"urgency": None, "groups": [], "consent": []}


def test_triage_ignores_crafted_shapes_and_caps_lists() -> None:
    found = triage(intake([
        {"key": "urgency", "type": "choice", "question": "?", "value": ["days"]},
        {"key": "groups", "type": "multichoice", "question": "?",
         "value": [f"g{n}" for n in range(500)] + [{"x": 1}]},
        {"key": "consent_uses", "type": "consent", "question": "?", "value": ["advocacy"]},
    ]))
    assert found["urgency"] is None
    assert len(found["groups"]) == MAX_TRIAGE_ITEMS
    assert found["consent"] == []


def test_urgency_order_most_urgent_first_unknown_last() -> None:
    ranks = [urgency_rank(v) for v in ("days", "weeks", "unsure", "no", None, "🔥", 3)]
    assert ranks == [0, 1, 2, 3, 4, 4, 4]


def test_sort_by_urgency_then_oldest_day_or_by_day() -> None:
    subs = [sub("a", "2026-11-03", "no"), sub("b", "2026-11-02", "days"),
            sub("c", "2026-11-01", None), sub("d", "2026-11-01", "days"),
            sub("e", "2026-10-01", "crafted"), sub("f", "2026-11-05", "weeks")]
    all_rows = rows(subs, [])
    assert [r.id for r in sort_rows(all_rows)] == ["d", "b", "f", "a", "e", "c"]
    assert [r.id for r in sort_rows(all_rows, "day")] == ["e", "c", "d", "b", "a", "f"]


def test_replied_means_a_reply_to_the_source_on_or_after_the_day() -> None:
    subs = [sub("a", "2026-11-03"), sub("b", "2026-11-05", source="src-a")]
    subs[1]["source"] = "src-a"
    found = rows(subs, [{"source": "src-a", "day": "2026-11-04"}])
    assert [r.replied for r in found] == [True, False]


def test_parse_filter_and_match() -> None:
    wanted = parse_filter("tag:urgent consent:legal Urgency:days  police  raid  tag:x:y")
    assert wanted == Filter(tag="x:y", urgency="days", consent="legal", text="police raid")
    assert parse_filter("").empty
    row = rows([sub("a", "2026-11-01", "days", excerpt="Police RAID at night")], [])[0]
    assert not matches(row, wanted)
    assert matches(row, Filter(urgency="days", text="police raid"))
    assert matches(row, Filter(text="knife"), hits=frozenset({"a"}))
    assert not matches(row, Filter(text="knife"), hits=frozenset({"b"}))
    unanswered = rows([sub("b", "2026-11-01", "crafted")], [])[0]
    assert matches(unanswered, Filter(urgency="none"))
    assert not matches(row, Filter(urgency="none"))


def test_select_filters_then_sorts() -> None:
    subs = [sub("a", "2026-11-03", "no", tags=["t"]), sub("b", "2026-11-02", "days", tags=["t"]),
            sub("c", "2026-11-01", "days")]
    assert [r.id for r in select(rows(subs, []), Filter(tag="t"))] == ["b", "a"]


def _file(sha: str, phash: str | None = None, **metadata: Any) -> dict[str, Any]:
    """An attachment's record as import keeps it (review/metadata.py)."""
    return {"ciphertext": f"ct-{sha}", "sha256": sha, "size": 1, "metadata": metadata,
            **({"phash": phash} if phash else {})}


def test_rows_carry_the_findings_and_matches_import_recorded() -> None:
    subs = [sub("a", "2026-11-01", files=[_file("s1", gps=[34.0, 71.5], times=["2026"])]),
            sub("b", "2026-11-02", files=[_file("s1"), _file("s2", device="Pixel 7")]),
            sub("c", "2026-11-03", files=[_file("s3", author="A. Khan")]),
            sub("d", "2026-11-04", files=[_file("s4", times=["2026"])])]
    by_id = {r.id: r for r in rows(subs, [])}
    assert by_id["a"].duplicates == ("b",)
    assert by_id["a"].warnings == ("duplicate", "gps")  # times alone identify no one
    assert by_id["b"].warnings == ("duplicate", "device")
    assert by_id["c"].warnings == ("author",)
    assert by_id["d"].warnings == ()


def test_records_from_before_metadata_was_read_warn_of_nothing() -> None:
    row = rows([sub("a", "2026-11-01", duplicates=["b"], metadata={"gps": [1, 2]})], [])[0]
    assert row.duplicates == ()
    assert row.warnings == ()


def test_a_record_without_triage_is_a_row_all_the_same() -> None:
    row = rows([{"id": "a", "day": "2026-11-01", "source": "s", "tags": "x",
                 "readable": False}], [])[0]
    assert row == Row("a", "2026-11-01", "s", None, (), (), (), False, (), (), (), "", "sealed")


def test_labelled_answers_in_dari_with_unknown_options_marked() -> None:
    labels = questionnaire_labels(None, "fa_AF")
    found = dict(labelled_answers(intake([
        {"key": "province", "type": "choice", "question": "Province?",
         "value": "khyber_pakhtunkhwa"},
        {"key": "documents", "type": "multichoice", "question": "Docs?",
         "value": ["por_card", "forged"]},
        {"key": "consent_uses", "type": "consent", "question": "Consent?",
         "value": {"advocacy": True, "legal": False}},
        {"key": "city", "type": "text", "question": "City?", "value": "پېښور"},
        {"key": "unknown_key", "type": "text", "question": "Asked?", "value": "x"},
    ]), labels))
    assert found["ایالت یا منطقه‌ای که در آن اتفاق افتاد"] == "خیبر پښتونخوا"
    docs = next(v for k, v in found.items() if "کارت ثبت نام (PoR)" in v)
    assert docs == "کارت ثبت نام (PoR)\nforged (not an option of this questionnaire)"
    consent = next(v for v in found.values() if v.startswith("✓"))
    assert consent.splitlines()[1].startswith("✗ ")
    assert "پېښور" in found.values()
    assert found["Asked?"] == "x"
