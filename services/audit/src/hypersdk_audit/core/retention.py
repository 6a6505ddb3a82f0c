"""Retention that keeps the log verifiable, and the legal holds that suspend it (decision 0048).

A cut removes the oldest entries, a prefix of the chain, and nothing else. First a checkpoint
of the tree at the cut's size is signed: it becomes the log's genesis, so what remains still
verifies from it (the chain from its head hash, the tree from its stored perfect subtrees,
which a cut keeps). Then, in one transaction, the genesis is recorded, an
``audit.retention.cut`` entry is chained, and the prefix is deleted. While any legal hold
stands nothing is cut; the database refuses it too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypersdk_audit.core.chain import EntryFields
from hypersdk_audit.core.proofs import CheckpointSigner, TreeHead, new_checkpoint, signed
from hypersdk_audit.core.quarantine import SERVICE
from hypersdk_audit.core.recorder import entry_fields
from hypersdk_audit.ports.outbound import RetentionStore
from hypersdk_auditproof.checkpoint import SignedCheckpoint
from hypersdk_contracts.envelope import RequestContext, event_envelope
from hypersdk_contracts.events import RetentionCut

logger = logging.getLogger(__name__)

RETENTION_ACTOR = "audit-retention"
"""Who the record of a cut names as its actor."""
CUT_ACTION = RetentionCut.audit_action
CUT_STEP = 50_000
"""Entries one cut transaction removes at most (PostgreSQL deletes about 100 000 a second)."""


@dataclass(frozen=True)
class Hold:
    """A legal hold: while one is not lifted, retention cuts nothing."""

    id: str
    reason: str
    placed_by: str
    placed_at: datetime
    lifted_by: str | None = None
    lifted_at: datetime | None = None


@dataclass(frozen=True)
class RetentionPolicy:
    """How much of the log to keep: entries younger than ``max_age``, the ``max_entries`` newest.

    With both, an entry goes once it passes either limit. With neither, nothing is ever cut.
    The record a cut chains counts as one of the ``max_entries``.
    """

    max_age: timedelta | None = None
    max_entries: int | None = None

    @property
    def active(self) -> bool:
        """Whether anything could ever be cut."""
        return self.max_age is not None or self.max_entries is not None


@dataclass(frozen=True)
class CutPlan:
    """The newest entry a cut removes (entries 1 to ``size``) and which limit it passed."""

    size: int
    reason: str
    cutoff: datetime | None = None


@dataclass(frozen=True)
class CutOutcome:
    """What a retention run did."""

    cut: bool
    reason: str
    """``age`` or ``size`` for a cut; otherwise why not: ``disabled``, ``held``, ``nothing``."""
    genesis: SignedCheckpoint | None = None
    removed: int = 0


def _now() -> datetime:
    return datetime.now(UTC)


class Retention:
    """The retention job: cut what the policy no longer keeps, behind a signed genesis."""

    def __init__(
        self,
        *,
        store: RetentionStore,
        signer: CheckpointSigner,
        policy: RetentionPolicy,
        origin: str,
        clock: Callable[[], datetime] = _now,
        step: int = CUT_STEP,
    ) -> None:
        self._step = step
        self._store = store
        self._signer = signer
        self._policy = policy
        self._origin = origin
        self._clock = clock

    async def plan(self) -> CutPlan | None:
        """What a run now would cut, if anything (holds aside)."""
        now = self._clock()
        cutoff = None if self._policy.max_age is None else now - self._policy.max_age
        genesis = await self._store.genesis_size()
        candidates = []
        if cutoff is not None:
            candidates.append(CutPlan(await self._store.last_before(cutoff), "age", cutoff))
        limit = self._policy.max_entries
        if limit is not None:
            size = await self._store.size()
            if size - genesis > limit:  # more than the limit: cut to it, the cut's record included
                candidates.append(CutPlan(size - limit + 1, "size"))
        plan = max(candidates, key=lambda candidate: candidate.size, default=None)
        if plan is None or plan.size <= genesis:
            return None
        if plan.size == genesis + 1 and await self._store.action_of(plan.size) == CUT_ACTION:
            return None  # only the record of the last cut: cutting it would only record another
        return plan

    async def run(self) -> CutOutcome:
        """Cut once: sign the genesis outside any transaction, then record and cut in one."""
        if not self._policy.active:
            return CutOutcome(cut=False, reason="disabled")
        if await self._store.active_holds():
            logger.info("a legal hold stands: retention cuts nothing")
            return CutOutcome(cut=False, reason="held")
        plan = await self.plan()
        if plan is None:
            return CutOutcome(cut=False, reason="nothing")
        # In steps of at most ``step`` entries, each behind a genesis of its own: a cut holds
        # the chain lock, and appends wait for it, for as long as one step takes.
        start, genesis, removed = await self._store.genesis_size(), None, 0
        while start < plan.size:
            if genesis is not None and await self._store.active_holds():
                logger.info("a legal hold was placed: retention stops at %d", start)
                break
            size = min(plan.size, start + self._step)
            genesis = await self._signed(await self._store.tree_head_at(size))
            record = self._record(genesis, plan)
            removed += await self._store.cut(genesis, record=record, reason=plan.reason)
            logger.info("retention cut entries 1 to %d (%s)", size, plan.reason)
            start = size
        return CutOutcome(cut=True, reason=plan.reason, genesis=genesis, removed=removed)

    async def _signed(self, head: TreeHead) -> SignedCheckpoint:
        checkpoint, message = new_checkpoint(self._origin, head, self._clock())
        key_id, signature = await self._signer.sign(message)
        return signed(checkpoint, key_id, signature)

    def _record(self, genesis: SignedCheckpoint, plan: CutPlan) -> EntryFields:
        """The entry that records the cut, chained in its transaction."""
        checkpoint = genesis.checkpoint
        event = event_envelope(
            RetentionCut(
                genesis_size=checkpoint.size,
                genesis_head=checkpoint.head,
                root=checkpoint.root.hex(),
                reason="age" if plan.reason == "age" else "size",
                cutoff=plan.cutoff,
            ),
            service=SERVICE,
            subject=f"entries/1-{checkpoint.size}",
            context=RequestContext(actor=RETENTION_ACTOR),
        )
        return entry_fields(event, producer=SERVICE, received_at=checkpoint.time)
