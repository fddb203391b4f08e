"""Placeholder until its issue lands: registers no commands yet."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add this module's commands to `amanat`."""
