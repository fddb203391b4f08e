"""Codenames: generation, normalization of what people type, and the Argon2id derivation."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys.codename import (
    CHEAPEST,
    DIGIT_COUNT,
    LEGACY_DIGIT_COUNT,
    PRODUCTION,
    Argon2Profile,
    derive_source_keys,
    generate_codename,
    group_codename,
    normalize_codename,
    to_locale_digits,
    wordlist,
)
from keys.errors import CodenameError, ConfigError, InputError
from keys.stream import hkdf_sha256

SALT = bytes(range(16))
CODENAME = "0123 4567 8901 2345"


# --- generation ------------------------------------------------------------------------------


def test_default_codename_is_twenty_digits_in_groups_of_four() -> None:
    names = {generate_codename() for _ in range(200)}
    assert len(names) == 200
    for name in names:
        assert re.fullmatch(r"\d{4}( \d{4}){4}", name)
        assert normalize_codename(name) == name.replace(" ", "")
        assert group_codename(name.replace(" ", "")) == name
    # every position is drawn from all ten digits, not a narrower set
    for position in range(20):
        assert len({name.replace(" ", "")[position] for name in names}) == 10


def test_twenty_digits_are_at_least_66_bits() -> None:
    assert DIGIT_COUNT >= 20
    assert math.log2(10**DIGIT_COUNT) >= 66


def test_existing_sixteen_digit_codenames_still_log_in() -> None:
    """Codenames issued before keep their derivation: the known answer of 4.4 is unchanged."""
    assert LEGACY_DIGIT_COUNT == 16
    assert normalize_codename("0123 4567 8901 2345") == "0123456789012345"
    assert group_codename("0123456789012345") == "0123 4567 8901 2345"
    keys = derive_source_keys("0123-4567-8901-2345", SALT, CHEAPEST)
    assert keys.lookup_id == derive_source_keys("0123456789012345", SALT, CHEAPEST).lookup_id
    assert keys.lookup_id != derive_source_keys("0123456789012345" + "0000", SALT,
                                                CHEAPEST).lookup_id


def test_word_codename_has_seven_listed_words() -> None:
    name = generate_codename(words=True)
    words = name.split(" ")
    assert len(words) == 7
    assert all(w in wordlist() for w in words)
    assert normalize_codename(name) == name


def test_wordlist_is_the_eff_large_list_without_hyphenated_words() -> None:
    words = wordlist()
    assert len(words) == 7776 - 4
    assert len(set(words)) == len(words)
    assert "abacus" in words
    assert "t-shirt" not in words
    assert all(re.fullmatch(r"[a-z]+", w) for w in words)


# --- normalization ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "0123456789012345",
        "0123 4567 8901 2345",
        "0123-4567-8901-2345",
        "  0123\t4567\n8901 2345 ",
        "۰۱۲۳ ۴۵۶۷ ۸۹۰۱ ۲۳۴۵",  # Persian
        "٠١٢٣ ٤٥٦٧ ٨٩٠١ ٢٣٤٥",  # Arabic-Indic
        "۰۱۲3 4٥٦۷ 8901 2345",  # mixed, as a phone keyboard switch produces
        "0123\u00a04567\u202f8901\u30002345",  # NBSP, narrow NBSP, ideographic space
        "0123\u20134567\u20148901\u20112345",  # en dash, em dash, non-breaking hyphen
        "\u200f0123\u200c4567\u200d8901\u2066\u20692345\ufeff",  # bidi marks, ZWNJ/ZWJ, BOM
        "0123\u22124567\uff0d8901 2345",  # minus sign, fullwidth hyphen-minus
    ],
)
def test_normalize_accepts_every_way_people_type_digits(typed: str) -> None:
    assert normalize_codename(typed) == "0123456789012345"


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("", "empty"),
        (" - \u200f ", "empty"),
        ("0123 4567 8901 234", "20 digits"),
        ("0123 4567 8901 23456", "20 digits"),
        ("0123 4567 8901 2345 678", "20 digits"),
        ("0123 4567 8901 2345 67890", "20 digits"),
        ("0123 4567 8901 2345 6789 0123", "20 digits"),
        ("0123 4567 8901 234x", "only digits"),
        ("०१२३ ४५६७ ८९०१ २३४५", "only digits"),  # Devanagari: not a script we accept
        ("0123.4567.8901.2345", "only digits"),
        ("abacus 1234", "only digits"),
    ],
)
def test_normalize_refuses_malformed_digit_codenames(typed: str, reason: str) -> None:
    with pytest.raises(CodenameError, match=reason) as info:
        normalize_codename(typed)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, InputError)
    if typed.strip():
        assert typed not in str(info.value)  # a codename never ends up in an error text or log


_SCRIPTS = ("0123456789", "۰۱۲۳۴۵۶۷۸۹", "٠١٢٣٤٥٦٧٨٩")
_NOISE = st.sampled_from([" ", "-", "\u00a0", "\u2013", "\u200c", "\u200f", "\u2066", "\t"])


@settings(max_examples=60, deadline=None)
@given(
    digits=st.one_of(*(st.lists(st.integers(0, 9), min_size=n, max_size=n) for n in (16, 20))),
    scripts=st.lists(st.integers(0, 2), min_size=20, max_size=20),
    noise=st.lists(st.lists(_NOISE, max_size=2), min_size=21, max_size=21),
)
def test_normalize_any_spelling_of_twenty_or_sixteen_digits(
    digits: list[int], scripts: list[int], noise: list[list[str]]
) -> None:
    typed = "".join(
        "".join(noise[i]) + _SCRIPTS[scripts[i]][d] for i, d in enumerate(digits)
    ) + "".join(noise[20])
    assert normalize_codename(typed) == "".join(map(str, digits))


@settings(max_examples=150)
@given(st.text(max_size=40))
def test_normalize_only_ever_raises_codename_error(text: str) -> None:
    try:
        canonical = normalize_codename(text)
    except CodenameError:
        return
    assert normalize_codename(canonical) == canonical
    assert re.fullmatch(r"\d{16}|\d{20}|[a-z]+( [a-z]+){6}", canonical)


def test_normalize_words_is_case_and_separator_insensitive() -> None:
    words = wordlist()[:7]
    canonical = " ".join(words)
    assert normalize_codename(canonical.upper()) == canonical
    assert normalize_codename("-".join(words)) == canonical
    assert normalize_codename("\u200f" + "  ".join(words) + "\n") == canonical


def test_normalize_refuses_unknown_words_and_wrong_counts() -> None:
    words = list(wordlist()[:7])
    with pytest.raises(CodenameError, match="not in the codename word list"):
        normalize_codename(" ".join([*words[:6], "notaword"]))
    with pytest.raises(CodenameError, match="7 words"):
        normalize_codename(" ".join(words[:6]))


def test_group_codename() -> None:
    assert group_codename("۰۱۲۳۴۵۶۷۸۹۰۱۲۳۴۵") == "0123 4567 8901 2345"
    assert group_codename(" ".join(wordlist()[:7]).upper()) == " ".join(wordlist()[:7])


def test_to_locale_digits() -> None:
    assert to_locale_digits("0123 4567 89", "fa") == "۰۱۲۳ ۴۵۶۷ ۸۹"
    assert to_locale_digits("0123 4567 89", "ps") == "۰۱۲۳ ۴۵۶۷ ۸۹"
    assert to_locale_digits("0123 4567 89", "fa_AF") == "۰۱۲۳ ۴۵۶۷ ۸۹"
    assert to_locale_digits("0123 4567 89", "ar") == "٠١٢٣ ٤٥٦٧ ٨٩"
    assert to_locale_digits("0123 4567 89", "en") == "0123 4567 89"
    shown = to_locale_digits(CODENAME, "fa")
    assert normalize_codename(shown) == normalize_codename(CODENAME)


# --- derivation ------------------------------------------------------------------------------


def test_hkdf_matches_rfc5869_test_case_3() -> None:
    # RFC 5869 A.3: zero-length salt and info; the first 32 bytes of OKM are T(1).
    okm = hkdf_sha256(b"\x0b" * 22, b"", b"")
    assert okm.hex() == "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"


def test_derivation_is_deterministic_and_spelling_independent() -> None:
    a = derive_source_keys(CODENAME, SALT, CHEAPEST)
    b = derive_source_keys("۰۱۲۳-۴۵۶۷-۸۹۰۱-۲۳۴۵", SALT, CHEAPEST)
    assert a.lookup_id == b.lookup_id
    assert str(a.reply_identity) == str(b.reply_identity)
    assert re.fullmatch(r"[0-9a-f]{64}", a.lookup_id)


def test_derivation_separates_salts_codenames_and_outputs() -> None:
    base = derive_source_keys(CODENAME, SALT, CHEAPEST)
    other_salt = derive_source_keys(CODENAME, bytes(range(1, 17)), CHEAPEST)
    other_name = derive_source_keys("0123 4567 8901 2346", SALT, CHEAPEST)
    other_cost = derive_source_keys(CODENAME, SALT, Argon2Profile(2, 8, 1))
    lookups = {k.lookup_id for k in (base, other_salt, other_name, other_cost)}
    assert len(lookups) == 4
    # The lookup id the server stores says nothing about the reply secret.
    assert base.lookup_id not in str(base.reply_identity).lower()


def test_derivation_refuses_a_short_salt_and_a_bad_codename() -> None:
    with pytest.raises(ConfigError, match="16 bytes"):
        derive_source_keys(CODENAME, b"x" * 15, CHEAPEST)
    with pytest.raises(CodenameError):
        derive_source_keys("1234", SALT, CHEAPEST)


def test_profiles() -> None:
    assert (PRODUCTION.time_cost, PRODUCTION.memory_cost, PRODUCTION.parallelism) == (3, 65536, 4)
    with pytest.raises(ConfigError):
        Argon2Profile(time_cost=1, memory_cost=8, parallelism=2)  # Argon2 needs m >= 8p
    with pytest.raises(ConfigError):
        Argon2Profile(time_cost=0, memory_cost=64, parallelism=1)


# Known answers, computed once with this implementation and pinned: a second implementation of
# docs/format.md section 4 must reproduce them.
KAT_CHEAPEST = [
    (
        CODENAME,
        SALT,
        "167f8a2ca4676e62a91e30dd250678e2f1ffedc155ea20b63707a7768755d7ff",
        "age1dnh3889qrgtmcm4mr5uk3avh6mhh00p5np2azmhps3fernfmmaaq99mflj",
    ),
    (
        "0123 4567 8901 2345 6789",
        SALT,
        "72a0eabb49659761fc1929433ff8c9d0206461cfd25a628b40f7e64385b4d7f2",
        "age1nh2weups0nd7azc8lfflma95p4t47psp73wf6w66upprwusxv48q8alayc",
    ),
    (
        "abacus cherub driver green motive quack zoom",
        b"amanat test salt",
        "f0ae0620235e1b6b97cd26adaa3ffde6c60ca3c78a2ef59c405715d5d93bf570",
        "age1kqxpkgq3ns564ywk6q3wmlqtjmtysylhf4627s9sdhuvrt3fdd2q95pcjf",
    ),
]


@pytest.mark.parametrize(("name", "salt", "lookup_id", "recipient"), KAT_CHEAPEST)
def test_known_answers_cheapest(name: str, salt: bytes, lookup_id: str, recipient: str) -> None:
    keys = derive_source_keys(name, salt, CHEAPEST)
    assert keys.lookup_id == lookup_id
    assert str(keys.reply_identity.recipient()) == recipient


@pytest.mark.slow
def test_known_answer_production() -> None:
    keys = derive_source_keys(CODENAME, SALT, PRODUCTION)
    assert keys.lookup_id == "32219c077ce5f4c286a865e2f62d69bc1d9582a81f342b085aafb92bdb3a344e"
    assert (
        str(keys.reply_identity.recipient())
        == "age1mr0p9r7h03frkkrc6udyafx8ln5hequaw4e6hs7ecnz4rv9sq5xszdeecy"
    )


# --- issue 12: the last group a new source types, the receipt key -------------------------------


def test_the_last_group_is_checked_in_any_numerals_and_nothing_else() -> None:
    from keys.codename import last_group, matches_last_group

    codename = "1234 5678 9012 3456 7890"
    assert last_group(codename) == "7890"
    assert last_group("12345678901234567890") == "7890"
    for typed in ("7890", " 7890 ", "۷۸۹۰", "٧٨٩٠", "78-90", "\u200f7890\u200e"):
        assert matches_last_group(typed, codename), typed
    for typed in ("", "789", "78900", "7891", "0987", codename, "seven", "7890x", "७८९०"):
        assert not matches_last_group(typed, codename), typed


def test_the_receipt_key_is_its_own_derivation() -> None:
    keys = derive_source_keys("1234 5678 9012 3456 7890", b"s" * 16, CHEAPEST)
    again = derive_source_keys("1234-5678-9012-3456-7890", b"s" * 16, CHEAPEST)
    other = derive_source_keys("1234 5678 9012 3456 7891", b"s" * 16, CHEAPEST)
    assert len(keys.receipt_key) == 32
    assert keys.receipt_key == again.receipt_key != other.receipt_key
    assert keys.receipt_key.hex() != keys.lookup_id
    assert keys.receipt_key.hex() not in repr(keys)
