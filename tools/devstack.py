"""Run the whole platform on this machine: ``up``, ``down``, ``status``.

``up`` checks RabbitMQ and PostgreSQL (starting them if installed but down), creates the
database, runs migrations, starts one supervisor process that owns an OpenBao server
(persistent storage under the state directory, initialised once, unsealed at each start) and
the seven services, bootstraps the admin user and seeds the demo lab. ``down`` stops that
supervisor, which stops its children: nothing else is touched.

Integration tests drive the same code with their own database, RabbitMQ vhost, ports and
state directory, so the tests exercise exactly what ``make up`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hypersdk_kit.trust import assemble, encode_claims, generate_key_pair, signed_message

SERVICES = ("identity", "policy", "secrets", "exporter", "audit", "webhooks", "gateway")
HEALTH_PORTS = len(SERVICES)
"""Each service's health port is the stack's base port plus its index in SERVICES."""
MIGRATED = ("identity", "policy", "exporter", "audit", "webhooks")
EXTRA_DB_LOGINS = ("audit_retention",)
"""Database logins that are not a service's: the audit retention job's (decision 0048)."""
EXTRA_DB_ROLES = (*EXTRA_DB_LOGINS, "audit_owner")
"""...and the owner of audit's schema, which nobody logs in as."""
ROOT = Path(__file__).resolve().parent.parent
RABBITMQ_DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
HARNESS = "harness"
"""Login suffix of an isolated stack's test harness: every right on that stack's vhost only."""


@dataclass
class StackConfig:
    """Where and how one instance of the platform runs."""

    state_dir: Path
    database: str = "hypersdk"
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    amqp_host: str = "127.0.0.1"
    amqp_port: int = 5672
    amqp_vhost: str = "hypersdk"
    amqp_login_prefix: str = "hypersdk"
    """RabbitMQ users are ``<prefix>-<service>`` (users are global to the broker)."""
    db_role_prefix: str = "hypersdk"
    """PostgreSQL roles are ``<prefix>_<service>`` (roles are global to the cluster)."""
    harness: bool = False
    """Whether a ``<prefix>-harness`` RabbitMQ user exists (isolated test stacks only)."""
    gateway_port: int = 8080
    vault_port: int = 8200
    health_base_port: int = 18081
    broker_auth_port: int = 0
    """Where the webhooks service answers RabbitMQ's HTTP auth backend about AMQP subscription
    users (0: not served; no subscription can be created). Broker-wide: see
    :func:`configure_broker_auth`."""
    python: str = sys.executable
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_publishers: dict[str, str] = field(default_factory=dict)
    """RabbitMQ logins of tests' own -> the service audit attributes their events to."""

    @property
    def run_dir(self) -> Path:
        """Pid files and the stack description."""
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        """One log file per process."""
        return self.state_dir / "log"

    @property
    def secret_dir(self) -> Path:
        """Generated credentials (0600 files)."""
        return self.state_dir / "secrets"

    @property
    def key_dir(self) -> Path:
        """Signing keys: identity's, policy's and the gateway's Ed25519 pairs (private 0600)."""
        return self.secret_dir / "keys"

    @property
    def sealing_key_file(self) -> Path:
        """The key that seals webhook signing secrets at rest (0600, made once)."""
        return self.secret_dir / "webhooks-sealing-key"

    @property
    def gateway_url(self) -> str:
        """Base URL of the gateway."""
        return f"http://127.0.0.1:{self.gateway_port}"

    def database_url(self) -> str:
        """DSN of the platform database as the administrator (trust auth on loopback).

        Only the migrate step (and test assertions) use it; services connect as their roles.
        """
        return f"postgresql://{self.pg_user}@{self.pg_host}:{self.pg_port}/{self.database}"

    def db_role(self, service: str) -> str:
        """The PostgreSQL role of ``service``."""
        return f"{self.db_role_prefix}_{service}"

    def service_database_url(self, service: str) -> str:
        """DSN of ``service``'s own role, with its generated password."""
        password = _read_secret(self.secret_dir / "postgres" / service)
        return (
            f"postgresql://{self.db_role(service)}:{password}@{self.pg_host}:{self.pg_port}"
            f"/{self.database}"
        )

    def amqp_login(self, service: str) -> str:
        """The RabbitMQ user of ``service`` (or of the test harness)."""
        return f"{self.amqp_login_prefix}-{service}"

    def amqp_url(self, service: str = HARNESS) -> str:
        """AMQP URL of ``service``'s own user; by default the test harness's (isolated stacks)."""
        password = _read_secret(self.secret_dir / "amqp" / service)
        vhost = quote(self.amqp_vhost, safe="")
        return (
            f"amqp://{self.amqp_login(service)}:{password}@{self.amqp_host}:{self.amqp_port}"
            f"/{vhost}"
        )

    def service_env(self) -> dict[str, str]:
        """Environment of every platform process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERSDK_")}
        for index, service in enumerate(SERVICES):
            prefix = f"HYPERSDK_{service.upper()}_"
            env[prefix + "AMQP_URL"] = self.amqp_url(service)
            env[prefix + "HEALTH_PORT"] = str(self.health_base_port + index)
            # The topology is provisioned with the users (provision_bus); services only check.
            env[prefix + "DECLARE_TOPOLOGY"] = "false"
            if service in MIGRATED:
                env[prefix + "DATABASE_URL"] = self.service_database_url(service)
        env["HYPERSDK_AUDIT_PUBLISHERS"] = json.dumps(
            {self.amqp_login(service): service for service in SERVICES}
        )
        env["HYPERSDK_SECRETS_CREDENTIAL_READERS"] = json.dumps([self.amqp_login("exporter")])
        env["HYPERSDK_GATEWAY_PORT"] = str(self.gateway_port)
        env["HYPERSDK_GATEWAY_HEALTH_PORT"] = "0"
        for service in VAULT_POLICIES:  # each logs in with its own AppRole (0045, 0046)
            prefix = f"HYPERSDK_{service.upper()}_"
            env[prefix + "VAULT_ADDR"] = f"http://127.0.0.1:{self.vault_port}"
            env[prefix + "VAULT_ROLE_ID_FILE"] = str(self.secret_dir / f"{service}-role-id")
            env[prefix + "VAULT_SECRET_ID_FILE"] = str(self.secret_dir / f"{service}-secret-id")
        keys = self.key_dir
        env["HYPERSDK_IDENTITY_TRANSIT_KEY"] = TRANSIT_KEYS["identity"]
        env["HYPERSDK_IDENTITY_POLICY_TRANSIT_KEY"] = TRANSIT_KEYS["policy"]
        env["HYPERSDK_POLICY_TRANSIT_KEY"] = TRANSIT_KEYS["policy"]
        env["HYPERSDK_POLICY_IDENTITY_TRANSIT_KEY"] = TRANSIT_KEYS["identity"]
        for service in ("secrets", "exporter", "audit", "webhooks"):
            env[f"HYPERSDK_{service.upper()}_POLICY_TRANSIT_KEY"] = TRANSIT_KEYS["policy"]
        env["HYPERSDK_AUDIT_CHECKPOINT_TRANSIT_KEY"] = TRANSIT_KEYS["audit"]
        env["HYPERSDK_GATEWAY_SIGNING_KEY_FILE"] = str(keys / "gateway.key")
        for service in ("identity", "policy", "secrets", "exporter", "audit", "webhooks"):
            env[f"HYPERSDK_{service.upper()}_GATEWAY_PUBLIC_KEY_FILE"] = str(keys / "gateway.pub")
        env["HYPERSDK_WEBHOOKS_PUBLISHERS"] = env["HYPERSDK_AUDIT_PUBLISHERS"]
        env["HYPERSDK_WEBHOOKS_SEALING_KEY_FILE"] = str(self.sealing_key_file)
        if self.broker_auth_port:
            env["HYPERSDK_WEBHOOKS_BROKER_AUTH_HOST"] = "127.0.0.1"
            env["HYPERSDK_WEBHOOKS_BROKER_AUTH_PORT"] = str(self.broker_auth_port)
        env["HYPERSDK_EXPORTER_EXPORT_DIR"] = str(self.state_dir / "exports")
        env["HYPERSDK_EXPORTER_LAB_ROOT"] = str(self.state_dir / "lab")
        if self.extra_publishers:
            publishers = json.loads(env.get("HYPERSDK_AUDIT_PUBLISHERS", "{}"))
            env["HYPERSDK_AUDIT_PUBLISHERS"] = json.dumps({**publishers, **self.extra_publishers})
            env["HYPERSDK_WEBHOOKS_PUBLISHERS"] = env["HYPERSDK_AUDIT_PUBLISHERS"]
        env.update(self.extra_env)
        return env


# ---- dependencies -----------------------------------------------------------------------------


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def _wait_port(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _port_open(host, port):
            return True
        time.sleep(0.5)
    return False


def ensure_dependencies(config: StackConfig) -> None:
    """RabbitMQ and PostgreSQL must answer; start them if they are installed but down."""
    if not _port_open(config.amqp_host, config.amqp_port):
        if shutil.which("rabbitmq-server") is None:
            raise SystemExit("RabbitMQ is not running on 127.0.0.1:5672 and is not installed.")
        print("starting RabbitMQ ...", flush=True)
        subprocess.run(["rabbitmq-server", "-detached"], check=False)
        if not _wait_port(config.amqp_host, config.amqp_port, 90):
            raise SystemExit("RabbitMQ did not come up on 127.0.0.1:5672.")
    if not _port_open(config.pg_host, config.pg_port):
        clusters = Path("/etc/postgresql")
        if shutil.which("pg_ctlcluster") is None or not clusters.is_dir():
            raise SystemExit("PostgreSQL is not running on 127.0.0.1:5432 and is not installed.")
        print("starting PostgreSQL ...", flush=True)
        for version in sorted(p.name for p in clusters.iterdir()):
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                check=False,
            )
        if not _wait_port(config.pg_host, config.pg_port, 60):
            raise SystemExit("PostgreSQL did not come up on 127.0.0.1:5432.")


async def _create_database(config: StackConfig) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host=config.pg_host, port=config.pg_port, user=config.pg_user, database="postgres"
    )
    try:
        exists = await conn.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", config.database
        )
        if not exists:
            await conn.execute(f'CREATE DATABASE "{config.database}"')
    finally:
        await conn.close()


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _private_file(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(content)


def _read_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise SystemExit(f"{path} is missing; run make up first.") from None


def ensure_credentials(config: StackConfig) -> None:
    """Generate each service's RabbitMQ and PostgreSQL password once (0600 files)."""
    logins = [*SERVICES, HARNESS] if config.harness else list(SERVICES)
    for kind, names in (("amqp", logins), ("postgres", [*MIGRATED, *EXTRA_DB_LOGINS])):
        directory = _private_dir(config.secret_dir / kind)
        for name in names:
            if not (directory / name).exists():
                _private_file(directory / name, secrets.token_urlsafe(24) + "\n")


def _rabbit_password_hash(password: str) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def bus_definitions(config: StackConfig) -> dict[str, object]:
    """deploy/rabbitmq/definitions.json for this stack: its vhost, its logins, their passwords.

    The same permissions and topology as production; plus, in isolated test stacks, a harness
    user with every right on the stack's vhost and none elsewhere.
    """
    text = RABBITMQ_DEFINITIONS.read_text()
    definitions: dict[str, list[dict[str, object]]] = json.loads(text)
    renamed = {f"hypersdk-{service}": config.amqp_login(service) for service in SERVICES}
    for user in definitions["users"]:
        service = str(user["name"]).removeprefix("hypersdk-")
        user["name"] = renamed[str(user["name"])]
        user["password_hash"] = _rabbit_password_hash(
            _read_secret(config.secret_dir / "amqp" / service)
        )
    for vhost in definitions["vhosts"]:
        vhost["name"] = config.amqp_vhost
    for section in (
        "permissions", "topic_permissions", "policies", "exchanges", "queues", "bindings",
    ):  # fmt: skip
        for item in definitions[section]:
            item["vhost"] = config.amqp_vhost
            if "user" in item:
                item["user"] = renamed[str(item["user"])]
    if config.harness:
        harness = config.amqp_login(HARNESS)
        definitions["users"].append(
            {
                "name": harness,
                "password_hash": _rabbit_password_hash(
                    _read_secret(config.secret_dir / "amqp" / HARNESS)
                ),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            }
        )
        definitions["permissions"].append(
            {
                "user": harness,
                "vhost": config.amqp_vhost,
                "configure": ".*",
                "write": ".*",
                "read": ".*",
            }
        )
    return dict(definitions)


def provision_bus(config: StackConfig) -> None:
    """Create the stack's vhost, users, permissions and topology from the definitions file.

    Imported through rabbitmqctl's standard input, so no password is ever in a command line;
    ``guest`` keeps no permission on the vhost.
    """
    ensure_credentials(config)
    subprocess.run(
        ["rabbitmqctl", "-q", "import_definitions"],
        input=json.dumps(bus_definitions(config)).encode(),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["rabbitmqctl", "-q", "clear_permissions", "-p", config.amqp_vhost, "guest"],
        check=False,
        capture_output=True,
    )
    subprocess.run(
        [
            "rabbitmqctl", "-q", "clear_topic_permissions", "-p", config.amqp_vhost, "guest",
        ],
        check=False,
        capture_output=True,
    )  # fmt: skip


BROKER_AUTH_PATHS = ("user", "vhost", "resource", "topic")


def broker_auth_expression(port: int) -> str:
    """The Erlang that points RabbitMQ's HTTP auth backend at ``127.0.0.1:port``.

    Internal users first (the platform's own), then the HTTP backend (subscription users).
    """
    paths = ", ".join(
        f'{{{name}_path, "http://127.0.0.1:{port}/auth/{name}"}}' for name in BROKER_AUTH_PATHS
    )
    return (
        "application:set_env(rabbit, auth_backends,"
        " [rabbit_auth_backend_internal, rabbit_auth_backend_http]),"
        " [application:set_env(rabbitmq_auth_backend_http, K, V)"
        f" || {{K, V}} <- [{{http_method, post}}, {paths}]], ok."
    )


def configure_broker_auth(config: StackConfig) -> None:
    """Make the local broker ask this stack's webhooks service about logins it does not know.

    Enables ``rabbitmq_auth_backend_http`` (persisted by rabbitmq-plugins) and sets it at
    run time (``rabbitmqctl eval``: no restart; a broker restart forgets it until the next
    ``make up``). The setting is broker-wide: the last stack to configure it owns it, so only
    ``make up``'s stack and the integration tests' session stack do (decision 0054).
    """
    if not config.broker_auth_port:
        return
    subprocess.run(
        ["rabbitmq-plugins", "-q", "enable", "rabbitmq_auth_backend_http"],
        check=True,
        capture_output=True,
    )
    rabbitmqctl("eval", broker_auth_expression(config.broker_auth_port))


def retention_env(config: StackConfig, **limits: str) -> dict[str, str]:
    """The environment of ``python -m hypersdk_audit retain`` on this stack.

    The retention job's own database login (decision 0048) and the audit settings; ``limits``
    are more ``HYPERSDK_AUDIT_*`` settings by suffix, e.g. ``RETENTION_MAX_ENTRIES="100"``.
    """
    env = config.service_env()
    env["HYPERSDK_AUDIT_RETENTION_DATABASE_URL"] = config.service_database_url("audit_retention")
    env.update({f"HYPERSDK_AUDIT_{name}": value for name, value in limits.items()})
    return env


def retain(config: StackConfig, **limits: str) -> str:
    """Run the audit retention job once; its output (it logs what it cut)."""
    return _run_module(config, "audit", "retain", env=retention_env(config, **limits))


def _run_module(config: StackConfig, service: str, *args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [config.python, "-m", f"hypersdk_{service}", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    log = config.log_dir / f"{service}-{args[0]}.log"
    _private_file(log, result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"hypersdk_{service} {' '.join(args)} failed; see {log}")
    return result.stdout + result.stderr


# ---- supervisor -------------------------------------------------------------------------------


def _bao_binary(config: StackConfig) -> str:
    candidate = Path(config.python).parent / "bao"
    found = str(candidate) if candidate.exists() else shutil.which("bao")
    if found is None:
        raise SystemExit("The OpenBao binary 'bao' is missing; run make install.")
    return found


TRANSIT_KEYS = {
    "identity": "hypersdk-identity",
    "policy": "hypersdk-policy",
    "audit": "hypersdk-audit",
}
"""The transit keys that sign principals and grants (decision 0046) and audit checkpoints
(decision 0047), by issuer."""


def _reads_public_keys(*issuers: str) -> str:
    return "".join(
        f'path "transit/keys/{TRANSIT_KEYS[issuer]}" {{ capabilities = ["read"] }}\n'
        for issuer in issuers
    )


def _signs_with(issuer: str) -> str:
    return f'path "transit/sign/{TRANSIT_KEYS[issuer]}" {{ capabilities = ["update"] }}\n'


VAULT_POLICIES = {
    # The secrets service: our folder of the KV v2 engine; policy's public keys (grants).
    "secrets": """
path "secret/data/hypersdk/*" { capabilities = ["create", "read", "update", "delete"] }
path "secret/metadata/hypersdk/*" { capabilities = ["read", "update", "list", "delete"] }
path "secret/destroy/hypersdk/*" { capabilities = ["update"] }
path "secret/metadata/hypersdk" { capabilities = ["list"] }
"""
    + _reads_public_keys("policy"),
    # Identity signs principals with its key; it checks grants and its own principals.
    "identity": _signs_with("identity") + _reads_public_keys("identity", "policy"),
    # Policy signs grants with its key; it checks principals and its own grants.
    "policy": _signs_with("policy") + _reads_public_keys("identity", "policy"),
    # The exporter and audit check grants; they read no secret (the exporter's credentials
    # come through the secrets service, decision 0033).
    "exporter": _reads_public_keys("policy"),
    # Audit checks grants and signs the checkpoints of its log with its own key (0047).
    "audit": _signs_with("audit") + _reads_public_keys("audit", "policy"),
    # Webhooks checks grants; its sealing key is a file of the stack's (0600).
    "webhooks": _reads_public_keys("policy"),
}
"""Each service's Vault policy (decisions 0045, 0046); the gateway has no Vault login."""


def openbao_dir(config: StackConfig) -> Path:
    """OpenBao's configuration and its raft storage (0700)."""
    return config.state_dir / "openbao"


def write_openbao_config(config: StackConfig) -> Path:
    """The server's configuration: raft storage under the state directory, loopback only.

    Plain HTTP on 127.0.0.1 (this machine's users cannot read loopback traffic without
    root); production talks TLS to an external Vault (docs/operations.md).
    """
    directory = _private_dir(openbao_dir(config))
    data = _private_dir(directory / "data")
    port = config.vault_port
    text = f"""
storage "raft" {{
  path                   = "{data}"
  node_id                = "hypersdk"
  performance_multiplier = 1
}}
listener "tcp" {{
  address         = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{port + 1}"
  tls_disable     = true
}}
api_addr     = "http://127.0.0.1:{port}"
cluster_addr = "http://127.0.0.1:{port + 1}"
ui           = false
"""
    path = directory / "config.hcl"
    _private_file(path, text)
    return path


def openbao_setup(config: StackConfig, seconds: float = 60) -> None:
    """Initialise OpenBao once, unseal it, give each service that needs it its AppRole.

    The unseal key and the root token are kept in 0600 files (``openbao-unseal-key``,
    ``openbao-root-token``) and used only here, by the setup. The transit keys of identity
    and policy are made once (ed25519, not exportable). Each service in
    :data:`VAULT_POLICIES` logs in with its own AppRole (role ID and a fresh secret ID at
    each start, 0600), whose policy reaches only what the service needs.
    """
    import hvac
    from hvac.exceptions import InvalidPath

    client = hvac.Client(url=f"http://127.0.0.1:{config.vault_port}", timeout=5)
    _openbao_active(config, client, time.monotonic() + seconds)
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    if "secret/" not in mounts:
        client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    if "transit/" not in mounts:
        client.sys.enable_secrets_engine("transit", path="transit")
    for key in TRANSIT_KEYS.values():
        try:
            client.secrets.transit.read_key(key)
        except InvalidPath:  # made not exportable: it never leaves OpenBao
            client.secrets.transit.create_key(key, key_type="ed25519", exportable=False)
    if "approle/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("approle")
    for service, policy in VAULT_POLICIES.items():
        _approle(config, client, service, policy)


@dataclass(frozen=True)
class HarnessTransitSigner:
    """Signs as identity or policy in OpenBao transit with the root token: tests and bench only.

    The harness stands where the issuer stands (it needs a genuine grant to prove what a
    service does with one); services sign with their own AppRole (decision 0046).
    """

    config: StackConfig
    issuer: str
    ttl_seconds: int = 60
    clock: Callable[[], float] = time.time

    def sign(self, claims: dict[str, Any]) -> str:
        """A genuine assertion of ``claims`` by the issuer."""
        import hvac

        payload = encode_claims(
            claims, issuer=self.issuer, ttl_seconds=self.ttl_seconds, now=self.clock()
        )
        client = hvac.Client(
            url=f"http://127.0.0.1:{self.config.vault_port}",
            token=_read_secret(self.config.secret_dir / "openbao-root-token"),
            timeout=5,
        )
        answer = client.secrets.transit.sign_data(
            TRANSIT_KEYS[self.issuer],
            hash_input=base64.b64encode(signed_message(payload)).decode(),
        )
        signature = answer["data"]["signature"].rpartition(":")[2]
        return assemble(payload, base64.b64decode(signature))


def _approle(config: StackConfig, client: object, service: str, policy: str) -> None:
    """``service``'s policy and AppRole; its role ID and a fresh secret ID in 0600 files."""
    import hvac

    assert isinstance(client, hvac.Client)
    role = f"hypersdk-{service}"
    client.sys.create_or_update_policy(role, policy)
    client.auth.approle.create_or_update_approle(
        role,
        token_policies=[role],
        token_ttl=config.extra_env.get("HYPERSDK_DEV_VAULT_TOKEN_TTL", "1h"),
        token_max_ttl=config.extra_env.get("HYPERSDK_DEV_VAULT_TOKEN_MAX_TTL", "24h"),
    )
    role_id = client.auth.approle.read_role_id(role)["data"]["role_id"]
    _private_file(config.secret_dir / f"{service}-role-id", role_id + "\n")
    secret_file = config.secret_dir / f"{service}-secret-id"
    if secret_file.exists():  # the previous start's: no longer needed
        with contextlib.suppress(Exception):
            client.auth.approle.destroy_secret_id(role, _read_secret(secret_file))
    secret_id = client.auth.approle.generate_secret_id(role)["data"]["secret_id"]
    _private_file(secret_file, secret_id + "\n")


def _openbao_active(config: StackConfig, client: object, deadline: float) -> None:
    """Wait for the server, initialise it the first time, unseal it, wait until it leads.

    ``client`` is an hvac.Client; it is left holding the root token.
    """
    import hvac

    assert isinstance(client, hvac.Client)
    while True:
        try:
            client.sys.read_seal_status()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    key_file = config.secret_dir / "openbao-unseal-key"
    token_file = config.secret_dir / "openbao-root-token"
    if not client.sys.is_initialized():
        result = client.sys.initialize(secret_shares=1, secret_threshold=1)
        _private_file(key_file, result["keys_base64"][0] + "\n")
        _private_file(token_file, result["root_token"] + "\n")
    if client.sys.is_sealed():
        client.sys.submit_unseal_key(_read_secret(key_file))
    client.token = _read_secret(token_file)
    while True:  # unsealed, it elects itself leader before it takes writes
        with contextlib.suppress(Exception):
            if client.sys.read_leader_status().get("is_self"):
                return
        if time.monotonic() > deadline:
            raise TimeoutError("OpenBao did not become active")
        time.sleep(0.05)


def supervise(config: StackConfig) -> None:
    """Run OpenBao and the services; restart what dies; stop all on SIGTERM."""
    env = config.service_env()
    commands: dict[str, list[str]] = {
        "openbao": [_bao_binary(config), "server", f"-config={write_openbao_config(config)}"]
    }
    for service in SERVICES:
        commands[service] = [config.python, "-m", f"hypersdk_{service}"]
    children: dict[str, subprocess.Popen[bytes]] = {}
    restarts: dict[str, list[float]] = {name: [] for name in commands}
    stopping = False

    def start(name: str) -> None:
        log = os.open(config.log_dir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        child_env = dict(env)
        stdout: int = log
        if name == "openbao":
            # Nothing secret in its environment or command line; no banner worth keeping.
            child_env = {"PATH": env.get("PATH", ""), "HOME": str(config.state_dir)}
            stdout = subprocess.DEVNULL
        children[name] = subprocess.Popen(
            commands[name], env=child_env, stdout=stdout, stderr=log, stdin=subprocess.DEVNULL
        )
        os.close(log)

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        start("openbao")
        openbao_setup(config)
        for service in SERVICES:
            start(service)
        while not stopping:
            time.sleep(0.5)
            for name, child in list(children.items()):
                if child.poll() is not None and not stopping:
                    recent = [t for t in restarts[name] if time.monotonic() - t < 60]
                    restarts[name] = [*recent, time.monotonic()]
                    time.sleep(min(2 ** len(recent) * 0.5, 10))
                    start(name)
                    if name == "openbao":  # it starts sealed
                        try:
                            openbao_setup(config)
                        except Exception as exc:  # the supervisor keeps the services running
                            print(f"OpenBao setup failed: {type(exc).__name__}", file=sys.stderr)
    finally:  # whatever ended the loop (a setup that failed too), nothing is left running
        _stop_children(children)


def _stop_children(children: dict[str, subprocess.Popen[bytes]]) -> None:
    """Services first (they drain in-flight work), OpenBao last."""
    for name in [*reversed(SERVICES), "openbao"]:
        child = children.get(name)
        if child is None:
            continue
        if child.poll() is None:
            child.terminate()
        try:
            child.wait(timeout=35)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# ---- isolated stacks (tests, benchmarks) ---------------------------------------------------------


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel takes local ports of outgoing connections from."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(count: int = 1) -> int:
    """The first of ``count`` consecutive TCP ports that can be bound on 127.0.0.1 now.

    Taken below the ephemeral range: a port the kernel hands out for ``bind(0)`` is also one it
    gives outgoing connections (to RabbitMQ, PostgreSQL) as their local port, so such a port
    could be taken by a client socket before the service that was to listen on it starts.
    """
    ephemeral_low, _ = _ephemeral_ports()
    low = 10000
    for _ in range(500):
        base = low + secrets.randbelow(max(1, ephemeral_low - low - count))
        if all(_bindable(base + offset) for offset in range(count)):
            return base
    raise RuntimeError(f"no {count} free consecutive ports below {ephemeral_low}")


def rabbitmqctl(*args: str) -> None:
    """Run rabbitmqctl (as root on the machine that runs the broker)."""
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True)


async def _drop_database(config: StackConfig) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host=config.pg_host, port=config.pg_port, user=config.pg_user, database="postgres"
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{config.database}" WITH (FORCE)')
        # Roles are cluster-wide; these served that database only.
        for service in (*MIGRATED, *EXTRA_DB_ROLES):
            await conn.execute(f'DROP ROLE IF EXISTS "{config.db_role(service)}"')
    finally:
        await conn.close()


@contextmanager
def isolated(
    state_dir: Path,
    *,
    prefix: str = "hypersdk-test",
    extra_env: dict[str, str] | None = None,
    broker_auth: bool = False,
) -> Iterator[StackConfig]:
    """A stack config with its own RabbitMQ vhost, database and ports, all removed afterwards.

    With ``broker_auth`` the broker's HTTP auth backend is pointed at this stack (broker-wide:
    one such stack at a time).

    The stack itself is started by the caller (``up``) and stopped here on the way out.
    """
    suffix = secrets.token_hex(4)
    vhost = f"{prefix}-{suffix}"
    database = f"{prefix.replace('-', '_')}_{suffix}"
    rabbitmqctl("add_vhost", vhost)
    try:
        config = StackConfig(
            state_dir=state_dir,
            database=database,
            amqp_vhost=vhost,
            amqp_login_prefix=vhost,
            db_role_prefix=database,
            harness=True,
            gateway_port=free_port(),
            vault_port=free_port(count=2),  # API and raft cluster
            health_base_port=free_port(count=HEALTH_PORTS),
            broker_auth_port=free_port() if broker_auth else 0,
            extra_env=dict(extra_env or {}),
        )
        try:
            yield config
        finally:
            down(config)
            # In a thread of its own: the caller may be inside an event loop (the benchmark).
            with ThreadPoolExecutor(max_workers=1) as pool:
                pool.submit(asyncio.run, _drop_database(config)).result()
    finally:
        rabbitmqctl("delete_vhost", vhost)
        for login in [*SERVICES, HARNESS]:  # users are broker-wide
            subprocess.run(
                ["rabbitmqctl", "-q", "delete_user", f"{vhost}-{login}"],
                check=False,
                capture_output=True,
            )


# ---- up / down --------------------------------------------------------------------------------


def _pid_file(config: StackConfig) -> Path:
    return config.run_dir / "supervisor.pid"


def running_pid(config: StackConfig) -> int | None:
    """Pid of this stack's supervisor if it runs."""
    try:
        pid = int(_pid_file(config).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):
        # HTTPException: e.g. a loopback connection to a port nobody listens on yet can meet
        # itself (same source and destination port) and read back its own request.
        return False


def wait_ready(
    config: StackConfig, seconds: float = 90, *, supervisor: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until every service answers /readyz (or the ``supervisor`` started here exits)."""
    urls = [f"{config.gateway_url}/readyz"] + [
        f"http://127.0.0.1:{config.health_base_port + i}/readyz"
        for i, service in enumerate(SERVICES)
        if service != "gateway"
    ]
    deadline = time.monotonic() + seconds
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        pending = [url for url in pending if not _ready(url)]
        if pending:
            if supervisor is not None and supervisor.poll() is not None:  # it gave up: say so
                raise SystemExit(f"the supervisor exited; see {config.log_dir}/supervisor.log")
            time.sleep(0.5)
    if pending:
        raise SystemExit(f"services not ready: {pending}; see logs in {config.log_dir}")


CONVERSION_USER = "hypersdk-convert"


def conversion_account() -> pwd.struct_passwd:
    """The conversion user's account, created (a system user, no home, no shell) if missing.

    Root only; the tests that convert outside a stack use it too.
    """
    try:
        return pwd.getpwnam(CONVERSION_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                CONVERSION_USER,
            ],
            check=True,
        )
        return pwd.getpwnam(CONVERSION_USER)


def ensure_conversion_user(config: StackConfig) -> tuple[int, int] | None:
    """As root, the unprivileged user qemu-img runs as: created if missing.

    It may pass through the directories above the state directory (search only) and through
    the state directory (its group, 0710), owns the export directory, and reads the lab through
    its group (see share_lab).
    """
    if os.geteuid() != 0:
        return None
    entry = conversion_account()
    for directory in config.state_dir.parents:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    # The state directory itself: searchable by the conversion user's group only (0710); what
    # it may reach inside is its export directory and the lab (share_lab), nothing else.
    os.chown(config.state_dir, -1, entry.pw_gid)
    config.state_dir.chmod(0o710)
    os.chown(config.state_dir / "exports", entry.pw_uid, entry.pw_gid)
    return entry.pw_uid, entry.pw_gid


def share_lab(lab: Path, *, gid: int) -> None:
    """The lab's disks readable by the conversion user's group, nothing more."""
    for directory, _, files in os.walk(lab):
        os.chown(directory, -1, gid)
        os.chmod(directory, 0o750)  # noqa: S103 - group: the conversion user, reading
        for name in files:
            os.chown(os.path.join(directory, name), -1, gid)
            os.chmod(os.path.join(directory, name), 0o640)


def up(config: StackConfig, *, admin_password: str | None = None) -> dict[str, str]:
    """Start the platform; return how to reach it."""
    for directory in (
        config.state_dir,
        config.run_dir,
        config.log_dir,
        config.secret_dir,
        config.key_dir,
    ):
        _private_dir(directory)
    # Identity's and policy's keys are OpenBao transit keys (decision 0046); only the
    # gateway's seal key is a file.
    if not (config.key_dir / "gateway.key").exists():
        generate_key_pair(config.key_dir / "gateway.key", config.key_dir / "gateway.pub")
    if not config.sealing_key_file.exists():
        # a Fernet key: 32 random bytes, url-safe base64
        key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        _private_file(config.sealing_key_file, key + "\n")
    for retired in ("identity.key", "policy.key", "identity.pub", "policy.pub"):
        (config.key_dir / retired).unlink(missing_ok=True)  # from before decision 0046
    _private_dir(config.state_dir / "exports")
    _private_dir(config.state_dir / "lab")
    conversion = ensure_conversion_user(config)
    supervisor: subprocess.Popen[bytes] | None = None
    if running_pid(config) is not None:
        print("the platform is already running", flush=True)
    else:
        ensure_dependencies(config)
        asyncio.run(_create_database(config))
        provision_bus(config)
        configure_broker_auth(config)
        env = config.service_env()
        for service in MIGRATED:
            # As the administrator: creates the service's role, which owns only its schema.
            env[f"HYPERSDK_{service.upper()}_MIGRATION_DATABASE_URL"] = config.database_url()
        # Only migrate (which provisions the role) and retain (retention_env) see this one.
        env["HYPERSDK_AUDIT_RETENTION_DATABASE_URL"] = config.service_database_url(
            "audit_retention"
        )
        for service in MIGRATED:
            _run_module(config, service, "migrate", env=env)
        # The stack's description in a 0600 file, not on the supervisor's command line (which
        # every local user can read): extra_env may one day hold something secret.
        stack_file = config.run_dir / "stack.json"
        _private_file(stack_file, json.dumps(asdict(config), default=str))
        supervisor = subprocess.Popen(
            [
                config.python,
                str(Path(__file__).resolve()),
                "supervise",
                "--config",
                str(stack_file),
            ],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=os.open(
                config.log_dir / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
            ),
        )
        _private_file(_pid_file(config), str(supervisor.pid))
    wait_ready(config, supervisor=supervisor)
    password_file = config.secret_dir / "admin-password"
    password = admin_password or os.environ.get("HYPERSDK_BOOTSTRAP_ADMIN_PASSWORD")
    if not password:
        password = (
            password_file.read_text().strip()
            if password_file.exists()
            else secrets.token_urlsafe(18)
        )
    env = config.service_env()
    env["HYPERSDK_BOOTSTRAP_ADMIN_PASSWORD"] = password
    output = _run_module(config, "identity", "bootstrap-admin", env=env)
    if "bootstrap admin created" in output or not password_file.exists():
        _private_file(password_file, password + "\n")
    elif password_file.read_text().strip() != password:
        # The admin exists already (the database outlived the state directory, or the
        # password was changed): its password is not ours to reset.
        print(
            "warning: the admin user already exists; its password was not changed and may "
            f"differ from {password_file}",
            file=sys.stderr,
        )
    _run_module(config, "exporter", "seed-demo-lab", env=config.service_env())
    if conversion is not None:
        share_lab(config.state_dir / "lab", gid=conversion[1])
    return {
        "gateway_url": config.gateway_url,
        "admin_username": "admin",
        "admin_password_file": str(password_file),
        "logs": str(config.log_dir),
    }


def down(config: StackConfig, timeout: float = 60) -> bool:
    """Stop this stack's supervisor and so its children; return whether one was running."""
    pid = running_pid(config)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # Reap it if it is our own child (as in tests); otherwise init does.
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    _pid_file(config).unlink(missing_ok=True)
    return True


def _config_from_env() -> StackConfig:
    state_dir = Path(os.environ.get("HYPERSDK_DEV_STATE_DIR", ROOT / "var"))
    return StackConfig(
        state_dir=state_dir.resolve(),
        gateway_port=int(os.environ.get("HYPERSDK_DEV_GATEWAY_PORT", "8080")),
        vault_port=int(os.environ.get("HYPERSDK_DEV_VAULT_PORT", "8200")),
        broker_auth_port=int(os.environ.get("HYPERSDK_DEV_BROKER_AUTH_PORT", "15690")),
    )


def main() -> None:
    """Command line: up, down, status, supervise."""
    parser = argparse.ArgumentParser(prog="devstack")
    parser.add_argument("command", choices=["up", "down", "status", "supervise"])
    parser.add_argument("--config", help="file of a JSON StackConfig (internal, for supervise)")
    args = parser.parse_args()
    if args.command == "supervise":
        raw = json.loads(Path(args.config).read_text())
        raw["state_dir"] = Path(raw["state_dir"])
        supervise(StackConfig(**raw))
        return
    config = _config_from_env()
    if args.command == "up":
        info = up(config)
        print(f"HyperSDK is up: {info['gateway_url']}")
        print(f"  admin user:      {info['admin_username']}")
        print(f"  admin password:  in {info['admin_password_file']} (0600)")
        print(f"  logs:            {info['logs']}")
        print("  stop with:       make down")
    elif args.command == "down":
        print("stopped" if down(config) else "not running")
    else:
        pid = running_pid(config)
        print(f"running (supervisor pid {pid})" if pid else "not running")


if __name__ == "__main__":
    main()
