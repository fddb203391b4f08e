"""`amanat-review open`: the investigator's workbench, a Textual application for any terminal.

The vault is opened once (the command reads the passphrase by keys/passphrase.py's rule before
the screen is taken) and held, locked, for the session. The queue, the source and submission
views read the vault's state and decrypt a submission only when it is opened. Every action (tag,
note, reply, extract, export a case, report) calls the same vault and review functions as the
command of the same name, so each lands in the custody log exactly as the CLI's does.

Only `amanat-review open` imports this package: the other commands never load Textual.
"""

from review.workbench.app import Options, Workbench

__all__ = ["Options", "Workbench"]
