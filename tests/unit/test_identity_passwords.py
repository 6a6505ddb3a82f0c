"""Identity: the password policy (OWASP ASVS V2.1) and zxcvbn's common-password list."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_identity.adapters.outbound.common_passwords import (
    ZxcvbnPasswordBlocklist,
    load_zxcvbn_passwords,
)
from hypersdk_identity.adapters.outbound.memory import (
    InMemorySessionStore,
    InMemoryUserStore,
    InsecureFastHasher,
)
from hypersdk_identity.core.passwords import check_new_password
from hypersdk_identity.core.service import IdentityService, SessionPolicy
from hypersdk_kit.memory import InMemoryUnitOfWork

ADMIN = RequestContext(actor="admin")


@pytest.fixture(scope="module")
def zxcvbn_list() -> frozenset[str]:
    return load_zxcvbn_passwords()


@pytest.fixture
async def service() -> IdentityService:
    hasher = InsecureFastHasher()
    return IdentityService(
        users=InMemoryUserStore(),
        sessions=InMemorySessionStore(),
        hasher=hasher,
        uow=InMemoryUnitOfWork(service="identity"),
        session_policy=SessionPolicy(idle_seconds=1800, lifetime_seconds=43200),
        dummy_hash=await hasher.hash("dummy password for timing"),
        blocklist=ZxcvbnPasswordBlocklist(),
    )


def test_the_list_is_zxcvbns_30000_common_passwords(zxcvbn_list: frozenset[str]) -> None:
    assert len(zxcvbn_list) >= 10_000
    assert {"password", "123456", "qwerty", "1qaz2wsx3edc", "leavemealone"} <= zxcvbn_list
    assert all(entry == entry.casefold() for entry in zxcvbn_list)


def test_the_list_is_not_loaded_at_import_time() -> None:
    probe = (
        "import sys\n"
        "import hypersdk_identity.inject\n"
        "import hypersdk_identity.adapters.outbound.common_passwords as c\n"
        "b = c.ZxcvbnPasswordBlocklist()\n"
        "assert b._passwords is None\n"
        "assert not [m for m in sys.modules if 'zxcvbn' in m], sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)


@pytest.mark.parametrize(
    "password",
    # Common passwords of 12+ characters from the list, in any case.
    ["1qaz2wsx3edc", "LEAVEMEALONE", "Qwerty123456", "qazwsxedcrfv", "finalfantasy"],
)
async def test_common_passwords_are_refused_ignoring_case(
    service: IdentityService, password: str
) -> None:
    with pytest.raises(ServiceError) as error:
        await service.create_user("bob", password, ADMIN)
    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert "commonly used" in error.value.message
    assert password not in error.value.message


@pytest.mark.parametrize(
    "password",
    [
        "no digits or symbols needed",  # no composition rules
        "aaaaaaaaaaaa",  # 12 characters is enough; no "complexity" score
        "x" * 72,  # 72 ASCII characters (ASVS asks for at least 64)
        "Ünïcödé pässwörd 🔑",  # any Unicode character
    ],
)
async def test_long_enough_uncommon_passwords_are_accepted(
    service: IdentityService, password: str
) -> None:
    view = await service.create_user("bob", password, ADMIN)
    assert view.username == "bob"


@pytest.mark.parametrize(
    ("password", "fragment"),
    [
        ("elevenchars", "at least 12 characters"),
        ("x" * 73, "72 bytes"),
        ("é" * 37, "72 bytes"),  # 37 characters, 74 bytes
    ],
)
async def test_length_errors_say_what_to_do(
    service: IdentityService, password: str, fragment: str
) -> None:
    with pytest.raises(ServiceError) as error:
        await service.create_user("bob", password, ADMIN)
    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert fragment in error.value.message


async def test_the_user_name_is_not_a_password() -> None:
    with pytest.raises(ServiceError) as error:
        await check_new_password("margaret.hamilton", username="Margaret.Hamilton", blocklist=None)
    assert "user name" in error.value.message


async def test_the_blocklist_loads_once_however_many_ask() -> None:
    blocklist = ZxcvbnPasswordBlocklist()
    answers = [await blocklist.contains(p) for p in ("password1", "PassWord1", "unlisted-phrase")]
    first = await blocklist.passwords()
    assert answers == [True, True, False]
    assert await blocklist.passwords() is first
