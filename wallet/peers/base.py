"""What every transport shares: the answer type and the transport protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from wallet.peers.text import clean


@dataclass(frozen=True, slots=True)
class Fetched:
    """An HTTP answer."""

    status: int
    body: bytes
    content_type: str


class Transport(Protocol):
    """How requests reach an issuer."""

    def request(self, method: str, url: str, *, body: bytes | None = None,
                content_type: str | None = None) -> Fetched: ...


def origin(url: str) -> str:
    """`scheme://host[:port]` of a URL, as written (compare with it; print `shown`)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def shown(url: str, limit: int = 200) -> str:
    """A URL (peer-supplied URLs may hold anything) made safe for a message."""
    return clean(url, limit)
