"""bcrypt basic auth whose work an attacker cannot multiply.

bcrypt is slow on purpose, so every wrong password would otherwise cost the exporter a full
hash: a few dozen clients sending wrong passwords keep every core busy and every connection
slot held, and good scrapes starve. The work is bounded four ways:

- verified credentials are cached (a keyed SHA-256 of user and password), so a scraper pays
  bcrypt once;
- recently failed credentials are cached the same way, so repeating a wrong password is free;
- each client address has a failure budget (a token bucket): past it, credentials that would
  need bcrypt are refused at once until the bucket refills;
- bcrypt runs in a small pool; a request that cannot get a place within a deadline is refused.

An unknown user is still checked against a dummy hash of the same cost as the real ones, so
the answer takes as long for a wrong user as for a wrong password (timing does not tell which
users exist). Costs above ``MAX_BCRYPT_COST`` are refused when the web config is loaded: one
check at cost 31 takes days.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict

# The logger keeps the name it had as webauth.py, which operators' log filters may name.
log = logging.getLogger("gpu_carbon_exporter.webauth")

# bcrypt's cost is log2 of its rounds: each step doubles the time. Cost 14 is about 0.8 s per check
# on this project's 2-core test machine; Go's bcrypt.DefaultCost (exporter-toolkit's docs) is 10.
MIN_BCRYPT_COST, MAX_BCRYPT_COST = 4, 14
BCRYPT_POOL = 2  # checks at once: a bound on the CPU an attacker can make the exporter spend
POOL_WAIT_S = 2.0  # a request waits this long for a place in the pool, then is refused
FAILURE_BURST = 10  # failed bcrypt checks an address may cost at once ...
FAILURE_REFILL_S = 2.0  # ... and one more every this many seconds
CACHE_SIZE = 4096  # entries in each of the verified and failed caches (least recently used go)
ADDRESSES = 10_000  # failure budgets kept; the fullest (least recently failed) go first


def bcrypt_cost(hashed: str) -> int:
    """The cost field of a ``$2?$NN$...`` hash."""
    return int(hashed[4:6])


class _Lru:
    """A bounded set of digests, least recently used evicted first."""

    def __init__(self, size: int) -> None:
        self.size, self._items = size, OrderedDict[bytes, None]()

    def __contains__(self, key: bytes) -> bool:
        if key in self._items:
            self._items.move_to_end(key)
            return True
        return False

    def add(self, key: bytes) -> None:
        self._items[key] = None
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class _Budgets:
    """A token bucket of failed bcrypt checks per client address."""

    def __init__(self) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # addr -> (tokens, at)

    def _tokens(self, addr: str, now: float) -> float:
        tokens, at = self._buckets.get(addr, (FAILURE_BURST, now))
        return min(FAILURE_BURST, tokens + (now - at) / FAILURE_REFILL_S)

    def take(self, addr: str, now: float) -> bool:
        """Take a token for one bcrypt check; False when the address has none left."""
        tokens = self._tokens(addr, now)
        if tokens < 1.0:
            return False
        self._set(addr, tokens - 1.0, now)
        return True

    def give_back(self, addr: str, now: float) -> None:
        """A check that did not fail (it succeeded, or never ran) costs the address nothing."""
        self._set(addr, min(FAILURE_BURST, self._tokens(addr, now) + 1.0), now)

    def _set(self, addr: str, tokens: float, now: float) -> None:
        self._buckets[addr] = (tokens, now)
        self._buckets.move_to_end(addr)
        while len(self._buckets) > ADDRESSES:
            self._buckets.popitem(last=False)


class BasicAuth:
    """Checks ``Authorization`` headers against bcrypt hashes (``users``: name -> hash)."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self.users = users
        self._key = secrets.token_bytes(32)  # the caches hold keyed digests, never passwords
        self._ok, self._failed = _Lru(CACHE_SIZE), _Lru(CACHE_SIZE)
        self._budgets = _Budgets()
        self._lock = threading.Lock()
        self._pool = threading.BoundedSemaphore(BCRYPT_POOL)
        self._dummy = _dummy_hash(users)
        if len({bcrypt_cost(h.decode()) for h in users.values()}) > 1:
            log.warning("basic_auth_users' bcrypt hashes have different costs: the time an answer takes can "
                        "tell an existing user name from an unknown one; give every user the same cost")
        self.refused = 0  # checks refused without bcrypt (budget spent or pool full), for tests and logs

    def check(self, header: str | None, addr: str = "") -> bool:
        if not self.users:
            return True
        creds = _credentials(header)
        if creds is None:
            return False
        user, password = creds
        key = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        now = time.monotonic()
        with self._lock:
            if key in self._ok:
                return True
            # the token is taken before bcrypt, so concurrent requests from one address cannot all pass
            if key in self._failed or not self._budgets.take(addr, now):
                self.refused += 1
                return False
        ok = self._bcrypt(user, password)
        with self._lock:
            if ok:
                self._ok.add(key)
            elif ok is False:
                self._failed.add(key)
            if ok is not False:  # a success, or a check the pool had no room for, costs nothing
                self._budgets.give_back(addr, time.monotonic())
            if ok is None:
                self.refused += 1
        return bool(ok)

    def _bcrypt(self, user: str, password: str) -> bool | None:
        """The check's result, or None when the pool had no room within POOL_WAIT_S (nothing known:
        never cached as a failure, so good credentials are not remembered as wrong)."""
        import bcrypt

        if not self._pool.acquire(timeout=POOL_WAIT_S):
            return None
        try:
            hashed = self.users.get(user)
            return bcrypt.checkpw(password.encode(), hashed or self._dummy) and hashed is not None
        except ValueError:  # e.g. a password longer than bcrypt's 72 bytes
            return False
        finally:
            self._pool.release()


def _credentials(header: str | None) -> tuple[str, str] | None:
    scheme, _, credentials = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":  # RFC 7617: the scheme is case-insensitive
        return None
    try:
        user, _, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def _dummy_hash(users: dict[str, bytes]) -> bytes:
    """A hash of a random password at the highest cost among the users' hashes (bounded at load)."""
    if not users:
        return b""
    import bcrypt

    cost = max(bcrypt_cost(h.decode()) for h in users.values())
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))
