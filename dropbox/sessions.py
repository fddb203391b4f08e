"""Server-side sessions held only in memory, CSRF tokens, and login rate limits.

A session is what a browser's cookie points at: its CSRF token, the chosen language, a codename
issued but not yet confirmed, and, once a source has logged in, the source id and the reply
identity derived from the codename. Nothing here is ever written to disk: a restart logs every
source out, and a session idle for longer than the timeout is dropped with its reply identity.

Everything takes the current time as an argument (`now`, seconds on a monotonic clock), so the
logic is tested by feeding times rather than by sleeping.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from keys.age import X25519Identity
from keys.codename import Argon2Profile, SourceKeys, derive_source_keys, normalize_codename

COOKIE_NAME = "amanat_session"
CSRF_FIELD = "csrf_token"


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


@dataclass
class Session:
    """One browser's server-side state. `reply_identity` is secret: never log or persist it."""

    key: str
    csrf_token: str
    last_seen: float
    login_bucket: TokenBucket
    locale: str | None = None
    pending_codename: str | None = field(default=None, repr=False)
    source_id: str | None = None
    reply_identity: X25519Identity | None = field(default=None, repr=False)

    @property
    def logged_in(self) -> bool:
        return self.source_id is not None and self.reply_identity is not None

    def check_csrf(self, token: str | None) -> bool:
        """Constant-time comparison with this session's token."""
        if not token:
            return False
        return hmac.compare_digest(token.encode("utf-8"), self.csrf_token.encode("ascii"))

    def log_in(self, source_id: str, reply_identity: X25519Identity) -> None:
        self.pending_codename = None
        self.source_id = source_id
        self.reply_identity = reply_identity
        # A new privilege level gets a new CSRF token (a token seen before login stays useless).
        self.csrf_token = secrets.token_urlsafe(32)

    def forget_secrets(self) -> None:
        self.pending_codename = None
        self.source_id = None
        self.reply_identity = None


class SessionStore:
    """Sessions by cookie value, least recently used first; bounded in count and idle time."""

    def __init__(
        self, idle_timeout: float, max_sessions: int, login_attempts_per_minute: int
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self.login_attempts_per_minute = login_attempts_per_minute
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

    def create(self, now: float) -> Session:
        """A new session; the oldest one is evicted when the store is full."""
        self.expire(now)
        while len(self._sessions) >= self.max_sessions:
            _, oldest = self._sessions.popitem(last=False)
            oldest.forget_secrets()
        session = Session(
            key=secrets.token_urlsafe(32),
            csrf_token=secrets.token_urlsafe(32),
            last_seen=now,
            login_bucket=TokenBucket(self.login_attempts_per_minute, 60.0, updated=now),
        )
        self._sessions[session.key] = session
        return session

    def rotate(self, session: Session) -> None:
        """Give `session` a new cookie value (at login), so a value known before is useless."""
        self._sessions.pop(session.key, None)
        session.key = secrets.token_urlsafe(32)
        self._sessions[session.key] = session

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
    """Codename attempts (logins and confirmations, each costing one Argon2id run), limited per
    session and for the whole service, so a flood of guesses can neither brute-force codenames
    quickly nor keep the Argon2 workers busy forever."""

    def __init__(self, global_per_minute: int) -> None:
        self._global = TokenBucket(global_per_minute, 60.0)

    def allow(self, session: Session, now: float) -> bool:
        # The session bucket is checked first so one noisy session cannot drain the global one.
        return session.login_bucket.take(now) and self._global.take(now)


class KeyDeriver:
    """Runs codename derivations (Argon2id: seconds of CPU and 64 MiB each) in a small thread
    pool behind a semaphore, so at most `max_concurrent` run at once and the event loop keeps
    serving pages meanwhile."""

    def __init__(self, salt: bytes, profile: Argon2Profile, max_concurrent: int) -> None:
        self._salt = salt
        self._profile = profile
        self._executor = ThreadPoolExecutor(max_workers=max_concurrent,
                                            thread_name_prefix="amanat-argon2")
        self._semaphore = asyncio.Semaphore(max_concurrent)

    async def derive(self, codename: str) -> SourceKeys:
        """Raises CodenameError for a codename that cannot be one."""
        normalize_codename(codename)  # cheap check first: no Argon2 run for garbage
        async with self._semaphore:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, derive_source_keys, codename, self._salt, self._profile
            )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
