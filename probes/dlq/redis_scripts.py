"""The Lua scripts that move dead letters inside Redis, one call per batch, and how their input is packed.

Why scripts and not MULTI/EXEC: a transaction does not stop at a failed command (an XADD to a key of the wrong
type fails, and the XDEL queued after it still runs: the message is gone). A script checks each destination's
type, writes each message (``redis.pcall``: a refused write is that message's error, nothing else), and only after
the write succeeded takes the message out of its source; when the source no longer holds it, the write is undone.
A script is one command to Redis: the batch happens whole, nothing runs between its steps, and nothing is written
twice or lost whatever the client does next (a kill, a lost connection).

A batch travels as one argument, the last: its tokens as one MessagePack array of strings, which Redis's Lua
unpacks in C (``cmsgpack``, in every Redis with streams), so redis-py packs a few arguments per batch instead of a
dozen per message, and the script reads them without slicing strings itself.
"""

from __future__ import annotations

from collections.abc import Sequence

TOKEN_READER = """
local items, k = cmsgpack.unpack(ARGV[#ARGV]), 1
local function token()
  local t = items[k]
  k = k + 1
  return t
end
"""

MOVE_LUA = """
-- KEYS[1]: the source; KEYS[2..]: destinations. ARGV[1]: how the source gives a message up (x: XDEL its id,
-- L: LREM one equal value from the head, R: from the tail, n: nothing, an import). The tokens, per message: the
-- destination's index in KEYS, how it is written (x: XADD *, l: LPUSH, r: RPUSH), the message's handle in the
-- source (an entry id or the value), a count n and n values (field, value, ... for XADD; the value to push).
-- Returns per message '' (written, and out of the source), 'GONE', 'WRONGTYPE <type>' or Redis's error text.
-- It runs for every message: the tokens are read in place (no table per message) and the calls kept local.
local items = cmsgpack.unpack(ARGV[#ARGV])
local src, how = KEYS[1], ARGV[1]
local rcall, rpcall = redis.call, redis.pcall
local types, out, m, k, last = {}, {}, 0, 1, #items
while k <= last do
  local d, put, handle, n = tonumber(items[k]), items[k + 1], items[k + 2], tonumber(items[k + 3])
  local first = k + 4
  k = first + n
  local dst = KEYS[d]
  local want = 'list'
  if put == 'x' then want = 'stream' end
  local t = types[d]
  if t == nil then
    t = rcall('TYPE', dst)['ok']
    types[d] = t
  end
  m = m + 1
  if t ~= want and t ~= 'none' then
    out[m] = 'WRONGTYPE ' .. t
  else
    local r
    if put == 'x' then r = rpcall('XADD', dst, '*', unpack(items, first, k - 1))
    elseif put == 'l' then r = rpcall('LPUSH', dst, items[first])
    else r = rpcall('RPUSH', dst, items[first]) end
    if type(r) == 'table' and r['err'] then
      out[m] = r['err']
    else
      types[d] = want
      local gone = 1
      if how == 'x' then gone = rpcall('XDEL', src, handle)
      elseif how == 'L' then gone = rpcall('LREM', src, 1, handle)
      elseif how == 'R' then gone = rpcall('LREM', src, -1, handle) end
      if gone ~= 1 then
        if put == 'x' then rcall('XDEL', dst, r)
        elseif put == 'l' then rcall('LPOP', dst)
        else rcall('RPOP', dst) end
        if type(gone) == 'table' and gone['err'] then out[m] = gone['err'] else out[m] = 'GONE' end
      else
        out[m] = ''
      end
    end
  end
end
return out
"""

REQUEUE_LUA = TOKEN_READER + """
-- RQ's FailedJobRegistry.requeue. KEYS[1]: the failed registry. ARGV[1..4]: RQ's key prefix, now (RQ's time
-- format), RQ's empty exc_info and the default timeout; the tokens, per job: its id, the queue, a count n and n
-- values (qdeck's fields: name, value, ...). Returns per job '' (requeued), 'GONE' (not in the registry now),
-- 'NOJOB' (no job hash) or 'WRONGTYPE <type>' (the queue's key).
local reg, prefix, now, noexc, timeout = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {}
while k <= #items do
  local id, queue, n = token(), token(), tonumber(token())
  local values = {}
  for j = 1, n do values[j] = token() end
  local job = prefix .. ':job:' .. id
  local qkey = prefix .. ':queue:' .. queue
  local qtype = redis.call('TYPE', qkey)['ok']
  if not redis.call('ZSCORE', reg, id) then
    out[#out + 1] = 'GONE'
  elseif redis.call('EXISTS', job) == 0 then
    out[#out + 1] = 'NOJOB'
  elseif qtype ~= 'list' and qtype ~= 'none' then
    out[#out + 1] = 'WRONGTYPE ' .. qtype
  else
    local r = redis.pcall('HSET', job, 'status', 'queued', 'started_at', '', 'ended_at', '', 'exc_info', noexc,
                          'enqueued_at', now, 'origin', queue, unpack(values))
    if type(r) == 'table' and r['err'] then
      out[#out + 1] = r['err']
    else
      redis.call('HSETNX', job, 'timeout', timeout)
      local ttl = redis.call('HGET', job, 'ttl')
      ttl = ttl and tonumber(ttl)
      if ttl and ttl > 0 then
        ttl = math.floor(ttl)
        redis.call('EXPIRE', job, ttl)
        redis.call('EXPIRE', job .. ':dependents', ttl)
        redis.call('EXPIRE', job .. ':dependencies', ttl)
      end
      redis.call('RPUSH', qkey, id)
      redis.call('SADD', prefix .. ':queues', qkey)
      redis.call('ZREM', reg, id)
      out[#out + 1] = ''
    end
  end
end
return out
"""


_HEADS = [bytes([0xA0 | n]) for n in range(32)] + [b"\xd9" + bytes([n]) for n in range(32, 256)]


def tokens(items: Sequence[bytes]) -> bytes:
    """Items as the scripts' ``token()`` reads them: a MessagePack array (array 32) of strings (fixstr, str 8,
    str 16, str 32: byte strings to Lua)."""
    parts = [b"\xdd" + len(items).to_bytes(4, "big")]
    heads = _HEADS
    for item in items:
        n = len(item)
        if n < 256:
            parts.append(heads[n])
        elif n < 65536:
            parts.append(b"\xda" + n.to_bytes(2, "big"))
        else:
            parts.append(b"\xdb" + n.to_bytes(4, "big"))
        parts.append(item)
    return b"".join(parts)
