"""keys/manifest.py: the submission manifest's strict schema, shared by intake and review."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropbox.questionnaire import load_questionnaire, manifest_answers, validate
from keys.bundle import BundleMalformedError, TransferManifest, decode_manifest, encode_manifest
from keys.manifest import (
    CEILING,
    DEFAULT_LIMITS,
    MAX_DEPTH,
    FileEntry,
    IntakeLimits,
    IntakeManifest,
    IntakeManifestError,
    decode_intake_manifest,
    encode_intake_manifest,
    fit_content_type,
)

SHA = hashlib.sha256(b"x").hexdigest()
SMALL = IntakeLimits(max_message_bytes=1000, max_file_bytes=5000, max_files=2, max_fields=3,
                     max_field_bytes=50)


def good_doc() -> dict[str, Any]:
    entry = {"field": "files", "filename": "a.jpg", "content_type": "image/jpeg", "size": 10,
             "sha256": SHA, "ciphertext": "f1.age"}
    return {
        "format": "amanat-manifest/v1",
        "received_day": "2026-11-20",
        "message": {**entry, "field": "message", "filename": "", "content_type": "text/plain",
                    "ciphertext": "m.age"},
        "files": [entry],
        "answers": {"q_city": ["Peshawar"]},
        "locale": "fa_AF",
        "questionnaire": {"questionnaire": "default", "version": 1, "locale": "fa_AF",
                          "answers": [{"key": "city", "type": "text", "question": "City?",
                                       "value": "Peshawar"}]},
    }


def dump(doc: object) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


def test_a_good_manifest_decodes_to_typed_values() -> None:
    m = decode_intake_manifest(dump(good_doc()), SMALL)
    assert m.message is not None
    assert m.message.ciphertext == "m.age"
    assert m.files == (FileEntry("files", "a.jpg", "image/jpeg", 10, SHA, "f1.age"),)
    assert m.answers == {"q_city": ["Peshawar"]}
    assert m.locale == "fa_AF"
    assert m.questionnaire is not None
    assert m.questionnaire["answers"][0]["value"] == "Peshawar"


def test_encode_then_decode_round_trips() -> None:
    m = decode_intake_manifest(dump(good_doc()), SMALL)
    assert decode_intake_manifest(encode_intake_manifest(m, SMALL), SMALL) == m


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _nest(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_set(("files", 0, "sha256"), "\x1b]0;pwned\x07" + "0" * 52), "sha256"),
        (_set(("files", 0, "sha256"), SHA.upper()), "sha256"),
        (_set(("files", 0, "size"), 5001), "size"),
        (_set(("files", 0, "size"), True), "size"),
        (_set(("message", "size"), 1001), "size"),
        (_set(("files",), [good_doc()["files"][0]] * 3), "over the limit of 2"),
        (_set(("answers", "q_city"), ["x"] * 4), "over the limit of 3"),
        (_set(("answers",), {"a": ["x"] * 2, "b": ["y"] * 2}), "over 3 values"),
        (_set(("answers", "q_city"), ["ب" * 26]), "over 50 bytes"),
        (_set(("answers", "q_city"), _nest(600)), "deeper than"),
        (_set(("answers", "q_city"), [["nested"]]), "not a string"),
        (_set(("questionnaire", "answers", 0, "value"), _nest(3)), "too deep"),
        (_set(("questionnaire", "answers", 0, "value"), 1.5), "not allowed"),
        (_set(("files", 0, "ciphertext"), "../x.age"), "ciphertext"),
        (_set(("files", 0, "ciphertext"), "m.age"), "same ciphertext"),
        (_set(("files", 0, "content_type"), "text/\x9b31m"), "content_type"),
        (_set(("files", 0, "filename"), "a" * 1025), "over 1024"),
        (_set(("received_day",), "2026-11-20T10:00"), "received_day"),
        (_set(("format",), "amanat-manifest/v2"), "unknown manifest format"),
        (_set(("extra",), 1), "unexpected keys"),
        (_set(("locale",), "\x1b[2J"), "locale"),
    ],
)
def test_what_breaks_the_schema_is_refused_with_a_reason(edit: Any, reason: str) -> None:
    doc = good_doc()
    edit(doc)
    with pytest.raises(IntakeManifestError, match=reason) as caught:
        decode_intake_manifest(dump(doc), SMALL)
    assert not any(ch in str(caught.value) for ch in "\x1b\x07\x9b")  # the reason is printable


def test_depth_is_checked_before_parsing_so_no_recursion_error() -> None:
    data = b'{"answers":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(IntakeManifestError, match=f"deeper than {MAX_DEPTH}"):
        decode_intake_manifest(data, CEILING)
    # Brackets inside strings are text, not nesting.
    doc = good_doc()
    doc["answers"]["q_city"] = ["[[[[[[[[[[[[\\\"{{{{{{{{{{{"]
    decode_intake_manifest(dump(doc), DEFAULT_LIMITS)


def test_a_manifest_over_its_size_bound_is_refused_unparsed() -> None:
    with pytest.raises(IntakeManifestError, match="size bound"):
        decode_intake_manifest(b" " * (SMALL.max_document_bytes() + 1), SMALL)


def test_duplicate_keys_and_non_json_are_refused() -> None:
    with pytest.raises(IntakeManifestError, match="repeats"):
        decode_intake_manifest(b'{"format": 1, "format": 2}', SMALL)
    with pytest.raises(IntakeManifestError, match="UTF-8 JSON"):
        decode_intake_manifest(b"\xff{", SMALL)


def test_the_writer_refuses_what_the_reader_would() -> None:
    m = IntakeManifest("2026-11-20", None, (), {"f": ["x" * 51]})
    with pytest.raises(IntakeManifestError):
        encode_intake_manifest(m, SMALL)


def test_content_types_are_fitted_at_intake() -> None:
    assert fit_content_type(" image/png ") == "image/png"
    assert fit_content_type("text/\x9bplain") == "application/octet-stream"
    assert fit_content_type("") == "application/octet-stream"


def test_the_default_questionnaires_record_fits_the_schema() -> None:
    q = load_questionnaire()
    result = validate(q, {"message": ["x"], "q_when": ["۱۵ حمل ۱۴۰۳"],
                          "q_consent_uses": ["advocacy"], "q_at_risk": ["self", "children"],
                          "q_what_happened_audio": ["voice.ogg"]}, "ps", lambda s: s)
    assert result.errors == {}
    record = manifest_answers(q, result.answers, "ps")
    m = IntakeManifest("2026-11-20", None, (), {"q_city": ["x"]}, record, "ps")
    assert decode_intake_manifest(encode_intake_manifest(m, DEFAULT_LIMITS), DEFAULT_LIMITS) == m


def test_limits_are_signed_into_the_transfer_manifest_and_checked() -> None:
    manifest = TransferManifest("inst", "bid", "2026-11-20", (), SMALL)
    assert decode_manifest(encode_manifest(manifest)) == manifest
    assert decode_manifest(encode_manifest(TransferManifest("i", "b", "2026-11-20", ()))) \
        .limits is None  # type: ignore[union-attr]
    doc = json.loads(encode_manifest(manifest))
    doc["limits"]["max_files"] = -1
    with pytest.raises(BundleMalformedError, match="max_files"):
        decode_manifest(json.dumps(doc).encode())
    huge = IntakeLimits(max_message_bytes=2**40)
    assert huge.capped().max_message_bytes == CEILING.max_message_bytes


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["message", "files", "answers", "questionnaire", "received_day",
                        "locale", "format"]), json_values)
def test_fuzzed_fields_decode_or_raise_the_schema_error(key: str, value: Any) -> None:
    doc = good_doc()
    doc[key] = value
    with contextlib.suppress(IntakeManifestError):
        decode_intake_manifest(dump(doc), SMALL)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzzed_bytes_decode_or_raise_the_schema_error(data: bytes) -> None:
    with contextlib.suppress(IntakeManifestError):
        decode_intake_manifest(data, SMALL)
