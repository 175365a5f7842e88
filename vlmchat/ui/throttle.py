"""Failed logins cost time: per client address and per user name, a growing delay, then a lock-out.

The k-th attempt after k failures waits `delay_s * 2**(k-1)` seconds before it is checked (the first
attempt waits nothing); after `attempts` failures the address or user name is locked out for
`lockout_s`, and every attempt meanwhile is refused unchecked. An attempt counts as a failure
from the moment it starts, so guesses sent in parallel cannot outrun the count. A success clears
its user name's count and, of the address's count, only the failures against that name (another
login from the same address does not wipe the guesses at someone else's name). An address a user
has logged in from before is not held back by that user name's count (so a stranger's guesses
cannot lock the owner out from home), only by its own, which counts every guess made there. A wrong
/v1 API key is an attempt with no user name: it counts against its address only. Each failure and
lock-out is logged (address, user name, time; never the password).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("vlmchat.login")

MAX_DELAY_S = 60.0
MAX_TRACKED = 10_000  # counts kept before stale ones are dropped (many addresses or names guessed)


@dataclass
class _Count:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0
    against: dict[str | None, int] = field(default_factory=dict)  # an address's failures per user name


@dataclass(frozen=True)
class Verdict:
    """What to do with one login attempt: refuse it (locked for `retry_after_s`) or check it after `delay_s`."""

    locked: bool
    delay_s: float = 0.0
    retry_after_s: float = 0.0


def wait_words(seconds: float) -> str:
    """How long a lock-out lasts, as a 429 says it: '40 seconds', '15 minutes'."""
    return f"{seconds:.0f} seconds" if seconds < 120 else f"{seconds / 60:.0f} minutes"


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

    def _keys(self, address: str, user: str | None) -> list[tuple[str, str]]:
        """The counts an attempt goes to: the address's, then the user name's unless the address is trusted."""
        address_only = user is None or (address, user) in self.trusted
        return [("address", address)] + ([] if address_only else [("user", user)])

    def retry_after(self, address: str) -> float:
        """Seconds `address` stays locked out (0 when it is not), counting nothing."""
        now = self.clock()
        with self.lock:
            count = self.counts.get(("address", address))
            return max(count.locked_until - now, 0.0) if count else 0.0

    def begin(self, address: str, user: str | None) -> Verdict:
        """Register an attempt (counted as failed until `succeeded`) and say whether and when to check it;
        `user` None (a /v1 API key) counts against the address only."""
        now = self.clock()
        with self.lock:
            self._prune(now)
            counts = [self._count(key, now) for key in self._keys(address, user)]
            locked_until = max(c.locked_until for c in counts)
            if locked_until > now:
                return Verdict(True, retry_after_s=locked_until - now)
            failures = max(c.failures for c in counts)
            if failures >= self.attempts:  # parallel attempts already in flight used up the allowance
                return Verdict(True, retry_after_s=self.lockout_s)
            for count in counts:
                count.failures += 1
                count.last = now
            counts[0].against[user] = counts[0].against.get(user, 0) + 1
        return Verdict(False, delay_s=self.delay_for(failures))

    def failed(self, address: str, user: str | None) -> None:
        """The attempt was wrong: log it, and lock out what reached `attempts` failures."""
        now = self.clock()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.lock:
            counts = {key: self._count(key, now) for key in self._keys(address, user)}
            for count in counts.values():
                count.last = now
            locked = [f"{kind} {value[:64]!r}" for (kind, value), count in counts.items()
                      if count.failures >= self.attempts and count.locked_until <= now]
            for (kind, value), count in counts.items():
                if f"{kind} {value[:64]!r}" in locked:
                    count.locked_until = now + self.lockout_s
            failures = max(c.failures for c in counts.values())
        who = "the /v1 API key" if user is None else f"user {user[:64]!r}"
        log.warning("failed login for %s from %s at %s (%d of %d allowed)", who, address, stamp, failures,
                    self.attempts)
        if locked:
            log.warning("login locked out for %.1f minutes at %s: %s", self.lockout_s / 60, stamp, ", ".join(locked))

    def succeeded(self, address: str, user: str) -> None:
        """The attempt was right: the user name's count starts again (unless it is locked: the owner got in from a
        trusted address, the guesses elsewhere still count), the address's count forgets the failures against this
        name only, and this address is trusted for this user."""
        now = self.clock()
        with self.lock:
            here = self.counts.get(("address", address))
            if here is not None:
                here.failures -= here.against.pop(user, 0)
                if here.failures <= 0 and here.locked_until <= now:
                    self.counts.pop(("address", address))
            name = self.counts.get(("user", user))
            if name is None or name.locked_until <= now:
                self.counts.pop(("user", user), None)
            if len(self.trusted) < MAX_TRACKED:
                self.trusted.add((address, user))
