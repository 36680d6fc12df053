"""The CLI's argparse parser: a bad flag is one line and exit 2; `--help` shows every default."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends `(default: X)` to a flag's help, except where there is nothing to show.

    Skipped: flags without a default (None: the run config's layers decide, and their help
    says the config default), switches (False), an empty list (`--set`), and help text that
    already names its default.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action) or text


class Parser(argparse.ArgumentParser):
    """A parser (and, through `add_subparsers`, subparsers) with the CLI's conventions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """One line naming the flag and what is allowed, instead of the usage block."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_command(commands: Any, name: str, summary: str) -> argparse.ArgumentParser:
    """A subcommand whose `--help` opens with the same one-line summary `codream --help` lists."""
    return commands.add_parser(name, help=summary, description=summary)
