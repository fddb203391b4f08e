"""Make untrusted testimony text safe to show in a terminal, in JSON and as a file name.

Testimonies, form answers and file names come from anyone on the internet. Printed raw, an ESC
sequence could retitle the window, rewrite earlier lines or paste into the shell; a bidi override
could make "gpj.exe" read as "exe.jpg". Everything the review tool prints goes through `clean`.
"""

from __future__ import annotations

import json
import re
import unicodedata

# ESC sequences (7-bit) and their 8-bit C1 introducers: CSI, OSC, DCS/SOS/PM/APC strings, then any
# other two-character escape. Whole sequences go, so their parameters do not leak out as text.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
# Embeddings, overrides and isolates: they reorder what the reader sees.
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_BIDI = re.compile(f"[{BIDI_CONTROLS}]")
# C0 (except newline and tab), DEL and C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NEWLINES = re.compile(r"\r\n|[\r\u2028\u2029\x85\x0b\x0c]")
REPLACEMENT = "\ufffd"

RLI, PDI = "\u2067", "\u2069"
# Any character one of the substitutions below would touch: most text has none, and one search
# is several times cheaper than four substitutions (`list` cleans every row's excerpt).
_NEEDS_CLEANING = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029{BIDI_CONTROLS}]")


def clean(text: str, *, single_line: bool = False) -> str:
    """Remove terminal escape sequences, control characters and bidi overrides/isolates.

    Escape sequences and control characters become U+FFFD (so a reader sees something was
    there); bidi controls are dropped. With `single_line`, newlines and tabs become spaces.
    """
    if _NEEDS_CLEANING.search(text) is not None:
        text = _NEWLINES.sub("\n", text)
        text = _ESCAPE_SEQUENCE.sub(REPLACEMENT, text)
        text = _CONTROL.sub(REPLACEMENT, text)
        text = _BIDI.sub("", text)
    if single_line:
        text = text.replace("\n", " ").replace("\t", " ")
    return text


def is_rtl(text: str) -> bool:
    """True if the first strongly directional character is right-to-left (Persian, Pashto...)."""
    for ch in text:
        kind = unicodedata.bidirectional(ch)
        if kind in ("R", "AL"):
            return True
        if kind == "L":
            return False
    return False


def display_lines(text: str, width: int = 78) -> list[str]:
    """Cleaned text as terminal lines: long lines wrapped to `width`; each right-to-left line
    wrapped in our own balanced isolate (RLI ... PDI) so a bidi-aware terminal shows it in reading
    order and it cannot reorder the labels around it."""
    lines: list[str] = []
    for paragraph in clean(text).split("\n"):
        paragraph = paragraph.replace("\t", "    ")
        for piece in _wrap(paragraph, width):
            lines.append(f"{RLI}{piece}{PDI}" if is_rtl(piece) else piece)
    return lines


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters, broken at the last space that fits (else hard).
    Linear with plain slicing: textwrap takes seconds over a 4 MiB message."""
    lines, start = [], 0
    while len(text) - start > width:
        cut = text.rfind(" ", start, start + width + 1)
        if cut > start:
            lines.append(text[start:cut])
            start = cut + 1
        else:
            lines.append(text[start : start + width])
            start += width
    lines.append(text[start:])
    return lines


def one_line(text: str, limit: int) -> str:
    """A cleaned single-line excerpt of at most `limit` characters."""
    flat = " ".join(clean(text, single_line=True).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def isolate(text: str) -> str:
    """A cleaned single-line value wrapped in a first-strong isolate, safe to put in a table."""
    return f"\u2068{clean(text, single_line=True)}{PDI}"


# Characters valid inside JSON strings that a terminal or editor could still act on.
_JSON_UNSAFE = re.compile(f"[\x7f-\x9f\u2028\u2029{BIDI_CONTROLS}]")


def json_dumps(value: object, *, indent: int | None = 2) -> str:
    """JSON with the data unchanged but every control and bidi character written as \\uXXXX."""
    return escape_json_text(json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=False))


def escape_json_text(text: str) -> str:
    """JSON text (json.dumps escapes C0 itself) with DEL, C1, bidi controls and line separators
    also written as \\uXXXX: the same data, nothing a terminal or editor acts on."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# --- file names --------------------------------------------------------------------------------

_FILENAME_BAD = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f-\x9f]')
# Windows device names, with or without an extension, also with superscript digits (COM¹) and
# trailing spaces or dots before the extension (`nul .txt` opens the NUL device).
_WINDOWS_RESERVED = re.compile(
    r"(?i)(con|prn|aux|nul|conin\$|conout\$|clock\$|com[0-9¹²³]|lpt[0-9¹²³])[ .]*(\..*)?"
)
_SPACES = re.compile(r"\s+")
MAX_NAME_BYTES = 200
MAX_EXTENSION_CHARS = 20


def safe_filename(name: str, fallback: str = "attachment") -> str:
    """A file name that stays inside the directory it is written to, is valid on Windows, macOS
    and Linux, and displays honestly.

    Keeps letters of every script; drops path parts, control and bidi characters, characters
    Windows refuses, leading dots (no hidden files, no `..`) and trailing dots/spaces; folds runs
    of blank space to one space (so padding cannot push the real extension out of sight);
    prefixes `_` to Windows device names and to a leading `-` (never an option to `tar *`); caps
    the UTF-8 length while keeping the extension.
    """
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = _BIDI.sub("", name)
    name = _ESCAPE_SEQUENCE.sub("", name)
    name = _FILENAME_BAD.sub("_", name)
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cf", "Cs", "Co", "Cn"))
    name = _SPACES.sub(" ", name).strip().lstrip(".").rstrip(". ")
    name = re.sub(r" +\.", ".", name)  # "report.pdf .desktop" -> "report.pdf.desktop"
    if not name:
        name = fallback
    if name.startswith("-") or _WINDOWS_RESERVED.fullmatch(unicodedata.normalize("NFKC", name)):
        name = "_" + name
    return _cap_bytes(name)


def _cap_bytes(name: str) -> str:
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > MAX_EXTENSION_CHARS:
        stem, ext = name, ""
    budget = MAX_NAME_BYTES - len(ext.encode("utf-8")) - (1 if ext else 0)
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    return f"{cut}.{ext}" if ext else cut


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or `name (2).ext`, `name (3).ext`...: the first not in `taken`, ignoring case."""
    lowered = {t.casefold() for t in taken}
    if name.casefold() not in lowered:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    n = 2
    while True:
        candidate = f"{stem} ({n}).{ext}" if ext else f"{stem} ({n})"
        if candidate.casefold() not in lowered:
            return _cap_bytes(candidate)
        n += 1
