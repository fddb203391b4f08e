"""Both command lines name their values alike (issue 14): every option that takes a value shows
one of the shared metavars of keys.command, an option spelled the same means the same kind of
value wherever it appears, and every command whose output is data offers --json."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from dropbox import cli as amanat_cli
from keys.command import METAVARS
from review import cli as review_cli


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for group in amanat_cli.COMMANDS:  # a group's options exist once it is named
        yield from _walk("amanat", amanat_cli.build_parser([group]), group)
    yield from _walk("amanat-review", review_cli.build_parser(), None)


def _walk(name: str, parser: argparse.ArgumentParser,
          only: str | None) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                if only in (None, sub_name):
                    yield from _walk(f"{name} {sub_name}", sub, None)


def _valued_options() -> Iterator[tuple[str, str, argparse.Action]]:
    for command, parser in _parsers():
        for action in parser._actions:
            takes_value = action.nargs != 0 and not isinstance(
                action, argparse._SubParsersAction | argparse._HelpAction)
            if takes_value and action.choices is None and action.help != argparse.SUPPRESS:
                yield command, "/".join(action.option_strings) or action.dest, action


def test_every_value_shows_a_shared_metavar() -> None:
    strays = [f"{command} {option}: {action.metavar!r}"
              for command, option, action in _valued_options()
              if action.metavar not in METAVARS.values()]
    assert not strays, "\n".join(strays)


# `amanat keys sign --from FILE` and `amanat-review report --from DAY` were both in use before
# this rule; renaming either would change what people type. `--out` is where a command's result
# goes: a BUNDLE file or a DIR, as that result is.
KNOWN_HOMONYMS = {"--from", "--out"}


def test_an_option_means_one_kind_of_value_everywhere() -> None:
    seen: dict[str, set[str]] = {}
    for _command, option, action in _valued_options():
        if option.startswith("--") and option not in KNOWN_HOMONYMS:
            seen.setdefault(option, set()).add(str(action.metavar))
    mixed = {option: kinds for option, kinds in seen.items() if len(kinds) > 1}
    assert not mixed


@pytest.mark.parametrize("words", [
    ["amanat", "onion", "status"], ["amanat", "transfer", "status"],
    ["amanat-review", "list"], ["amanat-review", "show"], ["amanat-review", "search"],
])
def test_data_commands_offer_json(words: list[str]) -> None:
    parsers = dict(_parsers())
    parser = parsers[" ".join(words)]
    assert any("--json" in action.option_strings for action in parser._actions)
