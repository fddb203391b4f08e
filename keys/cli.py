"""`amanat keys`: the organization's keyring, kept in an "org dir" on an offline machine.

An org dir holds three files (docs/format.md, section 3.6):

    org.key       the organization signing key (Ed25519), mode 0600; never leaves this machine
    org.pub       the organization public key; every server pins it
    keyring.json  the signed keyring; copied to every server

Commands that change the keyring re-sign it one version up. Private files are created with
O_EXCL and mode 0600, and nothing secret is ever printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from keys.codename import to_locale_digits
from keys.errors import ConfigError, KeyringError
from keys.files import read_file, read_secret, replace_atomic, write_new
from keys.identity_file import (
    DEFAULT_WORK_FACTOR,
    InvestigatorSecrets,
    TransferCredential,
    protect_credential,
    protect_identity,
)
from keys.keyring import (
    Investigator,
    Keyring,
    empty_keyring,
    encode_key,
    format_org_public_key,
    format_org_signing_key,
    load_keyring,
    parse_org_public_key,
    parse_org_signing_key,
    parse_unsigned_keyring,
    parse_verify_key,
    sign_keyring,
)
from keys.passphrase import PassphraseError, ask_passphrase, passphrase_from_file

ORG_KEY = "org.key"
ORG_PUB = "org.pub"
KEYRING = "keyring.json"
MIN_PASSPHRASE_CHARS = 10


# --- command registration --------------------------------------------------------------------


_Command = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `amanat keys ...` to the `amanat` command."""
    keys = subparsers.add_parser("keys", help="the organization key and the signed keyring")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")

    def command(
        name: str, run: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text)
        parser.set_defaults(run=run)
        return parser

    _register_org_commands(command)
    _register_reading_commands(command)


def _register_org_commands(command: _Command) -> None:
    """Commands that run in the org dir, with the organization key, and re-sign the keyring."""
    p = command("init-org", run_init_org, "create an org dir: org key, org.pub, empty keyring v1")
    p.add_argument("--dir", required=True, type=Path, metavar="DIR")

    p = command(
        "add-investigator",
        run_add_investigator,
        "generate an investigator's two credentials: the offline identity file (review "
        "workstation only) and the transfer credential (online workstation), and add both "
        "public keys to the keyring",
    )
    p.add_argument("--dir", required=True, type=Path, metavar="DIR")
    p.add_argument("--label", required=True, metavar="NAME")
    _add_identity_options(p)
    _add_credential_options(p)
    _add_work_factor(p)

    p = command(
        "revoke",
        run_revoke,
        "mark an investigator revoked (new files skip their key, their requests and replies "
        "are refused); with --transfer-only, revoke only their transfer credential",
    )
    p.add_argument("--dir", required=True, type=Path, metavar="DIR")
    p.add_argument("--label", required=True, metavar="NAME")
    p.add_argument(
        "--transfer-only",
        action="store_true",
        help="revoke only the transfer credential (a lost or compromised online workstation)",
    )

    p = command(
        "transfer-credential",
        run_transfer_credential,
        "issue a new transfer credential for an investigator (first issue, migration from an "
        "identity-only keyring, or rotation: the old credential stops working)",
    )
    p.add_argument("--dir", required=True, type=Path, metavar="DIR")
    p.add_argument("--label", required=True, metavar="NAME")
    _add_credential_options(p)
    _add_work_factor(p)

    p = command(
        "rotate-identity",
        run_rotate_identity,
        "give an investigator a new offline identity (age key and reply key); the transfer "
        "credential stays. Keep the old identity file offline to read what it already opened",
    )
    p.add_argument("--dir", required=True, type=Path, metavar="DIR")
    p.add_argument("--label", required=True, metavar="NAME")
    _add_identity_options(p)
    _add_work_factor(p)

    p = command(
        "pin-transfer-key",
        run_pin_transfer_key,
        "pin the server's transfer verify key (Ed25519, base64) in the keyring",
    )
    p.add_argument("--dir", required=True, type=Path, metavar="DIR")
    p.add_argument("--key", metavar="KEY",
                   required=True, help="the transfer verify key, standard base64")

    p = command(
        "sign",
        run_sign,
        "re-sign the keyring one version up, or sign a prepared "
        "unsigned keyring payload given with --from",
    )
    p.add_argument("--dir", required=True, type=Path, metavar="DIR")
    p.add_argument(
        "--from",
        dest="unsigned",
        type=Path,
        help="an unsigned keyring payload (JSON) with a higher version", metavar="FILE"
    )


def _add_identity_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--identity-out",
        required=True,
        type=Path,
        help="where to write the offline identity file (must not exist); it goes to the review "
        "workstation only", metavar="FILE"
    )
    p.add_argument(
        "--passphrase-file",
        type=Path,
        help="read the identity's passphrase from its first line instead of prompting",
        metavar="FILE",
    )


def _add_credential_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--credential-out",
        required=True,
        type=Path,
        help="where to write the transfer credential (must not exist); it goes to the online "
        "workstation and holds no key that opens testimonies", metavar="FILE"
    )
    p.add_argument(
        "--credential-passphrase-file",
        type=Path,
        help="read the credential's passphrase from its first line instead of prompting "
        "(choose another passphrase than the identity's)", metavar="FILE"
    )


def _add_work_factor(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--work-factor",
        type=int,
        default=DEFAULT_WORK_FACTOR,
        choices=range(10, 23),
        metavar="10..22",
        help=f"scrypt work factor, log2 N (default {DEFAULT_WORK_FACTOR})",
    )


def _register_reading_commands(command: _Command) -> None:
    """Commands that only verify and print; they need no secret and run anywhere."""
    _add_reading_options(command("show", run_show, "print the keyring after verifying it"))
    _add_reading_options(
        command("verify", run_verify, "verify the keyring's signature, format and version")
    )
    p = command("fingerprint", run_fingerprint, "print the keyring fingerprint people compare")
    _add_reading_options(p)
    p.add_argument(
        "--digits",
        choices=("latin", "fa", "ar"),
        default="latin",
        help="print the fingerprint in Latin, Persian or Arabic-Indic digits",
    )


def _add_reading_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(),
        help=f"the org dir holding {KEYRING} and {ORG_PUB} (default: here)", metavar="DIR"
    )
    parser.add_argument("--keyring", metavar="FILE",
                        type=Path, help=f"the keyring file (default DIR/{KEYRING})")
    parser.add_argument(
        "--org-pub",
        type=Path,
        help=f"the pinned organization public key file (default DIR/{ORG_PUB})", metavar="FILE"
    )
    parser.add_argument(
        "--min-version",
        type=int,
        default=0,
        help="refuse a keyring older than this version (the last one seen)", metavar="N"
    )


# --- commands --------------------------------------------------------------------------------


def run_init_org(args: argparse.Namespace) -> int:
    root: Path = args.dir
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in (ORG_KEY, ORG_PUB, KEYRING):
        if (root / name).exists():
            raise ConfigError(f"{root / name} already exists: refusing to overwrite an org dir")
    signing_key = SigningKey.generate()
    keyring = empty_keyring(signing_key.verify_key)
    write_new(root / ORG_KEY, format_org_signing_key(signing_key), secret=True)
    write_new(root / ORG_PUB, format_org_public_key(signing_key.verify_key), secret=False)
    write_new(root / KEYRING, sign_keyring(keyring, signing_key), secret=False)
    print(f"created org dir {root}")
    print(f"  {ORG_KEY}       organization signing key (mode 0600): keep it offline")
    print(f"  {ORG_PUB}       organization public key: {encode_key(signing_key.verify_key)}")
    print(f"  {KEYRING}  keyring version 1, no investigators yet")
    print(f"fingerprint: {keyring.fingerprint()}")
    return 0


def run_add_investigator(args: argparse.Namespace) -> int:
    signing_key, keyring = _open_org_dir(args.dir)
    new_keys = InvestigatorSecrets.generate(args.label)
    credential = TransferCredential.generate(args.label)
    updated = keyring.with_investigator(new_keys.public_entry(_today(), credential))
    _refuse_same_path(args.identity_out, args.credential_out)
    passphrase = read_new_passphrase(args.passphrase_file, "the offline identity")
    credential_passphrase = read_new_passphrase(
        args.credential_passphrase_file, "the transfer credential"
    )
    files = [
        (args.identity_out, protect_identity(new_keys, passphrase, args.work_factor)),
        (
            args.credential_out,
            protect_credential(credential, credential_passphrase, args.work_factor),
        ),
    ]
    _write_with_keyring(args.dir, sign_keyring(updated, signing_key), files)
    entry = updated.investigators[-1]
    print(f"added investigator {entry.label!r}; keyring is now version {updated.version}")
    print(f"  offline identity (review workstation only, mode 0600): {args.identity_out}")
    print(f"  transfer credential (online workstation, mode 0600):   {args.credential_out}")
    _print_entry(entry)
    print(f"fingerprint: {updated.fingerprint()}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    if args.transfer_only:
        return _change(
            args.dir,
            lambda k: k.with_investigator_transfer_key(args.label, None),
            f"revoked the transfer credential of {args.label!r}",
        )
    return _change(args.dir, lambda k: k.with_revoked(args.label), f"revoked {args.label!r}")


def run_transfer_credential(args: argparse.Namespace) -> int:
    signing_key, keyring = _open_org_dir(args.dir)
    target = keyring.investigator_by_label(args.label)
    credential = TransferCredential.generate(target.label if target else args.label)
    updated = keyring.with_investigator_transfer_key(args.label, credential.signing_key.verify_key)
    passphrase = read_new_passphrase(args.credential_passphrase_file, "the transfer credential")
    data = protect_credential(credential, passphrase, args.work_factor)
    _write_with_keyring(args.dir, sign_keyring(updated, signing_key), [(args.credential_out, data)])
    print(f"issued a transfer credential for {args.label!r}; keyring is now version "
          f"{updated.version} (any earlier credential of theirs no longer works)")
    print(f"  transfer credential (online workstation, mode 0600): {args.credential_out}")
    print(f"  transfer key: {encode_key(credential.signing_key.verify_key)}")
    print(f"fingerprint: {updated.fingerprint()}")
    return 0


def run_rotate_identity(args: argparse.Namespace) -> int:
    signing_key, keyring = _open_org_dir(args.dir)
    target = keyring.investigator_by_label(args.label)
    new_keys = InvestigatorSecrets.generate(target.label if target else args.label)
    updated = keyring.with_rotated_identity(
        args.label, new_keys.identity.recipient(), new_keys.signing_key.verify_key
    )
    passphrase = read_new_passphrase(args.passphrase_file, "the offline identity")
    data = protect_identity(new_keys, passphrase, args.work_factor)
    _write_with_keyring(args.dir, sign_keyring(updated, signing_key), [(args.identity_out, data)])
    entry = updated.investigator_by_label(args.label)
    assert entry is not None
    print(f"rotated the offline identity of {entry.label!r}; keyring is now version "
          f"{updated.version}")
    print(f"  new offline identity (review workstation only, mode 0600): {args.identity_out}")
    _print_entry(entry)
    print(f"fingerprint: {updated.fingerprint()}")
    return 0


def _refuse_same_path(identity: Path, credential: Path) -> None:
    if identity.resolve() == credential.resolve():
        raise ConfigError("the identity and the transfer credential must be two different files")


def _write_with_keyring(root: Path, keyring_doc: bytes, files: list[tuple[Path, bytes]]) -> None:
    """Write new secret files, then the keyring that names their keys. If anything fails, the
    files written so far are taken back: keys the keyring does not list would only confuse."""
    written: list[Path] = []
    try:
        for path, data in files:
            write_new(path, data, secret=True)
            written.append(path)
        replace_atomic(root / KEYRING, keyring_doc, secret=False)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def _print_entry(entry: Investigator) -> None:
    transfer = "none" if entry.transfer_key is None else encode_key(entry.transfer_key)
    print(f"  age recipient: {entry.recipient}")
    print(f"  verify key:    {encode_key(entry.verify_key)} (offline: signs replies)")
    print(f"  transfer key:  {transfer} (online: signs transfer requests)")


def run_pin_transfer_key(args: argparse.Namespace) -> int:
    key = parse_verify_key(args.key.strip(), "transfer verify key")
    return _change(
        args.dir,
        lambda k: k.with_transfer_key(key),
        f"pinned transfer verify key {encode_key(key)}",
    )


def run_sign(args: argparse.Namespace) -> int:
    if args.unsigned is None:
        return _change(args.dir, Keyring.bumped, "re-signed the keyring")

    def from_payload(current: Keyring) -> Keyring:
        prepared = parse_unsigned_keyring(
            read_file(args.unsigned, "unsigned keyring"), current.org_verify_key
        )
        if prepared.version <= current.version:
            raise KeyringError(
                f"the prepared keyring has version {prepared.version}; it must be "
                f"above the current version {current.version}"
            )
        return prepared

    return _change(args.dir, from_payload, f"signed the keyring from {args.unsigned}")


def run_show(args: argparse.Namespace) -> int:
    keyring = _read_keyring(args)
    print(f"keyring version {keyring.version} ({keyring.format_id})")
    print(f"fingerprint:      {keyring.fingerprint()}")
    print(f"organization key: {encode_key(keyring.org_verify_key)}")
    transfer = keyring.transfer_verify_key
    print(f"transfer key:     {'not pinned' if transfer is None else encode_key(transfer)}")
    print(
        f"investigators:    {len(keyring.active_investigators())} active, "
        f"{len(keyring.investigators)} in all"
    )
    for inv in keyring.investigators:
        state = "REVOKED" if inv.revoked else "active"
        transfer_key = "none" if inv.transfer_key is None else encode_key(inv.transfer_key)
        print(f"  - {inv.label} ({state}, added {inv.added.isoformat()})")
        print(f"      age recipient: {inv.recipient}")
        print(f"      verify key:    {encode_key(inv.verify_key)}")
        print(f"      transfer key:  {transfer_key}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    keyring = _read_keyring(args)
    print(
        f"keyring OK: version {keyring.version}, {len(keyring.active_investigators())} active "
        f"investigator(s), fingerprint {keyring.fingerprint()}"
    )
    return 0


def run_fingerprint(args: argparse.Namespace) -> int:
    fingerprint = _read_keyring(args).fingerprint()
    print(fingerprint if args.digits == "latin" else to_locale_digits(fingerprint, args.digits))
    return 0


# --- org dir ---------------------------------------------------------------------------------


def _open_org_dir(root: Path) -> tuple[SigningKey, Keyring]:
    """The org signing key and the current keyring, after checking that they belong together."""
    signing_key = parse_org_signing_key(read_secret(root / ORG_KEY, "organization key"))
    pinned = parse_org_public_key(read_file(root / ORG_PUB, "organization public key"))
    if bytes(pinned) != bytes(signing_key.verify_key):
        raise ConfigError(f"{root / ORG_PUB} does not match {root / ORG_KEY}")
    keyring = load_keyring(read_file(root / KEYRING, "keyring"), pinned)
    return signing_key, keyring


def _change(root: Path, change: Callable[[Keyring], Keyring], done: str) -> int:
    signing_key, keyring = _open_org_dir(root)
    updated = change(keyring)
    replace_atomic(root / KEYRING, sign_keyring(updated, signing_key), secret=False)
    print(f"{done}; keyring is now version {updated.version}")
    print(f"fingerprint: {updated.fingerprint()}")
    return 0


def _read_keyring(args: argparse.Namespace) -> Keyring:
    keyring_path = args.keyring or args.dir / KEYRING
    org_pub_path = args.org_pub or args.dir / ORG_PUB
    org_key = parse_org_public_key(read_file(org_pub_path, "organization public key"))
    return load_keyring(read_file(keyring_path, "keyring"), org_key, args.min_version)


def _today() -> date:
    return datetime.now(UTC).date()


# --- passphrases -----------------------------------------------------------------------------


def read_new_passphrase(path: Path | None, what: str = "the new identity file") -> str:
    """A new passphrase from a file (its first line) or typed twice at a terminal."""
    if path is not None:
        passphrase = passphrase_from_file(path)
    else:
        passphrase = ask_passphrase(f"Passphrase for {what}: ", what, confirm=True)
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise PassphraseError(f"the passphrase needs at least {MIN_PASSPHRASE_CHARS} characters")
    return passphrase


