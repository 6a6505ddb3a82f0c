"""Which entries a query of the log asks for: its filters, every one of which must hold.

Both adapters of the log apply the same filters: the in-memory one with
:meth:`EntryFilter.matches`, PostgreSQL with a WHERE clause of parameters (each filter served
by an index). Entries always come in sequence order, the cursor being the last sequence seen.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from hypersdk_audit.core.chain import ChainedEntry

PREFIX_MARK = "*"
"""Ends an action filter that stands for every action starting with what precedes it."""
FAILURE = "failure"
"""The result filter for every failure: results are ``success`` or ``failure: <reason>``."""
SUBJECT_RESOURCE = "user/"
"""Resources about a person's account start so (``user/alice``): identity's and policy's events."""


@dataclass(frozen=True)
class TextMatch:
    """A text equal to ``value`` or, with ``prefix``, starting with it."""

    value: str
    prefix: bool = False

    @classmethod
    def of(cls, pattern: str) -> TextMatch:
        """``pattern`` exactly, or, when it ends in ``*``, what starts with the rest."""
        if pattern.endswith(PREFIX_MARK):
            return cls(pattern.removesuffix(PREFIX_MARK), prefix=True)
        return cls(pattern)

    @classmethod
    def of_result(cls, result: str) -> TextMatch:
        """A stored result exactly; ``failure`` is every failure, whatever its reason."""
        return cls(FAILURE, prefix=True) if result == FAILURE else cls(result)

    def matches(self, text: str | None) -> bool:
        """Whether ``text`` is (or starts with) the value; an absent text never is."""
        if text is None:
            return False
        return text.startswith(self.value) if self.prefix else text == self.value


@dataclass(frozen=True)
class EntryFilter:
    """The filters of a query; None (the default) does not filter.

    ``since`` is inclusive and ``until`` exclusive, on the entry's timestamp (its producer's
    clock). ``subject`` is a person a data-protection request is about: the entries they
    caused (``user``) and those about their account (resource ``user/<subject>``).
    """

    since: datetime | None = None
    until: datetime | None = None
    user: str | None = None
    subject: str | None = None
    action: TextMatch | None = None
    resource: str | None = None
    result: TextMatch | None = None
    request_id: str | None = None
    source_ip: str | None = None

    @property
    def narrows(self) -> bool:
        """Whether any filter is set (no filter: every entry)."""
        return any(getattr(self, item.name) is not None for item in fields(self))

    @property
    def subject_resource(self) -> str | None:
        """The resource of the subject's account."""
        return None if self.subject is None else SUBJECT_RESOURCE + self.subject

    def matches(self, entry: ChainedEntry) -> bool:
        """Whether ``entry`` passes every filter (not the cursor or the limit)."""
        return (
            (self.since is None or entry.timestamp >= self.since)
            and (self.until is None or entry.timestamp < self.until)
            and (self.user is None or entry.user == self.user)
            and (
                self.subject is None
                or entry.user == self.subject
                or entry.resource == self.subject_resource
            )
            and (self.action is None or self.action.matches(entry.action))
            and (self.resource is None or entry.resource == self.resource)
            and (self.result is None or self.result.matches(entry.result))
            and (self.request_id is None or entry.request_id == self.request_id)
            and (self.source_ip is None or entry.source_ip == self.source_ip)
        )


EVERY_ENTRY = EntryFilter()
"""No filter."""
