"""dropbox/tus.py: the tus headers, parsed without I/O."""

from __future__ import annotations

import base64

import pytest

from dropbox.tus import TusError, check_version, parse_length, parse_metadata, parse_size


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_sizes_are_plain_bounded_digits():
    assert parse_size("0", "x") == 0
    assert parse_size("9" * 19, "x") == int("9" * 19)
    for bad in (None, "", "-1", "+1", "1.0", "1e3", "0x1", "٣", "²", "9" * 20, " 1"):
        with pytest.raises(TusError) as refused:
            parse_size(bad, "x")
        assert refused.value.status == 400, bad


def test_length_over_the_maximum_is_413_and_deferral_400():
    assert parse_length({"Upload-Length": "10"}, 10) == 10
    with pytest.raises(TusError) as over:
        parse_length({"Upload-Length": "11"}, 10)
    assert over.value.status == 413
    with pytest.raises(TusError) as deferred:
        parse_length({"Upload-Defer-Length": "1"}, 10)
    assert deferred.value.status == 400


def test_metadata_pairs():
    assert parse_metadata(None) == {}
    assert parse_metadata(f"filename {b64('گزارش.pdf')},empty,filetype {b64('a/b')}") == {
        "filename": "گزارش.pdf", "empty": "", "filetype": "a/b"}
    for bad in ("a YQ,a YQ", "a Y Q", "a !!", "a /w==", " , ", ",".join(["k YQ"] * 9)):
        with pytest.raises(TusError):
            parse_metadata(bad)


def test_version_must_be_1_0_0():
    check_version({"Tus-Resumable": "1.0.0"})
    for headers in ({}, {"Tus-Resumable": "0.2.2"}, {"Tus-Resumable": "1.0.0, 0.2.2"}):
        with pytest.raises(TusError) as refused:
            check_version(headers)
        assert refused.value.status == 412
