"""The delivery loop: claims due messages and starts their attempts, as a component."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hypersdk_webhooks.core.service import WebhookService

logger = logging.getLogger(__name__)


class DeliveryLoop:
    """Runs :meth:`WebhookService.deliver_due` whenever something may have come due.

    It wakes when the service says so (new messages, a freed slot, a resume or a replay) and
    every ``poll_seconds`` besides, for retries falling due and other replicas' work. A failed
    round (the database away) is logged and retried after a backoff. ``stop`` ends the loop,
    then gives the attempts in flight ``grace_seconds`` to finish; those cut short keep their
    claims, whose leases lapse, so they are attempted again (at least once).
    """

    def __init__(
        self,
        service: WebhookService,
        *,
        poll_seconds: float,
        claim_limit: int,
        grace_seconds: float = 35.0,
    ) -> None:
        self._service = service
        self._poll = poll_seconds
        self._limit = claim_limit
        self._grace = grace_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._run(), name="webhook-delivery")

    async def stop(self) -> None:
        """Stop claiming; let the attempts in flight finish within the grace period."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._service.drain(timeout_seconds=self._grace)

    async def _run(self) -> None:
        failures = 0
        wakeup = self._service.wakeup
        while True:
            wakeup.clear()
            try:
                claimed = await self._service.deliver_due(limit=self._limit)
                failures = 0
            except Exception as exc:  # the database away: the messages wait for it
                failures += 1
                logger.warning("claiming webhook messages failed (%s)", type(exc).__name__)
                await asyncio.sleep(min(0.2 * 2 ** (failures - 1), self._poll * 5))
                continue
            if claimed < self._limit:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=self._poll)
