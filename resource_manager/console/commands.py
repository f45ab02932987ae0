"""The console's command language: parsing typed commands is a pure function, tested alone."""

from __future__ import annotations

from dataclasses import dataclass

HELP = """\
start CLOUD [N]     start N VMs (default 1) in a cloud          key: s
start CLOUD N over-budget   the same, past budget_per_hour
drain VM...         soft kill: finish jobs, then power off      key: d
kill VM...          hard kill (asks first); jobs are retried    key: k
autoscale on|off    switch the autoscaler                       key: a
max CLOUD N         set a cloud's max_vms for this console
cancel JOB...       cancel jobs
help                this text                                   key: ?
quit                leave the console; the session keeps running key: q"""


@dataclass(frozen=True)
class Start:
    cloud: str
    count: int = 1
    over_budget: bool = False  # start even past budget_per_hour


@dataclass(frozen=True)
class Drain:
    vms: tuple[str, ...]


@dataclass(frozen=True)
class Kill:
    vms: tuple[str, ...]


@dataclass(frozen=True)
class Autoscale:
    on: bool


@dataclass(frozen=True)
class SetMax:
    cloud: str
    max_vms: int


@dataclass(frozen=True)
class Cancel:
    jobs: tuple[str, ...]


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Quit:
    pass


Command = Start | Drain | Kill | Autoscale | SetMax | Cancel | Help | Quit
OVER_BUDGET = ("over-budget", "--over-budget")  # the explicit form of a start past the budget
VERBS = ("start", "drain", "kill", "autoscale", "max", "cancel", "help", "quit")


class ParseError(ValueError):
    """A typed command that means nothing; the message says what was expected."""


def parse(text: str) -> Command:
    words = text.split()
    if not words:
        raise ParseError("type a command; `help` lists them")
    verb, args = words[0].lower(), words[1:]
    if verb in ("help", "?"):
        return Help()
    if verb in ("quit", "exit", "q"):
        return Quit()
    if verb == "start":
        over = [a for a in args if a.lower() in OVER_BUDGET]
        args = [a for a in args if a.lower() not in OVER_BUDGET]
        if len(args) not in (1, 2) or len(over) > 1:
            raise ParseError("usage: start CLOUD [N] [over-budget]")
        return Start(args[0], _count(args[1]) if len(args) == 2 else 1, bool(over))
    if verb in ("drain", "kill", "cancel"):
        if not args:
            raise ParseError(f"usage: {verb} {'JOB' if verb == 'cancel' else 'VM'}...")
        kinds = {"drain": Drain, "kill": Kill, "cancel": Cancel}
        return kinds[verb](tuple(args))  # type: ignore[return-value]
    if verb == "autoscale":
        if args not in (["on"], ["off"]):
            raise ParseError("usage: autoscale on|off")
        return Autoscale(args[0] == "on")
    if verb == "max":
        if len(args) != 2:
            raise ParseError("usage: max CLOUD N")
        return SetMax(args[0], _count(args[1], minimum=0))
    raise ParseError(f"unknown command {verb!r}; `help` lists them")


def _count(text: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ParseError(f"{text!r} is not a number") from None
    if value < minimum:
        raise ParseError(f"{value} is too small (at least {minimum})")
    return value


def complete(text: str, clouds: list[str], vms: list[str]) -> str:
    """Tab completion: the longest unambiguous extension of the last word."""
    words = text.split(" ")
    if len(words) == 1:
        options = [v for v in VERBS if v.startswith(words[0])]
    else:
        verb = words[0]
        pool = (
            clouds
            if verb in ("start", "max")
            else vms
            if verb in ("drain", "kill")
            else ["on", "off"]
            if verb == "autoscale"
            else []
        )
        options = [o for o in pool if o.startswith(words[-1])]
    if not options:
        return text
    prefix = options[0]
    for option in options[1:]:
        while not option.startswith(prefix):
            prefix = prefix[:-1]
    words[-1] = prefix
    done = " ".join(words)
    return done + " " if len(options) == 1 else done
