"""Install clobi on a VM at boot from the wheel its session uploaded (cloud-init runs this).

Runs before clobi exists on the VM, so it uses only the standard library and boto3 (which the
user-data installs first). It reads the bootstrap, fetches the wheel from the session's S3 prefix
with the instance profile's credentials, refuses it unless its sha256 is the one the session
recorded, installs it into this interpreter's environment, and puts the agent's systemd unit in
place. Exit status 0 on success; otherwise one line on stderr and nothing installed.

    /opt/clobi/bin/python install_clobi.py [--bootstrap PATH] [--unit-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

UNIT = "clobi-agent.service"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="install clobi from the session's wheel")
    parser.add_argument("--bootstrap", default="/etc/clobi/bootstrap.json")
    parser.add_argument("--unit-dir", default="/etc/systemd/system")
    args = parser.parse_args(argv)
    try:
        install(Path(args.bootstrap), Path(args.unit_dir))
    except InstallError as err:
        print(f"clobi install: {err}", file=sys.stderr)
        return 1
    return 0


class InstallError(Exception):
    pass


def install(bootstrap_path: Path, unit_dir: Path) -> None:
    session = json.loads(bootstrap_path.read_text())["session"]
    wheel = session.get("agent_wheel")
    if not wheel:
        raise InstallError(f"{bootstrap_path} names no wheel to install")
    with tempfile.TemporaryDirectory(prefix="clobi-install-") as scratch:
        path = Path(scratch) / wheel["filename"]
        _download(session, wheel["key"], path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != wheel["sha256"]:
            raise InstallError(
                f"{wheel['filename']} has sha256 {digest}, the session pinned {wheel['sha256']}"
            )
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-input", str(path)]
        done = subprocess.run(pip, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise InstallError(f"pip install {wheel['filename']}: {last}")
    unit = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import job_agent, pathlib; print(pathlib.Path("
            f"job_agent.__file__).with_name({UNIT!r}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    unit_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(unit, unit_dir / UNIT)


def _download(session: dict[str, object], key: str, dest: Path) -> None:
    import boto3  # installed by the user-data before this script runs
    from botocore.exceptions import BotoCoreError, ClientError

    kwargs = {"region_name": session["region"]}
    if session.get("endpoint_url"):
        kwargs["endpoint_url"] = session["endpoint_url"]
    try:
        boto3.client("s3", **kwargs).download_file(str(session["bucket"]), key, str(dest))
    except (BotoCoreError, ClientError) as err:
        raise InstallError(f"download s3://{session['bucket']}/{key}: {err}") from err


if __name__ == "__main__":
    sys.exit(main())
