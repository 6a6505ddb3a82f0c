"""Verifying the log with the offline verifier, from a signed starting point (decision 0048).

The service checks its own log exactly as an outsider would: it writes the log as an export
bundle (``hypersdk_auditproof.bundle``) and hands it to ``hypersdk_auditproof``'s verifier,
trusting only the service's checkpoint keys. What differs is where the bundle starts:

- an **incremental** verification (``GET /audit/verify``) starts at the newest checkpoint an
  earlier verification found valid (the genesis otherwise): the tree's compact range and the
  chain's head there are checked against that signed checkpoint, then only the entries after it
  are walked. Its cost follows what was added since, not the log's length;
- a **full** verification starts at the genesis and walks everything. It runs in the
  background; its progress and result are recorded (``audit.verifications``).

Each run is recorded, so the next incremental one starts where this one was found valid.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hypersdk_audit.core.chain import ChainedEntry
from hypersdk_audit.core.proofs import root_nodes
from hypersdk_audit.ports.outbound import AuditLog
from hypersdk_auditproof.bundle import Genesis, checkpoint_line, entry_line, header_line
from hypersdk_auditproof.entries import GENESIS_HASH, format_timestamp
from hypersdk_auditproof.verify import verify_bundle

PAGE = 1000
"""Entries read at a time while a bundle is written."""
STALE_SECONDS = 120
"""A running verification not heard of for this long was abandoned (its replica stopped)."""


@dataclass(frozen=True)
class Problem:
    """One problem the verifier found (its stable code, where, what)."""

    code: str
    sequence: int | None
    message: str


@dataclass(frozen=True)
class VerificationRun:
    """A verification, running or done."""

    id: str
    kind: str
    """``incremental`` or ``full``."""
    status: str
    """``running``, ``done`` or ``abandoned``."""
    requested_by: str | None
    started_at: datetime
    updated_at: datetime
    from_size: int
    """The entries before this one were not walked (the signed starting point)."""
    to_size: int
    """The log's size when it started: the entries up to it are walked."""
    checked: int = 0
    """Entries walked so far."""
    finished_at: datetime | None = None
    valid: bool | None = None
    latest_checkpoint: int | None = None
    """The newest checkpoint whose signature, root and head were found right."""
    problems: tuple[Problem, ...] = field(default_factory=tuple)
    problems_not_listed: int = 0


class BundleVerifier(Protocol):
    """Runs the offline verifier over a bundle, trusting only ``keys``."""

    async def verify(
        self, lines: AsyncIterator[bytes], *, keys: Mapping[str, Ed25519PublicKey]
    ) -> dict[str, Any]:
        """The verifier's report as JSON (``hypersdk_auditproof.report.Report.to_json``)."""
        ...


class InProcessVerifier:
    """The verifier in this process, over the bundle held in memory: small logs and tests.

    The service runs it in a child process (``adapters.outbound.verifier``).
    """

    async def verify(
        self, lines: AsyncIterator[bytes], *, keys: Mapping[str, Ed25519PublicKey]
    ) -> dict[str, Any]:
        """The report as JSON."""
        chunks = [chunk async for chunk in lines]
        text = b"".join(chunks).splitlines()
        report = await asyncio.to_thread(verify_bundle, text, keys=keys)
        return report.to_json()


@dataclass(frozen=True)
class Start:
    """Where a bundle starts: a size, the chain's head there, the tree's compact range."""

    size: int
    head: str
    frontier: tuple[bytes, ...]

    def genesis(self) -> Genesis:
        """As the bundle header says it."""
        return Genesis(size=self.size, head=self.head, frontier=self.frontier)


async def start_at(log: AuditLog, size: int) -> Start:
    """The starting point at ``size`` (an entry still held, or the genesis's own)."""
    if size == 0:
        return Start(size=0, head=GENESIS_HASH, frontier=())
    genesis = await log.genesis()
    if genesis is not None and genesis.checkpoint.checkpoint.size == size:
        return Start(size=size, head=genesis.checkpoint.checkpoint.head, frontier=genesis.frontier)
    entry = await log.entry(size)
    if entry is None:
        raise LookupError(f"no audit entry {size} to start a verification at")
    wanted = sorted(root_nodes(size), key=lambda node: -node[0])
    found = await log.tree_nodes(wanted)
    return Start(size=size, head=entry.hash, frontier=tuple(found[node] for node in wanted))


async def bundle_lines(
    log: AuditLog,
    *,
    origin: str,
    keys: Mapping[str, Ed25519PublicKey],
    start: Start,
    end: int,
    progress: Any = None,
) -> AsyncIterator[bytes]:
    """The bundle from ``start`` to ``end``, a page of lines per chunk.

    Entries ``start.size + 1`` to ``end`` and the checkpoints from the start to ``end``;
    ``progress(checked)`` is awaited after each page of entries.
    """
    lines = [header_line(origin, keys, start.genesis())]
    after = max(start.size - 1, 0)
    while True:
        checkpoints = await log.checkpoints(after_size=after, limit=PAGE)
        lines += [checkpoint_line(item) for item in checkpoints if item.checkpoint.size <= end]
        if len(checkpoints) < PAGE or checkpoints[-1].checkpoint.size >= end:
            break
        after = checkpoints[-1].checkpoint.size
    yield "".join(lines).encode()
    after, checked = start.size, 0
    while after < end:
        page = [e for e in await log.page(after_sequence=after, limit=PAGE) if e.sequence <= end]
        if not page:
            return
        yield "".join(entry_line(bundle_entry(entry)) for entry in page).encode()
        checked += len(page)
        after = page[-1].sequence
        if progress is not None:
            await progress(checked)


def bundle_entry(entry: ChainedEntry) -> dict[str, Any]:
    """An entry as a bundle line holds it: as stored, times in their hashed form."""
    out: dict[str, Any] = {
        "sequence": entry.sequence,
        "event_id": entry.event_id,
        "timestamp": format_timestamp(entry.timestamp),
        "user": entry.user,
        "action": entry.action,
        "resource": entry.resource,
        "result": entry.result,
        "source_ip": entry.source_ip,
        "request_id": entry.request_id,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }
    if entry.producer is not None:
        out["producer"] = entry.producer
    if entry.received_at is not None:
        out["received_at"] = format_timestamp(entry.received_at)
    return out


def finished(run: VerificationRun, report: Mapping[str, Any], at: datetime) -> VerificationRun:
    """``run`` with the verifier's report."""
    problems = tuple(
        Problem(code=item["code"], sequence=item["sequence"], message=item["message"])
        for item in report["problems"]
    )
    return VerificationRun(
        **{
            **run.__dict__,
            "status": "done",
            "finished_at": at,
            "updated_at": at,
            "checked": report["entries"],
            "valid": bool(report["valid"]) and not report["keys_from_bundle"],
            "latest_checkpoint": report["latest_checkpoint"],
            "problems": problems,
            "problems_not_listed": report["problems_not_listed"],
        }
    )
