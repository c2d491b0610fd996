"""The credentials file: one stored sign-in per realm and client, shared by every process of the user.

Keycloak rotates refresh tokens (`revokeRefreshToken`): a refresh token works once. Two processes
refreshing with the same one would end the sign-in for one of them, so a refresh happens only while
holding an exclusive lock, after re-reading the file. The lock is taken on a companion file
(`<name>.lock`) because the credentials file itself is replaced on every write (temp file + rename,
so a reader never sees half a file) and a lock on a replaced inode would protect nothing.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .realm import Tokens

if sys.platform == "win32":
    import msvcrt

    def _lock(descriptor: int) -> None:
        while True:
            try:
                msvcrt.locking(descriptor, msvcrt.LK_LOCK, 1)  # gives up after ~10 s; keep waiting
                return
            except OSError:
                continue

    def _unlock(descriptor: int) -> None:
        msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(descriptor: int) -> None:
        fcntl.flock(descriptor, fcntl.LOCK_EX)

    def _unlock(descriptor: int) -> None:
        fcntl.flock(descriptor, fcntl.LOCK_UN)


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, key: str) -> Tokens | None:
        """Safe without the lock: writes replace the file whole."""
        entry = self._everything().get(key)
        if not isinstance(entry, dict):
            return None
        try:
            fields = {**entry}
            # Files written before refresh_after existed: refresh 30 s before expiry.
            fields.setdefault("refresh_after", float(fields["access_expires_at"]) - 30.0)
            return Tokens(**fields)
        except (KeyError, TypeError, ValueError):
            return None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes and threads (each call opens its own descriptor)."""
        self._make_directory()
        descriptor = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock(descriptor)
            try:
                yield
            finally:
                _unlock(descriptor)
        finally:
            os.close(descriptor)

    def write(self, key: str, tokens: Tokens | None) -> None:
        """Store (or with None, forget) one sign-in, keeping the others; call while holding the lock."""
        everything = self._everything()
        if tokens is None:
            everything.pop(key, None)
        else:
            everything[key] = asdict(tokens)
        self._make_directory()
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")  # mode 0600
        try:
            with os.fdopen(descriptor, "w") as handle:
                json.dump(everything, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _everything(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def _make_directory(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
