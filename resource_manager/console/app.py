"""The urwid console of `clobi rm`. Worker threads (monitor + autoscaler, command executor)
update one ConsoleState and wake the UI with a byte on `watch_pipe`; only the UI thread
touches widgets. Commands go from the UI to the executor as dataclasses on a queue."""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any

import urwid

from resource_manager.autoscaler import SETTING, autoscale_enabled
from resource_manager.console import views
from resource_manager.console.commands import (
    HELP,
    Autoscale,
    Cancel,
    Command,
    Drain,
    Help,
    Kill,
    ParseError,
    Quit,
    SetMax,
    Start,
    complete,
    parse,
)
from resource_manager.console.state import ConsoleState
from resource_manager.manager import Now, ResourceManager
from resource_manager.pool import Pool
from shared.errors import SessionNotFound
from shared.timeutil import utcnow

SLOW_S = 5.0  # a worker call taking longer than this is reported in the log pane
PALETTE = [
    ("header", "black", "light gray"),
    ("pane", "default", "default"),
    ("title", "bold", "default"),
    ("log", "default", "default"),
    ("prompt", "bold", "default"),
]
# On an empty command line one key writes the verb; typing the rest of it is absorbed, so
# `s` and `start` lead to the same place.
SHORTCUTS = {
    "s": "start ",
    "d": "drain ",
    "k": "kill ",
    "c": "cancel ",
    "m": "max ",
    "a": "autoscale ",
}


class CommandLine(urwid.Edit):
    """The command line: history, completion, and one-key shortcuts when it is empty."""

    def __init__(self, console: Console) -> None:
        super().__init__(("prompt", "> "))
        self.console = console
        self.history: list[str] = []
        self.position = 0
        self._absorb = ""  # the rest of a verb a shortcut already wrote

    def keypress(self, size: tuple[()] | tuple[int] | tuple[int, int], key: str) -> str | None:
        text = self.get_edit_text()
        if self.console.confirming is not None:
            self.console.confirm(key == "y")
            return None
        if self._absorb and key == self._absorb[0]:
            self._absorb = self._absorb[1:]
            return None
        self._absorb = ""
        if key == "enter":
            self.set_edit_text("")
            if text.strip():
                self.history.append(text)
                self.position = len(self.history)
                self.console.submit(text)
            return None
        if key == "tab":
            self._set(complete(text, *self.console.names()))
            return None
        if key in ("up", "down") and self.history:
            step = -1 if key == "up" else 1
            self.position = max(0, min(len(self.history), self.position + step))
            self._set(self.history[self.position] if self.position < len(self.history) else "")
            return None
        if not text and key in SHORTCUTS:
            self._set(SHORTCUTS[key])
            self._absorb = SHORTCUTS[key][1:]
            return None
        if not text and key in ("q", "?"):
            self.console.submit({"q": "quit", "?": "help"}[key])
            return None
        return super().keypress(size, key)  # type: ignore[arg-type]

    def _set(self, text: str) -> None:
        self.set_edit_text(text)
        self.set_edit_pos(len(text))


class Console:
    def __init__(self, pool: Pool, interval_s: float) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.state = ConsoleState(pool.session.id)
        self.manager = ResourceManager(pool)
        self.fatal: SessionNotFound | None = None  # why the console stopped by itself
        self.commands: queue.Queue[Command | None] = queue.Queue()
        self.stopping = threading.Event()
        self.confirming: Kill | None = None
        self._busy_since: dict[str, float] = {}
        self._reported_slow: set[str] = set()
        self._wake_fd: int | None = None
        self._build()

    # --- widgets (UI thread only) -------------------------------------------------------

    def _build(self) -> None:
        self.header = urwid.Text("", wrap="clip")
        self.clouds = urwid.Text("", wrap="clip")
        self.queues = urwid.Text("", wrap="clip")
        self.jobs = urwid.Text("", wrap="clip")
        self.vms = urwid.Text("", wrap="clip")
        self.recent = urwid.Text("", wrap="clip")
        self.log = urwid.Text("", wrap="clip")
        self.prompt = CommandLine(self)
        left = urwid.Pile(
            [
                urwid.LineBox(self.clouds, "clouds"),
                urwid.Columns(
                    [urwid.LineBox(self.queues, "queues"), urwid.LineBox(self.jobs, "jobs")]
                ),
            ]
        )
        right = urwid.Pile(
            [urwid.LineBox(self.vms, "VMs"), urwid.LineBox(self.recent, "recent jobs")]
        )
        top = urwid.Columns([("weight", 1, left), ("weight", 1, right)])
        body = urwid.Pile([("pack", top), urwid.LineBox(urwid.Filler(self.log, "bottom"), "log")])
        self.frame = urwid.Frame(
            body,
            header=urwid.AttrMap(self.header, "header"),
            footer=self.prompt,
            focus_part="footer",
        )

    def _render(self) -> None:
        state = self.state
        self.header.set_text(views.header(state))
        self.clouds.set_text(
            "\n".join(
                views.clouds_lines(state, self.pool.session.info.config.clouds, self.pool.max_vms)
            )
        )
        self.queues.set_text("\n".join(views.queues_lines(state)))
        self.jobs.set_text("\n".join(views.jobs_lines(state)))
        self.vms.set_text("\n".join(views.vms_lines(state, utcnow(), limit=6)))
        self.recent.set_text("\n".join(views.recent_lines(state, 4)))
        self.log.set_text("\n".join(state.copy_log(40)))
        if self.confirming is not None:
            self.prompt.set_caption(("prompt", f"kill {' '.join(self.confirming.vms)}? (y/n) "))
        else:
            self.prompt.set_caption(("prompt", "> "))

    def _on_wake(self, data: bytes) -> bool:
        if self.fatal is not None:
            raise urwid.ExitMainLoop()
        self._render()
        return True

    def _tick(self, loop: Any, _: Any = None) -> None:
        now = time.monotonic()
        for worker, since in list(self._busy_since.items()):
            if now - since > SLOW_S and worker not in self._reported_slow:
                self._reported_slow.add(worker)
                self.state.add_log(
                    f"{worker}: a call is taking {now - since:.0f} s "
                    "(a slow cloud or endpoint?); the console stays usable"
                )
        self._render()
        loop.set_alarm_in(1.0, self._tick)

    # --- UI -> workers ------------------------------------------------------------------

    def names(self) -> tuple[list[str], list[str]]:
        clouds = [c.name for c in self.pool.session.info.config.clouds]
        return clouds, [vm.id for vm in self.state.snapshot.vms if vm.state in views.LIVE]

    def submit(self, text: str) -> None:
        try:
            command = parse(text)
        except ParseError as err:
            self.state.add_log(f"error: {err}")
            self._render()
            return
        if isinstance(command, Quit):
            raise urwid.ExitMainLoop()
        if isinstance(command, Help):
            for line in HELP.splitlines():
                self.state.add_log(line)
        elif isinstance(command, Kill):
            self.confirming = command  # asked in the command line; nothing waits for it
        else:
            self.commands.put(command)
        self._render()

    def confirm(self, yes: bool) -> None:
        command, self.confirming = self.confirming, None
        if yes and command is not None:
            self.commands.put(command)
        else:
            self.state.add_log("kill: not confirmed, nothing done")
        self._render()

    # --- workers ------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wake_fd is not None:
            try:
                os.write(self._wake_fd, b"!")
            except OSError:
                pass

    def _note_transitions(self, before: dict[str, str], now: dict[str, str]) -> None:
        """Recent job transitions, from what started and stopped running since the last step
        (a job shorter than a step shows in the counts only)."""
        stamp = time.strftime("%H:%M:%S")
        lines = [f"{stamp} {job} running {vm}" for job, vm in now.items() if job not in before]
        ended = [job for job in before if job not in now]
        for job, item in self.pool.session.jobs.get_many(ended).items():
            code = item.get("exit_code")
            failed = f" exit {code}" if code not in (None, 0) else ""
            lines.append(f"{stamp} {job} {item['state']}{failed} {before[job]}")
        with self.state.lock:
            self.state.recent.extend(lines)

    def monitor_loop(self) -> None:
        """Step until the console stops, or the session is gone (then `fatal` says why)."""
        previous: dict[str, str] = {}
        while not self.stopping.is_set():
            now = Now.read()
            self._busy_since["monitor"] = now.mono
            try:
                for line in self.manager.step(now):
                    self.state.add_log(line)
                previous = self._show_pool(previous)
            except SessionNotFound as err:
                self.fatal = err
                self.stopping.set()
            except Exception as err:  # the loop outlives any single failure
                self.state.add_log(f"monitor: {type(err).__name__}: {err}")
            finally:
                self._busy_since.pop("monitor", None)
                self._reported_slow.discard("monitor")
            self._wake()
            self.stopping.wait(max(0.0, self.interval_s - (time.monotonic() - now.mono)))

    def _show_pool(self, previous: dict[str, str]) -> dict[str, str]:
        """The monitor's last view into the state (a standby's too); returns the jobs running
        now, for the next step's transitions."""
        enabled = autoscale_enabled(self.pool)
        monitor = self.manager.monitor
        with self.state.lock:
            self.state.snapshot = monitor.snapshot
            self.state.autoscale = enabled
        self._note_transitions(previous, monitor.snapshot.running)
        return dict(monitor.snapshot.running)

    def _executor_loop(self) -> None:
        while True:
            command = self.commands.get()
            if command is None:
                return
            self.state.busy = type(command).__name__.lower()
            self._busy_since["command"] = time.monotonic()
            self._wake()
            try:
                self.state.add_log(self._execute(command))
            except Exception as err:
                self.state.add_log(f"error: {err}")
            finally:
                self.state.busy = ""
                self._busy_since.pop("command", None)
                self._reported_slow.discard("command")
            self._wake()

    def _execute(self, command: Command) -> str:
        pool = self.pool
        if isinstance(command, Start):
            started = pool.start(command.cloud, command.count, over_budget=command.over_budget)
            return f"started {', '.join(started)}"
        if isinstance(command, Drain):
            drained = pool.drain(list(command.vms))
            return f"draining {', '.join(drained) or 'nothing (not live)'}"
        if isinstance(command, Kill):
            return f"killed {', '.join(pool.kill(list(command.vms)))}"
        if isinstance(command, Autoscale):
            pool.session.vms.set_setting(SETTING, command.on)
            self.state.autoscale = command.on
            return f"autoscale {'on' if command.on else 'off'}"
        if isinstance(command, SetMax):
            pool.session.info.config.cloud(command.cloud)  # raises for an unknown cloud
            pool.max_vms[command.cloud] = command.max_vms
            self.manager.autoscaler.set_max(command.cloud, command.max_vms)
            return f"{command.cloud}: max_vms {command.max_vms} (for this console)"
        if isinstance(command, Cancel):
            done = {job: pool.session.cancel(job) for job in command.jobs}
            return "cancel: " + ", ".join(f"{job} {what}" for job, what in done.items())
        return f"nothing to do for {command}"

    # --- run ----------------------------------------------------------------------------

    def run(self) -> None:
        loop = urwid.MainLoop(self.frame, PALETTE, handle_mouse=False)
        self._wake_fd = loop.watch_pipe(self._on_wake)
        workers = [
            threading.Thread(target=self.monitor_loop, name="monitor", daemon=True),
            threading.Thread(target=self._executor_loop, name="executor", daemon=True),
        ]
        for worker in workers:
            worker.start()
        self.state.add_log(f"resource manager on session {self.pool.session.id}; ? for help")
        loop.set_alarm_in(1.0, self._tick)
        self._render()
        try:
            loop.run()
        finally:
            self.stopping.set()
            self.commands.put(None)
            for worker in workers:
                worker.join(timeout=5)
            self.manager.release()
        if self.fatal is not None:
            raise self.fatal
