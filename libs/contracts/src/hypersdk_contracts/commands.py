"""Commands: asks for work, sent to work queues, consumed by exactly one worker."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from hypersdk_contracts.base import Message


class VmExportRequested(Message):
    """Export one VM's disks to a format; the job row already exists."""

    command_type: ClassVar[str] = "exporter.vm.export.requested"
    job_id: str = Field(description="The job to run.")
    provider: str = Field(description="Provider name.")
    vm: str = Field(description="VM id within the provider.")
    format: str = Field(description="Target disk format.")
    compress: bool = Field(default=False, description="Compress where the format allows it.")
    grant: str = Field(
        repr=False, description="The requester's vms:export grant, signed by policy."
    )
