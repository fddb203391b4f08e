"""The submission (intake) manifest: a strict schema shared by its writer and its reader.

The server's intake (dropbox/intake.py) writes one per submission, encrypted like the rest; the
review tool (review/importer.py) decrypts and reads it. A compromised server holds the transfer
signing key, so a manifest that arrives in a verified bundle can still be crafted: the reader
trusts nothing in it. `decode_intake_manifest` checks types, lengths, hash shapes, nesting depth,
counts and sizes against the limits the server signed into the bundle (`IntakeLimits`, capped by
`CEILING`), and `encode_intake_manifest` refuses to write what the reader would refuse.

Pure: bytes in, typed values out (docs/format.md, section 5.5).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import Any

from keys.errors import InputError

INTAKE_FORMAT = "amanat-manifest/v1"
MIB = 1024 * 1024
MAX_DEPTH = 8  # JSON nesting of the whole document (answers values sit at depth 6 at most)
MAX_VALUE_DEPTH = 2  # inside one questionnaire answer value: {"a": true} or ["x", "y"]
MAX_FIELD_NAME_CHARS = 256
MAX_FILENAME_CHARS = 1024
MAX_CONTENT_TYPE_CHARS = 255
MAX_QUESTION_CHARS = 4096
MAX_VALUE_ITEMS = 256  # entries of one list or object answer value
MAX_DOCUMENT_BYTES = 64 * MIB  # whatever the limits: a reader holds the document in memory

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # keys/bundle.py member names
_DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_LOCALE_RE = re.compile(r"[A-Za-z]{2,3}(_[A-Za-z]{2,4})?")
_CONTENT_TYPE_RE = re.compile(r"[\x20-\x7e]{1,255}")
_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")  # dropbox/questionnaire.py field keys


class IntakeManifestError(InputError):
    """A submission manifest breaks the schema; the message names the first problem."""


@dataclass(frozen=True)
class IntakeLimits:
    """The intake limits a server enforces, signed into every transfer bundle it writes."""

    max_message_bytes: int = 4 * MIB
    max_file_bytes: int = 2 * 1024 * MIB
    max_files: int = 50
    max_fields: int = 100
    max_field_bytes: int = 8 * 1024

    def to_json(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, value: object) -> IntakeLimits:
        """Strict: exactly these keys, each a positive integer (a reader caps them: `capped`)."""
        names = {f.name for f in fields(cls)}
        if not isinstance(value, dict) or set(value) != names:
            raise IntakeManifestError(f"limits must be an object with exactly {sorted(names)}")
        out = {}
        for name in sorted(names):
            n, top = value[name], 2**53
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= top:
                raise IntakeManifestError(f"limit {name} {n!r} is not an integer in 1..{top}")
            out[name] = n
        return cls(**out)

    def capped(self) -> IntakeLimits:
        """These limits, none above CEILING (what a reader accepts whatever a server signs)."""
        return IntakeLimits(**{f.name: min(getattr(self, f.name), getattr(CEILING, f.name))
                               for f in fields(self)})

    def max_document_bytes(self) -> int:
        """A bound on an honest manifest's size: every field and question at its longest, JSON
        escaping included (6 bytes per character at worst), plus the file entries; never over
        MAX_DOCUMENT_BYTES."""
        per_field = 6 * (self.max_field_bytes + MAX_FIELD_NAME_CHARS + MAX_QUESTION_CHARS) + 512
        per_file = 6 * (MAX_FILENAME_CHARS + MAX_CONTENT_TYPE_CHARS + MAX_FIELD_NAME_CHARS) + 512
        bound = 2 * self.max_fields * per_field + (self.max_files + 1) * per_file + 64 * 1024
        return min(bound, MAX_DOCUMENT_BYTES)


# What the review tool accepts at most, whatever a (possibly compromised) server signs: a message
# is held in memory by `show`; a file is a bundle member (under 8 GiB).
CEILING = IntakeLimits(
    max_message_bytes=64 * MIB,
    max_file_bytes=8**11 - 1,
    max_files=1000,
    max_fields=1000,
    max_field_bytes=1 * MIB,
)
DEFAULT_LIMITS = IntakeLimits()  # a bundle that signs no limits: the server's defaults


@dataclass(frozen=True)
class FileEntry:
    """One plaintext part as received: the message or an uploaded file."""

    field: str
    filename: str
    content_type: str
    size: int
    sha256: str  # of the plaintext
    ciphertext: str  # the member name of its age file in the bundle


@dataclass(frozen=True)
class IntakeManifest:
    received_day: str
    message: FileEntry | None
    files: tuple[FileEntry, ...]
    answers: dict[str, list[str]]  # raw form fields: name -> values as sent
    questionnaire: dict[str, Any] | None = None  # dropbox/questionnaire.py manifest_answers
    locale: str | None = None


# --- encoding ----------------------------------------------------------------------------------


def encode_intake_manifest(manifest: IntakeManifest, limits: IntakeLimits) -> bytes:
    """UTF-8 JSON, keys sorted. Refuses (IntakeManifestError) what the reader would refuse."""
    doc: dict[str, Any] = {
        "format": INTAKE_FORMAT,
        "received_day": manifest.received_day,
        "message": _entry_doc(manifest.message) if manifest.message else None,
        "files": [_entry_doc(f) for f in manifest.files],
        "answers": manifest.answers,
    }
    if manifest.questionnaire is not None:
        doc["questionnaire"] = manifest.questionnaire
    if manifest.locale is not None:
        doc["locale"] = manifest.locale
    data = json.dumps(doc, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")
    decode_intake_manifest(data, limits)
    return data


def _entry_doc(entry: FileEntry) -> dict[str, Any]:
    return {
        "field": entry.field,
        "filename": entry.filename,
        "content_type": entry.content_type,
        "size": entry.size,
        "sha256": entry.sha256,
        "ciphertext": entry.ciphertext,
    }


def fit_content_type(value: str) -> str:
    """A browser's Content-Type as the schema accepts it (else the generic type)."""
    value = value.strip()[:MAX_CONTENT_TYPE_CHARS]
    return value if _CONTENT_TYPE_RE.fullmatch(value) else "application/octet-stream"


def fit_text(value: str, limit: int) -> str:
    """`value` cut to at most `limit` characters (file and field names from a browser)."""
    return value[:limit]


# --- decoding ----------------------------------------------------------------------------------

_TOP_KEYS = {"format", "received_day", "message", "files", "answers"}
_OPTIONAL_KEYS = {"questionnaire", "locale"}
_ENTRY_KEYS = {"field", "filename", "content_type", "size", "sha256", "ciphertext"}


def decode_intake_manifest(data: bytes, limits: IntakeLimits) -> IntakeManifest:
    """Parse and check one manifest against `limits` (capped by CEILING)."""
    limits = limits.capped()
    if len(data) > limits.max_document_bytes():
        raise IntakeManifestError(f"the manifest is {len(data)} bytes, over its size bound")
    _check_depth(data)
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise IntakeManifestError(f"the manifest is not UTF-8 JSON: {exc}") from None
    doc = _obj(doc, "manifest", _TOP_KEYS, _OPTIONAL_KEYS)
    if doc["format"] != INTAKE_FORMAT:
        raise IntakeManifestError(f"unknown manifest format {_show(doc['format'])}")
    raw_files = _list(doc["files"], "files", limits.max_files)
    message = None
    if doc["message"] is not None:
        message = _entry(doc["message"], "message", limits.max_message_bytes)
    files = tuple(_entry(f, "file", limits.max_file_bytes) for f in raw_files)
    names = [e.ciphertext for e in ([message] if message else []) + list(files)]
    if len(set(names)) != len(names):
        raise IntakeManifestError("two entries name the same ciphertext")
    questionnaire = doc.get("questionnaire")
    locale = doc.get("locale")
    return IntakeManifest(
        received_day=_match(_DAY_RE, doc["received_day"], "received_day"),
        message=message,
        files=files,
        answers=_answers(doc["answers"], limits),
        questionnaire=None if questionnaire is None else _questionnaire(questionnaire, limits),
        locale=None if locale is None else _match(_LOCALE_RE, locale, "locale"),
    )


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def _check_depth(data: bytes) -> None:
    """Refuse nesting deeper than MAX_DEPTH before parsing: a deep document would exhaust the
    parser's (and every later reader's) recursion. Brackets inside strings do not count."""
    depth = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub(b'""', data)):
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise IntakeManifestError(f"the manifest nests deeper than {MAX_DEPTH} levels")
        else:
            depth -= 1


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise IntakeManifestError(f"the manifest repeats the key {_show(key)}")
        out[key] = value
    return out


def _show(value: object) -> str:
    """A value quoted for an error message: short, with every control character escaped."""
    return ascii(value if not isinstance(value, str) else value[:60])[:80]


def _obj(
    value: object, what: str, required: set[str], optional: set[str] | None = None
) -> dict[str, Any]:
    optional = optional or set()
    if not isinstance(value, dict):
        raise IntakeManifestError(f"{what} is not an object")
    keys = set(value)
    if not required <= keys or not keys <= required | optional:
        extra = sorted(_show(k) for k in keys - required - optional)
        raise IntakeManifestError(
            f"{what}: unexpected keys {extra}, missing keys {sorted(required - keys)}"
        )
    return value


def _list(value: object, what: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise IntakeManifestError(f"{what} is not a list")
    if len(value) > limit:
        raise IntakeManifestError(f"{what} has {len(value)} entries, over the limit of {limit}")
    return value


def _str(value: object, what: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise IntakeManifestError(f"{what} is not a string")
    if len(value) > max_chars:
        raise IntakeManifestError(f"{what} is {len(value)} characters, over {max_chars}")
    return value


def _match(pattern: re.Pattern[str], value: object, what: str) -> str:
    text = _str(value, what, 256)
    if not pattern.fullmatch(text):
        raise IntakeManifestError(f"{what} {_show(text)} is malformed")
    return text


def _int(value: object, what: str, top: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
        raise IntakeManifestError(f"{what} {_show(value)} is not an integer in 0..{top}")
    return value


def _entry(value: object, what: str, max_size: int) -> FileEntry:
    doc = _obj(value, what, _ENTRY_KEYS)
    return FileEntry(
        field=_str(doc["field"], f"{what} field", MAX_FIELD_NAME_CHARS),
        filename=_str(doc["filename"], f"{what} filename", MAX_FILENAME_CHARS),
        content_type=_match(_CONTENT_TYPE_RE, doc["content_type"], f"{what} content_type"),
        size=_int(doc["size"], f"{what} size", max_size),
        sha256=_match(_SHA256_RE, doc["sha256"], f"{what} sha256"),
        ciphertext=_match(_NAME_RE, doc["ciphertext"], f"{what} ciphertext"),
    )


def _answers(value: object, limits: IntakeLimits) -> dict[str, list[str]]:
    """Raw form fields: at most max_fields values in all, each at most max_field_bytes."""
    if not isinstance(value, dict):
        raise IntakeManifestError("answers is not an object")
    count, out = 0, {}
    for name, values in value.items():
        _str(name, "an answer's field name", MAX_FIELD_NAME_CHARS)
        items = _list(values, "an answer", limits.max_fields)
        count += len(items)
        if count > limits.max_fields:
            raise IntakeManifestError(f"answers hold over {limits.max_fields} values")
        out[name] = [_field_value(v, limits) for v in items]
    return out


def _field_value(value: object, limits: IntakeLimits) -> str:
    text = _str(value, "an answer value", limits.max_field_bytes)
    if len(text.encode("utf-8")) > limits.max_field_bytes:
        raise IntakeManifestError(f"an answer value is over {limits.max_field_bytes} bytes")
    return text


_Q_KEYS = {"questionnaire", "version", "locale", "answers"}
_QA_KEYS = {"key", "type", "question", "value"}


def _questionnaire(value: object, limits: IntakeLimits) -> dict[str, Any]:
    """The checked questionnaire record: answer values are strings, lists of strings, or flat
    objects of strings, booleans and null (consent, dates)."""
    doc = _obj(value, "questionnaire", _Q_KEYS)
    answers = []
    for raw in _list(doc["answers"], "questionnaire answers", limits.max_fields):
        answer = _obj(raw, "a questionnaire answer", _QA_KEYS)
        answers.append({
            "key": _match(_KEY_RE, answer["key"], "answer key"),
            "type": _match(_KEY_RE, answer["type"], "answer type"),
            "question": _str(answer["question"], "question", MAX_QUESTION_CHARS),
            "value": _value(answer["value"], limits, MAX_VALUE_DEPTH),
        })
    return {
        "questionnaire": _str(doc["questionnaire"], "questionnaire id", MAX_FIELD_NAME_CHARS),
        "version": _version(doc["version"]),
        "locale": _match(_LOCALE_RE, doc["locale"], "questionnaire locale"),
        "answers": answers,
    }


def _version(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 2**53:
        raise IntakeManifestError(f"questionnaire version {_show(value)} is not an integer")
    return value


def _value(value: object, limits: IntakeLimits, depth: int) -> object:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _field_value(value, limits)
    if depth <= 1:
        raise IntakeManifestError("an answer value nests too deep")
    if isinstance(value, list):
        items = _list(value, "an answer value", MAX_VALUE_ITEMS)
        return [_value(v, limits, depth - 1) for v in items]
    if isinstance(value, dict):
        if len(value) > MAX_VALUE_ITEMS:
            raise IntakeManifestError("an answer value has too many entries")
        return {_str(k, "an answer value's key", MAX_FIELD_NAME_CHARS): _value(v, limits, depth - 1)
                for k, v in value.items()}
    raise IntakeManifestError(f"an answer value of type {type(value).__name__} is not allowed")
