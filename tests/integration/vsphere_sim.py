"""govmomi's vCenter simulator (tests/vsphere_sim/main.go), built offline and run for a session.

The binary is built from Debian's golang-github-vmware-govmomi-dev source (GOPATH mode, no
network) into pytest's temporary root, cached by the hash of main.go, never in the repository.
The process gets the password through its environment, its datastore directories under a
temporary directory of the session, and stdin from a pipe: it exits when the pipe closes, so
even a killed test run does not leave it behind.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import selectors
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from pyVim.connect import SmartStubAdapter
from pyVmomi import vim

SOURCE = Path(__file__).resolve().parents[1] / "vsphere_sim" / "main.go"
GOCODE = Path("/usr/share/gocode")
START_TIMEOUT_SECONDS = 60.0
BUILD_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class Simulator:
    """A running simulator and how to reach it."""

    host: str
    port: int
    username: str
    password: str
    ca_file: str
    thumbprint: str
    root: Path  # where the simulator keeps its datastores
    pid: int  # the process this test run started (a fault test may kill it)


def build(cache_root: Path) -> Path:
    """The simulator binary for the current main.go, built once per source hash."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    binary = cache_root / f"vsphere-sim-{digest}" / "vsphere_sim"
    if binary.exists():
        return binary
    binary.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    gopath = binary.parent / "gopath"
    package = gopath / "src" / "vsphere_sim"
    package.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SOURCE, package / "main.go")
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(binary.parent),
        "GO111MODULE": "off",
        "GOPATH": f"{gopath}:{GOCODE}",
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOCACHE": os.environ.get("GOCACHE") or str(cache_root / "go-build-cache"),
        "CGO_ENABLED": "0",
    }
    partial = binary.with_suffix(".partial")
    subprocess.run(
        ["go", "build", "-o", str(partial), "."],
        cwd=package,
        env=env,
        check=True,
        capture_output=True,
        timeout=BUILD_TIMEOUT_SECONDS,
    )
    partial.replace(binary)
    return binary


@contextmanager
def running(binary: Path, *, workdir: Path, port: int) -> Iterator[Simulator]:
    """Start the simulator on 127.0.0.1:``port``; stop it (and wait for it) on exit."""
    username = "administrator@vsphere.local"
    password = "planted-vsphere-password-" + secrets.token_hex(8)
    datastores = workdir / "datastores"
    datastores.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_file = workdir / "ca.pem"
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "TMPDIR": str(datastores),
        "VSPHERE_SIM_PASSWORD": password,
    }
    stderr = (workdir / "simulator.log").open("wb")
    process = subprocess.Popen(
        [
            str(binary),
            "-listen",
            f"127.0.0.1:{port}",
            "-username",
            username,
            "-cert-out",
            str(ca_file),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
    )
    try:
        ready = _first_line(process, START_TIMEOUT_SECONDS)
        info = json.loads(ready)
        yield Simulator(
            host="127.0.0.1",
            port=port,
            username=username,
            password=password,
            ca_file=info["ca_file"],
            thumbprint=info["thumbprint"],
            root=datastores,
            pid=process.pid,
        )
    finally:
        if process.stdin:
            process.stdin.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()
        stderr.close()


@contextmanager
def started(tmp_path_factory: Any, *, port: int) -> Iterator[Simulator]:
    """A simulator of its own: built (cached outside the repository) and running on ``port``."""
    cache = tmp_path_factory.getbasetemp().parent  # survives runs; never the repository
    binary = build(cache)
    with running(binary, workdir=tmp_path_factory.mktemp("vsphere-sim"), port=port) as simulator:
        yield simulator


def _first_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            raise RuntimeError("the vSphere simulator did not start")
        if selector.select(remaining):
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("the vSphere simulator exited while starting")
            line += chunk
    selector.close()
    return line.decode().splitlines()[0]


class Admin:
    """The test's own pyvmomi session to prepare the inventory (not the driver under test)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.context = ssl.create_default_context(cafile=sim.ca_file)
        self.stub = SmartStubAdapter(host=sim.host, port=sim.port, sslContext=self.context)
        self.content = vim.ServiceInstance("ServiceInstance", self.stub).RetrieveContent()
        self.content.sessionManager.Login(sim.username, sim.password)

    def close(self) -> None:
        self.content.sessionManager.Logout()
        self.stub.DropConnections()

    def vm(self, inventory_path: str) -> vim.VirtualMachine:
        found = self.content.searchIndex.FindByInventoryPath(inventory_path)
        assert isinstance(found, vim.VirtualMachine), inventory_path
        return found

    def put(self, *, datacenter: str, datastore: str, path: str, body: bytes) -> None:
        """Upload a file to a datastore over /folder/ with the session cookie."""
        query = urlencode({"dcPath": datacenter, "dsName": datastore})
        connection = http.client.HTTPSConnection(
            self.sim.host, self.sim.port, context=self.context, timeout=60
        )
        try:
            connection.request(
                "PUT",
                f"/folder/{quote(path)}?{query}",
                body=body,
                headers={"Cookie": self.stub.cookie.split(";", 1)[0]},
            )
            response = connection.getresponse()
            response.read()
            assert response.status in (200, 201), response.status
        finally:
            connection.close()

    def attach(self, vm: vim.VirtualMachine, *, file_name: str, capacity: int) -> None:
        """Point the VM's first disk at ``file_name`` (ReconfigVM_Task, edit of the backing)."""
        disk = next(
            device
            for device in vm.config.hardware.device
            if isinstance(device, vim.vm.device.VirtualDisk)
        )
        disk.backing.fileName = file_name
        disk.capacityInKB = capacity // 1024
        disk.capacityInBytes = capacity
        change = vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.edit, device=disk
        )
        task = vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change]))
        deadline = time.monotonic() + 30
        while task.info.state not in (vim.TaskInfo.State.success, vim.TaskInfo.State.error):
            assert time.monotonic() < deadline, "ReconfigVM_Task did not finish"
            time.sleep(0.05)
        assert task.info.state == vim.TaskInfo.State.success, task.info.error


def upload_disk(admin: Admin, *, vm_path: str, name: str, body: bytes) -> str:
    """``body`` as the flat extent of a new disk ``name`` in the VM's folder on LocalDS_0,
    its descriptor next to it, and the VM's first disk pointed at it; the flat file's path."""
    datacenter = vm_path.strip("/").split("/", 1)[0]
    folder = vm_path.rsplit("/", 1)[1]
    flat = f"{folder}/{name}-flat.vmdk"
    admin.put(datacenter=datacenter, datastore="LocalDS_0", path=flat, body=body)
    admin.put(
        datacenter=datacenter,
        datastore="LocalDS_0",
        path=f"{folder}/{name}.vmdk",
        body=descriptor(f"{name}-flat.vmdk", len(body)),
    )
    admin.attach(
        admin.vm(vm_path), file_name=f"[LocalDS_0] {folder}/{name}.vmdk", capacity=len(body)
    )
    return flat


def descriptor(flat_name: str, size: int) -> bytes:
    """A vmfs descriptor with one flat extent."""
    return (
        "# Disk DescriptorFile\n"
        "version=1\n"
        'encoding="UTF-8"\n'
        "CID=fffffffe\n"
        "parentCID=ffffffff\n"
        'createType="vmfs"\n'
        "\n"
        "# Extent description\n"
        f'RW {size // 512} VMFS "{flat_name}"\n'
        "\n"
        "# The Disk Data Base\n"
        'ddb.adapterType = "lsilogic"\n'
        'ddb.virtualHWVersion = "13"\n'
    ).encode()


def disk_content(size: int, seed: int) -> bytes:
    """Random blocks, text blocks and zero blocks, like a real disk."""
    import random

    rng = random.Random(seed)
    chunk = 256 * 1024
    parts = []
    for index in range(size // chunk):
        if index % 3 == 0:
            parts.append(rng.randbytes(chunk))
        elif index % 3 == 1:
            line = f"hypersdk vsphere test block {index}\n".encode()
            parts.append((line * (chunk // len(line) + 1))[:chunk])
        else:
            parts.append(bytes(chunk))
    return b"".join(parts)
