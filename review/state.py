"""The vault state's shape (docs/format.md, section 5.6), defined once, and its check on load.

The state is JSON inside `state.age`. Its records are typed here as TypedDicts, so the JSON on
disk is exactly these dicts. Nothing but review/vault.py changes the state, and the vault
replaces a record whole, in the method that also writes the custody entry. Both mypy and the
run time hold everyone else to it: every record field is ReadOnly, and every record the vault
holds is frozen (`freeze`: a dict or list whose changing methods raise `StateReadOnlyError`).

`check_state` checks a decrypted state against this shape when the vault is opened: a vault is
the investigator's own and signed by them, but a damaged or much older one must give a clear
error naming the field, not a KeyError deep inside a command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, NotRequired, TypedDict, TypeVar, cast, final

from keys.errors import AmanatError, InputError

if TYPE_CHECKING:
    from typing_extensions import ReadOnly


class VaultStateError(InputError):
    """The decrypted state does not have the shape this version of the review tool reads."""


class StateReadOnlyError(AmanatError, TypeError):
    """Code outside review/vault.py tried to change a record of the vault state (a bug)."""


def _refuse(*args: object, **kwargs: object) -> NoReturn:
    raise StateReadOnlyError(
        "the vault state is read-only: change it through a Vault method, which logs it"
    )


class FrozenDict(dict[str, Any]):
    """A record of the state: a dict (json writes it as one) that cannot be changed."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse


class FrozenList(list[Any]):
    """A list inside a record of the state, that cannot be changed."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse


T = TypeVar("T")


MAX_DEPTH = 32  # the shape below nests 6 deep; a custody entry's details a little more


def freeze(value: T, depth: int = MAX_DEPTH) -> T:
    """The same JSON value, with every dict and list in it frozen."""
    if depth < 0:
        raise _fail("a record", f"nests more than {MAX_DEPTH} deep")
    if isinstance(value, dict):
        return cast(T, FrozenDict({k: freeze(v, depth - 1) for k, v in value.items()}))
    if isinstance(value, list):
        return cast(T, FrozenList(freeze(v, depth - 1) for v in value))
    return value


@final
class CiphertextRecord(TypedDict):
    """One ciphertext of a submission, as the signed bundle lists it, found by offset in the
    stored bundle `bundles/<bundle>.tar`."""

    name: ReadOnly[str]
    kind: ReadOnly[str]  # "message", "manifest" or "file"
    size: ReadOnly[int]
    sha256: ReadOnly[str]
    bundle: ReadOnly[str]  # SHA-256 of the stored bundle
    offset: ReadOnly[int]


@final
class ObjectRef(TypedDict):
    """A ciphertext made here (a reply), in `objects/` by its SHA-256."""

    sha256: ReadOnly[str]
    size: ReadOnly[int]


class Triage(TypedDict):
    """The questionnaire's answers the queue sorts and filters by (option values)."""

    urgency: ReadOnly[str | None]
    groups: ReadOnly[Sequence[str]]
    consent: ReadOnly[Sequence[str]]


class Findings(TypedDict, total=False):
    """What an attachment's metadata says of who made it (review/metadata.py)."""

    gps: ReadOnly[Sequence[float]]  # [lat, lon]
    device: ReadOnly[str]
    times: ReadOnly[Mapping[str, str]]
    author: ReadOnly[Mapping[str, str]]
    unreadable: ReadOnly[str]


class FileRecord(TypedDict):
    """One attachment as read on import, in the sandbox."""

    ciphertext: ReadOnly[str]  # the ciphertext's name
    sha256: ReadOnly[str]  # of the plaintext, as the intake recorded it
    size: ReadOnly[int]
    tool: ReadOnly[str]
    metadata: ReadOnly[Findings]
    filetype: NotRequired[ReadOnly[str | None]]
    phash: NotRequired[ReadOnly[str]]


class Note(TypedDict):
    at: ReadOnly[str]
    by: ReadOnly[str]
    text: ReadOnly[str]


class SubmissionRecord(TypedDict):
    """What the vault keeps of one submission: what the signed bundle says, a summary of its
    content (absent when it is sealed or quarantined), and the investigator's tags and notes."""

    id: ReadOnly[str]
    instance: ReadOnly[str]
    bundle: ReadOnly[str]  # the bundle id
    day: ReadOnly[str]
    source: ReadOnly[str]
    reply_recipient: ReadOnly[str]
    imported_at: ReadOnly[str]
    ciphertexts: ReadOnly[Sequence[CiphertextRecord]]
    tags: ReadOnly[Sequence[str]]
    notes: ReadOnly[Sequence[Note]]
    readable: NotRequired[ReadOnly[bool]]  # False: not encrypted to this investigator
    quarantine: NotRequired[ReadOnly[str | None]]  # the reason it is never shown
    received_day: NotRequired[ReadOnly[str]]
    excerpt: NotRequired[ReadOnly[str]]
    message_sha256: NotRequired[ReadOnly[str]]
    message_size: NotRequired[ReadOnly[int]]
    attachment_count: NotRequired[ReadOnly[int]]
    triage: NotRequired[ReadOnly[Triage]]  # added on first use for older imports
    files: NotRequired[ReadOnly[Sequence[FileRecord]]]  # absent before issue 13


class BundleRecord(TypedDict):
    """An imported transfer bundle, by bundle id (replays are refused by it)."""

    instance: ReadOnly[str]
    created_day: ReadOnly[str]
    imported_at: ReadOnly[str]
    sha256: ReadOnly[str]
    items: ReadOnly[int]
    new: ReadOnly[int]
    limits: NotRequired[ReadOnly[Mapping[str, int] | None]]  # none in format-1 bundles


class ReplyRecord(TypedDict):
    reply_id: ReadOnly[str]
    source: ReadOnly[str]
    instance: ReadOnly[str]
    day: ReadOnly[str]
    by: ReadOnly[str]
    sha256: ReadOnly[str]
    size: ReadOnly[int]
    bundle_id: ReadOnly[str]


class CustodyEntry(TypedDict):
    """One hash-chained custody entry; `details` are the action's own (JSON values)."""

    seq: ReadOnly[int]
    at: ReadOnly[str]
    by: ReadOnly[str]
    action: ReadOnly[str]
    subjects: ReadOnly[Sequence[str]]
    details: ReadOnly[Mapping[str, Any]]
    prev: ReadOnly[str]
    hash: ReadOnly[str]


class VaultState(TypedDict):
    """The whole state. Only review/vault.py holds one; others read through Vault's views."""

    format: str
    org_pub: str
    keyring_version: int
    keyring_fingerprint: NotRequired[str]  # absent in vaults made before keyring pinning
    submissions: dict[str, SubmissionRecord]
    bundles: dict[str, BundleRecord]
    replies: list[ReplyRecord]
    custody: list[CustodyEntry]
    search_cache: NotRequired[str]  # SHA-256 of search.age


# --- the check on load -------------------------------------------------------------------------
# A check takes a value and returns it frozen, or raises _Mismatch; the containers around it add
# where it is on the way out, so a state that checks builds no messages. Records parsed with
# `object_pairs_hook=FrozenDict` (review/vault.py does) are frozen in place, not copied.

Check = Callable[[object], object]


class _Mismatch(VaultStateError):
    """A value that breaks the shape; never leaves check_state (which names where it is)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.path: list[str] = []  # innermost first


def _fail(where: str, what: str) -> VaultStateError:
    return VaultStateError(f"the vault state is damaged or from another version: {where} {what}")


def _scalar(kinds: tuple[type, ...], name: str) -> Check:
    def check(value: object) -> object:
        if type(value) not in kinds:  # not isinstance: true is no integer here
            raise _Mismatch(f"is not {name}")
        return value
    return check


_str = _scalar((str,), "a string")
_int = _scalar((int,), "an integer")
_bool = _scalar((bool,), "true or false")
_num = _scalar((int, float), "a number")


def _json(value: object) -> object:
    """Any JSON value (a custody entry's details): frozen, not checked."""
    return freeze(value)


def _optional(inner: Check) -> Check:
    def check(value: object) -> object:
        return None if value is None else inner(value)
    return check


def _list(item: Check) -> Check:
    def check(value: object) -> object:
        if not isinstance(value, list):
            raise _Mismatch("is not a list")
        frozen = FrozenList()
        for n, element in enumerate(value):
            try:
                list.append(frozen, item(element))
            except _Mismatch as exc:
                exc.path.append(f"[{n}]")
                raise
        return frozen
    return check


def _entries(value: dict[str, object], check_of: Callable[[str], Check],
             step: Callable[[str], str]) -> FrozenDict:
    """`value` with each entry checked and frozen in place; a mismatch adds its key's `step` to
    the path."""
    for key, element in value.items():
        try:
            dict.__setitem__(value, key, check_of(key)(element))
        except _Mismatch as exc:
            exc.path.append(step(key))
            raise
    return value if type(value) is FrozenDict else FrozenDict(value)


def _map(item: Check) -> Check:
    def check(value: object) -> object:
        if not isinstance(value, dict):
            raise _Mismatch("is not an object")
        return _entries(value, lambda _key: item, lambda key: f"[{key!r}]")
    return check


def _record(required: Mapping[str, Check], optional: Mapping[str, Check] | None = None) -> Check:
    """An object with every required key; other keys are checked where known, else kept."""
    known = {**(optional or {}), **required}

    def check(value: object) -> object:
        if not isinstance(value, dict):
            raise _Mismatch("is not an object")
        missing = required.keys() - value.keys()
        if missing:
            raise _Mismatch(f"has no {min(missing)!r}")
        return _entries(value, lambda key: known.get(key, _json), lambda key: f".{key}")
    return check


def _strings(*names: str) -> dict[str, Check]:
    return dict.fromkeys(names, _str)


_CIPHERTEXT = _record(_strings("name", "kind", "sha256", "bundle") | {"size": _int, "offset": _int})
_FINDINGS = _record({}, {"gps": _list(_num), "device": _str, "times": _map(_str),
                         "author": _map(_str), "unreadable": _str})
_FILE = _record(_strings("ciphertext", "sha256", "tool") | {"size": _int, "metadata": _FINDINGS},
                {"filetype": _optional(_str), "phash": _str})
_TRIAGE = _record({"urgency": _optional(_str), "groups": _list(_str), "consent": _list(_str)})
_SUBMISSION = _record(
    _strings("id", "instance", "bundle", "day", "source", "reply_recipient", "imported_at")
    | {"ciphertexts": _list(_CIPHERTEXT), "tags": _list(_str),
       "notes": _list(_record(_strings("at", "by", "text")))},
    _strings("received_day", "excerpt", "message_sha256")
    | {"readable": _bool, "quarantine": _optional(_str), "message_size": _int,
       "attachment_count": _int, "triage": _TRIAGE, "files": _list(_FILE)},
)
_BUNDLE = _record(_strings("instance", "created_day", "imported_at", "sha256")
                  | {"items": _int, "new": _int}, {"limits": _optional(_map(_int))})
_REPLY = _record(_strings("reply_id", "source", "instance", "day", "by", "sha256", "bundle_id")
                 | {"size": _int})
_CUSTODY = _record(_strings("at", "by", "action", "prev", "hash")
                   | {"seq": _int, "subjects": _list(_str), "details": _map(_json)})
# The state's own containers stay plain: the vault adds to them (its records are frozen).
_STATE = _record(
    _strings("format", "org_pub")
    | {"keyring_version": _int, "submissions": _map(_SUBMISSION), "bundles": _map(_BUNDLE),
       "replies": _list(_REPLY), "custody": _list(_CUSTODY)},
    _strings("keyring_fingerprint", "search_cache"),
)


def check_state(document: object) -> VaultState:
    """The decrypted state, checked against the shape above, its records frozen; VaultStateError
    names the first field that breaks it. Keys this version does not know are kept as they are
    (frozen)."""
    try:
        _STATE(document)
    except _Mismatch as exc:
        raise _fail("state" + "".join(reversed(exc.path)), exc.what) from None
    state = cast(VaultState, dict(cast(dict[str, Any], document)))
    for sid, sub in state["submissions"].items():
        if sub["id"] != sid:
            raise _fail(f"state.submissions[{sid!r}]", f"carries the id {sub['id']!r}")
    state["submissions"] = dict(state["submissions"])
    state["bundles"] = dict(state["bundles"])
    state["replies"] = list(state["replies"])
    state["custody"] = list(state["custody"])
    return state
