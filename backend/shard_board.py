"""The board of a round's feature shards in Redis: its plan, each shard's items, the claims on
them (atomic Lua scripts), each claim's lease and the shards' results.

Every key of a board lives under ``al:feature-shards:<board id>:`` and expires with its plan. A
claim is a key with a lease that its holder's thread renews (``_leased``); when a worker dies its
claim lapses and the shard can be claimed again. How a round uses the board:
backend/feature_shards.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

from redis import Redis

log = logging.getLogger(__name__)
BOARD_PREFIX = "al:feature-shards"
Items = list[tuple[int, str]]


class ShardLost(RuntimeError):
    """This worker's claim on a shard lapsed (another worker holds it now) or the board is gone."""


def split_into_shards(items: Items, shard_images: int) -> list[Items]:
    """Consecutive shards of at most ``shard_images`` items: each item in exactly one shard."""
    if shard_images < 1:
        raise ValueError(f"shard_images must be >= 1, got {shard_images}")
    return [items[start : start + shard_images] for start in range(0, len(items), shard_images)]


def worker_token(role: str) -> str:
    """Who holds a claim, for the board and the logs: role, host, process, a random suffix."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# KEYS: none (every key is under the board's prefix, ARGV[1]). The board's other keys expire with
# its plan: each write copies the plan's remaining lifetime.
_CLAIM = """
local prefix, n, token, lease = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local ttl = redis.call('pttl', prefix .. ':plan')
if ttl <= 0 then return -2 end
for i = 0, n - 1 do
  if redis.call('hexists', prefix .. ':done', i) == 0 then
    if redis.call('set', prefix .. ':claim:' .. i, token, 'NX', 'PX', lease) then
      redis.call('hincrby', prefix .. ':claims', i, 1)
      redis.call('hset', prefix .. ':claimed_by', i, token)
      redis.call('pexpire', prefix .. ':claims', ttl)
      redis.call('pexpire', prefix .. ':claimed_by', ttl)
      return i
    end
  end
end
return -1
"""
_RENEW = """
if redis.call('get', ARGV[1] .. ':claim:' .. ARGV[2]) == ARGV[3] then
  return redis.call('pexpire', ARGV[1] .. ':claim:' .. ARGV[2], ARGV[4])
end
return 0
"""
_FINISH = """
local prefix, i, token, record = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl = redis.call('pttl', prefix .. ':plan')
if ttl <= 0 then return 0 end
local first = redis.call('hsetnx', prefix .. ':done', i, record)
redis.call('pexpire', prefix .. ':done', ttl)
if redis.call('get', prefix .. ':claim:' .. i) == token then
  redis.call('del', prefix .. ':claim:' .. i)
end
return first
"""


class ShardBoard:
    """One round's shards in Redis: the plan, each shard's items, claims, progress, results."""

    def __init__(self, conn: Redis, board_id: str):
        self.conn = conn
        self.board_id = board_id
        self.prefix = f"{BOARD_PREFIX}:{board_id}"
        self._claim = conn.register_script(_CLAIM)
        self._renew = conn.register_script(_RENEW)
        self._finish = conn.register_script(_FINISH)

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    @classmethod
    def publish(cls, conn: Redis, plan: dict, shards: list[Items], ttl_s: int) -> ShardBoard:
        """A new board holding ``shards`` and ``plan``; every key of it expires after ``ttl_s``
        (the round job's timeout) should the round die without removing it."""
        board = cls(conn, uuid.uuid4().hex)
        with conn.pipeline() as pipe:
            pipe.hset(
                board.key("items"), mapping={str(i): json.dumps(shard) for i, shard in enumerate(shards)}
            )
            pipe.expire(board.key("items"), ttl_s)
            pipe.set(board.key("plan"), json.dumps({**plan, "shards": len(shards)}), ex=ttl_s)
            pipe.execute()
        return board

    def plan(self) -> dict | None:
        raw = self.conn.get(self.key("plan"))
        return json.loads(raw) if raw is not None else None

    def items(self, index: int) -> Items:
        raw = self.conn.hget(self.key("items"), str(index))
        if raw is None:
            raise ShardLost(f"feature shard board {self.board_id} is gone")
        return [(int(tid), str(url)) for tid, url in json.loads(raw)]

    def claim(self, n_shards: int, token: str, lease_s: float) -> int:
        """The index of the shard this worker now holds; -1: every shard is done or held by
        someone; -2: the board is gone (the round ended)."""
        return int(self._claim(args=[self.prefix, n_shards, token, int(lease_s * 1000)]))

    def renew(self, index: int, token: str, lease_s: float) -> bool:
        return bool(self._renew(args=[self.prefix, index, token, int(lease_s * 1000)]))

    def record_progress(self, index: int, images: int) -> None:
        with self.conn.pipeline() as pipe:
            pipe.hset(self.key("progress"), str(index), images)
            pipe.expire(self.key("progress"), max(int(self.conn.ttl(self.key("plan"))), 1))
            pipe.execute()

    def finish(self, index: int, token: str, extracted: int, failed: dict[int, str]) -> bool:
        """Mark the shard done (its failures first, so whoever sees it done sees them); False
        when another worker had already finished it or the board is gone."""
        if failed:
            with self.conn.pipeline() as pipe:
                pipe.hset(self.key("failed"), mapping={str(k): v for k, v in failed.items()})
                pipe.expire(self.key("failed"), max(int(self.conn.ttl(self.key("plan"))), 1))
                pipe.execute()
        record = json.dumps(
            {"by": token, "extracted": extracted, "failed": len(failed), "finished_ts": time.time()}
        )
        return bool(self._finish(args=[self.prefix, index, token, record]))

    def done(self) -> dict[int, dict]:
        return {int(k): json.loads(v) for k, v in self.conn.hgetall(self.key("done")).items()}

    def claims(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.conn.hgetall(self.key("claims")).items()}

    def images_done(self) -> int:
        return sum(int(v) for v in self.conn.hvals(self.key("progress")))

    def failed(self) -> dict[int, str]:
        return {int(k): v.decode() for k, v in self.conn.hgetall(self.key("failed")).items()}

    def remove(self, n_shards: int) -> None:
        names = ["plan", "items", "claims", "claimed_by", "done", "failed", "progress"]
        self.conn.delete(
            *[self.key(name) for name in names], *[self.key(f"claim:{i}") for i in range(n_shards)]
        )


class _LeaseKeeper(threading.Thread):
    """Renews a shard's claim every third of its lease while this worker extracts it; ``lost``
    is set when the claim is no longer this worker's (it lapsed and another took it)."""

    def __init__(self, board: ShardBoard, index: int, token: str, lease_s: float):
        super().__init__(daemon=True, name=f"shard-lease-{index}")
        self.board, self.index, self.token, self.lease_s = board, index, token, lease_s
        self.stopped = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lease_s / 3):
            try:
                if not self.board.renew(self.index, self.token, self.lease_s):
                    self.lost.set()
                    return
            except Exception as exc:  # Redis blip: the next renewal retries within the lease
                log.warning("feature shard %s: lease renewal failed: %s", self.index, exc)


@contextlib.contextmanager
def _leased(board: ShardBoard, index: int, token: str, lease_s: float) -> Iterator[_LeaseKeeper]:
    keeper = _LeaseKeeper(board, index, token, lease_s)
    keeper.start()
    try:
        yield keeper
    finally:
        keeper.stopped.set()
