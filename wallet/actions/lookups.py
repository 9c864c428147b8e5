"""The network steps of verifying, each taken between transactions.

A `Directory` never touches the network; an action that verifies for an organisation
holds a `Lookups`, which takes the steps the directory cannot:

- `verify(attempt)` runs a verification against the snapshot; when it met a stale pin
  or a kid a trusted issuer's pinned keys lack (`Directory.wanted`), it re-pins those
  issuers (a request to each, then one short transaction: `trust.repin`) and runs the
  verification once more against the snapshot of the new config version;
- `fetch_lists(...)` fetches the status lists that verified notes point to and that this
  process does not hold (verified with the issuer's keys; an unknown kid there re-pins
  too; one request per list at a time in the process, its answer shared by the requests
  that wait for it while it is young), and `listed(...)` hands each back, or the reason
  it could not be had.

Before either step the open transaction ends (`end_transaction`), so no lock is held
while a peer answers. Each issuer is re-pinned at most once per action.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from sqlmodel import Session

from wallet import clock
from wallet.actions import trust
from wallet.actions._base import commit
from wallet.core import notes, status
from wallet.core.errors import WalletError
from wallet.directory import Directory, check_listed, status_lists
from wallet.models import Organization
from wallet.peers import get_status_token, read_status_token

T = TypeVar("T")
SHARED_WAIT = 0.5  # seconds; a well issuer answers a status list quicker than that


def end_transaction(session: Session) -> None:
    """End the open transaction before a network step: no lock is held while a peer
    answers. What the action wrote so far (an idempotency claim, a nonce) commits."""
    commit(session)


class Lookups:
    """One action's directory of an organisation, kept fresh by explicit network steps."""

    def __init__(self, session: Session, org: Organization) -> None:
        self.session, self.org = session, org
        self.directory = Directory(session, org)
        self._tried: set[str] = set()
        self._fetched: dict[str, status.StatusList | WalletError] = {}

    def verify(self, attempt: Callable[[Directory], T]) -> T:
        """`attempt(directory)`, once more after re-pinning what it found stale or lacking.

        `attempt` only reads (it may run twice). Its `WalletError` stands when nothing
        was re-pinned; so does its result.
        """
        try:
            result = attempt(self.directory)
        except WalletError:
            if not self._repin(self.directory.wanted):
                raise
        else:
            if not self._repin(self.directory.wanted):
                return result
        return attempt(self.directory)

    def fetch_lists(self, wanted: Mapping[str, str]) -> None:
        """Fetch the status lists (URI -> issuer) this process does not hold, verified
        with their issuers' keys; a failure is kept for `listed` to raise."""
        kept = status_lists()
        missing = {}
        for uri, issuer in wanted.items():
            if uri in self._fetched:
                continue
            held = kept.get(uri)
            if held is None:
                missing[uri] = issuer
            else:  # the action's own from now: it may expire before `listed` asks
                self._fetched[uri] = held
        if not missing:
            return
        self._fetch_all(missing)
        stale = {issuer for uri, issuer in missing.items()
                 if isinstance(self._fetched[uri], WalletError)} & self.directory.wanted
        if self._repin(stale):  # a list signed with a key we had not pinned yet
            self._fetch_all({uri: issuer for uri, issuer in missing.items()
                             if issuer in stale})

    def listed(self, uri: str) -> status.StatusList:
        """The status list at `uri` (fetched or held), or the error that kept it away."""
        found = self._fetched.get(uri)
        if isinstance(found, WalletError):
            raise found
        assert found is not None, "fetch_lists first"
        return found

    def check_status(self, note: notes.Note, *, redeeming: bool = False) -> None:
        """Refuse a note its issuer's status list (fetched by `fetch_lists`) marks."""
        check_listed(note, self.listed(note.status_uri), redeeming=redeeming)

    def _fetch_all(self, lists: Mapping[str, str]) -> None:
        """Read the issuers' keys (the database), end the transaction, then fetch."""
        keys: dict[str, notes.IssuerKeys | WalletError] = {}
        for issuer in set(lists.values()):
            try:
                keys[issuer] = self.directory.resolve(issuer)
            except WalletError as err:
                keys[issuer] = err
        end_transaction(self.session)
        for uri, issuer in lists.items():
            self._fetched[uri] = self._fetch(uri, keys[issuer])

    @staticmethod
    def _fetch(uri: str, keys: notes.IssuerKeys | WalletError
               ) -> status.StatusList | WalletError:
        if isinstance(keys, WalletError):
            return keys
        # One request for a list at a time in this process: the requests that miss it
        # while one is under way wait for the issuer's answer and each verifies it with
        # its own keys (its own re-pin may follow), so a cold or just-expired list costs
        # the issuer one request per ttl, not one per thread. They wait only until that
        # request is SHARED_WAIT old, then ask the issuer themselves, through its
        # concurrency cap (as requests over the cap queue only while those in flight are
        # young): a slow issuer holds no more threads than the cap allows.
        kept = status_lists()
        answer = kept.share(uri, lambda: _get(uri), wait=SHARED_WAIT)
        if not isinstance(answer, str):  # a list kept meanwhile, or why it could not be had
            return answer
        try:
            listed = read_status_token(uri, answer, keys, now=clock.unix())
        except WalletError as err:
            return err
        return kept.put(uri, listed, ttl=listed.ttl)

    def _repin(self, wanted: set[str]) -> bool:
        """Re-pin issuers not tried yet (network, then a transaction each); on any change
        read the organisation's new config version into a new directory."""
        todo = sorted(wanted - self._tried)
        if not todo:
            return False
        self._tried.update(todo)
        end_transaction(self.session)
        changed = [issuer for issuer in todo
                   if trust.repin(self.session, org=self.org, issuer=issuer)]
        if not changed:
            return False
        self.session.refresh(self.org)  # the config version the re-pin bumped
        self.directory = Directory(self.session, self.org)
        return True


def _get(uri: str) -> str | WalletError:
    """The issuer's status list token at `uri`, unverified, or why it could not be had."""
    try:
        return get_status_token(uri)
    except WalletError as err:
        return err
