"""The README's five-minute tour, line by line as a new user types it, from the folder it puts
them in (a checkout's root, then `mywork/`): every line must succeed."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import Result, cli, clobi_process, stop_process

ROOT = Path(__file__).resolve().parents[2]


def tour() -> list[list[str]]:
    """The tour's command lines, without their comments."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## A five-minute tour", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            lines.append(words)
    return lines


def test_the_readme_tour_runs_as_written(
    tmp_path: Path, clobi_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clobi_home / "local" / "credentials").unlink()  # `local up` makes the user's own
    checkout = tmp_path / "checkout"  # a clone's root, as far as the tour looks
    checkout.mkdir()
    (checkout / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(checkout)
    names: dict[str, str] = {}  # the README's example ids -> this run's
    rm = None
    try:
        for words in tour():
            if words[:2] == ["clobi", "rm"]:  # it runs until stopped
                rm = clobi_process(*words[1:])
                continue
            words = [_real(word, names) for word in words]
            if "&&" in words:  # `clobi session init mywork && cd mywork`
                first = words[: words.index("&&")]
                assert _run(first).code == 0
                monkeypatch.chdir(words[-1])
                continue
            result = _run(words)
            assert result.code == 0, f"{' '.join(words)}: {result.err}"
            _learn(words, result, names)
    finally:
        if rm is not None:
            stop_process(rm)
        cli("session", "cleanup", "--yes")
        cli("local", "down")


def _run(words: list[str]) -> Result:
    assert words[0] == "clobi", words
    if words[1] == "local":  # its daemon must outlive this call: a real process
        done = subprocess.run(
            [sys.executable, "-m", "clobi", *words[1:]], capture_output=True, text=True
        )
        return Result(done.returncode, done.stdout, done.stderr)
    return cli(*words[1:])


def _real(word: str, names: dict[str, str]) -> str:
    """The README's example job and VM ids, as this run named them."""
    job = re.fullmatch(r"1a2b3c4d\.(\d+)", word)
    if job:
        return f"{names['batch']}.{job.group(1)}"
    return names.get(word, word)


def _learn(words: list[str], result: Result, names: dict[str, str]) -> None:
    if words[1] == "submit" and "--token" in words:  # ten jobs: .0 .. .9
        names["batch"] = result.out.split()[0].split(".")[0]
    if words[1:3] == ["vm", "list"]:
        vms = [line.split()[0] for line in result.out.splitlines()[1:]]
        names["vm-local-3f2a1c"] = vms[0]
