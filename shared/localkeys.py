"""The embedded endpoint's key pair: `$CLOBI_HOME/local/credentials`, an AWS shared-credentials
file (mode 0600) that only its owner can read. The endpoint verifies every request's signature
against it; clobi's clients and local agents sign with it. It is made once and kept, so the
agents of a running session and a restarted endpoint agree on it."""

from __future__ import annotations

import configparser
import os
import secrets
import string
from pathlib import Path

from shared.errors import EndpointError
from shared.home import local_dir, private_dir

PROFILE = "clobi-local"
_KEY_ALPHABET = string.ascii_uppercase + string.digits


def default_path() -> Path:
    return local_dir() / "credentials"


def ensure(path: Path) -> tuple[str, str]:
    """The key pair in `path`, made (random, mode 0600) when the file does not exist yet."""
    found = read(path)
    if found is not None:
        return found
    key = "CLOBI" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(15))
    secret = secrets.token_urlsafe(30)
    private_dir(path.parent)
    text = f"[{PROFILE}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    try:  # a link is atomic and never replaces: of two `local up` at once, the first pair wins
        os.link(tmp, path)
    except FileExistsError:
        return _required(path)
    finally:
        tmp.unlink()
    return key, secret


def read(path: Path) -> tuple[str, str] | None:
    """The key pair in `path`, or None when there is no such file. Raises EndpointError for a
    file that is not one of ours, or that others may read."""
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except OSError as err:
        raise EndpointError(f"{path}: cannot read the embedded endpoint's key: {err}") from None
    if mode & 0o077:
        raise EndpointError(f"{path}: others may read the embedded endpoint's key (chmod 600 it)")
    parser = configparser.ConfigParser()
    try:
        parser.read_string(text)
        section = parser[PROFILE]
        return section["aws_access_key_id"], section["aws_secret_access_key"]
    except (configparser.Error, KeyError):
        raise EndpointError(f"{path}: no [{PROFILE}] key pair in it") from None


def _required(path: Path) -> tuple[str, str]:
    found = read(path)
    if found is None:
        raise EndpointError(f"{path}: the embedded endpoint's key vanished")
    return found
