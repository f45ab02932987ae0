"""What every package's commands share: common options, JSON and table output, progress lines."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any


def add_session(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--session",
        metavar="ID|PATH",
        help="session id or session file (default: $CLOBI_SESSION, else the most recent session)",
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document on stdout and nothing else there",
    )


def seconds(text: str) -> float:
    """An argparse type: a duration of zero seconds or more."""
    value = _number(text, "a number of seconds")
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be 0 seconds or more: {text}")
    return value


def interval(text: str) -> float:
    """An argparse type: the seconds between two steps of a loop, more than zero."""
    value = _number(text, "a number of seconds")
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text}")
    return value


def port(text: str) -> int:
    """An argparse type: a TCP port, or 0 for any free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535: {text}")
    return value


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


class Progress:
    """Progress lines on stderr: on a terminal (rewriting one line), or always with --progress."""

    def __init__(self, enabled: bool | None = None) -> None:
        forced = os.environ.get("CLOBI_PROGRESS") == "1"
        self.tty = sys.stderr.isatty()
        self.enabled = (self.tty or forced) if enabled is None else enabled
        self._open = False

    def line(self, text: str) -> None:
        """A lasting line: a step that is done."""
        if self.enabled:
            self._clear()
            print(text, file=sys.stderr, flush=True)

    def update(self, text: str) -> None:
        """A line that the next update replaces (on a terminal)."""
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + text)
            sys.stderr.flush()
            self._open = True
        else:
            print(text, file=sys.stderr, flush=True)

    def bar(self, done: int, total: int, label: str) -> None:
        """`label [#######.......]  512/1000` on a terminal; plain lines elsewhere."""
        if total <= 0:
            return
        width = 30
        filled = width * done // total
        self.update(f"{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")

    def done(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self._open:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
            self._open = False
