"""Every exception class Amanat defines sits under the one root, AmanatError (keys/errors.py), so
a caller can catch "anything Amanat refused" in one place and nothing escapes as a bare
Exception. Input errors are also ValueErrors."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from keys.errors import AmanatError, InputError

PACKAGES = ("keys", "dropbox", "onion", "review")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        names += [info.name for info in pkgutil.walk_packages(root.__path__, f"{package}.")
                  if ".migrations" not in info.name]
    return names


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for name in _modules():
        module = importlib.import_module(name)
        found += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                  if issubclass(obj, BaseException) and obj.__module__ == name]
    return found


def test_the_walk_finds_the_exceptions() -> None:
    names = {cls.__name__ for cls in _exception_classes()}
    assert {"AmanatError", "BundleError", "IntakeError"} <= names


@pytest.mark.parametrize("cls", _exception_classes(), ids=lambda cls: cls.__qualname__)
def test_every_exception_is_under_the_root(cls: type[BaseException]) -> None:
    assert issubclass(cls, AmanatError), f"{cls.__module__}.{cls.__qualname__}"
    if issubclass(cls, InputError):
        assert issubclass(cls, ValueError)
