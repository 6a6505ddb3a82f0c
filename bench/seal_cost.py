"""What request seals cost, in process: ``.venv/bin/python bench/seal_cost.py`` (decision 0027).

Prints the best of five loops, in µs per operation: signing a seal, verifying one, sealing a
request in the gateway (sign and copy the context), and a service's whole check of a sealed
request with its grant (``RequestGuard.authorize``: seal, seen-seal cache, grant).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.events import IdentityRequestRejected
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.operations import target_of
from hypersdk_contracts.rpc import CreateUserRequest, RpcRequest
from hypersdk_gateway.core.seals import SEAL_ISSUER, seal_request
from hypersdk_kit.bus import InMemoryEventPublisher
from hypersdk_kit.guard import SEAL_TYPE, RequestGuard
from hypersdk_kit.trust import AssertionSigner, AssertionVerifier

ROUNDS = 5
OPERATION = RpcQueue.IDENTITY_CREATE_USER


def best_us(action: Callable[[], object], count: int) -> float:
    """The fastest of ``ROUNDS`` loops of ``count`` calls, in µs per call."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(count):
            action()
        best = min(best, (time.perf_counter() - started) / count * 1e6)
    return best


async def guard_us(guard: RequestGuard, requests: list[RpcRequest], count: int) -> float:
    """The fastest of ``ROUNDS`` loops, each checking ``count`` fresh sealed requests."""
    best = float("inf")
    for round_ in range(ROUNDS):
        batch = requests[round_ * count : (round_ + 1) * count]
        started = time.perf_counter()
        for request in batch:
            await guard.authorize(
                operation=OPERATION,
                context=request.context,
                permissions=frozenset({"users:manage"}),
                target=target_of(OPERATION, request),
            )
        best = min(best, (time.perf_counter() - started) / count * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=3000, help="calls per loop")
    count = parser.parse_args().count
    gateway, policy = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    sealer = AssertionSigner(gateway, issuer=SEAL_ISSUER, ttl_seconds=3600)
    seals = AssertionVerifier(gateway.public_key(), issuer=SEAL_ISSUER)
    grant = AssertionSigner(policy, issuer="policy", ttl_seconds=3600).sign(
        {"typ": "grant", "sub": "root", "perm": "users:manage", "op": [OPERATION]}
    )
    claims = {
        "typ": SEAL_TYPE,
        "rid": "0123456789abcdef0123456789abcdef",
        "ip": "198.51.100.7",
        "sub": "root",
        "op": OPERATION,
        "res": "mallory",
    }
    token = sealer.sign(claims)
    request = CreateUserRequest(
        username="mallory",
        password="a long enough password",
        context=RequestContext(
            actor="root", source_ip="198.51.100.7", request_id=claims["rid"], grant=grant
        ),
    )
    guard = RequestGuard(
        events=InMemoryEventPublisher(),
        rejected=IdentityRequestRejected,
        grants=AssertionVerifier(policy.public_key(), issuer="policy"),
        seals=seals,
    )
    sealed = [seal_request(sealer, OPERATION, request) for _ in range(count * ROUNDS)]
    print(f"sign a seal          {best_us(lambda: sealer.sign(claims), count):7.1f} µs")
    print(f"verify a seal        {best_us(lambda: seals.verify(token), count):7.1f} µs")
    seal_one = best_us(lambda: seal_request(sealer, OPERATION, request), count)
    print(f"seal a request       {seal_one:7.1f} µs (gateway, per request forwarded)")
    checked = asyncio.run(guard_us(guard, sealed, count))
    print(f"guard a request      {checked:7.1f} µs (service: seal, seen seals, grant)")


if __name__ == "__main__":
    main()
