"""The command line: `python -m ddg_sweep.run <command> ...`.

Parses, dispatches, and turns every UserError into one line on stderr (exit 2).
Each command lives in `ddg_sweep/cli/<name>.py`, exposing `register(subparsers)`;
those modules import nothing heavy at module level, so `plan`, `aggregate` and
`tables` start fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ddg_sweep.errors import UserError

COMMAND_MODULES = ("train", "report", "sweep", "status", "bench", "teachers")


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one line naming the problem and the --help to read, not the usage block."""

    def error(self, message: str):
        print(f"error: {message}; see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m ddg_sweep.run",
        description="DDG on DomainBed: train one run, sweep on Ray, aggregate, tabulate.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"ddg_sweep.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
