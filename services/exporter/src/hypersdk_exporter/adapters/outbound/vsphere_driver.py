"""The ``vsphere`` provider: VMs of a vCenter or ESXi host through pyvmomi.

Inventory comes from the PropertyCollector over a ContainerView, retrieving only the properties
a listing needs (one round trip per thousand objects, never one per VM); one VM is found by its
instance UUID through the SearchIndex. Disks are read over the datastore HTTP interface
(``/folder/<path>?dcPath=..&dsName=..``) with the session cookie, under the same TLS trust as
the API: verified by default, a CA file, or a pinned SHA-256 thumbprint; ``insecure: true``
only when asked for, and logged as a warning. What a disk source yields is in
docs/decisions/0038-vsphere-disks-over-the-datastore.md.

pyvmomi blocks, so every call runs in a thread. The credential (``username``, ``password``)
lives only in the login call: it is never logged or put in an error, and errors from pyvmomi
are replaced by sentences of our own (never chained).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ipaddress
import json
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, urlencode

from pydantic import Field, field_validator, model_validator
from pyVim import connect as _connect
from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_exporter.adapters.outbound import vmdk_descriptor
from hypersdk_exporter.adapters.outbound.driver_support import (
    CHUNK_BYTES,
    DriverConfig,
    decode_token,
    encode_token,
    parse_config,
    safe_name,
)
from hypersdk_exporter.adapters.outbound.vsphere_tls import (
    ThumbprintMismatchError,
    client_context,
    normalise_thumbprint,
)
from hypersdk_exporter.core.models import (
    Credential,
    DiskInfo,
    Firmware,
    NicInfo,
    Page,
    Provider,
    SourceFingerprint,
    VmDescription,
    VmSummary,
)
from hypersdk_exporter.ports.outbound import DiskSource, ProviderDriver, ProviderSession

logger = logging.getLogger(__name__)
# pyVmomi's types are generated at run time; its stubs cover only part of them.
vim: Any = _vim
vmodl: Any = _vmodl
SmartStubAdapter: Any = _connect.SmartStubAdapter

TIMEOUT_SECONDS = 60.0  # default bound on any one connect, send or read of a socket
TASK_TIMEOUT_SECONDS = 120.0
PAGE_OBJECTS = 1000
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MOREF = re.compile(r"^vm-\d{1,12}$")
_DATASTORE_PATH = re.compile(r"^\[([^\]]+)\] ?(.*)$")
_STATES = {"poweredOn": "running", "poweredOff": "stopped", "suspended": "suspended"}
_SESSION_COOKIE = "vmware_soap_session"
T = TypeVar("T")


class VsphereConfig(DriverConfig):
    """Settings of a ``vsphere`` provider (the credential comes from the secrets service)."""

    host: str = Field(min_length=1, max_length=253, description="vCenter or ESXi host name/IP.")
    port: int = Field(default=443, ge=1, le=65535, description="HTTPS port.")
    datacenter: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Inventory path of the one datacenter to use (e.g. DC0 or Folder/DC0).",
    )
    ca_file: str | None = Field(
        default=None, max_length=4096, description="PEM file of the CAs to trust instead."
    )
    thumbprint: str | None = Field(
        default=None, description="SHA-256 thumbprint of the one server certificate to trust."
    )
    insecure: bool = Field(default=False, description="Skip TLS verification (logged).")
    timeout_seconds: float = Field(
        default=TIMEOUT_SECONDS,
        ge=1,
        le=600,
        description="Bound on each connect and each read (API and datastore): a host that "
        "stops answering fails the call after this long instead of hanging it.",
    )

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            pass
        if not _HOST.match(value):
            raise ValueError("must be a host name or IP address (no scheme, port or path)")
        return value

    @field_validator("datacenter")
    @classmethod
    def _datacenter(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.isprintable() or not value.strip("/"):
            raise ValueError("must be an inventory path")
        return value.strip("/")

    @field_validator("thumbprint")
    @classmethod
    def _thumbprint(cls, value: str | None) -> str | None:
        return None if value is None else normalise_thumbprint(value)

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not Path(value).is_absolute():
            raise ValueError("must be an absolute path")
        try:
            ssl.create_default_context(cafile=value)
        except (OSError, ssl.SSLError):
            raise ValueError("is not a readable PEM file of certificates") from None
        return value

    @model_validator(mode="after")
    def _one_trust(self) -> VsphereConfig:
        chosen = [self.ca_file is not None, self.thumbprint is not None, self.insecure]
        if sum(chosen) > 1:
            raise ValueError("ca_file, thumbprint and insecure exclude each other")
        return self


class VsphereError(ServiceError):
    """A ServiceError with a stable ``reason`` for logs and tests."""

    def __init__(self, code: ErrorCode, reason: str, message: str) -> None:
        super().__init__(code, message)
        self.reason = reason


def _untrusted(host: str, exc: ssl.SSLError) -> VsphereError:
    what = (
        "its certificate does not match the pinned thumbprint"
        if isinstance(exc, ThumbprintMismatchError)
        else "its certificate is not trusted (set ca_file or thumbprint to trust it)"
    )
    return VsphereError(
        ErrorCode.UPSTREAM_UNAVAILABLE, "tls_untrusted", f"vSphere host {host} refused: {what}."
    )


def _unreachable(host: str) -> VsphereError:
    return VsphereError(
        ErrorCode.UPSTREAM_UNAVAILABLE, "unreachable", f"vSphere host {host} cannot be reached."
    )


def _upstream(host: str, what: str) -> VsphereError:
    return VsphereError(
        ErrorCode.UPSTREAM_UNAVAILABLE, "upstream_error", f"vSphere host {host}: {what}."
    )


@dataclass(frozen=True)
class Backing:
    """Where one disk's descriptor lives."""

    datastore: str  # datastore name
    path: str  # path inside the datastore, e.g. "vm1/vm1.vmdk"
    datacenter_path: str  # inventory path of the datacenter, e.g. "Folder/DC0"


@dataclass(frozen=True)
class VsphereVmDescription(VmDescription):
    """A VM with what the vSphere driver needs to read its disks."""

    moref: str
    placement: str  # host path, e.g. "/DC0/host/Cluster/esx1"
    change_version: str
    backings: tuple[tuple[str, Backing], ...]  # (disk key, backing)


class VsphereDriver(ProviderDriver):
    """Connects to vCenter/ESXi with pyvmomi."""

    type: ClassVar[str] = "vsphere"

    def validate_config(self, config: dict[str, str]) -> None:
        """Host, port, datacenter and at most one of ca_file / thumbprint / insecure."""
        parse_config(VsphereConfig, config)

    async def connect(self, provider: Provider, credential: Credential | None) -> ProviderSession:
        """Log in with the provider's credential (``username`` and ``password``)."""
        config = parse_config(VsphereConfig, provider.config)
        username = credential.get("username") if credential else None
        password = credential.get("password") if credential else None
        if not username or not password:
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED,
                "A vsphere provider needs a credential with a username and a password.",
            )
        if config.insecure:
            logger.warning(
                "vSphere provider %s: TLS verification is disabled (insecure: true); "
                "the connection to %s can be intercepted",
                provider.name,
                config.host,
            )
        context = client_context(
            ca_file=config.ca_file, thumbprint=config.thumbprint, insecure=config.insecure
        )
        return await asyncio.to_thread(_login, config, context, username, password)


def _login(
    config: VsphereConfig, context: ssl.SSLContext, username: str, password: str
) -> VsphereSession:
    host = config.host
    stub: Any = None
    try:
        stub = SmartStubAdapter(
            host=host,
            port=config.port,
            sslContext=context,
            httpConnectionTimeout=config.timeout_seconds,
            connectionPoolTimeout=-1,
        )
        instance = vim.ServiceInstance("ServiceInstance", stub)
        content = instance.RetrieveContent()
        content.sessionManager.Login(userName=username, password=password)
    except vim.fault.InvalidLogin:
        _drop(stub)
        raise VsphereError(
            ErrorCode.UPSTREAM_UNAVAILABLE,
            "login_failed",
            f"vSphere host {host} refused the provider's credential (login failed).",
        ) from None
    except ssl.SSLError as exc:
        _drop(stub)
        raise _untrusted(host, exc) from None
    except (OSError, http.client.HTTPException):
        _drop(stub)
        raise _unreachable(host) from None
    except vmodl.MethodFault as fault:
        _drop(stub)
        raise _upstream(host, f"login failed ({type(fault).__name__})") from None
    except Exception:  # pyvmomi raises plain Exceptions for answers it cannot parse
        _drop(stub)
        raise _upstream(host, "the answer to the login was not understood") from None
    session = VsphereSession(config=config, context=context, stub=stub, content=content)
    if config.datacenter is not None:
        try:
            session.resolve_datacenter(config.datacenter)
        except BaseException:
            session.logout()
            raise
    return session


def _drop(stub: Any) -> None:
    if stub is not None:
        with contextlib.suppress(Exception):  # best effort on a connection already failing
            stub.DropConnections()


def _path(entity: Any, parents: dict[str, tuple[str, Any]], *, prefix: str = "") -> str:
    """The inventory path of ``entity`` from ``parents`` (moref -> (name, parent)).

    A walk that reaches the root folder (parent None) leaves its name ("Datacenters") out; a
    walk that stops at an entity not in ``parents`` (the datacenter a listing is confined to)
    is completed by ``prefix``.
    """
    names: list[str] = []
    current = entity
    for _ in range(256):  # deeper than any inventory; guards against a cycle
        if current is None or current._moId not in parents:
            break
        name, current = parents[current._moId]
        names.append(name)
    if current is None and names:
        names = names[:-1]
    return prefix + "/" + "/".join(reversed(names))


def _props(obj: Any) -> dict[str, Any]:
    return {prop.name: prop.val for prop in obj.propSet}


class VsphereSession(ProviderSession):
    """One logged-in vSphere session."""

    def __init__(self, *, config: VsphereConfig, context: ssl.SSLContext, stub: Any, content: Any):
        self._config = config
        self._context = context
        self._stub = stub
        self._content = content
        self._datacenter: Any = None
        self._datacenter_path = ""
        self._closed = False

    # -- helpers run in threads ---------------------------------------------------------------

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise ServiceError(ErrorCode.INTERNAL_ERROR, "The vSphere session is closed.")
        return await asyncio.to_thread(self._guarded, function, *args)

    def _guarded(self, function: Callable[..., T], *args: Any) -> T:
        host = self._config.host
        try:
            return function(*args)
        except ServiceError:
            raise
        except vim.fault.NotAuthenticated:
            raise _upstream(host, "the session is no longer valid") from None
        except ssl.SSLCertVerificationError as exc:
            raise _untrusted(host, exc) from None
        except (OSError, http.client.HTTPException):  # also a TLS stream cut short mid-read
            raise _unreachable(host) from None
        except vmodl.MethodFault as fault:
            raise _upstream(host, f"the call failed ({type(fault).__name__})") from None

    def cookie(self) -> str:
        """The session cookie as a Cookie header value (never logged)."""
        return str(self._stub.cookie).split(";", 1)[0].strip()

    def resolve_datacenter(self, path: str) -> None:
        """Restrict the inventory to the datacenter at ``path``; VALIDATION_FAILED if none."""
        entity = self._content.searchIndex.FindByInventoryPath(inventoryPath=path)
        if not isinstance(entity, vim.Datacenter):
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED, "config.datacenter names no datacenter."
            )
        self._datacenter = entity
        self._datacenter_path = "/" + path

    def _retrieve(self, specs: list[Any]) -> list[Any]:
        collector = self._content.propertyCollector
        options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=PAGE_OBJECTS)
        result = collector.RetrievePropertiesEx(specSet=specs, options=options)
        objects: list[Any] = []
        while result is not None:
            objects.extend(result.objects)
            if not result.token:
                break
            result = collector.ContinueRetrievePropertiesEx(token=result.token)
        return objects

    def _inventory(self) -> tuple[list[tuple[Any, dict[str, Any]]], dict[str, tuple[str, Any]]]:
        pc = vmodl.query.PropertyCollector
        root = self._datacenter or self._content.rootFolder
        view = self._content.viewManager.CreateContainerView(
            container=root, type=[vim.Folder, vim.Datacenter, vim.VirtualMachine], recursive=True
        )
        try:
            spec = pc.FilterSpec(
                objectSet=[
                    pc.ObjectSpec(
                        obj=view,
                        skip=True,
                        selectSet=[
                            pc.TraversalSpec(
                                name="view", type=vim.view.ContainerView, path="view", skip=False
                            )
                        ],
                    )
                ],
                propSet=[
                    pc.PropertySpec(type=vim.Folder, pathSet=["name", "parent"]),
                    pc.PropertySpec(type=vim.Datacenter, pathSet=["name", "parent"]),
                    pc.PropertySpec(type=vim.VirtualMachine, pathSet=list(_LIST_PROPERTIES)),
                ],
            )
            objects = self._retrieve([spec])
        finally:
            view.Destroy()
        parents: dict[str, tuple[str, Any]] = {}
        vms: list[tuple[Any, dict[str, Any]]] = []
        for obj in objects:
            values = _props(obj)
            parents[obj.obj._moId] = (str(values.get("name", "")), values.get("parent"))
            if isinstance(obj.obj, vim.VirtualMachine):
                vms.append((obj.obj, values))
        return vms, parents

    def _summaries(self) -> list[VmSummary]:
        vms, parents = self._inventory()
        summaries = []
        for vm, values in vms:
            summaries.append(
                VmSummary(
                    id=str(values.get("config.instanceUuid") or vm._moId),
                    name=str(values.get("name", vm._moId)),
                    state=_STATES.get(str(values.get("runtime.powerState")), "unknown"),
                    cpus=int(values.get("config.hardware.numCPU") or 0),
                    memory_mib=int(values.get("config.hardware.memoryMB") or 0),
                    path=_path(vm, parents, prefix=self._datacenter_path),
                )
            )
        summaries.sort(key=lambda item: (item.name, item.id))
        return summaries

    def _find(self, vm_id: str) -> Any:
        if _UUID.match(vm_id):
            return self._content.searchIndex.FindByUuid(
                datacenter=self._datacenter, uuid=vm_id, vmSearch=True, instanceUuid=True
            )
        if _MOREF.match(vm_id):
            return vim.VirtualMachine(vm_id, self._stub)
        return None

    def _describe(self, vm_id: str) -> VsphereVmDescription | None:
        vm = self._find(vm_id)
        if vm is None:
            return None
        pc = vmodl.query.PropertyCollector
        up = pc.TraversalSpec(
            name="up",
            type=vim.ManagedEntity,
            path="parent",
            skip=False,
            selectSet=[pc.SelectionSpec(name="up")],
        )
        spec = pc.FilterSpec(
            objectSet=[
                pc.ObjectSpec(
                    obj=vm,
                    skip=False,
                    selectSet=[
                        up,
                        pc.TraversalSpec(
                            type=vim.VirtualMachine, path="parentVApp", skip=False, selectSet=[up]
                        ),
                        pc.TraversalSpec(type=vim.VirtualMachine, path="network", skip=False),
                    ],
                )
            ],
            propSet=[
                pc.PropertySpec(type=vim.VirtualMachine, pathSet=list(_DESCRIBE_PROPERTIES)),
                pc.PropertySpec(type=vim.Folder, pathSet=["name", "parent"]),
                pc.PropertySpec(type=vim.Datacenter, pathSet=["name", "parent"]),
                pc.PropertySpec(type=vim.ResourcePool, pathSet=["name", "parent"]),
                pc.PropertySpec(type=vim.Network, pathSet=["name"]),
                pc.PropertySpec(type=vim.dvs.DistributedVirtualPortgroup, pathSet=["key"]),
            ],
        )
        try:
            objects = self._retrieve([spec])
        except vmodl.fault.ManagedObjectNotFound:
            return None
        values: dict[str, Any] = {}
        parents: dict[str, tuple[str, Any]] = {}
        networks: dict[str, str] = {}
        portgroups: dict[str, str] = {}
        datacenter: Any = None
        for obj in objects:
            props = _props(obj)
            if obj.obj._moId == vm._moId:
                values = props
            elif isinstance(obj.obj, vim.Network):
                networks[obj.obj._moId] = str(props.get("name", ""))
                if "key" in props:
                    portgroups[str(props["key"])] = str(props.get("name", ""))
            else:
                parents[obj.obj._moId] = (str(props.get("name", "")), props.get("parent"))
                if isinstance(obj.obj, vim.Datacenter):
                    datacenter = obj.obj
        if not values or datacenter is None:
            return None
        if "parent" not in values and values.get("parentVApp") is not None:
            values["parent"] = values["parentVApp"]
        parents[vm._moId] = (str(values.get("name", "")), values.get("parent"))
        vm_path = _path(vm, parents)
        datacenter_path = _path(datacenter, parents).lstrip("/")
        placement = self._placement(values.get("runtime.host"), parents)
        devices = list(values.get("config.hardware.device") or [])
        disks, backings = _disks(devices, datacenter_path)
        return VsphereVmDescription(
            id=str(values.get("config.instanceUuid") or vm._moId),
            name=str(values.get("name", vm._moId)),
            state=_STATES.get(str(values.get("runtime.powerState")), "unknown"),
            cpus=int(values.get("config.hardware.numCPU") or 0),
            memory_mib=int(values.get("config.hardware.memoryMB") or 0),
            path=vm_path,
            firmware=Firmware.EFI if values.get("config.firmware") == "efi" else Firmware.BIOS,
            guest_os=str(values.get("config.guestId") or "otherGuest"),
            disks=disks,
            nics=_nics(devices, networks, portgroups),
            moref=vm._moId,
            placement=placement,
            change_version=str(values.get("config.changeVersion") or ""),
            backings=backings,
        )

    def _placement(self, host: Any, known: dict[str, tuple[str, Any]]) -> str:
        if host is None:
            return ""
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(
            objectSet=[
                pc.ObjectSpec(
                    obj=host,
                    skip=False,
                    selectSet=[
                        pc.TraversalSpec(
                            name="up",
                            type=vim.ManagedEntity,
                            path="parent",
                            skip=False,
                            selectSet=[pc.SelectionSpec(name="up")],
                        )
                    ],
                )
            ],
            propSet=[pc.PropertySpec(type=vim.ManagedEntity, pathSet=["name", "parent"])],
        )
        parents = dict(known)
        for obj in self._retrieve([spec]):
            props = _props(obj)
            parents[obj.obj._moId] = (str(props.get("name", "")), props.get("parent"))
        # a standalone host sits in a ComputeResource of the same name: show it once
        path = _path(host, parents)
        head, _, tail = path.rpartition("/")
        if head.rpartition("/")[2] == tail:
            path = head
        return path

    # -- the port -----------------------------------------------------------------------------

    async def list_vms(self, *, page_token: str | None, limit: int) -> Page[VmSummary]:
        """A page of VMs by (name, id); the token is the last (name, id) given (keyset)."""
        after = _position(decode_token(page_token))
        summaries = await self._call(self._summaries)
        if after is not None:
            summaries = [item for item in summaries if (item.name, item.id) > after]
        items = summaries[: max(1, limit)]
        more = len(summaries) > len(items)
        last = items[-1] if items else None
        token = encode_token(json.dumps([last.name, last.id])) if more and last else None
        return Page(items=items, next_token=token)

    async def get_vm(self, vm_id: str) -> VmDescription | None:
        """The VM whose instance UUID (or managed object id, ``vm-N``) is ``vm_id``."""
        return await self._call(self._describe, vm_id)

    async def open_disk(self, vm: VmDescription, disk: DiskInfo) -> DiskSource:
        """The disk's bytes over the datastore; see decision 0038 for what they are."""
        described = vm if isinstance(vm, VsphereVmDescription) else await self.get_vm(vm.id)
        if not isinstance(described, VsphereVmDescription):
            raise ServiceError(ErrorCode.NOT_FOUND, "The VM no longer exists.")
        backing = dict(described.backings).get(disk.key)
        if backing is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"The VM has no disk {disk.key}.")
        layout, descriptor_size = await self._call(self._layout, backing)
        return VsphereDiskSource(
            session=self,
            vm_id=described.id,
            backing=backing,
            layout=layout,
            descriptor_size=descriptor_size,
            capacity_bytes=disk.capacity_bytes,
        )

    async def close(self) -> None:
        """Log out and drop the connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self.logout)

    def logout(self) -> None:
        """Log out, ignoring a connection already gone."""
        with contextlib.suppress(Exception):  # the session ends either way
            self._content.sessionManager.Logout()
        _drop(self._stub)

    # -- the datastore HTTP interface ---------------------------------------------------------

    def request(self, backing: Backing, file_name: str) -> tuple[Any, http.client.HTTPResponse]:
        """GET one file next to ``backing``'s descriptor; the caller closes the connection."""
        folder = backing.path.rpartition("/")[0]
        path = f"{folder}/{file_name}" if folder else file_name
        query = urlencode({"dcPath": backing.datacenter_path, "dsName": backing.datastore})
        url = f"/folder/{quote(path)}?{query}"
        connection = http.client.HTTPSConnection(
            self._config.host,
            self._config.port,
            context=self._context,
            timeout=self._config.timeout_seconds,
        )
        try:
            connection.request(
                "GET", url, headers={"Cookie": self.cookie(), "User-Agent": "hypersdk-exporter"}
            )
            response = connection.getresponse()
        except BaseException:
            connection.close()
            raise
        if response.status != http.HTTPStatus.OK:
            connection.close()
            if response.status == http.HTTPStatus.NOT_FOUND:
                raise ServiceError(
                    ErrorCode.NOT_FOUND, f"The datastore has no file {file_name} for this disk."
                )
            raise _upstream(
                self._config.host, f"the datastore answered {response.status} for a disk file"
            )
        return connection, response

    def _layout(self, backing: Backing) -> tuple[vmdk_descriptor.DiskLayout, int]:
        name = backing.path.rpartition("/")[2]
        connection, response = self.request(backing, name)
        try:
            head = response.read(vmdk_descriptor.MAX_DESCRIPTOR_BYTES + 1)
            complete = len(head) <= vmdk_descriptor.MAX_DESCRIPTOR_BYTES and not response.read(1)
            length = response.getheader("Content-Length")
        finally:
            connection.close()
        try:
            layout = vmdk_descriptor.parse(head, complete=complete)
        except vmdk_descriptor.DescriptorError as exc:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, str(exc)) from None
        if layout.format == "vmdk" and (length is None or not length.isdigit()):
            raise _upstream(self._config.host, "the datastore did not say how large a disk is")
        return layout, int(length) if layout.format == "vmdk" and length else len(head)

    def change_version(self, vm_id: str) -> str:
        """The VM's config.changeVersion now (empty where the host keeps none)."""
        vm = self._find(vm_id)
        if vm is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "The VM no longer exists.")
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=vm, skip=False)],
            propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=["config.changeVersion"])],
        )
        objects = self._retrieve([spec])
        return str(_props(objects[0]).get("config.changeVersion") or "") if objects else ""

    def file_state(self, backing: Backing, file_name: str) -> tuple[int, str]:
        """Size and Last-Modified of one datastore file, from the headers of a GET."""
        connection, response = self.request(backing, file_name)
        try:
            length = response.getheader("Content-Length") or ""
            modified = response.getheader("Last-Modified") or ""
        finally:
            connection.close()
        if not length.isdigit():
            raise _upstream(self._config.host, "the datastore did not say how large a file is")
        return int(length), modified


_LIST_PROPERTIES = (
    "name",
    "parent",
    "config.instanceUuid",
    "runtime.powerState",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
)
_DESCRIBE_PROPERTIES = (
    *_LIST_PROPERTIES,
    "parentVApp",
    "runtime.host",
    "config.firmware",
    "config.guestId",
    "config.changeVersion",
    "config.hardware.device",
)


def _position(decoded: str | None) -> tuple[str, str] | None:
    if decoded is None:
        return None
    try:
        value = json.loads(decoded)
    except ValueError:
        value = None
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ServiceError(ErrorCode.VALIDATION_FAILED, "Invalid page token.")
    match value:
        case [name, vm_id]:
            return name, vm_id
    raise ServiceError(ErrorCode.VALIDATION_FAILED, "Invalid page token.")


def _controller_kind(controller: Any) -> str:
    if isinstance(controller, vim.vm.device.VirtualSCSIController):
        return "scsi"
    if isinstance(controller, vim.vm.device.VirtualIDEController):
        return "ide"
    if isinstance(controller, vim.vm.device.VirtualSATAController):
        return "sata"
    if isinstance(controller, vim.vm.device.VirtualNVMEController):
        return "nvme"
    return "scsi"


_SCSI_MODELS = (  # subclasses of VirtualSCSIController, as DiskInfo.controller_model
    ("ParaVirtualSCSIController", "pvscsi"),
    ("VirtualLsiLogicSASController", "lsilogicsas"),
    ("VirtualLsiLogicController", "lsilogic"),
    ("VirtualBusLogicController", "buslogic"),
)


def _controller_model(controller: Any) -> str | None:
    if not isinstance(controller, vim.vm.device.VirtualSCSIController):
        return None
    name = type(controller).__name__
    return next((model for cls, model in _SCSI_MODELS if name.endswith(cls)), None)


def _disks(
    devices: Iterable[Any], datacenter_path: str
) -> tuple[tuple[DiskInfo, ...], tuple[tuple[str, Backing], ...]]:
    by_key = {device.key: device for device in devices}
    disks: list[DiskInfo] = []
    backings: list[tuple[str, Backing]] = []
    used: set[str] = set()
    for device in by_key.values():
        if not isinstance(device, vim.vm.device.VirtualDisk):
            continue
        controller = by_key.get(device.controllerKey)
        kind = _controller_kind(controller)
        bus = int(getattr(controller, "busNumber", 0) or 0)
        unit = int(device.unitNumber or 0)
        key = f"{kind}{bus}:{unit}"
        file_name = str(getattr(device.backing, "fileName", "") or "")
        match = _DATASTORE_PATH.match(file_name)
        stem = match.group(2).rpartition("/")[2].removesuffix(".vmdk") if match else key
        name = safe_name(stem, fallback="disk")
        if name in used:
            name = safe_name(f"{stem}-{key}", fallback="disk")
        used.add(name)
        capacity = int(getattr(device, "capacityInBytes", 0) or 0) or (
            int(device.capacityInKB or 0) * 1024
        )
        disks.append(
            DiskInfo(
                key=key,
                name=name,
                format="vmdk",
                capacity_bytes=capacity,
                controller=kind,
                unit=unit,
                controller_model=_controller_model(controller),
            )
        )
        if match:
            backings.append((key, Backing(match.group(1), match.group(2), datacenter_path)))
    disks.sort(key=lambda disk: (disk.controller, disk.key))
    return tuple(disks), tuple(backings)


_NIC_MODELS = (
    ("VirtualE1000e", "e1000e"),
    ("VirtualE1000", "e1000"),
    ("VirtualVmxnet3", "vmxnet3"),
    ("VirtualVmxnet2", "vmxnet2"),
    ("VirtualVmxnet", "vmxnet"),
    ("VirtualPCNet32", "pcnet32"),
    ("VirtualSriovEthernetCard", "sriov"),
)


def _nics(
    devices: Iterable[Any], networks: dict[str, str], portgroups: dict[str, str]
) -> tuple[NicInfo, ...]:
    nics: list[NicInfo] = []
    for device in devices:
        if not isinstance(device, vim.vm.device.VirtualEthernetCard):
            continue
        model = next(
            (label for cls, label in _NIC_MODELS if type(device).__name__.endswith(cls)), "e1000"
        )
        backing = device.backing
        network = ""
        if isinstance(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo):
            network = str(backing.deviceName or "")
            if not network and backing.network is not None:
                network = networks.get(backing.network._moId, "")
        elif isinstance(
            backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo
        ):
            key = str(backing.port.portgroupKey or "")
            network = portgroups.get(key, key)
        elif isinstance(backing, vim.vm.device.VirtualEthernetCard.OpaqueNetworkBackingInfo):
            network = str(backing.opaqueNetworkId or "")
        label = str(getattr(device.deviceInfo, "label", "") or f"nic{len(nics)}")
        nics.append(
            NicInfo(name=label, network=network, mac=device.macAddress or None, model=model)
        )
    return tuple(nics)


class VsphereDiskSource(DiskSource):
    """One disk read over the datastore HTTP interface (decision 0038)."""

    def __init__(
        self,
        *,
        session: VsphereSession,
        vm_id: str,
        backing: Backing,
        layout: vmdk_descriptor.DiskLayout,
        descriptor_size: int,
        capacity_bytes: int,
    ) -> None:
        self._session = session
        self._vm_id = vm_id
        self._backing = backing
        self._layout = layout
        self._descriptor_size = descriptor_size
        self.format = layout.format
        self.capacity_bytes = capacity_bytes
        self.closed = False

    def _files(self) -> list[tuple[str, int | None]]:
        if self._layout.format == "vmdk":  # the descriptor file is the whole image
            return [(self._backing.path.rpartition("/")[2], None)]
        return [(extent.file_name, extent.size_bytes) for extent in self._layout.extents]

    async def local_path(self) -> Path | None:
        """None: the bytes are only streamed (the pipeline stages them if it needs a file)."""
        return None

    async def stream(self) -> AsyncIterator[bytes]:
        """The flat extents in order (raw), or the sparse VMDK file.

        Exactly as many bytes as the descriptor says: a file shorter or longer fails the read.
        """
        for file_name, expected in self._files():
            connection, response = await self._session._call(
                self._session.request, self._backing, file_name
            )
            try:
                length = response.getheader("Content-Length")
                if expected is not None and length is not None and length != str(expected):
                    raise _changed(file_name)
                remaining = expected if expected is not None else None
                while True:
                    size = CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining)
                    if size == 0:
                        break
                    # a reset or a silent host (past timeout_seconds) is "unreachable"
                    block = await self._session._call(response.read, size)
                    if not block:
                        break
                    if remaining is not None:
                        remaining -= len(block)
                    yield block
                if remaining:
                    await self._short(file_name)
            finally:
                await asyncio.to_thread(connection.close)

    async def _short(self, file_name: str) -> None:
        """A body that ended early: the file changed, or the host went away mid-read.

        Both look alike on the wire (the server closes the connection); asking for the file's
        state again tells them apart: a host that no longer answers raises ``unreachable``.
        """
        await self._session._call(self._session.file_state, self._backing, file_name)
        raise _changed(file_name)

    async def fingerprint(self) -> SourceFingerprint:
        """The VM's changeVersion and each file's size and Last-Modified, as served now."""
        started = time.monotonic()
        change_version = await self._session._call(self._session.change_version, self._vm_id)
        parts = [f"cv={change_version}"]
        total = 0
        for file_name, _ in self._files():
            size, modified = await self._session._call(
                self._session.file_state, self._backing, file_name
            )
            total += size
            parts.append(f"{file_name}:{size}:{modified}")
        logger.debug("vSphere fingerprint took %.3fs", time.monotonic() - started)
        return SourceFingerprint(size=total, change_id="|".join(parts))

    async def close(self) -> None:
        """Nothing stays open between reads."""
        self.closed = True


def _changed(file_name: str) -> ServiceError:
    return ServiceError(
        ErrorCode.CONFLICT,
        f"The datastore file {file_name} does not have the size its descriptor gives "
        "(changed or truncated during the read).",
    )
