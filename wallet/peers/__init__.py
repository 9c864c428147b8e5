"""Talking to other issuers (no database access): transports, address checks, issuers.

- `base`: the answer type (`Fetched`) and the `Transport` protocol;
- `http`: HTTP(S) on urllib3 with a total deadline, a size cap and no redirects;
- `guard`: the per-origin concurrency cap and circuit breaker;
- `local`: the in-process transport for organisations on this instance;
- `addresses`: which URLs and addresses a peer may be reached at (SSRF);
- `transports`: which transport reaches a URL, one HTTP transport per app;
- `issuers`: fetching and checking an issuer's documents (metadata, keys, status lists);
- `text`: peer-supplied strings made safe to store and show.
"""

from wallet.peers.base import Fetched, Transport, origin, shown
from wallet.peers.guard import Guard, Limits
from wallet.peers.http import HttpTransport
from wallet.peers.issuers import (
    Pinned,
    fetch_issuer,
    get_json,
    get_status_token,
    read_status_token,
    well_known_url,
)
from wallet.peers.local import LOCAL_CALL, LocalTransport
from wallet.peers.text import clean, clean_code
from wallet.peers.transports import check_peer_url, http_transport, transport_for

__all__ = ["LOCAL_CALL", "Fetched", "Guard", "HttpTransport", "Limits", "LocalTransport",
           "Pinned", "Transport", "check_peer_url", "clean", "clean_code", "fetch_issuer",
           "get_json", "get_status_token", "http_transport", "origin", "read_status_token",
           "shown", "transport_for", "well_known_url"]
