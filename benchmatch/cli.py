"""The `benchmatch` command: its parser and `main`. Commands live in benchmatch/commands/ by stage
(measure, learn, match); what they print for people lives in benchmatch/render.py."""

from __future__ import annotations

import argparse
import os
import sys

from benchmatch.commands import learn, llm, match, measure

PROG_HELP = ("Benchmark an AI asset across heterogeneous hardware on Ray, learn how it behaves, and recommend "
             "the hardware, count and configuration that meet your requirements.")
CATALOG_HELP = "hardware catalog YAML (default: configs/hardware.yaml)"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option shows its default; `None` and flags say nothing rather than "(default: None)"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmatch", description=PROG_HELP, formatter_class=HelpFormatter)
    p.add_argument("--catalog", help=CATALOG_HELP)
    # `--catalog` is also accepted after the subcommand; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--catalog", default=argparse.SUPPRESS, help=CATALOG_HELP)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for stage in (measure, llm, learn, match):
        stage.register(sub, [common], HelpFormatter)
    return p


def main(argv: list[str] | None = None) -> int:
    from cluster.errors import BenchmatchError

    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`benchmatch ... | head`): not an error; silence the final flush too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (BenchmatchError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        # Our errors name the file or field and how to fix it; a path the user gave may not exist.
        print(f"benchmatch {args.cmd}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
