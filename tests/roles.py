"""What each machine installs, read from pyproject.toml's extras (the one list), as import names
for the tests that block a role's missing packages."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _distribution_names(specs: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower() for spec in specs}


def networked_packages() -> tuple[str, ...]:
    """Import names of the server's (with its PostgreSQL driver) and the online workstation's
    packages (the extras), which the organization-key machine and the review workstation do not
    have."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    extras = project["optional-dependencies"]
    wanted = _distribution_names(
        extras["server"] + extras["postgresql"] + extras["workstation"])
    wanted -= _distribution_names(project["dependencies"])
    normalized = {re.sub(r"[-_.]+", "-", name) for name in wanted}
    found = {module for module, dists in packages_distributions().items()
             if any(re.sub(r"[-_.]+", "-", d.lower()) in normalized for d in dists)}
    return tuple(sorted(found - {"_cffi_backend"}))
