"""The export of one VM to files: inspect, check space, convert with digests, package.

Every source is untrusted: inspected with its format spelled out before anything is
converted, refused when it reaches outside the provider's root. Output lands in a 0700 job
directory, files 0600; whatever fails or is cancelled leaves no partial output behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import Artifact
from hypersdk_contracts.rpc import DiskFormat
from hypersdk_exporter.core import errors, ovf
from hypersdk_exporter.core.errors import ExportCancelledError, ExportFailedError
from hypersdk_exporter.core.formats import FORMATS, OVA_DISK_EXTENSION, check_request
from hypersdk_exporter.core.models import ImageInfo, SourceFingerprint, VmDescription
from hypersdk_exporter.ports.outbound import ArtifactWriter, CancelCheck, DiskConverter, DiskSource

OverallProgress = Callable[[int, int], Awaitable[None]]  # bytes done, total bytes
Cancelled = CancelCheck | asyncio.Event
RootOf = Callable[[Path], Path]
# Free space asked beyond the estimate: a share of it and a fixed amount.
SPACE_MARGIN_RATIO = 0.05
SPACE_MARGIN_BYTES = 64 << 20


def disk_directory(path: Path) -> Path:
    """The default allowed root of a local disk: its own directory tree."""
    return path.parent


class ExportPipeline:
    """Exports one VM's disks to a format, as files in a job directory."""

    def __init__(
        self,
        *,
        converter: DiskConverter,
        writer: ArtifactWriter,
        allowed_root: RootOf = disk_directory,
    ) -> None:
        self._converter = converter
        self._writer = writer
        self._allowed_root = allowed_root

    async def run(
        self,
        vm: VmDescription,
        sources: Sequence[DiskSource],
        target: DiskFormat,
        job_dir: Path,
        *,
        compress: bool,
        on_progress: OverallProgress,
        cancelled: Cancelled,
    ) -> list[Artifact]:
        """Artifacts of ``vm`` in ``target`` format; ``sources`` in ``vm.disks`` order.

        Raises ExportFailedError (stable reason) or ExportCancelledError; either way
        ``job_dir`` is removed.
        """
        check = cancelled.is_set if isinstance(cancelled, asyncio.Event) else cancelled
        try:
            check_request(target, compress=compress)
        except ServiceError as exc:
            raise ExportFailedError(errors.INVALID_REQUEST, exc.message) from exc
        if len(sources) != len(vm.disks):
            raise ExportFailedError(errors.SOURCE_MISMATCH, "one source per disk")
        await self._writer.prepare(job_dir)
        try:
            return await self._run(vm, sources, target, job_dir, compress, on_progress, check)
        except BaseException:
            await asyncio.shield(self._writer.discard(job_dir))
            raise

    async def _run(  # noqa: PLR0917 - private, called once
        self,
        vm: VmDescription,
        sources: Sequence[DiskSource],
        target: DiskFormat,
        job_dir: Path,
        compress: bool,
        on_progress: OverallProgress,
        check: CancelCheck,
    ) -> list[Artifact]:
        spec = FORMATS[target]
        base = ovf.safe_name(vm.name)
        paths: list[Path] = []
        spools: list[Path | None] = []  # the staging directory of a streamed source
        infos: list[ImageInfo] = []
        before: list[SourceFingerprint] = []
        for index, source in enumerate(sources):
            _stop_if(check)
            # taken before the first byte is read: a rewrite during the spool is a change too
            before.append(await _fingerprint(source))
            path, root = await self._local(source, job_dir, index, check)
            spools.append(root if root.parent == job_dir else None)
            infos.append(
                await self._converter.inspect(path, format=source.format, allowed_root=root)
            )
            paths.append(path)
        total = sum(info.virtual_size for info in infos)
        await self._check_space(job_dir, total, ova=spec.ova)

        done = 0
        converted: list[tuple[str, Path, int, str]] = []  # name, path, size, sha256
        for index, (source, path, info) in enumerate(zip(sources, paths, infos, strict=True)):
            _stop_if(check)
            extension = OVA_DISK_EXTENSION if spec.ova else spec.extension
            name = f"{base}-{ovf.safe_name(vm.disks[index].name)}.{extension}"
            partial = job_dir / f".{name}.partial"

            async def disk_progress(
                count: int, offset: int = done, size: int = info.virtual_size
            ) -> None:
                await on_progress(offset + min(count, size), total)

            digest = await self._converter.convert(
                source=path,
                info=info,
                target=partial,
                spec=spec,
                compress=compress,
                on_progress=disk_progress,
                cancelled=check,
                spooled=spools[index] is not None,
            )
            if await _fingerprint(source) != before[index]:
                raise ExportFailedError(errors.SOURCE_CHANGED, vm.disks[index].key)
            staged = spools[index]
            if staged is not None:  # a whole copy of the source: not an artifact
                await self._writer.discard(staged)
            size = await self._writer.finish(partial, job_dir / name)
            converted.append((name, job_dir / name, size, digest))
            done += info.virtual_size
        _stop_if(check)
        if not spec.ova:
            await on_progress(total, total)
            return [Artifact(name=n, size_bytes=s, sha256=d) for n, _, s, d in converted]
        return [await self._package(vm, base, job_dir, converted, on_progress, total, check)]

    async def _package(  # noqa: PLR0917 - private, called once
        self,
        vm: VmDescription,
        base: str,
        job_dir: Path,
        converted: list[tuple[str, Path, int, str]],
        on_progress: OverallProgress,
        total: int,
        check: CancelCheck,
    ) -> Artifact:
        disks = [
            ovf.OvfDisk(index=i, file_name=name, file_size=size)
            for i, (name, _, size, _) in enumerate(converted)
        ]
        descriptor_name = f"{base}.ovf"
        ova_name = f"{base}.ova"

        def manifest(digests: dict[str, str]) -> tuple[str, bytes]:
            return f"{base}.mf", ovf.manifest(digests)

        size, digest = await self._writer.pack_ova(
            target=job_dir / ova_name,
            descriptor=(descriptor_name, ovf.descriptor(vm, disks)),
            disks=[(name, path) for name, path, _, _ in converted],
            manifest=manifest,
            cancelled=check,
        )
        await on_progress(total, total)
        return Artifact(name=ova_name, size_bytes=size, sha256=digest)

    async def _local(
        self, source: DiskSource, job_dir: Path, index: int, check: CancelCheck
    ) -> tuple[Path, Path]:
        """A path qemu-img may read and the root its references must stay in.

        A streamed source is spooled into a directory of its own, so nothing else is inside
        its root.
        """
        path = await source.local_path()
        if path is not None:
            return path, self._allowed_root(path)
        spool_dir = job_dir / f".source-{index}"
        spooled = spool_dir / "image"
        try:
            await self._writer.spool(source.stream(), spooled, cancelled=check)
        except ServiceError as exc:
            raise _source_error(exc) from exc
        return spooled, spool_dir

    async def _check_space(self, job_dir: Path, total: int, *, ova: bool) -> None:
        # An OVA holds its VMDKs twice at its peak: converted, then copied into the tar.
        need = total * (2 if ova else 1)
        need += int(need * SPACE_MARGIN_RATIO) + SPACE_MARGIN_BYTES
        free = await self._writer.free_bytes(job_dir)
        if free < need:
            raise ExportFailedError(errors.INSUFFICIENT_SPACE, f"need {need} bytes, {free} free")


async def _fingerprint(source: DiskSource) -> SourceFingerprint:
    try:
        return await source.fingerprint()
    except ServiceError as exc:
        raise _source_error(exc) from exc


def _source_error(exc: ServiceError) -> ExportFailedError:
    """A provider's error while reading a source, as a stable reason of the job.

    A conflict (the bytes no longer match what the provider described) is a changed source;
    anything else (the provider went away, refused, timed out) is an unavailable one. The
    provider's sentence is kept as the detail: drivers never put a credential in it.
    """
    if exc.code is ErrorCode.CONFLICT:
        return ExportFailedError(errors.SOURCE_CHANGED, exc.message)
    return ExportFailedError(errors.SOURCE_UNAVAILABLE, exc.message)


def _stop_if(check: CancelCheck) -> None:
    if check():
        raise ExportCancelledError
