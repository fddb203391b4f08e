"""Codenames: what a source keeps instead of an account, and the keys derived from it.

A codename is either 20 random decimal digits (the default: digits exist in every script and on
every phone keypad; codenames issued before were 16 digits and keep working) or 7 words from the
EFF large wordlist. The server never sees a codename at rest: it stores only what
`derive_source_keys` computes from it with Argon2id and a per-instance salt, namely a lookup id
and the public half of an X25519 reply identity. The spec is
docs/format.md, section 4; this module is pure (no I/O besides reading its bundled wordlist).
"""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from argon2.low_level import Type, hash_secret_raw

from keys.age import X25519Identity
from keys.errors import CodenameError, ConfigError
from keys.stream import hkdf_sha256

DIGIT_COUNT = 20
"""Digits of a new codename: about 66 bits, enough against a seized database (format.md 4.5)."""
LEGACY_DIGIT_COUNT = 16
"""Digits of the codenames issued before: still accepted, never issued."""
WORD_COUNT = 7
MIN_SALT_BYTES = 16

# The three digit sets a source may type: Latin, Extended Arabic-Indic (Persian, Dari, Pashto) and
# Arabic-Indic. Nothing else is mapped, so a stray letter is an error rather than a silent guess.
_PERSIAN_DIGITS = "۰۱۲۳۴۵۶۷۸۹"
_ARABIC_DIGITS = "٠١٢٣٤٥٦٧٨٩"
_TO_LATIN = str.maketrans(_PERSIAN_DIGITS + _ARABIC_DIGITS, "0123456789" * 2)
_LOCALE_DIGITS = {
    "fa": _PERSIAN_DIGITS,
    "prs": _PERSIAN_DIGITS,
    "ps": _PERSIAN_DIGITS,
    "ur": _PERSIAN_DIGITS,  # Urdu's native digits are the same code points (dropbox/localnum.py)
    "ar": _ARABIC_DIGITS,
}

# Separators a person (or a phone keyboard) may put between groups: every Unicode whitespace
# (NBSP included) and every dash (hyphen-minus, en dash, non-breaking hyphen, ...), plus the minus
# sign. Format characters (zero-width joiners, bidi marks, BOM) are dropped before anything else.
_EXTRA_DASHES = "\u2212\ufe63\uff0d"


@dataclass(frozen=True)
class Argon2Profile:
    """Argon2id cost parameters. `memory_cost` is in KiB, as argon2-cffi counts it."""

    time_cost: int
    memory_cost: int
    parallelism: int

    def __post_init__(self) -> None:
        if self.time_cost < 1 or self.parallelism < 1 or self.memory_cost < 8 * self.parallelism:
            raise ConfigError(f"invalid Argon2 profile {self}: Argon2 needs t>=1, p>=1, m>=8*p KiB")


PRODUCTION = Argon2Profile(time_cost=3, memory_cost=64 * 1024, parallelism=4)
# The smallest profile Argon2 allows. Tests only: it protects nothing.
CHEAPEST = Argon2Profile(time_cost=1, memory_cost=8, parallelism=1)


@dataclass(frozen=True)
class SourceKeys:
    """What a codename yields: the server-side lookup id, the source's reply identity and the
    key of the source's receipts (what arrived, readable only with the codename)."""

    lookup_id: str  # 64 lowercase hex digits
    reply_identity: X25519Identity
    receipt_key: bytes = field(repr=False)  # 32 bytes: a SecretBox key (keys/receipt.py)


@cache
def wordlist() -> tuple[str, ...]:
    """The EFF large wordlist without its four hyphenated words (so dashes can separate words)."""
    text = resources.files("keys").joinpath("data/eff_large_wordlist.txt").read_text("utf-8")
    return tuple(w for w in text.split() if "-" not in w)


@cache
def _word_set() -> frozenset[str]:
    return frozenset(wordlist())


def generate_codename(words: bool = False) -> str:
    """A fresh codename, already grouped for display: "1234 5678 9012 3456" or seven words."""
    if words:
        pool = wordlist()
        return " ".join(secrets.choice(pool) for _ in range(WORD_COUNT))
    digits = "".join(secrets.choice("0123456789") for _ in range(DIGIT_COUNT))
    return group_codename(digits)


def normalize_codename(text: str) -> str:
    """The canonical form of a typed codename: 20 (or, issued earlier, 16) ASCII digits, or 7
    lowercase words joined by single spaces. Raises CodenameError (never echoing the input) when
    it cannot be one."""
    tokens = _tokens(text)
    if not tokens:
        raise CodenameError("the codename is empty")
    joined = "".join(tokens).translate(_TO_LATIN)
    if not any(ch.isdigit() for ch in joined):
        return _normalize_words(tokens)
    if not (joined.isascii() and joined.isdigit()):
        raise CodenameError(
            "a codename of digits may hold only digits (Latin, Persian or "
            "Arabic-Indic), spaces and dashes"
        )
    if len(joined) not in (DIGIT_COUNT, LEGACY_DIGIT_COUNT):
        raise CodenameError(
            f"a codename has {DIGIT_COUNT} digits (or {LEGACY_DIGIT_COUNT}, if issued earlier); "
            f"this one has {len(joined)}"
        )
    return joined


def group_codename(text: str) -> str:
    """The display form: digits in groups of four separated by spaces, or words separated by
    spaces."""
    canonical = normalize_codename(text)
    if canonical.isdigit():
        return " ".join(canonical[i : i + 4] for i in range(0, len(canonical), 4))
    return canonical


def to_locale_digits(text: str, locale: str) -> str:
    """`text` with its ASCII digits written in the numerals of `locale` ("fa", "prs", "ps": ۰-۹;
    "ar": ٠-٩). Other locales (and region suffixes like "fa_AF") are handled by language;
    a language without its own numerals here gets `text` unchanged."""
    language = locale.replace("-", "_").split("_", 1)[0].lower()
    digits = _LOCALE_DIGITS.get(language)
    if digits is None:
        return text
    return text.translate(str.maketrans("0123456789", digits))


def derive_source_keys(codename: str, instance_salt: bytes, profile: Argon2Profile) -> SourceKeys:
    """Derive the lookup id and the reply identity from a codename (docs/format.md, section 4)."""
    if len(instance_salt) < MIN_SALT_BYTES:
        raise ConfigError(f"the instance salt must be at least {MIN_SALT_BYTES} bytes")
    master = hash_secret_raw(
        secret=normalize_codename(codename).encode("utf-8"),
        salt=instance_salt,
        time_cost=profile.time_cost,
        memory_cost=profile.memory_cost,
        parallelism=profile.parallelism,
        hash_len=32,
        type=Type.ID,
        version=19,
    )
    lookup = hkdf_sha256(master, b"", b"amanat/v1 codename lookup id")
    reply_secret = hkdf_sha256(master, b"", b"amanat/v1 codename reply identity")
    receipt_key = hkdf_sha256(master, b"", b"amanat/v1 codename receipt key")
    return SourceKeys(
        lookup_id=lookup.hex(), reply_identity=X25519Identity.from_secret(reply_secret),
        receipt_key=receipt_key,
    )


def last_group(codename: str) -> str:
    """The last group of a codename as displayed ("3456" of "... 9012 3456"; a word codename's
    last word): what a new source types to show the codename was written down."""
    return group_codename(codename).rsplit(" ", 1)[-1]


def matches_last_group(typed: str, codename: str) -> bool:
    """Whether `typed` is the codename's last group, in any of the accepted digit sets, with
    any separators or stray format characters around it."""
    answer = "".join(_tokens(typed)).translate(_TO_LATIN).lower()
    return bool(answer) and answer == last_group(codename)


def _tokens(text: str) -> list[str]:
    """Split on whitespace and dashes after dropping format characters (Unicode category Cf)."""
    cleaned = []
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cf":
            continue
        if ch.isspace() or category == "Pd" or ch in _EXTRA_DASHES:
            cleaned.append(" ")
        else:
            cleaned.append(ch)
    return "".join(cleaned).split()


def _normalize_words(tokens: list[str]) -> str:
    words = [t.lower() for t in tokens]
    unknown = sum(1 for w in words if w not in _word_set())
    if unknown:
        raise CodenameError(f"{unknown} of the words is not in the codename word list")
    if len(words) != WORD_COUNT:
        raise CodenameError(f"a word codename has {WORD_COUNT} words; this one has {len(words)}")
    return " ".join(words)
