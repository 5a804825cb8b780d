"""The Label Studio client's transport: which calls urllib3 retries and when (``retry_policy``),
the sessions that carry those policies, and the messages of calls that failed."""

from __future__ import annotations

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# Methods whose repetition changes nothing more than their first success did, so a lost answer
# (read timeout) or a 5xx may be retried blindly. POST creates (predictions, tabs) and is not here:
# a POST is repeated only when Label Studio surely did not act on it (connection refused, 429).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})


class CappedRetry(Retry):
    """urllib3's Retry (backoff, Retry-After on 429/503) with a ceiling on the Retry-After wait,
    so a server asking for an hour cannot park a worker for an hour."""

    def __init__(
        self,
        *args,
        retry_after_max_s: float = 60.0,
        retry_after_statuses: frozenset = Retry.RETRY_AFTER_STATUS_CODES,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.retry_after_max_s = retry_after_max_s
        # urllib3 also retries any method on these statuses when they carry Retry-After
        self.RETRY_AFTER_STATUS_CODES = retry_after_statuses

    def new(self, **kwargs) -> CappedRetry:
        retry = super().new(**kwargs)
        retry.retry_after_max_s = self.retry_after_max_s
        retry.RETRY_AFTER_STATUS_CODES = self.RETRY_AFTER_STATUS_CODES
        return retry

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.retry_after_max_s)


def retry_policy(
    retries: int, backoff_s: float, retry_after_max_s: float, *, idempotent: bool
) -> CappedRetry:
    """The retry policy of one kind of call.

    Idempotent calls are retried after connection errors, read errors and RETRY_STATUS. A
    creating call only after a connection error (nothing was sent) or a 429 (refused before any
    work); after a read error or a 5xx the caller must first look at what exists.
    """
    return CappedRetry(
        total=retries,
        connect=retries,
        status=retries,
        other=0,
        read=retries if idempotent else False,
        status_forcelist=RETRY_STATUS if idempotent else frozenset({429}),
        allowed_methods=IDEMPOTENT_METHODS if idempotent else None,  # None: any method
        backoff_factor=backoff_s,
        backoff_max=10.0,
        respect_retry_after_header=True,
        raise_on_status=False,  # the last response comes back and becomes a LabelStudioError
        redirect=False,
        retry_after_max_s=retry_after_max_s,
        # a 503 may come after the work was done, Retry-After or not; a 429 never does
        retry_after_statuses=Retry.RETRY_AFTER_STATUS_CODES if idempotent else frozenset({429}),
    )


def session_with(retry: Retry, trust_env: bool) -> requests.Session:
    session = requests.Session()
    session.trust_env = trust_env
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def attempts(response: requests.Response) -> int:
    """How many times urllib3 sent the request that ended in ``response``."""
    retries = getattr(response.raw, "retries", None)
    return len(getattr(retries, "history", ())) + 1


def failure_message(
    method: str, path: str, base_url: str, exc: requests.RequestException, retries: int
) -> str:
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(exc, requests.ConnectTimeout) or isinstance(reason, urllib3.exceptions.NewConnectionError):
        # nothing was sent: urllib3 retried the connection `retries` times
        return (
            f"{method} {path}: Label Studio at {base_url} unreachable after {retries + 1} "
            f"attempt(s) ({type(exc).__name__})"
        )
    return f"{method} {path}: no answer from Label Studio at {base_url} ({type(exc).__name__})"
