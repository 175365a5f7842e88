"""The login throttle's schedule with the shipped settings: 300 guesses take hours, the right user gets back in.

The LoginThrottle here is the real one; only its clock is a counter we advance, so hours of
lock-out are simulated in microseconds (tests/test_security_gate.py measures the same schedule
on a served app with a short lock-out).
"""

from vlmchat.settings import load_settings
from vlmchat.ui.throttle import LoginThrottle


class Clock:
    """Seconds that pass only when told to."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _shipped_throttle(clock):
    server = load_settings().server
    return LoginThrottle(server.login_attempts, server.login_lockout_minutes * 60, server.login_delay_s, clock), server


def test_300_rapid_guesses_take_hours_with_the_shipped_settings():
    clock = Clock()
    throttle, server = _shipped_throttle(clock)
    guesses = 0
    while guesses < 300:
        verdict = throttle.begin("203.0.113.9", "admin")
        if verdict.locked:
            clock.now += verdict.retry_after_s  # the attacker waits exactly as long as told
            continue
        clock.now += verdict.delay_s
        throttle.failed("203.0.113.9", "admin")
        guesses += 1
    cycles = 300 // server.login_attempts
    assert clock.now >= (cycles - 1) * server.login_lockout_minutes * 60
    assert clock.now > 3600  # minutes at the very least: with 5 tries per 15 minutes, over 14 hours


def test_a_new_address_does_not_escape_the_user_name_count():
    clock = Clock()
    throttle, server = _shipped_throttle(clock)
    for n in range(server.login_attempts):
        assert not throttle.begin(f"198.51.100.{n}", "admin").locked
        throttle.failed(f"198.51.100.{n}", "admin")
    assert throttle.begin("198.51.100.200", "admin").locked


def test_delays_double_and_the_right_user_gets_in_after_the_lockout():
    clock = Clock()
    throttle, server = _shipped_throttle(clock)
    delays = []
    for _ in range(server.login_attempts):
        verdict = throttle.begin("192.0.2.1", "ana")
        delays.append(verdict.delay_s)
        throttle.failed("192.0.2.1", "ana")
    base = server.login_delay_s
    assert delays == [0.0] + [base * 2 ** k for k in range(server.login_attempts - 1)]
    assert throttle.begin("192.0.2.1", "ana").locked
    clock.now += server.login_lockout_minutes * 60
    verdict = throttle.begin("192.0.2.1", "ana")
    assert not verdict.locked and verdict.delay_s == 0.0
    throttle.succeeded("192.0.2.1", "ana")
    assert throttle.begin("192.0.2.1", "ana").delay_s == 0.0


def test_a_strangers_guesses_do_not_lock_the_owner_out_of_a_known_address():
    clock = Clock()
    throttle, server = _shipped_throttle(clock)
    assert not throttle.begin("192.0.2.1", "ana").locked
    throttle.succeeded("192.0.2.1", "ana")  # ana logged in from home once
    for _ in range(server.login_attempts):
        throttle.begin("203.0.113.9", "ana")
        throttle.failed("203.0.113.9", "ana")
    assert throttle.begin("203.0.113.10", "ana").locked  # the name is locked for everyone else
    verdict = throttle.begin("192.0.2.1", "ana")
    assert not verdict.locked and verdict.delay_s == 0.0  # but not from ana's own address
    throttle.succeeded("192.0.2.1", "ana")  # ana getting in at home does not lift the lock on her name elsewhere
    assert throttle.begin("203.0.113.11", "ana").locked


def _guess(throttle, clock, address, user):
    """One wrong password, waited out as told; False when it was refused unchecked (locked out)."""
    verdict = throttle.begin(address, user)
    if verdict.locked:
        return False
    clock.now += verdict.delay_s
    throttle.failed(address, user)
    return True


def _log_in(throttle, clock, address, user):
    verdict = throttle.begin(address, user)
    assert not verdict.locked
    clock.now += verdict.delay_s
    throttle.succeeded(address, user)


def test_another_login_from_the_address_does_not_wipe_the_guesses_at_a_name():
    """The tester's spray: bob, from an address where alice logged in before, guessed at alice 4 times, logged in as
    himself (which cleared the address's count) and again, 940 guesses an hour, never locked out."""
    clock = Clock()
    throttle, server = _shipped_throttle(clock)
    _log_in(throttle, clock, "192.0.2.2", "alice")  # alice is trusted at this address
    guesses = 0
    for _ in range(100):
        if not _guess(throttle, clock, "192.0.2.2", "alice"):
            break
        guesses += 1
        if guesses % (server.login_attempts - 1) == 0:
            _log_in(throttle, clock, "192.0.2.2", "bob")
    assert guesses == server.login_attempts and throttle.begin("192.0.2.2", "alice").locked


def test_a_login_takes_back_only_the_failures_against_its_own_name():
    clock = Clock()
    throttle, server = _shipped_throttle(clock)
    guesses = server.login_attempts - 2
    for _ in range(guesses):
        _guess(throttle, clock, "192.0.2.3", "eve")
    _guess(throttle, clock, "192.0.2.3", "bob")  # bob mistyped once
    _log_in(throttle, clock, "192.0.2.3", "bob")
    assert throttle.begin("192.0.2.3", "carol").delay_s == throttle.delay_for(guesses)  # eve's guesses still count


def test_wrong_api_keys_count_against_the_address_only():
    clock = Clock()
    throttle, server = _shipped_throttle(clock)
    for _ in range(server.login_attempts):
        assert _guess(throttle, clock, "192.0.2.4", None)
    assert throttle.retry_after("192.0.2.4") > 0 and throttle.begin("192.0.2.4", None).locked
    assert throttle.retry_after("192.0.2.5") == 0 and not throttle.begin("192.0.2.5", "ana").locked
