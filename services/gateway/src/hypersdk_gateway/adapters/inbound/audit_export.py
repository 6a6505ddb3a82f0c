"""``GET /audit/export``: the log as an offline-verifiable bundle, streamed page by page.

The bundle's format is ``hypersdk_auditproof.bundle``'s (docs/contracts.md): a header with the
log's origin and checkpoint keys, every checkpoint, then every entry in sequence order. Entries
are read a page at a time from audit, so an export of any size holds one page in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from hypersdk_auditproof.bundle import Genesis, checkpoint_line, entry_line, header_line
from hypersdk_auditproof.checkpoint import SignedCheckpoint
from hypersdk_auditproof.entries import format_timestamp
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import ListAuditEventsRequest, ListCheckpointsRequest
from hypersdk_gateway.ports.outbound import Backend

PAGE = 1000


async def audit_bundle(
    backend: Backend,
    context: Any,
    keys: Mapping[str, Any],
    checkpoints: list[dict[str, Any]],
) -> AsyncIterator[bytes]:
    """The bundle's lines, a page of them per chunk."""
    public = {key_id: _public_key(pem) for key_id, pem in keys["keys"].items()}
    head = [header_line(keys["origin"], public, genesis_of(keys))]
    while checkpoints:
        head += [checkpoint_line(SignedCheckpoint.from_json(item)) for item in checkpoints]
        if len(checkpoints) < PAGE:
            break
        checkpoints = await backend.ask(
            RpcQueue.AUDIT_LIST_CHECKPOINTS,
            ListCheckpointsRequest(after_size=checkpoints[-1]["size"], limit=PAGE, context=context),
        )
    yield "".join(head).encode()
    after = 0
    while True:
        page = await backend.ask(
            RpcQueue.AUDIT_LIST_EVENTS,
            ListAuditEventsRequest(after_sequence=after, limit=PAGE, context=context),
        )
        if not page:
            return
        yield "".join(entry_line(_hashed_form(entry)) for entry in page).encode()
        if len(page) < PAGE:
            return
        after = page[-1]["sequence"]


def genesis_of(keys: Mapping[str, Any]) -> Genesis:
    """Where the log starts: after a retention cut, its genesis (decision 0048)."""
    genesis = keys.get("genesis")
    if genesis is None:
        return Genesis()
    return Genesis(
        size=genesis["size"],
        head=genesis["head"],
        frontier=tuple(bytes.fromhex(item) for item in genesis["frontier"]),
    )


def first_checkpoint_after(keys: Mapping[str, Any]) -> int:
    """Checkpoints before the genesis are not the remaining log's: the bundle starts at it."""
    genesis = keys.get("genesis")
    return 0 if genesis is None else max(genesis["size"] - 1, 0)


def _hashed_form(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with its times written as its hash covers them (microseconds, Z)."""
    out = dict(entry)
    for name in ("timestamp", "received_at"):
        if out.get(name) is not None:
            out[name] = format_timestamp(datetime.fromisoformat(out[name]))
    return out


def _public_key(pem: str) -> Ed25519PublicKey:
    key = load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("a checkpoint key is not Ed25519")
    return key


async def prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first``, then the rest (a chunk read before the response started)."""
    yield first
    async for chunk in rest:
        yield chunk
