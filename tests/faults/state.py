"""Endpoint state loss: the moto server forgets everything (as an embedded endpoint that was
restarted would), while clobi's components keep running."""

from __future__ import annotations

from embedded import daemon as endpoint
from shared import localkeys


def lose_state(url: str) -> None:
    """moto's reset, signed with the key of this test's CLOBI_HOME (the endpoint's)."""
    keys = localkeys.read(localkeys.default_path())
    assert keys is not None, "no key pair in this test's CLOBI_HOME"
    endpoint.signed_request(url, "/moto-api/reset", keys, "POST")
