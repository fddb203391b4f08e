"""review/report.py without a vault: crafted-but-signed answer records count as nothing they do
not prove, and the questionnaire file is read with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from review.answers import QuestionnaireFileError, questionnaire_labels
from review.report import ReportError, build_report, categories, consented, structured_answers

LABELS = questionnaire_labels(None, "en")
COUNTS = {"in_vault": 0, "in_period": 0, "counted": 0, "left_out": 0}


def sub(answers: list[Any] | Any, day: str = "2026-08-03") -> dict[str, Any]:
    return {"id": "x", "day": day, "questionnaire": {"answers": answers}}


def item(key: str, value: Any, kind: str = "choice") -> dict[str, Any]:
    return {"key": key, "type": kind, "question": "?", "value": value}


@pytest.mark.parametrize("value", [
    {"advocacy": "true"}, {"advocacy": 1}, {"Advocacy": True}, ["advocacy"], "advocacy", None,
    {"advocacy": False, "referral": True},
])
def test_only_a_ticked_advocacy_box_is_consent(value: Any) -> None:
    assert not consented(structured_answers(sub([item("consent_uses", value, "consent")])),
                         LABELS)


def test_a_ticked_advocacy_box_is_consent_only_under_a_consent_question() -> None:
    ticked = {"advocacy": True}
    assert consented(structured_answers(sub([item("consent_uses", ticked, "consent")])), LABELS)
    # A crafted record that puts the box under another question proves nothing.
    assert not consented(structured_answers(sub([item("province", ticked)])), LABELS)


@pytest.mark.parametrize("record", [None, "text", 5, {"answers": "x"}, {"answers": [1, "a"]}])
def test_records_of_the_wrong_shape_are_no_answers(record: Any) -> None:
    assert structured_answers({"questionnaire": record}) == {}


@pytest.mark.parametrize("value", [
    "Peshawar", {"sindh": True}, 7, ["sindh", "punjab"], "", "SINDH", "sindh\u200f",
])
def test_a_value_that_is_no_single_option_is_not_answered(value: Any) -> None:
    # A list for a single choice too: each submission counts once in a single-choice table.
    assert categories(sub([]), {"province": value}, LABELS)["province"] == [""]


def test_multiple_choices_are_checked_one_by_one() -> None:
    found = categories(sub([]), {"groups": ["woman", "woman", "<script>", 3, "journalist"]},
                       LABELS)
    assert found["groups"] == ["woman", "journalist"]


@pytest.mark.parametrize("day", ["2026-13-01", "2026-8-1", "", "2026-08-01T10:00", "\u202e"])
def test_a_day_that_is_no_day_has_no_month(day: str) -> None:
    assert categories(sub([], day), {}, LABELS)["month"] == [""]


def test_many_crafted_answers_cost_what_they_are() -> None:
    huge = sub([item("groups", ["woman"] * 100_000, "multichoice")])
    report = build_report([huge] * 3, LABELS, 5, COUNTS)
    assert report.values[("groups", "woman")] == 3


def test_a_questionnaire_without_the_report_questions_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text('[[field]]\nkey = "x"\ntype = "text"\nlabel = { en = "X" }\n')
    with pytest.raises(ReportError, match="no choice question 'province'"):
        build_report([], questionnaire_labels(path, "en"), 5, COUNTS)


@pytest.mark.parametrize("text", ["", "not toml [", "[[field]]\nkey = 1\n",
                                  "[[field]]\nkey = 'a'\ntype = 'choice'\nlabel = 'plain'\n",
                                  "field = 3\n", "\x00" * 10])
def test_a_malformed_questionnaire_is_a_sentence(tmp_path: Path, text: str) -> None:
    path = tmp_path / "q.toml"
    path.write_text(text)
    with pytest.raises(QuestionnaireFileError, match="malformed"):
        questionnaire_labels(path, "en")


def test_labels_fall_back_from_dari_to_persian_to_english(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text('[[field]]\nkey = "a"\ntype = "choice"\nlabel = { en = "E", fa = "F" }\n'
                    '[[field.option]]\nvalue = "v"\nlabel = { en = "OE" }\n')
    labels = questionnaire_labels(path, "fa_AF")
    assert labels.questions["a"] == "F"
    assert labels.options["a"] == (("v", "OE"),)
