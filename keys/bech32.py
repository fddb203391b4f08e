"""Bech32 (BIP-173, not bech32m) as age uses it: no length limit, one case per string.

The checksum is always computed over the lowercase string; an all-uppercase string is accepted
and its human-readable part is returned uppercase (age secret keys are `AGE-SECRET-KEY-1...`).
"""

from __future__ import annotations

from collections.abc import Iterable

from keys.errors import KeyFormatError

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_INDEX = {c: i for i, c in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_LEN = 6


def _polymod(values: Iterable[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = ((chk & 0x1FFFFFF) << 5) ^ value
        for i, gen in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    raw = hrp.lower().encode("ascii")
    return [c >> 5 for c in raw] + [0] + [c & 31 for c in raw]


def _convert_bits(data: Iterable[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits:
        raise KeyFormatError("bech32 string has an illegal extra padding group")
    elif (acc << (tobits - bits)) & maxv:
        raise KeyFormatError("bech32 string has non-zero padding bits")
    return out


def _check_hrp(hrp: str) -> None:
    if not hrp:
        raise KeyFormatError("bech32 human-readable part is empty")
    if any(not 33 <= ord(c) <= 126 for c in hrp):
        raise KeyFormatError("bech32 human-readable part has a character outside 33..126")
    if hrp.lower() != hrp and hrp.upper() != hrp:
        raise KeyFormatError("bech32 human-readable part mixes upper and lower case")


def encode(hrp: str, data: bytes) -> str:
    """Encode `data` under `hrp`; the result is uppercase iff `hrp` is uppercase."""
    _check_hrp(hrp)
    values = _convert_bits(data, 8, 5, pad=True)
    lower_hrp = hrp.lower()
    mod = _polymod([*_hrp_expand(lower_hrp), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(mod >> (5 * (5 - i))) & 31 for i in range(_CHECKSUM_LEN)]
    text = lower_hrp + "1" + "".join(CHARSET[v] for v in values + checksum)
    return text if hrp == lower_hrp else text.upper()


def decode(text: str) -> tuple[str, bytes]:
    """Decode a bech32 string into (human-readable part, data). Raises KeyFormatError."""
    if text.lower() != text and text.upper() != text:
        raise KeyFormatError("bech32 string mixes upper and lower case")
    pos = text.rfind("1")
    if pos < 1 or pos + 1 + _CHECKSUM_LEN > len(text):
        raise KeyFormatError("bech32 separator '1' is missing or misplaced")
    hrp = text[:pos]
    _check_hrp(hrp)
    try:
        values = [_CHARSET_INDEX[c] for c in text[pos + 1 :].lower()]
    except KeyError as exc:
        raise KeyFormatError(f"bech32 data part has an invalid character {exc.args[0]!r}") from None
    if _polymod([*_hrp_expand(hrp), *values]) != 1:
        raise KeyFormatError("bech32 checksum does not match (a typo or a truncated key?)")
    return hrp, bytes(_convert_bits(values[:-_CHECKSUM_LEN], 5, 8, pad=False))
