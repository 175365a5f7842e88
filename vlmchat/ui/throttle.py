"""Failed logins cost time: per client address and per user name, a growing delay, then a lock-out.

The k-th attempt after k failures waits `delay_s * 2**(k-1)` seconds before it is checked (the first
attempt waits nothing); after `attempts` failures the address or user name is locked out for
`lockout_s`, and every attempt meanwhile is refused unchecked. An attempt counts as a failure
from the moment it starts, so guesses sent in parallel cannot outrun the count; a success clears
both counts. An address a user has logged in from before is not held back by that user name's
count (so a stranger's guesses cannot lock the owner out from home), only by its own. Each failure
and lock-out is logged (address, user name, time; never the password).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("vlmchat.login")

MAX_DELAY_S = 60.0
MAX_TRACKED = 10_000  # counts kept before stale ones are dropped (many addresses or names guessed)


@dataclass
class _Count:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """What to do with one login attempt: refuse it (locked for `retry_after_s`) or check it after `delay_s`."""

    locked: bool
    delay_s: float = 0.0
    retry_after_s: float = 0.0


class LoginThrottle:
    """Counts failed logins per ('address', ip) and ('user', name); `clock` is injectable for tests."""

    def __init__(self, attempts: int, lockout_s: float, delay_s: float, clock=time.monotonic):
        self.attempts, self.lockout_s, self.delay_s, self.clock = attempts, lockout_s, delay_s, clock
        self.counts: dict[tuple[str, str], _Count] = {}
        self.trusted: set[tuple[str, str]] = set()  # (address, user) pairs that logged in before
        self.lock = threading.Lock()

    def _count(self, key: tuple[str, str], now: float) -> _Count:
        count = self.counts.get(key)
        if count is None or (count.locked_until <= now and now - count.last >= self.lockout_s):
            count = self.counts[key] = _Count()  # a lock-out served, or old failures forgotten
        return count

    def delay_for(self, failures: int) -> float:
        """Seconds an attempt waits after `failures` failures: 0, then delay_s doubling, at most a minute."""
        return 0.0 if failures <= 0 else min(self.delay_s * 2 ** (failures - 1), MAX_DELAY_S)

    def _prune(self, now: float) -> None:
        if len(self.counts) > MAX_TRACKED:
            self.counts = {key: c for key, c in self.counts.items()
                           if c.locked_until > now or now - c.last < self.lockout_s}

    def begin(self, address: str, user: str) -> Verdict:
        """Register an attempt (counted as failed until `succeeded`) and say whether and when to check it."""
        now = self.clock()
        with self.lock:
            self._prune(now)
            counts = [self._count(("address", address), now)]
            if (address, user) not in self.trusted:
                counts.append(self._count(("user", user), now))
            locked_until = max(c.locked_until for c in counts)
            if locked_until > now:
                return Verdict(True, retry_after_s=locked_until - now)
            failures = max(c.failures for c in counts)
            if failures >= self.attempts:  # parallel attempts already in flight used up the allowance
                return Verdict(True, retry_after_s=self.lockout_s)
            for count in counts:
                count.failures += 1
                count.last = now
        return Verdict(False, delay_s=self.delay_for(failures))

    def failed(self, address: str, user: str) -> None:
        """The attempt was wrong: log it, and lock out what reached `attempts` failures."""
        now = self.clock()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.lock:
            keys = [("address", address)] + ([] if (address, user) in self.trusted else [("user", user)])
            counts = {key: self._count(key, now) for key in keys}
            for count in counts.values():
                count.last = now
            locked = [f"{kind} {value[:64]!r}" for (kind, value), count in counts.items()
                      if count.failures >= self.attempts and count.locked_until <= now]
            for (kind, value), count in counts.items():
                if f"{kind} {value[:64]!r}" in locked:
                    count.locked_until = now + self.lockout_s
            failures = max(c.failures for c in counts.values())
        log.warning("failed login for user %r from %s at %s (%d of %d allowed)", user[:64], address, stamp,
                    failures, self.attempts)
        if locked:
            log.warning("login locked out for %.1f minutes at %s: %s", self.lockout_s / 60, stamp, ", ".join(locked))

    def succeeded(self, address: str, user: str) -> None:
        """The attempt was right: both counts start again (a locked user name stays locked for the others: the
        owner got in from a trusted address, the guesses elsewhere still count), and this address is trusted for
        this user."""
        now = self.clock()
        with self.lock:
            self.counts.pop(("address", address), None)
            name = self.counts.get(("user", user))
            if name is None or name.locked_until <= now:
                self.counts.pop(("user", user), None)
            if len(self.trusted) < MAX_TRACKED:
                self.trusted.add((address, user))
