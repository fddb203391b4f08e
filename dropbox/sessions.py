"""Server-side sessions of logged-in sources (held only in memory), per-visitor login limits,
and bounded, fair Argon2id.

A session exists only once a source has logged in or confirmed a new codename (each of which cost
an Argon2id run): it holds the source id, the reply identity derived from the codename and the
CSRF token of the logged-in pages (and, in memory only, the receipt key, the codename if it was
issued in this session, and the single-use tokens of its submit forms). Visitors who have done
nothing else get no server-side state: their forms carry signed tokens (form_tokens.py), their
language is a cookie of its own, and their pending codename travels in a sealed cookie and the
start form's token. So page floods cannot evict a logged-in source
or lose a pending codename. Login limits per visitor live in their own bounded pool
(`LoginLimiter`), which a flood can churn without touching the sessions.

Nothing here is ever written to disk: a restart logs every source out, and a session idle for
longer than the timeout is dropped with its reply identity. On the nodes of a cluster
(cluster.py) the session also travels sealed in a cookie, so that any node can open it; the
`SessionStore` of each node then only holds what that node opened, as a cache.

Everything takes the current time as an argument (`now`, seconds on a monotonic clock), so the
logic is tested by feeding times rather than by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import re
import secrets
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dropbox.fair_queue import FairQueue, Rank
from keys.age import X25519Identity
from keys.codename import Argon2Profile, SourceKeys, derive_source_keys, normalize_codename
from keys.errors import BusyError

COOKIE_NAME = "amanat_session"
CSRF_FIELD = "csrf_token"
# A codename attempt whose form was loaded at least this long ago has proven some patience: it
# waits before the attempts of fresh forms (a flood of fresh sessions queues behind itself).
FORM_PROOF_SECONDS = 3.0
ARGON2_MAX_WAIT_SECONDS = 60.0
ARGON2_NICE = 10  # below the event loop: pages answer at once while derivations queue


@dataclass
class TokenBucket:
    """`capacity` tokens, refilled continuously at `capacity` per `period` seconds."""

    capacity: float
    period: float
    tokens: float = -1.0
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means "too many, wait"."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.capacity / self.period)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass(frozen=True)
class Received:
    """What one submit form brought: the submission it created, for the page that says so."""

    submission_id: str
    files: int
    message: bool


class SubmitOnce:
    """The submit forms of one session: each form carries a single-use token, and a token
    creates at most one submission. A replayed or double-clicked POST waits for the first one
    with its token, then lands on the same "received" page (or, if the first failed, is the one
    that counts). Bounded: only the last `remember` tokens are kept."""

    TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")

    def __init__(self, remember: int = 32) -> None:
        self.remember = remember
        self._done: OrderedDict[str, Received] = OrderedDict()
        self._running: dict[str, asyncio.Event] = {}

    @staticmethod
    def issue() -> str:
        return secrets.token_urlsafe(16)

    def done(self, token: str | None) -> Received | None:
        """What the form with `token` created; without a known token, the latest."""
        if token is not None and token in self._done:
            return self._done[token]
        return next(reversed(self._done.values()), None) if token is None else None

    async def wait(self, token: str, timeout: float) -> Received | None:
        """Wait while another request with `token` runs (TimeoutError after `timeout`); then
        what it created, or None if nothing was created with it yet."""
        while (running := self._running.get(token)) is not None:
            async with asyncio.timeout(timeout):
                await running.wait()
        return self._done.get(token)

    @contextlib.contextmanager
    def running(self, token: str) -> Iterator[None]:
        """Mark `token` as in use (call right after `wait`, with no await in between)."""
        event = self._running[token] = asyncio.Event()
        try:
            yield
        finally:
            del self._running[token]
            event.set()

    def record(self, token: str, received: Received) -> None:
        self._done[token] = received
        self._done.move_to_end(token)
        while len(self._done) > self.remember:
            self._done.popitem(last=False)


@dataclass
class Session:
    """One browser's server-side state. `reply_identity`, `receipt_key` and `codename` are
    secret: never log or persist them."""

    key: str
    csrf_token: str
    last_seen: float
    source_id: str | None = None
    reply_identity: X25519Identity | None = field(default=None, repr=False)
    receipt_key: bytes | None = field(default=None, repr=False)
    # Only in the session that confirmed a new codename, to show it again (never after a login).
    codename: str | None = field(default=None, repr=False)
    submits: SubmitOnce = field(default_factory=SubmitOnce, repr=False)
    epoch: str = ""  # on a cluster node: the source's session epoch at login (cluster.py)

    @property
    def logged_in(self) -> bool:
        return self.source_id is not None and self.reply_identity is not None

    def check_csrf(self, token: str | None) -> bool:
        """Constant-time comparison with this session's token."""
        if not token:
            return False
        return hmac.compare_digest(token.encode("utf-8"), self.csrf_token.encode("ascii"))

    def log_in(self, source_id: str, keys: SourceKeys, codename: str | None = None) -> None:
        self.source_id = source_id
        self.reply_identity = keys.reply_identity
        self.receipt_key = keys.receipt_key
        self.codename = codename
        # A new privilege level gets a new CSRF token (a token seen before login stays useless).
        self.csrf_token = secrets.token_urlsafe(32)

    def forget_secrets(self) -> None:
        self.source_id = None
        self.reply_identity = None
        self.receipt_key = None
        self.codename = None


class SessionStore:
    """Logged-in sessions by cookie value, least recently used first; bounded in count and idle
    time. Only a login or a confirmed codename (an Argon2id run each) adds one, so the pool fills
    no faster than the Argon2id queue serves, never from page loads."""

    def __init__(self, idle_timeout: float, max_sessions: int) -> None:
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, key: str | None, now: float) -> Session | None:
        """The live session for a cookie value, refreshed; None if unknown or expired."""
        if not key:
            return None
        session = self._sessions.get(key)
        if session is None:
            return None
        if now - session.last_seen > self.idle_timeout:
            self.drop(key)
            return None
        session.last_seen = now
        self._sessions.move_to_end(key)
        return session

    def create(self, now: float, key: str | None = None) -> Session:
        """A new session (under `key`: one a cluster node opened from its sealed cookie); the
        oldest one is evicted when the store is full."""
        self.expire(now)
        if key is not None:
            self.drop(key)
        while len(self._sessions) >= self.max_sessions:
            _, oldest = self._sessions.popitem(last=False)
            oldest.forget_secrets()
        session = Session(
            key=key or secrets.token_urlsafe(32),
            csrf_token=secrets.token_urlsafe(32),
            last_seen=now,
        )
        self._sessions[session.key] = session
        return session

    def drop(self, key: str) -> None:
        """End a session (logout, timeout): its reply identity is gone from memory with it."""
        session = self._sessions.pop(key, None)
        if session is not None:
            session.forget_secrets()

    def expire(self, now: float) -> int:
        """Drop every session idle for longer than the timeout; returns how many."""
        expired = 0
        while self._sessions:
            key, oldest = next(iter(self._sessions.items()))
            if now - oldest.last_seen <= self.idle_timeout:
                break
            self.drop(key)
            expired += 1
        return expired


class LoginLimiter:
    """Codename attempts (logins and confirmations) per visitor, keyed by the visitor's cookie.

    Its own bounded pool of token buckets, apart from the sessions: a flood of fresh cookies can
    only churn this pool (resetting some visitor's count), never evict a logged-in source. It
    slows a guesser who keeps one cookie; one who changes cookies is the fair queue's job.

    On one of `nodes` cluster nodes (cluster.py) each allows its share, `per_minute / nodes`
    (at least one attempt at once): a visitor whose attempts spread over every node gets no more
    than from one node alone."""

    def __init__(self, per_minute: int, max_clients: int, nodes: int = 1) -> None:
        self.per_minute = per_minute / nodes
        self.capacity = max(1.0, self.per_minute)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, client: str, now: float) -> bool:
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            bucket = TokenBucket(self.capacity, 60.0 * self.capacity / self.per_minute,
                                 updated=now)
            while len(self._buckets) >= self.max_clients:
                self._buckets.popitem(last=False)
        self._buckets[client] = bucket
        return bucket.take(now)

    def expire(self, now: float) -> int:
        """Forget buckets untouched long enough to be full again, as good as new."""
        expired = 0
        while self._buckets:
            client, oldest = next(iter(self._buckets.items()))
            if now - oldest.updated < oldest.period:
                break
            del self._buckets[client]
            expired += 1
        return expired


class KeyDeriver:
    """Runs codename derivations (Argon2id: a second of CPU and 64 MiB each) in a small thread
    pool at a lower CPU priority than the event loop, behind a bounded fair queue: at most
    `max_concurrent` run at once (one of them kept for proven forms), at most `max_waiting` wait,
    proven forms first."""

    def __init__(self, salt: bytes, profile: Argon2Profile, max_concurrent: int,
                 max_waiting: int, proof_seconds: float = FORM_PROOF_SECONDS,
                 max_wait: float = ARGON2_MAX_WAIT_SECONDS) -> None:
        self._salt = salt
        self._profile = profile
        self._proof_seconds = proof_seconds
        self._executor = ThreadPoolExecutor(max_workers=max_concurrent,
                                            thread_name_prefix="amanat-argon2",
                                            initializer=_lower_priority)
        # With two workers or more, one is kept for proven attempts: a real source waits for no
        # fresh-form derivation already running.
        self.queue = FairQueue(max_concurrent, max_waiting, max_wait,
                               reserved=1 if max_concurrent > 1 else 0)

    def rank(self, form_issued: float, now: float) -> Rank:
        """Forms loaded a while ago (proven) before fresh ones; then the oldest form first."""
        return (0 if now - form_issued >= self._proof_seconds else 1, form_issued)

    async def derive(self, codename: str, rank: Rank,
                     still_wanted: Callable[[], bool] = lambda: True) -> SourceKeys:
        """Raises CodenameError for a codename that cannot be one (at once, no Argon2 run) and
        BusyError when the queue is full, the wait too long, or the client gone meanwhile."""
        normalize_codename(codename)  # cheap check first: no Argon2 run for garbage
        async with self.queue.slot(rank):
            if not still_wanted():
                raise BusyError("the client left while waiting")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, derive_source_keys, codename, self._salt, self._profile
            )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _lower_priority() -> None:
    """Lower this Argon2 worker thread's CPU priority (on Linux a thread has its own nice value,
    and the threads libargon2 starts inherit it); elsewhere do nothing."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ARGON2_NICE)
