"""Identity: Linux PAM users, the group-to-role map and auto-provisioning (PAM and NSS faked)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_identity.adapters.outbound.linux import NssAccountDirectory
from hypersdk_identity.adapters.outbound.memory import (
    InMemoryApiKeyStore,
    InMemoryPam,
    InMemoryPermissionDirectory,
    InMemorySessionStore,
    InMemoryUserStore,
)
from hypersdk_identity.config import IdentitySettings
from hypersdk_identity.core.apikeys import ApiKeyService, Caller
from hypersdk_identity.core.pam import PamSupport
from hypersdk_identity.core.service import IdentityService, SessionPolicy
from hypersdk_kit.memory import InMemoryUnitOfWork

from .test_identity_throttle import SpyHasher

LINUX_PASSWORD = "penguins on the ice floe"
CONTEXT = RequestContext(source_ip="198.51.100.20", request_id="req-pam")
ADMIN = RequestContext(actor="admin", request_id="req-admin")
GROUP_ROLES = {"hypersdk-ops": ["operator"], "hypersdk-audit": ["auditor", "viewer"]}


@dataclass
class World:
    service: IdentityService
    keys: ApiKeyService
    users: InMemoryUserStore
    linux: InMemoryPam
    hasher: SpyHasher
    events: InMemoryUnitOfWork


async def make_world(*, auto_provision: bool = True, group_roles: object = None) -> World:
    hasher = SpyHasher()
    users = InMemoryUserStore()
    events = InMemoryUnitOfWork(service="identity")
    linux = InMemoryPam()
    linux.add("olga", LINUX_PASSWORD, groups=["olga", "hypersdk-ops"])
    linux.add("walt", LINUX_PASSWORD, groups=["walt", "staff"])
    linux.add("daemon", LINUX_PASSWORD, uid=2, groups=["hypersdk-ops"])
    pam = PamSupport(
        authenticator=linux,
        directory=linux,
        group_roles=GROUP_ROLES if group_roles is None else group_roles,  # type: ignore[arg-type]
        auto_provision=auto_provision,
        min_uid=1000,
    )
    service = IdentityService(
        users=users,
        sessions=InMemorySessionStore(),
        hasher=hasher,
        uow=events,
        session_policy=SessionPolicy(idle_seconds=1800, lifetime_seconds=43200),
        dummy_hash=await hasher.hash("dummy password for timing"),
        pam=pam,
    )
    keys = ApiKeyService(
        keys=InMemoryApiKeyStore(),
        users=users,
        uow=events,
        # No role assigned through policy: a PAM user holds only what their groups map to.
        # The admin issuing the keys holds everything.
        permissions=InMemoryPermissionDirectory({"admin": ["admin"]}),
        pam=pam,
    )
    return World(service, keys, users, linux, hasher, events)


@pytest.fixture
async def world() -> World:
    return await make_world()


async def test_first_pam_login_in_a_mapped_group_provisions_the_user(world: World) -> None:
    result = await world.service.login("olga", LINUX_PASSWORD, CONTEXT)

    assert result.user.source == "pam"
    assert world.users.users["olga"].password_hash is None
    assert world.events.types() == [
        "identity.user.created",
        "identity.login.succeeded",
        "identity.session.created",
    ]
    created, succeeded, _ = world.events.events
    assert created.data == {"username": "olga", "source": "pam", "provisioned": True}
    assert created.actor == "pam-provisioning"
    assert succeeded.data == {"username": "olga", "method": "pam"}
    principal = await world.service.authenticate(result.token)
    assert principal.external_roles == ["operator"]
    # The second login finds the user and creates nothing.
    await world.service.login("olga", LINUX_PASSWORD, CONTEXT)
    assert world.events.types().count("identity.user.created") == 1


async def test_a_good_linux_password_without_a_mapped_group_is_refused(world: World) -> None:
    with pytest.raises(ServiceError) as error:
        await world.service.login("walt", LINUX_PASSWORD, CONTEXT)

    assert error.value.code is ErrorCode.INVALID_CREDENTIALS
    assert "walt" not in world.users.users
    assert world.events.events[-1].data == {"username": "walt", "reason": "not_provisioned"}


async def test_without_auto_provisioning_an_admin_creates_pam_users() -> None:
    world = await make_world(auto_provision=False)
    with pytest.raises(ServiceError):
        await world.service.login("walt", LINUX_PASSWORD, CONTEXT)
    assert world.linux.attempts == []  # PAM is not even asked about unknown users

    view = await world.service.create_user("walt", None, ADMIN, source="pam")
    result = await world.service.login("walt", LINUX_PASSWORD, CONTEXT)

    assert view.source == "pam"
    assert result.user.username == "walt"
    assert (await world.service.authenticate(result.token)).external_roles == []


async def test_pam_users_have_no_password_here_and_need_a_linux_account(world: World) -> None:
    with pytest.raises(ServiceError) as with_password:
        await world.service.create_user("walt", "a long password here", ADMIN, source="pam")
    with pytest.raises(ServiceError) as no_account:
        await world.service.create_user("ghost", None, ADMIN, source="pam")
    with pytest.raises(ServiceError) as system_account:
        await world.service.create_user("daemon", None, ADMIN, source="pam")
    with pytest.raises(ServiceError) as local_without_password:
        await world.service.create_user("local", None, ADMIN)

    for error in (with_password, no_account, system_account, local_without_password):
        assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert world.users.users == {}


async def test_a_wrong_linux_password_fails_like_any_other(world: World) -> None:
    await world.service.login("olga", LINUX_PASSWORD, CONTEXT)
    with pytest.raises(ServiceError) as pam_user:
        await world.service.login("olga", "not the linux password", CONTEXT)
    with pytest.raises(ServiceError) as unknown:
        await world.service.login("nobody", "not the linux password", CONTEXT)

    assert (pam_user.value.code, pam_user.value.message) == (
        unknown.value.code,
        unknown.value.message,
    )


async def test_every_pam_check_also_costs_a_bcrypt_check(world: World) -> None:
    # PAM with nodelay answers in ~40 ms, bcrypt in ~240 ms: the dummy check runs alongside,
    # so a PAM user's wrong password takes as long as an unknown user's.
    for username in ("olga", "walt", "nobody", "daemon"):
        world.hasher.checked.clear()
        with pytest.raises(ServiceError):
            await world.service.login(username, "wrong password", CONTEXT)
        assert world.hasher.checked == ["wrong password"], username


async def test_system_accounts_never_log_in(world: World) -> None:
    with pytest.raises(ServiceError):
        await world.service.login("daemon", LINUX_PASSWORD, CONTEXT)
    assert "daemon" not in world.linux.attempts


async def test_external_roles_follow_the_groups_on_every_call(world: World) -> None:
    result = await world.service.login("olga", LINUX_PASSWORD, CONTEXT)
    account = world.linux.accounts["olga"]

    world.linux.accounts["olga"] = dataclasses.replace(
        account, groups=("olga", "hypersdk-ops", "hypersdk-audit")
    )
    assert (await world.service.authenticate(result.token)).external_roles == [
        "auditor",
        "operator",
        "viewer",
    ]
    world.linux.accounts["olga"] = dataclasses.replace(account, groups=("olga",))
    assert (await world.service.authenticate(result.token)).external_roles == []
    assert (await world.service.get_user("olga")).external_roles == []


async def test_removing_the_linux_account_ends_sessions_and_keys(world: World) -> None:
    result = await world.service.login("olga", LINUX_PASSWORD, CONTEXT)
    issued = await world.keys.create(
        owner="olga",
        name="ci",
        scopes=["vms:browse"],
        expires_at=None,
        caller=Caller(username="admin"),
        context=ADMIN,
    )
    assert (await world.keys.authenticate(issued.key)).external_roles == ["operator"]

    del world.linux.accounts["olga"]

    for attempt in (
        world.service.authenticate(result.token),
        world.keys.authenticate(issued.key),
    ):
        with pytest.raises(ServiceError) as error:
            await attempt
        assert error.value.code is ErrorCode.UNAUTHENTICATED


async def test_a_pam_owners_group_roles_count_when_a_key_is_issued(world: World) -> None:
    await world.service.login("olga", LINUX_PASSWORD, CONTEXT)

    async def issue(scopes: list[str]) -> None:
        await world.keys.create(
            owner="olga",
            name="ci",
            scopes=scopes,
            expires_at=None,
            caller=Caller(username="admin"),
            context=ADMIN,
        )

    await issue(["vms:export"])  # operator, through hypersdk-ops
    with pytest.raises(ServiceError) as beyond:
        await issue(["audit:view"])
    account = world.linux.accounts["olga"]
    world.linux.accounts["olga"] = dataclasses.replace(account, groups=("olga", "hypersdk-audit"))
    await issue(["audit:view"])
    with pytest.raises(ServiceError) as left_the_group:
        await issue(["vms:export"])

    assert beyond.value.code is ErrorCode.VALIDATION_FAILED
    assert left_the_group.value.code is ErrorCode.VALIDATION_FAILED
    assert "vms:export" in left_the_group.value.message


async def test_a_disabled_pam_user_is_refused(world: World) -> None:
    await world.service.login("olga", LINUX_PASSWORD, CONTEXT)
    await world.service.set_disabled("olga", disabled=True, context=ADMIN)

    with pytest.raises(ServiceError) as error:
        await world.service.login("olga", LINUX_PASSWORD, CONTEXT)

    assert error.value.code is ErrorCode.INVALID_CREDENTIALS
    assert world.events.events[-1].data == {"username": "olga", "reason": "account_disabled"}


async def test_no_event_carries_the_linux_password(world: World) -> None:
    await world.service.login("olga", LINUX_PASSWORD, CONTEXT)
    with pytest.raises(ServiceError):
        await world.service.login("olga", "a-wrong-linux-password", CONTEXT)
    published = "\n".join(e.model_dump_json() for e in world.events.events)
    assert LINUX_PASSWORD not in published
    assert "a-wrong-linux-password" not in published


async def test_the_nss_directory_reads_real_accounts_and_groups() -> None:
    directory = NssAccountDirectory()

    root = await directory.account("root")
    missing = await directory.account("no-such-user-hsdk")

    assert root is not None
    assert root.uid == 0
    assert "root" in root.groups
    assert missing is None


def test_the_example_pam_stack_is_pam_unix_without_delay() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "pam" / "hypersdk"
    rules = [
        line.split()
        for line in example.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules == [
        ["auth", "required", "pam_unix.so", "nodelay"],
        ["account", "required", "pam_unix.so"],
    ]
    assert default_settings().pam_service == example.name


def default_settings() -> IdentitySettings:
    return IdentitySettings(
        amqp_url="amqp://unused",
        database_url="postgresql://unused",
        signing_key_file=Path("unused"),
        policy_public_key_file=Path("unused"),
        gateway_public_key_file=Path("unused"),
    )


def test_the_group_map_accepts_a_role_or_a_list_and_refuses_unknown_roles() -> None:
    settings = IdentitySettings.model_validate(
        {
            **default_settings().model_dump(),
            "pam_group_roles": {"ops": "operator", "audit": ["auditor", "viewer"]},
        }
    )
    assert settings.pam_group_roles == {"ops": ["operator"], "audit": ["auditor", "viewer"]}
    with pytest.raises(ValueError, match="wizard"):
        IdentitySettings.model_validate(
            {**default_settings().model_dump(), "pam_group_roles": {"ops": "wizard"}}
        )
