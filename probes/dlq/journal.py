"""The journal that makes an action resumable: one JSON line per step, flushed to disk before the step after it.

Per batch the engine writes ``intent`` (about to publish these), ``published`` (the broker confirmed them at the
destination) and ``removed`` (taken out of the source). A run killed at any point resumes from it:

- published and not removed: confirmed already; the new run removes them from the source without sending them
  again (``Ledger.resumed``);
- intent and not published: in flight at the kill; they may have reached the destination, and are sent again
  (``Ledger.possible_duplicates`` counts them: the only duplicates a resume can make).

Messages are counted by identity (a multiset), so two identical messages without ids are two entries, never one.
The file sits under the user's state directory, one per (broker, action, source, destination, selection); a
finished action marks it done, and the next one starts it afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from probes.errors import ConfigError

Encode = Callable[[Any], str]  # one JSON line, ASCII-only (the console passes its one sanitiser, json_text)


def state_dir() -> Path:
    """``$QDECK_STATE_DIR``, else ``$XDG_STATE_HOME/qdeck``, else ``~/.local/state/qdeck``."""
    explicit = os.environ.get("QDECK_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "qdeck"


def journal_path(*parts: str, directory: Path | None = None) -> Path:
    """The journal for one action: a readable head and a digest of everything that tells actions apart."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "backslashreplace")).hexdigest()[:16]
    head = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts[1:3]))[:60]
    return (directory or state_dir()) / "dlq" / f"{head}-{digest}.jsonl"


class Journal:
    def __init__(self, path: Path, encode: Encode, meta: dict[str, Any]) -> None:
        self.path = path
        self.encode = encode
        self.pending = Counter[str]()  # published earlier, not removed: remove without sending again
        self.in_flight = Counter[str]()  # intended earlier, never confirmed: may be duplicated when sent again
        self.resuming = False
        self._load()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] = path.open("a" if self.resuming else "w", encoding="ascii")
        except OSError as exc:
            raise ConfigError(f"cannot write the journal {path}: {exc.strerror or exc}") from None
        if not self.resuming:
            self._write({"journal": 1, **meta})

    def _load(self) -> None:
        try:
            lines = self.path.read_text(encoding="ascii", errors="replace").splitlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"cannot read the journal {self.path}: {exc.strerror or exc}") from None
        intent, published, removed = Counter[str](), Counter[str](), Counter[str]()
        done = False
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the last line of a killed run may be cut short: what it held was not yet acted on
            if not isinstance(entry, dict):
                continue
            intent.update(entry.get("intent", ()))
            published.update(entry.get("published", ()))
            removed.update(entry.get("removed", ()))
            done = done or bool(entry.get("done"))
        if done:
            return
        self.resuming = True
        self.pending = published - removed
        self.in_flight = intent - published

    def _write(self, entry: dict[str, Any]) -> None:
        self._file.write(self.encode(entry) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def intent(self, ids: Iterable[str]) -> None:
        self._write({"intent": list(ids)})

    def published(self, ids: Iterable[str]) -> None:
        self._write({"published": list(ids)})

    def removed(self, ids: Iterable[str]) -> None:
        self._write({"removed": list(ids)})

    def take_pending(self, identity: str) -> bool:
        """Whether this message was confirmed at its destination by an interrupted run (and count it off)."""
        if self.pending[identity] > 0:
            self.pending[identity] -= 1
            return True
        return False

    def take_in_flight(self, identity: str) -> bool:
        """Whether this message was in flight when an earlier run was killed (and count it off)."""
        if self.in_flight[identity] > 0:
            self.in_flight[identity] -= 1
            return True
        return False

    def finish(self, summary: dict[str, Any]) -> None:
        """The action ended with every message settled: the next run of it starts afresh."""
        self._write({"done": True, **summary})

    def close(self) -> None:
        self._file.close()
