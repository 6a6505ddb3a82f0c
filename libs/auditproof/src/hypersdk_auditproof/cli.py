"""``hypersdk-audit-verify``: verify an exported audit bundle from the command line.

Exit status 0 means the bundle verified, 1 that problems were found, 2 that the command could
not run (bad arguments, an unreadable file or key); scripts can tell "tampered" from "broken".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hypersdk_auditproof import _json
from hypersdk_auditproof.bundle import load_public_key
from hypersdk_auditproof.checkpoint import SignedCheckpoint, key_id
from hypersdk_auditproof.verify import Report, verify_bundle

EXIT_VALID = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2

KEYS_FROM_BUNDLE_WARNING = (
    "warning: no --public-key given, so the bundle's own keys were trusted: this shows the"
    " bundle agrees with itself, not that the platform signed it"
)


class UsageError(Exception):
    """Something the command cannot work with; reported on stderr with exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hypersdk-audit-verify",
        description="Verify an exported HyperSDK audit bundle: entry hashes, the hash chain, "
        "the Merkle tree and the signed checkpoints.",
    )
    parser.add_argument("bundle", metavar="BUNDLE", help="the bundle file, or - for stdin")
    parser.add_argument(
        "--public-key",
        metavar="PEM_FILE",
        action="append",
        default=[],
        help="a trusted Ed25519 public key (PEM); repeat for several",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="JSON_FILE",
        action="append",
        default=[],
        help="signed checkpoints obtained elsewhere: one JSON object or a JSON list of them",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read the {what} {path}: {error.strerror or error}") from error


def _public_keys(paths: Sequence[str]) -> dict[str, Ed25519PublicKey] | None:
    if not paths:
        return None
    keys = {}
    for path in paths:
        try:
            public_key = load_public_key(_read(path, "public key"))
        except ValueError as error:
            raise UsageError(f"{path}: {error}") from error
        keys[key_id(public_key)] = public_key
    return keys


def _checkpoints(paths: Sequence[str]) -> list[SignedCheckpoint]:
    checkpoints = []
    for path in paths:
        try:
            value = _json.loads(_read(path, "checkpoint file"))
            items = value if isinstance(value, list) else [value]
            checkpoints += [SignedCheckpoint.from_json(item) for item in items]
        except ValueError as error:
            raise UsageError(f"{path}: not a signed checkpoint: {error}") from error
    return checkpoints


@contextmanager
def _bundle(path: str) -> Iterator[BinaryIO]:
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        stream = Path(path).open("rb")  # noqa: SIM115 - closed below; open errors are usage errors
    except OSError as error:
        raise UsageError(f"cannot read the bundle {path}: {error.strerror or error}") from error
    with stream:
        yield stream


def _summary(report: Report) -> str:
    span = (
        f"sequences {report.first_sequence} to {report.last_sequence}"
        if report.entries
        else "no entries"
    )
    latest = (
        f", the newest at size {report.latest_checkpoint}"
        if report.latest_checkpoint is not None
        else ""
    )
    counted = f"{report.entries} entries ({span}), {report.checkpoints} checkpoints{latest}"
    if report.valid:
        return f"VALID: {counted}"
    found = len(report.problems) + report.problems_not_listed
    return f"INVALID: {found} problem{'s' if found != 1 else ''} in {counted}"


def _print_human(report: Report, out: TextIO) -> None:
    print(_summary(report), file=out)
    for problem in report.problems:
        where = f" at sequence {problem.sequence}" if problem.sequence is not None else ""
        print(f"{problem.code}{where}: {problem.message}", file=out)
    if report.problems_not_listed:
        print(f"... and {report.problems_not_listed} more problems not listed", file=out)


def _warnings(report: Report) -> list[str]:
    """What a valid result does not prove, so that nobody reads more into it."""
    warnings = [KEYS_FROM_BUNDLE_WARNING] if report.keys_from_bundle else []
    latest, last = report.latest_checkpoint, report.last_sequence
    if latest is None:
        warnings.append("warning: no trusted checkpoint: nothing signed vouches for the entries")
    elif last is not None and last > latest:
        warnings.append(
            f"note: sequences {latest + 1} to {last} come after the newest checkpoint:"
            " only the hash chain vouches for them"
        )
    return warnings


def _run(args: argparse.Namespace) -> Report:
    keys = _public_keys(args.public_key)
    witnessed = _checkpoints(args.checkpoint)
    with _bundle(args.bundle) as stream:
        try:
            return verify_bundle(stream, keys=keys, witnessed=witnessed)
        except OSError as error:
            raise UsageError(f"cannot read the bundle {args.bundle}: {error}") from error


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed the usage error (or --help)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        report = _run(args)
    except UsageError as error:
        print(f"hypersdk-audit-verify: {error}", file=sys.stderr)
        return EXIT_USAGE
    for warning in _warnings(report):
        print(warning, file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_human(report, sys.stdout)
    return EXIT_VALID if report.valid else EXIT_PROBLEMS
