"""The commands of ``hyperctl``: one per operation of the HTTP API, grouped by resource."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from click.shell_completion import get_completion_class

from hypersdk_cli.adapters.inbound.base import App, Group, Root, app_of
from hypersdk_cli.adapters.inbound.output import Column, cell_text, done, emit, field, note
from hypersdk_cli.adapters.inbound.progress import human_bytes, watch_job
from hypersdk_cli.adapters.outbound.files import valid_context_name
from hypersdk_cli.config import context_name, resolve_target
from hypersdk_cli.core.errors import CliError, ExitCode
from hypersdk_cli.core.jobs import ended_well, total_disk_bytes
from hypersdk_cli.core.models import Context
from hypersdk_cli.core.platform import log_in

DISK_FORMATS = ("raw", "qcow2", "vmdk", "vhdx", "vpc", "ova")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
PERMISSIONS = (
    "vms:browse",
    "jobs:view",
    "vms:export",
    "jobs:cancel",
    "providers:configure",
    "users:manage",
    "apikeys:manage",
    "audit:view",
    "secrets:manage",
    "system:configure",
)
MAX_SECRET_BYTES = 1 << 20

VM_COLUMNS = [
    field("id"),
    field("state"),
    field("cpus"),
    field("memory_mib", "MEMORY MIB"),
    Column(
        "DISKS",
        lambda vm: (
            ", ".join(
                f"{d.get('name')} {human_bytes(int(d.get('size_bytes') or 0))}"
                for d in vm.get("disks") or []
            )
            if vm.get("detailed", True)
            else "(vms show)"
        ),
    ),
]
JOB_COLUMNS = [
    field("id"),
    field("provider"),
    field("vm", "VM"),
    field("format"),
    field("status"),
    Column("PROGRESS", lambda job: f"{job.get('progress', 0)}%"),
    field("requested_by"),
    field("created_at"),
]
JOB_FIELDS = [
    *JOB_COLUMNS,
    field("error"),
    field("error_detail"),
    field("cancel_requested_by"),
    field("started_at"),
    field("finished_at"),
    Column(
        "ARTIFACTS",
        lambda job: [
            f"{a.get('name') or a.get('path')} {human_bytes(int(a.get('size_bytes') or 0))}"
            f" sha256:{a.get('sha256')}"
            for a in job.get("artifacts") or []
        ],
    ),
]
HISTORY_COLUMNS = [field("at"), field("action"), field("status"), field("actor"), field("reason")]
PROVIDER_COLUMNS = [
    field("name"),
    field("type"),
    field("config"),
    field("credential_ref"),
    field("created_at"),
]
USER_COLUMNS = [
    field("username"),
    field("source"),
    field("generation"),
    field("disabled"),
    field("locked_until"),
    field("external_roles"),
    field("created_at"),
]


def _of_user(column: Column) -> Column:
    """A user column read from a ``{user, roles}`` answer."""
    return Column(column.header, lambda found: column.cell(found.get("user") or {}))


USER_FIELDS = [_of_user(c) for c in USER_COLUMNS] + [
    Column("ROLES", lambda found: found.get("roles"))
]
KEY_COLUMNS = [
    field("id"),
    field("name"),
    field("owner"),
    field("scopes"),
    field("hint"),
    field("expires_at"),
    field("last_used_at"),
    field("revoked_at"),
]
SECRET_COLUMNS = [field("path"), field("version"), field("updated_at")]
AUDIT_COLUMNS = [
    field("sequence", "SEQ"),
    field("timestamp"),
    field("user"),
    field("action"),
    field("resource"),
    field("result"),
    field("request_id"),
]


@click.group(
    cls=Root,
    context_settings={"help_option_names": ["-h", "--help"]},
    examples=[
        "hyperctl login --server https://hypersdk.example.com",
        "hyperctl vms list",
        "hyperctl export demo-lab/web-01 --format qcow2 --wait",
        "HYPERSDK_API_KEY=... hyperctl jobs list -o json",
    ],
)
@click.version_option("0.1.0", prog_name="hyperctl")
def cli() -> None:
    """hyperctl: export VMs and administer a HyperSDK platform from a terminal or a script.

    Every command takes the options below, before or after its name, and -o table|json|yaml
    (JSON and YAML are the API's own JSON). Exit codes: 0 ok, 1 error, 2 usage or invalid
    input, 3 not authenticated, 4 forbidden, 5 not found, 6 conflict, 7 unavailable or rate
    limited, 8 export failed, 9 not implemented by the platform, 10 audit chain invalid,
    130 interrupted (docs/cli.md).
    """


# ---- login, logout, whoami -------------------------------------------------------------------


def _read_secret_line(prompt: str) -> str:
    """One line from stdin (the trailing newline dropped), or a hidden prompt on a terminal."""
    if sys.stdin.isatty():
        return str(click.prompt(prompt, hide_input=True, err=True))
    line = sys.stdin.readline()
    return line.removesuffix("\n").removesuffix("\r")


@cli.command(
    examples=[
        "hyperctl login --server https://hypersdk.example.com --username admin",
        "hyperctl --context prod login",
        "cat password-file | hyperctl login --username ci --password-stdin",
    ]
)
@click.option("--username", "-u", help="Login name (prompted for if missing).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.pass_context
def login(ctx: click.Context, username: str | None, password_stdin: bool) -> None:
    """Log in: a session token stored 0600 in the config dir, for the current context.

    The password is prompted for without echo, or read from stdin with --password-stdin;
    never give it as an argument. A new --server (or an unknown --context) creates the
    context and makes it current if none is.
    """
    app = app_of(ctx)
    store = app.store()
    config = store.load_config()
    target = resolve_target(app.options, config, app.wiring.environ)
    username = username or click.prompt("Username", err=True)
    if password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        password = str(click.prompt("Password", hide_input=True, err=True))
    if not password:
        raise CliError("invalid_argument", "The password is empty.", exit_code=ExitCode.USAGE)
    api = app.wiring.api(target, app.options)
    try:
        session = log_in(
            api,
            server=target.server,
            username=str(username),
            password=password,
            clock=app.wiring.clock,
        )
    finally:
        api.close()
    known = config.contexts.get(target.context)
    if known is None or known.server.rstrip("/") != target.server:
        context = Context(
            name=valid_context_name(target.context),
            server=target.server,
            ca_bundle=target.ca_bundle,
            pin_sha256=target.pin_sha256,
        )
        config = config.with_context(context)
    if config.current_context is None:
        config = type(config)(current_context=target.context, contexts=config.contexts)
    store.save_config(config)
    store.save_session(target.context, session)
    summary = {
        "context": target.context,
        "server": target.server,
        "username": session.username,
        "expires_at": session.expires_at.isoformat(),
    }
    if app.output == "table":
        click.echo(
            f"Logged in to {target.server} as {cell_text(session.username)}"
            f" (context {target.context}); the session ends at {summary['expires_at']}."
        )
    else:
        emit(summary, app.output)


@cli.command(examples=["hyperctl logout", "hyperctl --context prod logout"])
@click.pass_context
def logout(ctx: click.Context) -> None:
    """End the session on the platform and remove its token file."""
    app = app_of(ctx)
    store = app.store()
    name = context_name(app.options, store.load_config(), app.wiring.environ)
    if store.load_session(name) is None:
        note(f"Not logged in (context {name}).")
        return
    runtime = app.runtime()
    try:
        runtime.platform.logout()
    except CliError as error:
        if error.exit_code is not ExitCode.NOT_AUTHENTICATED:
            raise
    finally:
        store.delete_session(name)
    done(f"Logged out of {runtime.target.server} (context {name}).", app.output)


@cli.command(examples=["hyperctl whoami", "hyperctl whoami -o json"])
@click.pass_obj
def whoami(app: App) -> None:
    """Who the platform sees: user, roles, and the session or API key in use."""
    emit(app.platform.me(), app.output, single=True)


@cli.group(examples=["hyperctl sessions list", "hyperctl sessions revoke SESSION_ID"])
def sessions() -> None:
    """Your live sessions (with the session of the current context, never an API key)."""


@sessions.command("list", examples=["hyperctl sessions list", "hyperctl sessions list -o json"])
@click.pass_obj
def sessions_list(app: App) -> None:
    """List your live sessions; CURRENT marks this context's."""
    columns = [
        Column("CURRENT", lambda s: "*" if s.get("current") else ""),
        field("id"),
        field("created_at"),
        field("last_seen_at"),
        field("expires_at"),
        field("idle_expires_at"),
    ]
    emit(app.platform.list_sessions(), app.output, columns=columns)


@sessions.command("revoke", examples=["hyperctl sessions revoke SESSION_ID"])
@click.argument("session_id")
@click.pass_obj
def sessions_revoke(app: App, session_id: str) -> None:
    """End one of your sessions (another user's is not found)."""
    app.platform.revoke_session(session_id)
    done(f"Session {session_id} revoked.", app.output)


# ---- vms and export --------------------------------------------------------------------------


@cli.group(examples=["hyperctl vms list --provider demo-lab", "hyperctl vms show demo-lab/web-01"])
def vms() -> None:
    """Browse the VM inventory of the providers."""


@vms.command(
    "list",
    examples=[
        "hyperctl vms list",
        "hyperctl vms list --provider demo-lab --limit 10",
        "hyperctl vms list -o json | jq -r '.[].id'",
    ],
)
@click.option("--provider", help="Only this provider's VMs.")
@click.option("--limit", type=click.IntRange(1), help="At most this many (default: all pages).")
@click.pass_obj
def vms_list(app: App, provider: str | None, limit: int | None) -> None:
    """List VMs, by provider then name (every page unless --limit)."""
    emit(app.platform.list_vms(provider=provider, limit=limit), app.output, columns=VM_COLUMNS)


@vms.command(
    "show",
    examples=["hyperctl vms show demo-lab/web-01", "hyperctl vms show demo-lab/db-01 -o yaml"],
)
@click.argument("vm_id", metavar="PROVIDER/VM")
@click.pass_obj
def vms_show(app: App, vm_id: str) -> None:
    """Describe one VM: disks, NICs, firmware, guest OS."""
    emit(app.platform.get_vm(vm_id), app.output, single=True)


def _split_vm(vm: str, provider: str | None) -> tuple[str, str]:
    if provider is None:
        if "/" not in vm:
            raise click.UsageError("Give the VM as PROVIDER/VM, or pass --provider.")
        provider, vm = vm.split("/", 1)
    return provider, vm


@cli.command(
    examples=[
        "hyperctl export web-01 --provider demo-lab --format qcow2 --wait",
        "hyperctl export demo-lab/db-01 --format ova",
        "hyperctl export demo-lab/web-01 --format qcow2 --compress --wait -o json",
        "hyperctl export demo-lab/web-01 --format vmdk --wait --cancel-on-interrupt",
    ]
)
@click.argument("vm", metavar="VM")
@click.option("--provider", "-p", help="Provider of the VM (or give the VM as PROVIDER/VM).")
@click.option(
    "--format", "disk_format", type=click.Choice(DISK_FORMATS), required=True, help="Target format."
)
@click.option(
    "--compress", is_flag=True, help="Compress the disks (qcow2; vmdk and ova always are)."
)
@click.option("--wait", is_flag=True, help="Show live progress and wait for the job to end.")
@click.option("--idempotency-key", help="The same key and request again: the same job.")
@click.option(
    "--cancel-on-interrupt", is_flag=True, help="With --wait: Ctrl-C cancels the job, no question."
)
@click.pass_obj
def export(  # noqa: PLR0917 - one parameter per option
    app: App,
    vm: str,
    provider: str | None,
    disk_format: str,
    compress: bool,
    wait: bool,
    idempotency_key: str | None,
    cancel_on_interrupt: bool,
) -> None:
    """Export a VM to a disk format; with --wait, follow it with a live progress bar.

    Ctrl-C while waiting asks whether to cancel the job (without a terminal: a second
    Ctrl-C within 3 s cancels it); the job keeps running otherwise. Exit code 8 if the job
    fails or is cancelled by someone else, 130 after Ctrl-C.
    """
    provider, vm = _split_vm(vm, provider)
    platform = app.platform
    job = platform.export(
        provider=provider, vm=vm, disk_format=disk_format, compress=compress, key=idempotency_key
    )
    if not wait:
        emit(job, app.output, columns=JOB_FIELDS, single=True)
        return
    _follow(app, job, cancel_on_interrupt=cancel_on_interrupt)


def _follow(app: App, job: Any, *, cancel_on_interrupt: bool) -> None:
    platform = app.platform
    try:
        total = total_disk_bytes(platform.get_vm(f"{job['provider']}/{job['vm']}"))
    except CliError:
        total = None  # the bar then shows percent only
    final = watch_job(
        platform, str(job["id"]), total_bytes=total, cancel_on_interrupt=cancel_on_interrupt
    )
    if app.output == "table":
        summary = f"Job {final.get('id')} {final.get('status')}"
        artifacts = final.get("artifacts") or []
        if artifacts:
            size = sum(int(a.get("size_bytes") or 0) for a in artifacts)
            summary += f": {len(artifacts)} artifact(s), {human_bytes(size)}"
        click.echo(cell_text(summary + "."))
    else:
        emit(final, app.output)
    ended_well(final)


# ---- jobs ------------------------------------------------------------------------------------


@cli.group(examples=["hyperctl jobs list --status running", "hyperctl jobs watch JOB_ID"])
def jobs() -> None:
    """Export jobs: list, show, cancel, watch."""


@jobs.command(
    "list",
    examples=[
        "hyperctl jobs list",
        "hyperctl jobs list --status failed --provider demo-lab -o json",
        "hyperctl jobs list --limit 20 --after LAST_JOB_ID",
    ],
)
@click.option("--status", type=click.Choice(JOB_STATUSES), help="Only jobs in this status.")
@click.option("--provider", help="Only this provider's jobs.")
@click.option("--requested-by", help="Only jobs this user (or API key id) asked for.")
@click.option("--created-after", help="RFC 3339 time, e.g. 2026-01-31T12:00:00Z.")
@click.option("--created-before", help="RFC 3339 time.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--after", help="Job id of the last job of the previous page.")
@click.pass_obj
def jobs_list(  # noqa: PLR0917 - one parameter per filter
    app: App,
    status: str | None,
    provider: str | None,
    requested_by: str | None,
    created_after: str | None,
    created_before: str | None,
    limit: int,
    after: str | None,
) -> None:
    """List jobs, newest first."""
    query = {
        "status": status,
        "provider": provider,
        "requested_by": requested_by,
        "created_after": created_after,
        "created_before": created_before,
        "limit": limit,
        "after": after,
    }
    emit(app.platform.list_jobs(query), app.output, columns=JOB_COLUMNS)


@jobs.command("show", examples=["hyperctl jobs show JOB_ID", "hyperctl jobs show JOB_ID -o json"])
@click.argument("job_id")
@click.pass_obj
def jobs_show(app: App, job_id: str) -> None:
    """One job: status, progress, artifacts with SHA-256, and its history."""
    job = app.platform.get_job(job_id)
    emit(job, app.output, columns=JOB_FIELDS, single=True)
    if app.output == "table" and job.get("history"):
        click.echo()
        emit(job["history"], "table", columns=HISTORY_COLUMNS)


@jobs.command("cancel", examples=["hyperctl jobs cancel JOB_ID"])
@click.argument("job_id")
@click.pass_obj
def jobs_cancel(app: App, job_id: str) -> None:
    """Cancel a job: a queued one at once, a running one within a second (exit 6 if ended)."""
    emit(app.platform.cancel_job(job_id), app.output, columns=JOB_FIELDS, single=True)


@jobs.command(
    "watch", examples=["hyperctl jobs watch JOB_ID", "hyperctl jobs watch JOB_ID -o json"]
)
@click.argument("job_id")
@click.option("--cancel-on-interrupt", is_flag=True, help="Ctrl-C cancels the job, no question.")
@click.pass_obj
def jobs_watch(app: App, job_id: str, cancel_on_interrupt: bool) -> None:
    """Follow a job to its end with a live progress bar (exit 8 if it fails)."""
    _follow(app, app.platform.get_job(job_id), cancel_on_interrupt=cancel_on_interrupt)


# ---- providers -------------------------------------------------------------------------------


def _config_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    config: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{key or pair!r} is not KEY=VALUE.", param_hint="--config")
        config[key] = value
    return config


def _provider_options(function: Any) -> Any:
    function = click.option(
        "--credential-ref", help="Secret path of the credential (hyperctl secrets put)."
    )(function)
    function = click.option(
        "--config",
        "config_pairs",
        multiple=True,
        metavar="KEY=VALUE",
        help="A connection setting (repeat); never a secret.",
    )(function)
    return click.option(
        "--type",
        "provider_type",
        type=click.Choice(["local", "libvirt", "vsphere"]),
        required=True,
        help="Provider type.",
    )(function)


@cli.group(examples=["hyperctl providers list", "hyperctl providers show demo-lab"])
def providers() -> None:
    """Provider connections (never their credentials)."""


@providers.command("list", examples=["hyperctl providers list", "hyperctl providers list -o yaml"])
@click.pass_obj
def providers_list(app: App) -> None:
    """List providers."""
    emit(app.platform.list_providers(), app.output, columns=PROVIDER_COLUMNS)


@providers.command("show", examples=["hyperctl providers show demo-lab"])
@click.argument("name")
@click.pass_obj
def providers_show(app: App, name: str) -> None:
    """One provider."""
    emit(app.platform.get_provider(name), app.output, single=True)


@providers.command(
    "add",
    examples=[
        "hyperctl secrets put providers/lab2 --from-file lab2-credential.json",
        "hyperctl providers add lab2 --type local --config directory=demo"
        " --credential-ref providers/lab2",
        "hyperctl providers add vc --type vsphere --config host=vc.example.com"
        " --credential-ref providers/vc",
    ],
)
@click.argument("name")
@_provider_options
@click.pass_obj
def providers_add(
    app: App,
    name: str,
    provider_type: str,
    config_pairs: tuple[str, ...],
    credential_ref: str | None,
) -> None:
    """Register a provider that references its credential by secret path."""
    settings = {
        "name": name,
        "type": provider_type,
        "config": _config_pairs(config_pairs),
        "credential_ref": credential_ref,
    }
    emit(app.platform.add_provider(settings), app.output, single=True)


@providers.command(
    "update",
    examples=[
        "hyperctl providers update lab2 --type local --config directory=demo2"
        " --credential-ref providers/lab2",
    ],
)
@click.argument("name")
@_provider_options
@click.pass_obj
def providers_update(
    app: App,
    name: str,
    provider_type: str,
    config_pairs: tuple[str, ...],
    credential_ref: str | None,
) -> None:
    """Replace a provider's type, settings and credential reference (all three)."""
    settings = {
        "type": provider_type,
        "config": _config_pairs(config_pairs),
        "credential_ref": credential_ref,
    }
    emit(app.platform.update_provider(name, settings), app.output, single=True)


@providers.command("delete", examples=["hyperctl providers delete lab2"])
@click.argument("name")
@click.pass_obj
def providers_delete(app: App, name: str) -> None:
    """Unregister a provider."""
    app.platform.delete_provider(name)
    done(f"Provider {name} deleted.", app.output)


# ---- users -----------------------------------------------------------------------------------


@cli.group(examples=["hyperctl users list", "hyperctl users add vera --role viewer"])
def users() -> None:
    """Users and their roles (needs users:manage)."""


@users.command("list", examples=["hyperctl users list", "hyperctl users list -o json"])
@click.pass_obj
def users_list(app: App) -> None:
    """List users."""
    emit(app.platform.list_users(), app.output, columns=USER_COLUMNS)


@users.command(
    "add",
    examples=[
        "hyperctl users add vera --role viewer",
        "printf '%s\\n' \"$PASSWORD\" | hyperctl users add ci --role operator --password-stdin",
        "hyperctl users add alice --pam --role operator",
    ],
)
@click.argument("username")
@click.option(
    "--role", "roles", multiple=True, type=click.Choice(["admin", "operator", "viewer", "auditor"])
)
@click.option("--pam", is_flag=True, help="A PAM user: the system checks the password.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.pass_obj
def users_add(
    app: App, username: str, roles: tuple[str, ...], pam: bool, password_stdin: bool
) -> None:
    """Create a user; a local user's password is prompted for (twice) or read from stdin."""
    fields: dict[str, Any] = {"username": username, "roles": list(roles)}
    if pam:
        fields["source"] = "pam"
    elif password_stdin or not sys.stdin.isatty():
        fields["password"] = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        fields["password"] = click.prompt(
            "Password", hide_input=True, confirmation_prompt=True, err=True
        )
    emit(app.platform.add_user(fields), app.output, columns=USER_FIELDS, single=True)


@users.command("show", examples=["hyperctl users show vera"])
@click.argument("username")
@click.pass_obj
def users_show(app: App, username: str) -> None:
    """One user, with roles and any lockout."""
    emit(app.platform.get_user(username), app.output, columns=USER_FIELDS, single=True)


@users.command(
    "update",
    examples=[
        "hyperctl users update vera --role operator",
        "hyperctl users update vera --disable",
        "hyperctl users update vera --no-roles",
    ],
)
@click.argument("username")
@click.option("--role", "roles", multiple=True, help="Replace the roles (repeat).")
@click.option("--no-roles", is_flag=True, help="Remove every role.")
@click.option("--disable/--enable", "disabled", default=None, help="Refuse or allow logins.")
@click.pass_obj
def users_update(
    app: App, username: str, roles: tuple[str, ...], no_roles: bool, disabled: bool | None
) -> None:
    """Replace a user's roles, or disable or enable them (ends their sessions)."""
    fields: dict[str, Any] = {}
    if roles or no_roles:
        fields["roles"] = list(roles)
    if disabled is not None:
        fields["disabled"] = disabled
    if not fields:
        raise click.UsageError("Nothing to change: give --role, --no-roles, --disable or --enable.")
    emit(app.platform.update_user(username, fields), app.output, columns=USER_FIELDS, single=True)


@users.command("delete", examples=["hyperctl users delete vera"])
@click.argument("username")
@click.pass_obj
def users_delete(app: App, username: str) -> None:
    """Delete a user with their sessions and API keys."""
    app.platform.delete_user(username)
    done(f"User {username} deleted.", app.output)


@users.command("unlock", examples=["hyperctl users unlock vera"])
@click.argument("username")
@click.pass_obj
def users_unlock(app: App, username: str) -> None:
    """Lift a login lockout."""
    app.platform.unlock_user(username)
    done(f"User {username} unlocked.", app.output)


# ---- api keys --------------------------------------------------------------------------------


def _emit_issued(app: App, issued: Any) -> None:
    """A new key: printed this once (stdout), with a reminder on stderr."""
    if app.output == "table":
        key_fields = issued.get("api_key") or {}
        emit({**key_fields, "key": issued.get("key")}, "table", single=True)
    else:
        emit(issued, app.output)
    note("Store the key now: it is never shown again.")


@cli.group(
    "api-keys",
    examples=["hyperctl api-keys create --name ci --scope vms:browse --scope jobs:view"],
)
def api_keys() -> None:
    """API keys for scripts (needs apikeys:manage); a key is shown once, when issued."""


@api_keys.command("list", examples=["hyperctl api-keys list", "hyperctl api-keys list --owner ci"])
@click.option("--owner", help="Only this user's keys.")
@click.pass_obj
def api_keys_list(app: App, owner: str | None) -> None:
    """List API keys that work (never the keys)."""
    emit(app.platform.list_api_keys(owner=owner), app.output, columns=KEY_COLUMNS)


@api_keys.command(
    "create",
    examples=[
        "hyperctl api-keys create --name ci --scope vms:browse --scope jobs:view",
        "KEY=$(hyperctl api-keys create --name ci --scope jobs:view -o json | jq -r .key)",
    ],
)
@click.option("--name", required=True, help="Label.")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(PERMISSIONS))
@click.option("--expires-at", help="RFC 3339 time the key stops working.")
@click.option("--owner", help="User the key acts as (default: you).")
@click.pass_obj
def api_keys_create(
    app: App, name: str, scopes: tuple[str, ...], expires_at: str | None, owner: str | None
) -> None:
    """Issue an API key; the key is printed this once."""
    fields: dict[str, Any] = {"name": name, "scopes": list(scopes)}
    if expires_at:
        fields["expires_at"] = expires_at
    if owner:
        fields["owner"] = owner
    _emit_issued(app, app.platform.create_api_key(fields))


@api_keys.command("rotate", examples=["hyperctl api-keys rotate KEY_ID --grace-seconds 3600"])
@click.argument("key_id")
@click.option(
    "--grace-seconds",
    type=click.IntRange(0, 7 * 24 * 3600),
    default=0,
    show_default=True,
    help="How long the old key keeps working.",
)
@click.pass_obj
def api_keys_rotate(app: App, key_id: str, grace_seconds: int) -> None:
    """Issue a replacement key (printed once); the old one dies now or after a grace period."""
    _emit_issued(app, app.platform.rotate_api_key(key_id, grace_seconds=grace_seconds))


@api_keys.command("revoke", examples=["hyperctl api-keys revoke KEY_ID"])
@click.argument("key_id")
@click.pass_obj
def api_keys_revoke(app: App, key_id: str) -> None:
    """Revoke an API key: no gateway accepts it once this returns."""
    app.platform.revoke_api_key(key_id)
    done(f"API key {key_id} revoked.", app.output)


# ---- secrets ---------------------------------------------------------------------------------


def _secret_data(source: str, field_name: str | None) -> dict[str, str]:
    """The key/value pairs of a secret, from a file or stdin; never from the command line."""
    if source == "-" and sys.stdin.isatty():
        if field_name is None:
            raise click.UsageError(
                "Pipe a JSON object of strings on stdin, give --from-file, or use --field NAME."
            )
        value = click.prompt(
            f"Value of {field_name}", hide_input=True, confirmation_prompt=True, err=True
        )
        return {field_name: str(value)}
    try:
        if source == "-":
            raw = sys.stdin.buffer.read(MAX_SECRET_BYTES + 1)
        else:
            with Path(source).open("rb") as stream:
                raw = stream.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise CliError(
            "invalid_argument", f"Cannot read {source}: {exc.strerror}.", exit_code=ExitCode.USAGE
        ) from exc
    if len(raw) > MAX_SECRET_BYTES:
        raise CliError("invalid_argument", "A secret is at most 1 MiB.", exit_code=ExitCode.USAGE)
    text = raw.decode("utf-8", errors="strict") if raw else ""
    if field_name is not None:
        return {field_name: text.removesuffix("\n").removesuffix("\r")}
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items())
    ):
        # Never quote the input: it is a secret.
        raise CliError(
            "invalid_argument",
            "The secret must be a JSON object of string values (or use --field NAME).",
            exit_code=ExitCode.USAGE,
        )
    return data


@cli.group(
    examples=["hyperctl secrets list", "hyperctl secrets put providers/lab2 --from-file c.json"]
)
def secrets() -> None:
    """Secrets in the platform's vault (needs secrets:manage); values never in arguments."""


@secrets.command("list", examples=["hyperctl secrets list"])
@click.pass_obj
def secrets_list(app: App) -> None:
    """List secret paths and versions (never values)."""
    emit(app.platform.list_secrets(), app.output, columns=SECRET_COLUMNS)


@secrets.command(
    "put",
    examples=[
        'hyperctl secrets put providers/lab2 --from-file lab2.json   # {"username": ..., ...}',
        "hyperctl secrets put apps/token --field value               # prompts without echo",
        "vault-tool read x | hyperctl secrets put apps/token --field value",
    ],
)
@click.argument("path")
@click.option(
    "--from-file",
    "source",
    default="-",
    show_default=True,
    metavar="FILE",
    help="Where the value is: a file, or - for stdin.",
)
@click.option(
    "--field",
    "field_name",
    help="Store the whole input as this one field (else: a JSON object of fields).",
)
@click.pass_obj
def secrets_put(app: App, path: str, source: str, field_name: str | None) -> None:
    """Store a new version of a secret, read from stdin or a file."""
    emit(app.platform.put_secret(path, _secret_data(source, field_name)), app.output, single=True)


@secrets.command("delete", examples=["hyperctl secrets delete apps/token"])
@click.argument("path")
@click.pass_obj
def secrets_delete(app: App, path: str) -> None:
    """Delete a secret and its versions."""
    app.platform.delete_secret(path)
    done(f"Secret {path} deleted.", app.output)


@secrets.command(
    "rotate",
    examples=[
        "hyperctl secrets rotate providers/lab2 --from-file lab2-new.json",
        "hyperctl secrets rotate apps/token --field value    # prompts without echo",
    ],
)
@click.argument("path")
@click.option(
    "--from-file",
    "source",
    default="-",
    show_default=True,
    metavar="FILE",
    help="Where the new value is: a file, or - for stdin.",
)
@click.option(
    "--field",
    "field_name",
    help="Rotate to the whole input as this one field (else: a JSON object of fields).",
)
@click.pass_obj
def secrets_rotate(app: App, path: str, source: str, field_name: str | None) -> None:
    """Rotate a secret to a new value (stdin or a file); the previous one is kept a while.

    The answer says until when the previous version stays readable; then it is destroyed.
    """
    data = _secret_data(source, field_name)
    emit(app.platform.rotate_secret(path, data), app.output, single=True)


# ---- audit -----------------------------------------------------------------------------------


@cli.group(examples=["hyperctl audit events --limit 20", "hyperctl audit verify"])
def audit() -> None:
    """The hash-chained audit log (needs audit:view)."""


AUDIT_FILTERS = (
    ("--since", "RFC 3339 time: only entries at or after it, e.g. 2026-01-31T12:00:00Z."),
    ("--until", "RFC 3339 time: only entries before it."),
    ("--user", "Only entries this user (or API key id) caused."),
    ("--subject", "A person's entries: those they caused and those about their account."),
    ("--action", "Only this action; with a trailing *, every action starting so (vm.export*)."),
    ("--resource", "Only this resource, exactly (user/alice, job/ID)."),
    ("--result", "Only this result, exactly; 'failure' for every failure."),
    ("--request-id", "Only the entries of this API call."),
    ("--source-ip", "Only the entries of calls from this client address."),
)


def audit_filter_options(command: Any) -> Any:
    """The filters of GET /audit/events and /audit/export, as options of ``command``."""
    for name, text in reversed(AUDIT_FILTERS):
        command = click.option(name, help=text)(command)
    return command


@audit.command(
    "events",
    examples=[
        "hyperctl audit events --limit 50",
        "hyperctl audit events --after-sequence 1200 -o json",
        "hyperctl audit events --user alice --action 'vm.export*' --since 2026-01-01T00:00:00Z",
        "hyperctl audit events --result failure --limit 20",
    ],
)
@audit_filter_options
@click.option(
    "--after-sequence",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Sequence of the last entry of the previous page.",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.pass_obj
def audit_events(app: App, /, after_sequence: int, limit: int, **filters: str | None) -> None:
    """Audit entries in chain order that pass every filter given.

    A page shorter than --limit is the last; otherwise run again with --after-sequence the
    last entry's sequence.
    """
    query = {**filters, "after_sequence": after_sequence, "limit": limit}
    emit(app.platform.audit_events(query), app.output, columns=AUDIT_COLUMNS)


@audit.command(
    "verify",
    examples=[
        "hyperctl audit verify",
        "hyperctl audit verify --full",
        "hyperctl audit verify -o json",
    ],
)
@click.option(
    "--full",
    is_flag=True,
    help="Verify the whole log from its genesis (in the background; this waits for it).",
)
@click.option(
    "--timeout",
    "timeout_seconds",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="With --full: give up waiting after this many seconds (the run goes on).",
)
@click.pass_obj
def audit_verify(app: App, full: bool, timeout_seconds: float) -> None:
    """Verify the log; exit 10 (and name the entry) if it does not check out.

    Without --full, what was added since the newest checkpoint a verification found valid.
    """
    if not full:
        verdict = app.platform.audit_verify()
        emit(verdict, app.output, single=True)
        if not verdict.get("valid"):
            raise CliError(
                "audit_invalid",
                f"The audit chain does not verify at entry {verdict.get('first_bad_sequence')}:"
                f" {verdict.get('reason')}.",
                exit_code=ExitCode.AUDIT_INVALID,
            )
        return
    run = app.platform.audit_start_verification()
    deadline = time.monotonic() + timeout_seconds
    while run.get("status") == "running":
        if time.monotonic() > deadline:
            raise CliError(
                "verification_running",
                f"The full verification {run.get('id')} is still running; see "
                "'hyperctl audit verifications'.",
                exit_code=ExitCode.ERROR,
            )
        time.sleep(0.5)
        run = app.platform.audit_verification(str(run["id"]))
    emit(run, app.output, single=True)
    if run.get("valid") is not True:
        first = (run.get("problems") or [{}])[0]
        raise CliError(
            "audit_invalid",
            f"The audit log does not verify ({run.get('status')}): {first.get('code')} at "
            f"entry {first.get('sequence')}: {first.get('message')}.",
            exit_code=ExitCode.AUDIT_INVALID,
        )


VERIFICATION_COLUMNS = [
    field("id"),
    field("kind"),
    field("status"),
    field("valid"),
    field("from_size", "FROM"),
    field("to_size", "TO"),
    field("checked"),
    field("started_at", "STARTED"),
]
HOLD_COLUMNS = [
    field("id"),
    field("reason"),
    field("placed_by"),
    field("placed_at"),
    field("lifted_at"),
]


@audit.command(
    "verifications",
    examples=["hyperctl audit verifications", "hyperctl audit verifications --limit 5 -o json"],
)
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.pass_obj
def audit_verifications(app: App, limit: int) -> None:
    """Verifications of the log, the newest first (incremental and full)."""
    emit(app.platform.audit_verifications(limit=limit), app.output, columns=VERIFICATION_COLUMNS)


@audit.group(
    "holds",
    examples=[
        "hyperctl audit holds list",
        "hyperctl audit holds place 'case 2026-114'",
        "hyperctl audit holds lift HOLD_ID",
    ],
)
def audit_holds() -> None:
    """Legal holds: while one stands, retention cuts nothing.

    Placing and lifting need system:configure; listing, audit:view.
    """


@audit_holds.command("list", examples=["hyperctl audit holds list -o json"])
@click.pass_obj
def audit_holds_list(app: App) -> None:
    """Every hold, lifted ones too."""
    emit(app.platform.audit_holds(), app.output, columns=HOLD_COLUMNS)


@audit_holds.command("place", examples=["hyperctl audit holds place 'case 2026-114'"])
@click.argument("reason")
@click.pass_obj
def audit_holds_place(app: App, reason: str) -> None:
    """Place a hold (recorded in the log); REASON says why (1 to 500 characters)."""
    emit(app.platform.audit_place_hold(reason), app.output, single=True)


@audit_holds.command("lift", examples=["hyperctl audit holds lift HOLD_ID"])
@click.argument("hold_id")
@click.pass_obj
def audit_holds_lift(app: App, hold_id: str) -> None:
    """Lift a standing hold (recorded in the log)."""
    emit(app.platform.audit_lift_hold(hold_id), app.output, single=True)


@audit.command(
    "quarantine",
    examples=["hyperctl audit quarantine", "hyperctl audit quarantine --after-number 10 -o json"],
)
@click.option("--after-number", type=click.IntRange(0), default=0, show_default=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.pass_obj
def audit_quarantine(app: App, after_number: int, limit: int) -> None:
    """Events audit refused to chain as genuine, in the order they arrived."""
    columns = [
        field("number", "NO"),
        field("received_at"),
        field("claimed_type"),
        field("claimed_source"),
        field("producer"),
        field("reason"),
    ]
    entries = app.platform.audit_quarantine(after_number=after_number, limit=limit)
    emit(entries, app.output, columns=columns)


@audit.command(
    "export",
    examples=[
        "hyperctl audit export > bundle.jsonl",
        "hypersdk-audit-verify bundle.jsonl --public-key audit.pub",
        "hyperctl audit export --format csv --subject alice > alice.csv",
        "hyperctl audit export --format jsonl --result failure --since 2026-01-01T00:00:00Z",
    ],
)
@click.option(
    "--format",
    "export_format",
    type=click.Choice(["bundle", "jsonl", "csv"]),
    default="bundle",
    show_default=True,
    help="bundle: the whole log, verifiable offline; jsonl, csv: the entries the filters select.",
)
@audit_filter_options
@click.option(
    "--after-sequence", type=click.IntRange(0), help="jsonl, csv: only entries after this one."
)
@click.pass_obj
def audit_export(
    app: App, /, export_format: str, after_sequence: int | None, **filters: str | None
) -> None:
    """Write the whole log as a bundle (JSON Lines) that hypersdk-audit-verify checks offline.

    With --format jsonl or csv, the entries the filters select instead (a bundle takes no
    filter). The answer goes to standard output as the platform sent it (at most 32 MiB
    through hyperctl; larger: GET /api/v1/audit/export directly). CSV cells that a
    spreadsheet would evaluate (starting with = + - @, a tab or a CR) start with a '.
    """
    query = {**filters, "after_sequence": after_sequence}
    if export_format != "bundle":
        query["format"] = export_format
    # As bytes: a text stream may translate line ends, and CSV's are CRLF (RFC 4180).
    text = app.platform.audit_export(query)
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode())
    sys.stdout.buffer.flush()


# ---- config ----------------------------------------------------------------------------------


@cli.group(
    "config",
    examples=[
        "hyperctl config set-context prod --server https://hypersdk.example.com"
        " --ca-bundle prod-ca.pem",
        "hyperctl config use-context prod",
        "hyperctl config get-contexts",
    ],
)
def config_group() -> None:
    """Contexts: named platforms with their server, TLS settings and credential."""


@config_group.command(
    "get-contexts",
    examples=["hyperctl config get-contexts", "hyperctl config get-contexts -o json"],
)
@click.pass_obj
def get_contexts(app: App) -> None:
    """List contexts; the current one is marked (API keys and tokens are never shown)."""
    store = app.store()
    config = store.load_config()
    rows = []
    for name, context in sorted(config.contexts.items()):
        session = store.load_session(name)
        rows.append(
            {
                "name": name,
                "current": name == config.current_context,
                "server": context.server,
                "ca_bundle": context.ca_bundle,
                "pin_sha256": context.pin_sha256,
                "api_key": context.api_key is not None,
                "session_user": session.username if session else None,
                "session_expires_at": session.expires_at.isoformat() if session else None,
            }
        )
    columns = [
        Column("CURRENT", lambda row: "*" if row["current"] else ""),
        field("name"),
        field("server"),
        Column(
            "TLS",
            lambda row: (
                "pinned" if row["pin_sha256"] else ("ca-bundle" if row["ca_bundle"] else "-")
            ),
        ),
        Column(
            "CREDENTIAL",
            lambda row: (
                "api key"
                if row["api_key"]
                else (f"session of {row['session_user']}" if row["session_user"] else "-")
            ),
        ),
    ]
    emit(rows, app.output, columns=columns)


@config_group.command("current-context", examples=["hyperctl config current-context"])
@click.pass_obj
def current_context(app: App) -> None:
    """Print the current context's name."""
    name = app.store().load_config().current_context
    if name is None:
        raise CliError("no_such_context", "No current context.", exit_code=ExitCode.NOT_FOUND)
    click.echo(name)


@config_group.command("use-context", examples=["hyperctl config use-context prod"])
@click.argument("name")
@click.pass_obj
def use_context(app: App, name: str) -> None:
    """Make a context the current one."""
    store = app.store()
    config = store.load_config()
    if name not in config.contexts:
        raise CliError("no_such_context", f"No context {name!r}.", exit_code=ExitCode.NOT_FOUND)
    store.save_config(type(config)(current_context=name, contexts=config.contexts))
    click.echo(f"Switched to context {name}.")


@config_group.command(
    "set-context",
    examples=[
        "hyperctl config set-context lab --server http://127.0.0.1:8080",
        "hyperctl config set-context prod --server https://hypersdk.example.com"
        " --pin-sha256 3f:9a:...",
        "printf '%s' \"$KEY\" | hyperctl config set-context ci --server https://h.example.com"
        " --api-key-stdin",
    ],
)
@click.argument("name")
@click.option("--server", "new_server", help="Platform URL.")
@click.option("--ca-bundle", "new_ca_bundle", type=click.Path(exists=True, dir_okay=False))
@click.option("--pin-sha256", "new_pin", help="SHA-256 fingerprint of the server's certificate.")
@click.option("--api-key-stdin", is_flag=True, help="Store an API key read from stdin (0600).")
@click.option("--no-api-key", is_flag=True, help="Remove the context's API key.")
@click.pass_obj
def set_context(  # noqa: PLR0917 - one parameter per setting
    app: App,
    name: str,
    new_server: str | None,
    new_ca_bundle: str | None,
    new_pin: str | None,
    api_key_stdin: bool,
    no_api_key: bool,
) -> None:
    """Create or change a context (settings not given are kept)."""
    from hypersdk_cli.adapters.outbound.http import normalized_pin  # noqa: PLC0415 - one use

    store = app.store()
    config = store.load_config()
    old = config.contexts.get(valid_context_name(name))
    server = new_server or (old.server if old else None)
    if server is None:
        raise click.UsageError("A new context needs --server.")
    api_key = None if no_api_key else (old.api_key if old else None)
    if api_key_stdin:
        api_key = _read_secret_line("API key") or None
    context = Context(
        name=name,
        server=server.rstrip("/"),
        ca_bundle=str(Path(new_ca_bundle).resolve())
        if new_ca_bundle
        else (old.ca_bundle if old else None),
        pin_sha256=normalized_pin(new_pin) if new_pin else (old.pin_sha256 if old else None),
        api_key=api_key,
    )
    config = config.with_context(context)
    if config.current_context is None:
        config = type(config)(current_context=name, contexts=config.contexts)
    store.save_config(config)
    if old is not None and old.server.rstrip("/") != context.server:
        store.delete_session(name)  # a session is only valid on the server that issued it
    click.echo(f"Context {name} saved.")


@config_group.command("delete-context", examples=["hyperctl config delete-context old-lab"])
@click.argument("name")
@click.pass_obj
def delete_context(app: App, name: str) -> None:
    """Remove a context and its session file."""
    store = app.store()
    config = store.load_config()
    if name not in config.contexts:
        raise CliError("no_such_context", f"No context {name!r}.", exit_code=ExitCode.NOT_FOUND)
    contexts = {k: v for k, v in config.contexts.items() if k != name}
    current = None if config.current_context == name else config.current_context
    store.save_config(type(config)(current_context=current, contexts=contexts))
    store.delete_session(name)
    click.echo(f"Context {name} deleted.")


# ---- completion ------------------------------------------------------------------------------


@cli.command(
    examples=[
        "hyperctl completion bash > ~/.local/share/bash-completion/completions/hyperctl",
        'hyperctl completion zsh > "${fpath[1]}/_hyperctl"',
        "hyperctl completion fish > ~/.config/fish/completions/hyperctl.fish",
    ]
)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script (click's) for bash, zsh or fish."""
    completion_class = get_completion_class(shell)
    assert completion_class is not None
    root = ctx.find_root().command
    script = completion_class(root, {}, "hyperctl", "_HYPERCTL_COMPLETE").source()
    click.echo(script)


def all_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of hyperctl (for the help tests)."""
    paths: list[tuple[str, ...]] = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths += all_commands(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


__all__ = ["Group", "all_commands", "cli"]
