"""The walk over a bundle's entries: the state machine behind :func:`verify_bundle`.

It keeps O(log n) state however long the log is: the chain's cursor, the Merkle tree's compact
range, at most one entry that arrived ahead of its place, and at most one pair of entries
competing for the same sequence. Each entry is placed by its own fields (sequence, prev_hash),
so one tampering is reported once, where it is, not again in everything after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hypersdk_auditproof._problems import Problems, Record
from hypersdk_auditproof.bundle import BundleEntry, Header
from hypersdk_auditproof.checkpoint import SignedCheckpoint, is_hex_hash, verify_signature
from hypersdk_auditproof.entries import entry_hash, entry_leaf
from hypersdk_auditproof.merkle import TreeBuilder
from hypersdk_auditproof.report import Code, Report


@dataclass
class _Target:
    """What the signed checkpoints say about one size (one per distinct root and head)."""

    size: int
    root: bytes
    head: str
    witnessed_only: bool


@dataclass
class _Due:
    """The log's state at a checkpoint's size, checked once that position is settled."""

    size: int
    head: str
    root: bytes | None
    """None when the tree can no longer be trusted (an earlier problem broke it)."""


@dataclass
class _Held:
    """An entry that arrived ahead of its place, kept until its place comes."""

    entry: BundleEntry
    line: int
    hash_ok: bool
    cursor: int
    """The sequence expected when it arrived: if the cursor moves on, it was out of place."""


@dataclass
class _Fork:
    """A second entry with the sequence just accepted and the same predecessor."""

    entry: BundleEntry
    line: int
    hash_ok: bool
    main_line: int
    tree: TreeBuilder | None
    due: _Due | None
    record: Record | None


@dataclass
class _Cursor:
    """Where the in-order walk stands."""

    expected: int
    prev: str | None
    """Hash of the entry before ``expected``; None when unknown (after a gap)."""
    prev_before: str | None = None
    """``prev`` before the last entry was accepted: a competing entry must link to it."""
    line: int = 0
    tree: TreeBuilder | None = None
    before_last: TreeBuilder | None = None
    last_matched: int = 0
    lowest: int | None = None
    highest: int | None = None
    entries: int = 0


class Walk:
    """The state of one verification."""

    def __init__(
        self,
        header: Header,
        keys: Mapping[str, Ed25519PublicKey],
        witnessed: Sequence[SignedCheckpoint],
        problems: Problems,
    ) -> None:
        self.origin = header.origin
        self.genesis = header.genesis
        self.keys = keys
        self.witnessed = witnessed
        self.problems = problems
        self.signed: list[tuple[SignedCheckpoint, int]] = []
        self.targets: dict[int, list[_Target]] | None = None
        self.checkpoints = 0
        self.latest: int | None = None
        genesis = header.genesis
        self.cursor = _Cursor(
            expected=genesis.size + 1,
            prev=genesis.head,
            tree=TreeBuilder(genesis.size, genesis.frontier),
            last_matched=genesis.size,
        )
        self.held: _Held | None = None
        self.fork: _Fork | None = None
        self.due: _Due | None = None
        self.unreadable_line = 0
        """The last line that could not be read at all: it may have held missing entries."""

    # -- checkpoints ---------------------------------------------------------------------------

    def add_checkpoint(self, signed: SignedCheckpoint, line: int) -> None:
        if self.targets is not None:
            self.problems.add(
                Code.MALFORMED,
                signed.checkpoint.size,
                f"line {line}: a checkpoint after the entries; checkpoints come first",
                line,
            )
            return
        self.signed.append((signed, line))

    def seal_checkpoints(self) -> None:
        """Check every checkpoint's signature and agreement, once all are known."""
        if self.targets is not None:
            return
        self.targets = {}
        sources: list[tuple[SignedCheckpoint, int | None]] = [*self.signed]
        sources += [(signed, None) for signed in self.witnessed]
        for signed, line in sources:
            self.checkpoints += 1
            if self._trusted(signed, line):
                self._target(signed, witnessed=line is None, line=line)
        if self.genesis.size in self.targets:
            tree = self.cursor.tree
            assert tree is not None
            self._evaluate(_Due(self.genesis.size, self.genesis.head, tree.root()), genesis=True)

    def _trusted(self, signed: SignedCheckpoint, line: int | None) -> bool:
        checkpoint = signed.checkpoint
        where = _where(checkpoint.size, line)
        if checkpoint.origin != self.origin:
            self.problems.add(
                Code.CHECKPOINT_WRONG_ORIGIN,
                checkpoint.size,
                f"{where} is for the log {checkpoint.origin!r}, not {self.origin!r}",
                line,
            )
            return False
        if signed.key_id not in self.keys:
            self.problems.add(
                Code.CHECKPOINT_UNKNOWN_KEY,
                checkpoint.size,
                f"{where} is signed by {signed.key_id}, which is not a trusted key",
                line,
            )
            return False
        if not verify_signature(signed, self.keys):
            self.problems.add(
                Code.CHECKPOINT_SIGNATURE_INVALID,
                checkpoint.size,
                f"{where} does not carry a valid signature by {signed.key_id}",
                line,
            )
            return False
        return True

    def _target(self, signed: SignedCheckpoint, *, witnessed: bool, line: int | None) -> None:
        assert self.targets is not None
        checkpoint = signed.checkpoint
        self.latest = max(self.latest or 0, checkpoint.size)
        same_size = self.targets.setdefault(checkpoint.size, [])
        for target in same_size:
            if target.root == checkpoint.root and target.head == checkpoint.head:
                target.witnessed_only = target.witnessed_only and witnessed
                return
        if same_size:
            self.problems.add(
                Code.CHECKPOINTS_INCONSISTENT,
                checkpoint.size,
                f"{_where(checkpoint.size, line)} and an earlier one of the same size disagree"
                " on the root or head: the signer published two different logs",
                line,
            )
        same_size.append(_Target(checkpoint.size, checkpoint.root, checkpoint.head, witnessed))

    def _evaluate(self, due: _Due, *, genesis: bool = False) -> None:
        assert self.targets is not None
        for target in self.targets.get(due.size, []):
            root_ok = due.root is None or due.root == target.root
            head_ok = due.head == target.head
            if root_ok and head_ok:
                self.cursor.last_matched = max(self.cursor.last_matched, due.size)
                continue
            self.problems.add(
                Code.CHECKPOINT_MISMATCH,
                due.size,
                self._mismatch(due.size, root_ok=root_ok, head_ok=head_ok, genesis=genesis),
                None,
            )
            if not root_ok:
                self._untrust()

    def _mismatch(self, size: int, *, root_ok: bool, head_ok: bool, genesis: bool) -> str:
        differs = " and ".join(
            part for part, ok in (("Merkle root", root_ok), ("head", head_ok)) if not ok
        )
        if genesis:
            return (
                f"the bundle's genesis (size {size}) differs from the checkpoint at that size"
                f" in its {differs}: the genesis was altered"
            )
        if head_ok:
            culprit = (
                "the genesis frontier does not lead to this checkpoint"
                if self.genesis.size
                else "the signed root itself is wrong"
            )
            return (
                f"the Merkle root at size {size} differs from the checkpoint although the entries"
                f" link to its head: {culprit}"
            )
        after = self.cursor.last_matched
        start = f"after sequence {after} and " if after > 0 else ""
        return (
            f"the signed checkpoint at size {size} has a different {differs}: the log was"
            f" rewritten {start}at or before sequence {size}"
        )

    # -- entries -------------------------------------------------------------------------------

    def on_entry(self, entry: BundleEntry, line: int) -> None:
        self.seal_checkpoints()
        cursor = self.cursor
        sequence = entry.sequence
        cursor.entries += 1
        hash_ok = entry_hash(entry.canonical) == entry.hash
        if not hash_ok:
            self.problems.add(
                Code.ENTRY_EDITED,
                sequence,
                f"the content of sequence {sequence} (line {line}) does not match its hash",
                line,
            )
        if sequence == cursor.expected:
            self._advance(entry, line, hash_ok)
        elif sequence > cursor.expected:
            self._ahead(entry, line, hash_ok)
        else:
            self._behind(entry, line, hash_ok)

    def on_unreadable_entry(self, sequence: int, claimed_hash: object) -> None:
        """A malformed entry line that still says its sequence: keep the walk in step."""
        self.seal_checkpoints()
        if sequence != self.cursor.expected:
            return
        self._settle(None)
        self._untrust()
        cursor = self.cursor
        cursor.prev = claimed_hash if is_hex_hash(claimed_hash) else None
        cursor.prev_before = None
        cursor.expected = sequence + 1
        self._place_held()

    def _advance(
        self, entry: BundleEntry, line: int, hash_ok: bool, *, link_known: bool = True
    ) -> None:
        """Accept the entry at the cursor's place."""
        self._settle(entry.prev_hash)
        cursor = self.cursor
        sequence = entry.sequence
        if link_known and cursor.prev is not None and entry.prev_hash != cursor.prev:
            before = (
                "the genesis head"
                if sequence == self.genesis.size + 1
                else f"the hash of sequence {sequence - 1}"
            )
            self.problems.add(
                Code.CHAIN_BROKEN,
                sequence,
                f"the prev_hash of sequence {sequence} (line {line}) is not {before}: the entry"
                " before it was replaced, or entries were removed or inserted and the rest"
                " renumbered",
                line,
            )
            self._untrust()
        if not hash_ok:
            self._untrust()
        if cursor.tree is not None:
            cursor.before_last = cursor.tree.copy()
            cursor.tree.append(entry_leaf(entry.canonical))
        cursor.prev_before = cursor.prev
        cursor.prev = entry.hash
        cursor.line = line
        cursor.expected = sequence + 1
        self._covered(sequence)
        if self._has_target(sequence):
            root = cursor.tree.root() if cursor.tree is not None else None
            self.due = _Due(sequence, entry.hash, root)
        self._place_held()

    def _ahead(self, entry: BundleEntry, line: int, hash_ok: bool) -> None:
        """An entry beyond the cursor: a gap, or an entry moved earlier than its place."""
        held = self.held
        if held is None:
            self.held = _Held(entry, line, hash_ok, self.cursor.expected)
            return
        sequence, held_sequence = entry.sequence, held.entry.sequence
        if sequence == held_sequence:
            self.problems.add(
                Code.ENTRY_INSERTED,
                sequence,
                f"sequence {sequence} appears twice, at lines {held.line} and {line}",
                line,
            )
        elif sequence < held_sequence:
            self._jump(entry, line, hash_ok)
        else:
            self.held = None
            self._jump(held.entry, held.line, held.hash_ok)
            self._resume(entry, line, hash_ok)

    def _resume(self, entry: BundleEntry, line: int, hash_ok: bool) -> None:
        if entry.sequence == self.cursor.expected:
            self._advance(entry, line, hash_ok)
        else:
            self._ahead(entry, line, hash_ok)

    def _jump(self, entry: BundleEntry, line: int, hash_ok: bool) -> None:
        """Accept an entry after a gap: the entries before it are missing (for now)."""
        self._settle(None)
        context = f"the entry at line {line} has sequence {entry.sequence}"
        if self.unreadable_line > self.cursor.line:
            context += f"; line {self.unreadable_line}, which could not be read, may have held them"
        self.problems.gap(self.cursor.expected, entry.sequence - 1, context, line)
        self._untrust()
        self._advance(entry, line, hash_ok, link_known=False)

    def _place_held(self) -> None:
        """Put the held entry in its place once the cursor reaches it."""
        held = self.held
        if held is None or held.entry.sequence != self.cursor.expected:
            return
        self.held = None
        sequence = held.entry.sequence
        if self.cursor.prev is not None and held.entry.prev_hash != self.cursor.prev:
            self.problems.add(
                Code.ENTRY_INSERTED,
                sequence,
                f"the entry at line {held.line} claims sequence {sequence} ahead of its place"
                f" and does not link to sequence {sequence - 1}: it was inserted",
                held.line,
            )
            return
        self.problems.add(
            Code.ENTRIES_REORDERED,
            sequence,
            f"sequence {sequence} is at line {held.line}, before sequence {held.cursor}",
            held.line,
        )
        self._advance(held.entry, held.line, held.hash_ok)

    def _behind(self, entry: BundleEntry, line: int, hash_ok: bool) -> None:
        """An entry below the cursor: a late one filling a gap, or one that does not belong."""
        cursor = self.cursor
        sequence = entry.sequence
        if self.problems.fill(sequence):
            self._covered(sequence)
            self.problems.add(
                Code.ENTRIES_REORDERED,
                sequence,
                f"sequence {sequence} is at line {line}, after sequence {cursor.expected - 1}",
                line,
            )
            if self._has_target(sequence):
                self._evaluate(_Due(sequence, entry.hash, None))
            return
        if self._forks(entry):
            self._open_fork(entry, line, hash_ok)
            return
        if sequence <= self.genesis.size:
            where = f"at or before the genesis (size {self.genesis.size})"
        else:
            where = f"again, after sequence {cursor.expected - 1}"
        self.problems.add(
            Code.ENTRY_INSERTED,
            sequence,
            f"sequence {sequence} (line {line}) appears {where}: it was inserted",
            line,
        )

    def _forks(self, entry: BundleEntry) -> bool:
        cursor = self.cursor
        return (
            self.fork is None
            and entry.sequence == cursor.expected - 1
            and cursor.prev_before is not None
            and entry.prev_hash == cursor.prev_before
            and entry.hash != cursor.prev
        )

    def _open_fork(self, entry: BundleEntry, line: int, hash_ok: bool) -> None:
        """Two entries claim the same place; the next link (or a checkpoint) tells which."""
        cursor = self.cursor
        tree = None
        if hash_ok and cursor.tree is not None and cursor.before_last is not None:
            tree = cursor.before_last.copy()
            tree.append(entry_leaf(entry.canonical))
        due = None
        if self._has_target(entry.sequence):
            due = _Due(entry.sequence, entry.hash, tree.root() if tree is not None else None)
        record = self.problems.add(
            Code.ENTRY_INSERTED,
            entry.sequence,
            f"two entries have sequence {entry.sequence} and the same predecessor, at lines"
            f" {cursor.line} and {line}; nothing after them shows which was inserted",
            line,
        )
        self.fork = _Fork(entry, line, hash_ok, cursor.line, tree, due, record)

    def _settle(self, next_prev_hash: str | None) -> None:
        """The position just accepted is final: resolve a fork, then check its checkpoint."""
        fork = self.fork
        if fork is not None:
            self.fork = None
            successor = next_prev_hash
            if successor not in (fork.entry.hash, self.cursor.prev):
                successor = self._fork_by_checkpoint(fork)
            if successor == fork.entry.hash:
                self._take_fork(fork)
                self._explain_fork(fork, inserted=fork.main_line, genuine=fork.line)
            elif successor is not None and successor == self.cursor.prev:
                self._explain_fork(fork, inserted=fork.line, genuine=fork.main_line)
        if self.due is not None:
            due, self.due = self.due, None
            self._evaluate(due)

    def _fork_by_checkpoint(self, fork: _Fork) -> str | None:
        """When no link tells the two apart, a checkpoint at their size may."""
        if self.targets is None or fork.due is None or self.due is None:
            return None
        targets = self.targets.get(fork.due.size, [])
        fork_matches = any(target.head == fork.due.head for target in targets)
        main_matches = any(target.head == self.due.head for target in targets)
        if fork_matches and not main_matches:
            return fork.entry.hash
        if main_matches and not fork_matches:
            return self.cursor.prev
        return None

    def _take_fork(self, fork: _Fork) -> None:
        cursor = self.cursor
        cursor.prev = fork.entry.hash
        cursor.line = fork.line
        cursor.tree = fork.tree
        cursor.before_last = None
        self.due = fork.due

    @staticmethod
    def _explain_fork(fork: _Fork, *, inserted: int, genuine: int) -> None:
        if fork.record is not None:
            fork.record.line = inserted
            fork.record.message = (
                f"two entries have sequence {fork.entry.sequence}: the one at line {inserted}"
                f" was inserted (the chain continues from the one at line {genuine})"
            )

    def _covered(self, sequence: int) -> None:
        """The entry found its place: it counts in the range the report gives."""
        cursor = self.cursor
        cursor.lowest = sequence if cursor.lowest is None else min(cursor.lowest, sequence)
        cursor.highest = sequence if cursor.highest is None else max(cursor.highest, sequence)

    def _has_target(self, size: int) -> bool:
        return self.targets is not None and size in self.targets

    def _untrust(self) -> None:
        """The tree no longer mirrors the log: later roots cannot be checked, heads still can."""
        self.cursor.tree = None
        self.cursor.before_last = None

    # -- end -----------------------------------------------------------------------------------

    def finish(self) -> None:
        self.seal_checkpoints()
        held = self.held
        if held is not None:
            self.held = None
            if held.cursor == self.cursor.expected:
                self._jump(held.entry, held.line, held.hash_ok)
            else:
                self.problems.add(
                    Code.ENTRY_INSERTED,
                    held.entry.sequence,
                    f"the entry at line {held.line} claims sequence {held.entry.sequence}, far"
                    " ahead of the entries around it, and nothing links to it: it was inserted",
                    held.line,
                )
        self._settle(None)
        self._check_truncation()

    def _check_truncation(self) -> None:
        assert self.targets is not None
        last = self.cursor.expected - 1  # entries that only claim a far sequence do not count
        beyond = [size for size in self.targets if size > last]
        if not beyond:
            return
        newest = max(beyond)
        by_witness = all(target.witnessed_only for target in self.targets[newest])
        source = "a witnessed checkpoint" if by_witness else "the bundle's newest checkpoint"
        missing = (
            f"sequence {newest} was"
            if newest == last + 1
            else f"sequences {last + 1} to {newest} were"
        )
        self.problems.add(
            Code.LOG_TRUNCATED,
            last + 1,
            f"{source} covers size {newest}, but the bundle ends at sequence {last}:"
            f" {missing} cut off",
            None,
        )

    def report(self, *, keys_from_bundle: bool) -> Report:
        cursor = self.cursor
        return self.problems.report(
            keys_from_bundle=keys_from_bundle,
            entries=cursor.entries,
            first=cursor.lowest,
            last=cursor.highest,
            checkpoints=self.checkpoints,
            latest=self.latest,
        )


def _where(size: int, line: int | None) -> str:
    if line is None:
        return f"the witnessed checkpoint at size {size}"
    return f"the checkpoint at size {size} (line {line})"
