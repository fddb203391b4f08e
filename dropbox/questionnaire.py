"""The testimony questionnaire: defined in a TOML file an organization can edit, validated here.

The file (the default is dropbox/questionnaires/default.toml; its header documents the format)
lists fields, each with a key, a type, a label and help text per language, options, and whether
an answer is required. `parse_questionnaire` checks a parsed document and builds a frozen
`Questionnaire`; `validate` checks what a source sent and returns the answers to put inside the
encrypted manifest, or errors per field in the page's language. Both are pure (no I/O):
`load_questionnaire` is the one function that reads a file.

Form controls are named "q_<key>", so they can never collide with the page's own fields (the CSRF
token, the file input "files"); file and audio fields reach `validate` as the list of the file
names that were uploaded under that name (their bytes went straight into the encryptor). One
textarea may instead take the page's own name "message" (`name = "message"`): the intake then
stores it as the submission's message, in its own ciphertext, and the answer only points there.
`satisfied_by` may name the page's file input "files" ("write it, record it, or send a file").
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast, get_args

from dropbox.config import FALLBACK_LOCALE, Localized
from dropbox.localnum import format_number
from dropbox.tolerant_date import ImpossibleDateError, read_date
from keys.errors import ConfigError, InputError

FieldType = Literal["text", "textarea", "choice", "multichoice", "date", "file", "audio", "consent"]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
CHOICE_TYPES = frozenset({"choice", "multichoice", "consent"})
FILE_TYPES = frozenset({"file", "audio"})
FORM_PREFIX = "q_"
DEFAULT_MAX_LENGTH = {"text": 500, "textarea": 50_000, "date": 100}
_KEY = re.compile(r"[a-z][a-z0-9_]{0,39}")
MESSAGE_NAME = "message"  # the page's message textarea, stored as its own ciphertext
FILES_NAME = "files"  # the page's own file input


def N_(message: str) -> str:  # the marker name Babel extracts by default
    """Mark a message for extraction; it is translated later, in the page's language."""
    return message


class QuestionnaireError(ConfigError):
    """A questionnaire file is malformed: the message names the field and what is wrong."""


@dataclass(frozen=True)
class Option:
    value: str
    label: Localized
    required: bool = False  # consent: this box must be ticked
    exclusive: bool = False  # multichoice: cannot be chosen with another option ("none")


@dataclass(frozen=True)
class Field:
    key: str
    type: FieldType
    label: Localized
    help: Localized | None = None
    required: bool = False
    # `required` is also met when any of these fields is answered ("write it, or record it").
    satisfied_by: tuple[str, ...] = ()
    required_message: Localized | None = None
    options: tuple[Option, ...] = ()
    max_length: int = 0
    name: str | None = None  # MESSAGE_NAME, or None for "q_<key>"

    @property
    def form_name(self) -> str:
        return self.name or FORM_PREFIX + self.key

    @property
    def must_answer(self) -> bool:
        """Required, or a consent field with a box that must be ticked."""
        return self.required or any(o.required for o in self.options)

    @property
    def is_file(self) -> bool:
        return self.type in FILE_TYPES

    def option(self, value: str) -> Option | None:
        return next((o for o in self.options if o.value == value), None)


@dataclass(frozen=True)
class Questionnaire:
    id: str
    version: int
    languages: tuple[str, ...]
    fields: tuple[Field, ...]

    def field(self, key: str) -> Field:
        return next(f for f in self.fields if f.key == key)



class AnswersInvalidError(InputError):
    """A submission's answers did not validate. `errors` by field key (in the page language),
    `values` the text fields as sent (to show them again), `files_dropped` whether files had
    been chosen (their ciphertexts were deleted; the source must choose them again)."""

    def __init__(self, errors: dict[str, str], values: dict[str, list[str]],
                 files_dropped: bool) -> None:
        super().__init__(f"{len(errors)} answer(s) need correcting: {', '.join(errors)}")
        self.errors = errors
        self.values = values
        self.files_dropped = files_dropped


class Validation(NamedTuple):
    answers: dict[str, Any]  # key -> JSON value, only answered fields
    errors: dict[str, str]  # key -> message in the page's language


# --- loading -------------------------------------------------------------------------------------


def default_questionnaire_path() -> Path:
    return Path(str(resources.files("dropbox").joinpath("questionnaires/default.toml")))


def load_questionnaire(path: Path | None = None) -> Questionnaire:
    """Read and check a questionnaire file (the default one when `path` is None)."""
    path = path or default_questionnaire_path()
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise QuestionnaireError(f"cannot read questionnaire {path}: {exc}") from exc
    try:
        return parse_questionnaire(document)
    except QuestionnaireError as exc:
        raise QuestionnaireError(f"questionnaire {path}: {exc}") from exc


def parse_questionnaire(document: Mapping[str, Any]) -> Questionnaire:
    """Build a Questionnaire from a parsed TOML document, checking everything an edit can break."""
    head = _table(document.get("questionnaire"), "[questionnaire]")
    languages = tuple(_str_list(head.get("languages"), "questionnaire.languages"))
    if FALLBACK_LOCALE not in languages:
        raise QuestionnaireError(f"questionnaire.languages must include {FALLBACK_LOCALE!r}")
    raw_fields = document.get("field")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise QuestionnaireError("the questionnaire has no [[field]] entries")
    fields = tuple(_parse_field(_table(f, "[[field]]"), languages) for f in raw_fields)
    keys = [f.key for f in fields]
    if len(set(keys)) != len(keys):
        raise QuestionnaireError("two fields have the same key")
    if sum(1 for f in fields if f.name) > 1:
        raise QuestionnaireError(f"only one field may be named {MESSAGE_NAME!r}")
    for f in fields:
        unknown = set(f.satisfied_by) - set(keys) - {FILES_NAME}
        if unknown:
            raise QuestionnaireError(f"field {f.key!r}: satisfied_by names unknown keys "
                                     f"{sorted(unknown)}")
    version = head.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise QuestionnaireError("questionnaire.version must be an integer")
    return Questionnaire(id=_str(head.get("id"), "questionnaire.id"), version=version,
                         languages=languages, fields=fields)


def _parse_field(raw: Mapping[str, Any], languages: Sequence[str]) -> Field:
    key = _str(raw.get("key"), "field.key")
    if not _KEY.fullmatch(key):
        raise QuestionnaireError(f"field key {key!r}: use a-z, 0-9 and _, starting with a letter")
    where = f"field {key!r}"
    kind = raw.get("type")
    if kind not in FIELD_TYPES:
        raise QuestionnaireError(f"{where}: type must be one of {', '.join(FIELD_TYPES)}")
    options = tuple(_parse_option(_table(o, f"{where} option"), languages, where)
                    for o in raw.get("option", []))
    if (kind in CHOICE_TYPES) != bool(options):
        raise QuestionnaireError(f"{where}: choice and consent fields need options, others none")
    if len({o.value for o in options}) != len(options):
        raise QuestionnaireError(f"{where}: two options have the same value")
    max_length = raw.get("max_length", DEFAULT_MAX_LENGTH.get(str(kind), 0))
    if not isinstance(max_length, int) or max_length < 0:
        raise QuestionnaireError(f"{where}: max_length must be a positive integer")
    name = raw.get("name")
    if name is not None and (name != MESSAGE_NAME or kind != "textarea"):
        raise QuestionnaireError(f"{where}: only a textarea may set name, and only to "
                                 f"{MESSAGE_NAME!r}")
    if name is not None:
        max_length = 0  # the intake's message limit applies
    return Field(
        key=key, type=cast(FieldType, kind),
        label=_localized(raw.get("label"), languages, f"{where} label"),
        help=_optional_localized(raw.get("help"), languages, f"{where} help"),
        required=_bool(raw.get("required", False), f"{where} required"),
        satisfied_by=tuple(_str_list(raw.get("satisfied_by", []), f"{where} satisfied_by")),
        required_message=_optional_localized(raw.get("required_message"), languages,
                                             f"{where} required_message"),
        options=options, max_length=max_length, name=name,
    )


def _parse_option(raw: Mapping[str, Any], languages: Sequence[str], where: str) -> Option:
    value = _str(raw.get("value"), f"{where} option value")
    if not _KEY.fullmatch(value):
        raise QuestionnaireError(f"{where}: option value {value!r}: use a-z, 0-9 and _")
    return Option(value=value, label=_localized(raw.get("label"), languages, f"{where} {value}"),
                  required=_bool(raw.get("required", False), f"{where} {value} required"),
                  exclusive=_bool(raw.get("exclusive", False), f"{where} {value} exclusive"))


def _localized(raw: object, languages: Sequence[str], where: str) -> Localized:
    texts = _table(raw, where)
    missing = [lang for lang in languages if not isinstance(texts.get(lang), str)
               or not texts[lang].strip()]
    if missing:
        raise QuestionnaireError(f"{where}: no text for {', '.join(missing)}")
    return Localized({lang: str(text).strip() for lang, text in texts.items()})


def _optional_localized(raw: object, languages: Sequence[str], where: str) -> Localized | None:
    return None if raw is None else _localized(raw, languages, where)


def _table(raw: object, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise QuestionnaireError(f"{where} must be a table")
    return raw


def _str(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise QuestionnaireError(f"{where} must be a non-empty string")
    return raw


def _str_list(raw: object, where: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise QuestionnaireError(f"{where} must be a list of strings")
    return list(raw)


def _bool(raw: object, where: str) -> bool:
    if not isinstance(raw, bool):
        raise QuestionnaireError(f"{where} must be true or false")
    return raw


# --- validation ----------------------------------------------------------------------------------


def validate(definition: Questionnaire, fields: Mapping[str, Sequence[str]], locale: str,
             gettext: Callable[[str], str]) -> Validation:
    """Check what a source sent. `fields` maps form names ("q_<key>") to the values sent (for file
    fields, the names of the files uploaded); `gettext` translates into the page's language
    `locale`. Returns the answers (JSON values by key) and the errors by key."""
    answers: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in definition.fields:
        values = [v for v in fields.get(field.form_name, ()) if isinstance(v, str)]
        try:
            value = _read(field, values, locale)
        except _Invalid as problem:
            errors[field.key] = gettext(problem.message) % problem.params
            continue
        if value is not None:
            answers[field.key] = {"stored_as": MESSAGE_NAME} if field.name else value
    sent_files = any(fields.get(FILES_NAME, ()))
    for field in definition.fields:
        if (field.must_answer and field.key not in errors and not _answered(field, answers)
                and not (FILES_NAME in field.satisfied_by and sent_files)):
            errors[field.key] = (field.required_message.text(locale) if field.required_message
                                 else gettext(_REQUIRED[field.type]))
    return Validation(answers, errors)


def intake_check(definition: Questionnaire, locale: str, gettext: Callable[[str], str],
                 ) -> Callable[[dict[str, list[str]], dict[str, list[str]]], dict[str, Any]]:
    """The check the intake runs before committing anything (dropbox.intake.AnswersCheck):
    validate, then return the manifest record, or raise AnswersInvalidError."""

    def check(fields: dict[str, list[str]], files: dict[str, list[str]]) -> dict[str, Any]:
        result = validate(definition, {**fields, **files}, locale, gettext)
        if result.errors:
            dropped = any(name for names in files.values() for name in names)
            raise AnswersInvalidError(result.errors, fields, dropped)
        return manifest_answers(definition, result.answers, locale)

    return check


def manifest_answers(definition: Questionnaire, answers: Mapping[str, Any], locale: str,
                     ) -> dict[str, Any]:
    """The self-describing record that goes inside the encrypted manifest: which questionnaire,
    the page language, and per answered field its English question and the value."""
    return {
        "questionnaire": definition.id,
        "version": definition.version,
        "locale": locale,
        "answers": [
            {"key": f.key, "type": f.type, "question": f.label.text(FALLBACK_LOCALE),
             "value": answers[f.key]}
            for f in definition.fields if f.key in answers
        ],
    }


_REQUIRED: dict[str, str] = {
    "text": N_("Please answer this question."),
    "textarea": N_("Please answer this question."),
    "date": N_("Please answer this question."),
    "choice": N_("Please choose an answer."),
    "multichoice": N_("Please choose at least one answer."),
    "file": N_("Please choose a file."),
    "audio": N_("Please choose a recording."),
    "consent": N_("Please tick this box to go on."),
}


class _Invalid(InputError):
    """One answer's problem, caught inside validation and reported in AnswersInvalidError."""

    def __init__(self, message: str, **params: object) -> None:
        super().__init__(message)
        self.message = message
        self.params = params


def _answered(field: Field, answers: Mapping[str, Any]) -> bool:
    if field.type == "consent":
        value = answers.get(field.key, {})
        return all(value.get(o.value) for o in field.options if o.required) and any(value.values())
    return any(key in answers for key in (field.key, *field.satisfied_by))


def _read(field: Field, values: list[str], locale: str) -> Any:
    """The JSON value of one field, None when unanswered; raises _Invalid."""
    if field.type in CHOICE_TYPES:
        return _read_choices(field, values, locale)
    if field.is_file:
        names = [v for v in values if v]
        return names or None
    text = _clean_text(values[0] if values else "", multiline=field.type == "textarea")
    if not text:
        return None
    if field.max_length and len(text) > field.max_length:
        raise _Invalid(N_("Please write at most %(limit)s characters. You wrote %(count)s."),
                       limit=format_number(field.max_length, locale),
                       count=format_number(len(text), locale))
    if field.type == "date":
        try:
            return read_date(text).to_json()
        except ImpossibleDateError:
            raise _Invalid(N_("This date does not exist. Check the day and the month, "
                              "or write the date in words.")) from None
    return text


def _read_choices(field: Field, values: list[str], locale: str) -> Any:
    chosen = list(dict.fromkeys(v for v in values if v))
    if any(field.option(v) is None for v in chosen):
        raise _Invalid(N_("Please choose from the answers shown."))
    if field.type == "choice":
        if len(chosen) > 1:
            raise _Invalid(N_("Please choose only one answer."))
        return chosen[0] if chosen else None
    if field.type == "consent":
        if not chosen:
            return None
        return {o.value: o.value in chosen for o in field.options}
    exclusive = [o for o in field.options if o.exclusive and o.value in chosen]
    if exclusive and len(chosen) > 1:
        raise _Invalid(N_("“%(answer)s” cannot be chosen together with other answers."),
                       answer=exclusive[0].label.text(locale))
    return chosen or None


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0 but tab and newlines, DEL, C1


def _clean_text(value: str, *, multiline: bool) -> str:
    """What the source typed, minus C0 and C1 control characters (8-bit CSI is a terminal escape)
    and outer blank space; line ends as \\n."""
    value = _CONTROL.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))
    if not multiline:
        value = " ".join(value.split("\n"))
    return value.strip()
