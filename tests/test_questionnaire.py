"""The questionnaire definition file and validation (pure: no server, no I/O besides the file)."""

from __future__ import annotations

import copy
import tomllib
from datetime import date
from typing import Any

import pytest

from dropbox.questionnaire import (
    FIELD_TYPES,
    Questionnaire,
    QuestionnaireError,
    default_questionnaire_path,
    load_questionnaire,
    manifest_answers,
    parse_questionnaire,
    validate,
)
from dropbox.tolerant_date import ImpossibleDateError, read_date, solar_hijri_to_gregorian
from keys.errors import ConfigError

LOCALES = ("en", "fa_AF", "ps", "ur", "fa", "ar")


def identity(message: str) -> str:
    return message


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return tomllib.loads(default_questionnaire_path().read_text("utf-8"))


@pytest.fixture(scope="module")
def q() -> Questionnaire:
    return load_questionnaire()


def minimal(**extra: list[str]) -> dict[str, list[str]]:
    fields = {"message": ["They came at night."]}
    fields.update(extra)
    return fields


# --- the default questionnaire -------------------------------------------------------------------


def test_default_has_every_question_the_drop_needs(q: Questionnaire) -> None:
    types = {f.key: f.type for f in q.fields}
    assert types == {
        "what_happened": "textarea", "what_happened_audio": "audio", "when": "date",
        "province": "choice", "city": "text", "at_risk": "multichoice", "groups": "multichoice",
        "documents": "multichoice", "urgency": "choice", "consent_uses": "consent",
        "contact": "text",
    }
    # "What happened" is the page's own message textarea (stored as its own ciphertext).
    assert q.field("what_happened").form_name == "message"
    assert q.field("city").form_name == "q_city"
    assert {o.value for o in q.field("province").options} == {
        "khyber_pakhtunkhwa", "balochistan", "punjab", "sindh", "islamabad", "gilgit_baltistan",
        "azad_kashmir", "elsewhere"}
    assert {o.value for o in q.field("at_risk").options} == {"self", "family", "children"}
    assert {o.value for o in q.field("groups").options} == {
        "woman", "journalist", "activist", "minority", "lgbtq", "former_security"}
    assert {o.value for o in q.field("documents").options} == {"por_card", "acc", "unhcr", "none"}
    assert {o.value for o in q.field("consent_uses").options} == {"advocacy", "referral", "legal"}
    assert not q.field("contact").required


def test_default_is_written_in_all_six_languages(q: Questionnaire) -> None:
    assert q.languages == LOCALES
    for field in q.fields:
        texts = [field.label, *(o.label for o in field.options)]
        texts += [t for t in (field.help, field.required_message) if t is not None]
        for text in texts:
            assert set(text.texts) == set(LOCALES), field.key
            # The RTL languages really are in Arabic script, not English left in place.
            for code in ("fa_AF", "ps", "ur", "fa", "ar"):
                assert any("\u0600" <= ch <= "\u06ff" for ch in text.texts[code]), (field.key, code)


def test_a_localized_text_falls_back_by_language_then_english(q: Questionnaire) -> None:
    label = q.field("when").label
    assert label.text("ps") == "کله پېښ شول؟"
    assert label.text("fa_IR") == label.texts["fa"]
    assert label.text("de") == "When did it happen?"


def test_every_field_type_is_covered_by_the_format() -> None:
    assert set(FIELD_TYPES) == {"text", "textarea", "choice", "multichoice", "date", "file",
                                "audio", "consent"}


# --- what an edit can break ----------------------------------------------------------------------


@pytest.mark.parametrize(("edit", "complaint"), [
    (lambda d: d["field"][0]["label"].pop("ps"), "no text for ps"),
    (lambda d: d["field"][0].update(type="slider"), "type must be one of"),
    (lambda d: d["field"][1].update(key="what_happened"), "same key"),
    (lambda d: d["field"][0].update(key="Bad Key"), "use a-z"),
    (lambda d: d["field"][3]["option"].clear(), "need options"),
    (lambda d: d["field"][0].update(satisfied_by=["nothing"]), "unknown keys"),
    (lambda d: d["field"][2].update(name="message"), "only a textarea may set name"),
    (lambda d: d["field"][0].update(name="files"), "only a textarea may set name"),
    (lambda d: d["questionnaire"].update(version="1"), "version must be an integer"),
    (lambda d: d["questionnaire"]["languages"].remove("en"), "must include 'en'"),
    (lambda d: d.pop("field"), "no [[field]]"),
])
def test_a_broken_definition_is_refused_with_a_reason(document: dict[str, Any], edit: Any,
                                                      complaint: str) -> None:
    broken = copy.deepcopy(document)
    edit(broken)
    with pytest.raises(QuestionnaireError, match=complaint.replace("[", r"\[")) as info:
        parse_questionnaire(broken)
    assert isinstance(info.value, ConfigError)


def test_an_unreadable_file_names_itself(tmp_path: Any) -> None:
    bad = tmp_path / "q.toml"
    bad.write_text("[questionnaire\n", "utf-8")
    with pytest.raises(QuestionnaireError, match=r"q\.toml"):
        load_questionnaire(bad)


# --- validation ----------------------------------------------------------------------------------


def test_a_full_answer_in_pashto_is_kept_as_typed(q: Questionnaire) -> None:
    result = validate(q, minimal(
        q_when=["۱۵ حمل ۱۴۰۳"], q_province=["khyber_pakhtunkhwa"],
        q_city=["پېښور"], q_at_risk=["self", "children", "self"], q_groups=["journalist"],
        q_documents=["por_card", "unhcr"], q_urgency=["days"],
        q_consent_uses=["advocacy", "legal"], q_contact=["Signal: @safe"],
        q_what_happened_audio=["voice.ogg"],
    ), "ps", identity)
    assert result.errors == {}
    a = result.answers
    assert a["what_happened"] == {"stored_as": "message"}
    assert a["when"] == {"raw": "۱۵ حمل ۱۴۰۳", "iso": "2024-04-03", "precision": "day",
                         "calendar": "solar_hijri"}
    assert a["at_risk"] == ["self", "children"]
    assert a["consent_uses"] == {"advocacy": True, "referral": False, "legal": True}
    assert a["what_happened_audio"] == ["voice.ogg"]
    assert a["city"] == "پېښور"


def test_unanswered_optional_fields_are_left_out(q: Questionnaire) -> None:
    result = validate(q, minimal(q_city=["   "], q_groups=[]), "en", identity)
    assert result.errors == {}
    assert set(result.answers) == {"what_happened"}


@pytest.mark.parametrize("fields", [{"q_what_happened_audio": ["note.m4a"]},
                                    {"files": ["photo.jpg"]}, {"message": ["x"]}])
def test_a_message_a_recording_or_a_file_satisfies_what_happened(
        q: Questionnaire, fields: dict[str, list[str]]) -> None:
    assert validate(q, fields, "en", identity).errors == {}


def test_missing_answers_get_the_file_s_message_in_the_page_language(q: Questionnaire) -> None:
    result = validate(q, {"q_city": ["Quetta"], "message": ["  \r\n "], "files": [""]}, "ps",
                      identity)
    assert result.errors == {
        "what_happened": "مهرباني وکړئ ولیکئ چې څه وشول، یو غږ ثبت کړئ، یا یو فایل وټاکئ.",
    }
    assert result.answers == {"city": "Quetta"}


REQUIRED_CONSENT = {
    "questionnaire": {"id": "t", "version": 1, "languages": ["en"]},
    "field": [{"key": "ok", "type": "consent", "label": {"en": "Before you send"},
               "option": [{"value": "read", "required": True, "label": {"en": "I understand"}},
                          {"value": "share", "label": {"en": "You may share it"}}]}],
}


@pytest.mark.parametrize(("ticked", "error"), [([], True), (["share"], True), (["read"], False),
                                               (["read", "share"], False)])
def test_a_required_consent_box_must_be_ticked(ticked: list[str], error: bool) -> None:
    translated = {"Please tick this box to go on.": "TICK"}
    definition = parse_questionnaire(REQUIRED_CONSENT)
    result = validate(definition, {"q_ok": ticked}, "en", lambda m: translated.get(m, m))
    assert result.errors == ({"ok": "TICK"} if error else {})
    if not error:
        assert result.answers == {"ok": {"read": True, "share": "share" in ticked}}


@pytest.mark.parametrize(("fields", "key", "message"), [
    ({"q_province": ["mars"]}, "province", "Please choose from the answers shown."),
    ({"q_urgency": ["days", "weeks"]}, "urgency", "Please choose only one answer."),
    ({"q_consent_uses": ["sell_it"]}, "consent_uses", "Please choose from the answers shown."),
    ({"q_documents": ["por_card", "ration_card"]}, "documents",
     "Please choose from the answers shown."),
    ({"q_when": ["31/02/2024"]}, "when", "This date does not exist."),
    ({"q_city": ["x" * 201]}, "city", "Please write at most 200 characters. You wrote 201."),
])
def test_invalid_answers_are_refused(q: Questionnaire, fields: dict[str, list[str]], key: str,
                                     message: str) -> None:
    result = validate(q, minimal(**fields), "en", identity)
    assert list(result.errors) == [key]
    assert result.errors[key].startswith(message)
    assert key not in result.answers


def test_a_length_error_counts_in_the_page_numerals(q: Questionnaire) -> None:
    result = validate(q, minimal(q_city=["x" * 201]), "ps", identity)
    assert result.errors["city"] == "Please write at most ۲۰۰ characters. You wrote ۲۰۱."


def test_none_cannot_be_combined_and_the_message_names_it_in_the_page_language(
        q: Questionnaire) -> None:
    result = validate(q, minimal(q_documents=["none", "acc"]), "fa_AF", identity)
    assert result.errors == {"documents": "“هیچ‌کدام” cannot be chosen together with other answers."}


def test_the_manifest_record_is_self_describing(q: Questionnaire) -> None:
    result = validate(q, minimal(q_urgency=["weeks"]), "fa_AF", identity)
    record = manifest_answers(q, result.answers, "fa_AF")
    assert record["questionnaire"] == "amanat-pk-default"
    assert record["locale"] == "fa_AF"
    assert [a["key"] for a in record["answers"]] == ["what_happened", "urgency"]
    assert record["answers"][1] == {"key": "urgency", "type": "choice",
                                    "question": "Do you expect to be arrested or deported soon?",
                                    "value": "weeks"}


# --- tolerant dates ------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "iso", "precision", "calendar"), [
    ("2024-03-05", "2024-03-05", "day", "gregorian"),
    ("5/3/2024", "2024-03-05", "day", "gregorian"),
    ("۵/۳/۲۰۲۴", "2024-03-05", "day", "gregorian"),
    ("٥-٣-٢٠٢٤", "2024-03-05", "day", "gregorian"),
    ("3/25/2024", "2024-03-25", "day", "gregorian"),
    ("5/3/24", "2024-03-05", "day", "gregorian"),
    ("March 2024", "2024-03-01", "month", "gregorian"),
    ("12 مارچ 2024", "2024-03-12", "day", "gregorian"),
    ("2024", "2024-01-01", "year", "gregorian"),
    ("1402", "2023-03-21", "year", "solar_hijri"),
    ("حمل ۱۴۰۲", "2023-03-21", "month", "solar_hijri"),
    ("15 Hamal 1402", "2023-04-04", "day", "solar_hijri"),
    ("۱۴۰۲/۱۲/۲۹", "2024-03-19", "day", "solar_hijri"),
    ("1 وری 1403", "2024-03-20", "day", "solar_hijri"),
])
def test_dates_written_many_ways_are_understood(raw: str, iso: str, precision: str,
                                                calendar: str) -> None:
    answer = read_date(raw)
    assert (answer.raw, answer.iso, answer.precision, answer.calendar) == (raw, iso, precision,
                                                                            calendar)


@pytest.mark.parametrize("raw", ["last winter", "two weeks before Eid", "Eid 2024",
                                 "March 1402", "د ۱۴۰۲ کال په دی میاشت کې", "12345"])
def test_words_that_are_not_a_date_are_kept_as_written(raw: str) -> None:
    assert read_date(raw).to_json() == {"raw": raw, "iso": None, "precision": None,
                                        "calendar": None}


@pytest.mark.parametrize("raw", ["31/02/2024", "2024-13-01", "1402/12/31", "32 حمل 1402",
                                 "31/7/1403"])
def test_dates_that_cannot_exist_are_reported(raw: str) -> None:
    with pytest.raises(ImpossibleDateError):
        read_date(raw)


def test_solar_hijri_leap_years_follow_the_calendar() -> None:
    assert solar_hijri_to_gregorian(1399, 12, 30) == date(2021, 3, 20)  # 1399 is a leap year
    assert solar_hijri_to_gregorian(1403, 1, 1) == date(2024, 3, 20)
    assert solar_hijri_to_gregorian(1403, 7, 1) == date(2024, 9, 22)
    with pytest.raises(ImpossibleDateError):
        solar_hijri_to_gregorian(1402, 12, 30)  # 1402 is not


def test_c1_and_c0_controls_are_stripped_at_intake(q: Questionnaire) -> None:
    result = validate(q, minimal(q_city=["Pesh\x9b31mawar\x1b\x85"]), "en", identity)
    assert result.answers["city"] == "Pesh31mawar"
