"""Endpoint state loss: the moto server forgets everything (as an embedded endpoint that was
restarted would), while clobi's components keep running."""

from __future__ import annotations

import urllib.request


def lose_state(endpoint: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
