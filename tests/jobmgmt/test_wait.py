"""`clobi wait` tells its outcomes apart by exit status: 0 all succeeded, 1 some failed,
3 timed out, 4 could not ask, 130 interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.pool import Pool
from shared import sessionfile
from shared.session import Session
from tests.helpers import cli


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def test_wait_exit_statuses(tmp_path: Path, make_session: Callable[..., Session]) -> None:
    session = make_session(max_attempts=1)
    client = JobClient(session)
    sid = ("--session", session.id)
    (queued,) = client.submit(JobSpec(script=_script(tmp_path, "q.sh", "true\n")))
    assert cli("wait", queued, "--timeout", "0.5", *sid).code == 3

    # Its state cannot be read: the endpoint is gone from the session file's URL.
    path = sessionfile.path_for(session.id)
    document = json.loads(path.read_text())
    unreachable = tmp_path / "unreachable.json"
    unreachable.write_text(json.dumps({**document, "endpoint_url": "http://127.0.0.1:9"}))
    lost = cli("wait", queued, "--session", str(unreachable))
    assert lost.code == 4 and lost.err.count("\n") == 1, lost.err

    waiting = subprocess.Popen(
        [sys.executable, "-m", "clobi", "wait", queued, *sid],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=dict(os.environ, CLOBI_PROGRESS="1"),  # a progress line: it is waiting
        # SIGINT as a terminal's foreground job has it (a CI script's background inherits
        # it ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert waiting.stderr is not None and "queued" in waiting.stderr.readline()
    waiting.send_signal(signal.SIGINT)
    _, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 130 and "Traceback" not in err, err

    Pool(session).start("local", 1)
    assert cli("wait", queued, "--timeout", "60", *sid).code == 0
    (bad,) = client.submit(JobSpec(script=_script(tmp_path, "bad.sh", "exit 2\n")))
    assert cli("wait", bad, "--timeout", "60", *sid).code == 1
