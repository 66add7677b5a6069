"""
The Lua scripts of the Redis session map's shared sessions.

Every update that must not race with another node's runs as one script, so
Redis applies it atomically: claiming an attachment, taking a session over
from a dead node, and every write of the node that pumps a session, which
is fenced by the session's epoch (a write carrying an older epoch than the
record's is refused, and the writer learns that it no longer owns the
session).

Keys (C{P} is the key prefix): C{P s:{sid}} (a hash, the session's
record), C{P s:{sid}:up} and C{P s:{sid}:down} (streams, the two
mailboxes; entry C{0-n} is message C{n}).  Channels: C{P node:{id}}, one
per gateway node.  A node is alive while C{P alive:{id}} exists.

Notifications published to a node's channel are C{kind|sid|...}:

  - C{d|sid|seq|binary|payload}: message C{seq} from the backend, for the
    node the client is attached to;
  - C{u|sid|seq|binary|payload}: message C{seq} from the client, for the
    owner;
  - C{a|sid|count}: the client has received C{count} messages (to the
    owner);
  - C{t|sid|node|n}: the client is now attached to C{node}, the C{n}th
    attachment (a node ignores news older than an attachment it made);
  - C{x|sid|node}: the client left C{node} (to the owner);
  - C{c|sid|code|reason}: the backend closed (to the attached node);
  - C{e|sid|code|reason}: the session ended (to the attached node);
  - C{k|sid}: the client closed the session (to the owner);
  - C{r|sid}: answer your held poll now (an upgrade's probe);
  - C{p|nonce}: a node's check of its own subscription.

An ended session leaves C{P s:{sid}:ended} (C{code|reason}, what a later
resume of it hears) for the session's key lifetime, so that a resume on
any node hears "expired" rather than "unknown" (C{attach} and C{takeover}
answer C{{'ended', tombstone}}).

Notifications are hints: the record and the mailboxes are the truth, and a
node that misses one (its subscription was down) reads the mailboxes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

__all__ = ["BATCH", "Script", "SCRIPTS", "BY_SHA", "FENCED", "GAP", "GONE"]

#: A fenced write's answer: the record's epoch is not the writer's.
FENCED = -1
#: An append's answer when the message does not follow the last one.
GAP = -2
#: The session's record does not exist (ended, or expired).
GONE = -3


@dataclass(frozen=True)
class Script:
    """
    A Lua script, run with C{EVALSHA} (and C{EVAL} once after a Redis
    restart emptied the script cache).
    """

    name: str
    text: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode("utf-8")).hexdigest())


# Shared by the scripts that write a session's mailboxes.  The keys' expiry
# is refreshed only when the writer asks (REFRESH '1': its last refresh is
# older than a third of the keys' lifetime TTL, or in doubt; '' otherwise,
# and the keys keep theirs).  A mailbox is made by its first entry: made by
# a write that does not refresh (its first XADD, told not to make one,
# made none), it gets the keys' lifetime at once, so that no key of a
# session ever lives without an expiry, and no mailbox expires before its
# record.
_EXPIRE = """
local function expire(refresh, ttl)
  if refresh == '' then return end
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl) end
end
local known = {}
local function append(key, refresh, ttl, seq, binary, payload)
  local id = '0-' .. seq
  if refresh ~= '' or known[key] then
    redis.call('XADD', key, id, 'b', binary, 'p', payload)
    return
  end
  known[key] = true
  if not redis.call('XADD', key, 'NOMKSTREAM', id, 'b', binary, 'p', payload) then
    redis.call('XADD', key, id, 'b', binary, 'p', payload)
    redis.call('PEXPIRE', key, ttl)
  end
end
"""

_CREATE = """
-- KEYS: record, up, down.  ARGV: ttl, field, value, ...
-- The record, written in one HSET, with its expiry; its mailboxes emptied
-- (deleted: see append).
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

_DOWN = _EXPIRE + """
-- KEYS: record, up, down.
-- ARGV: epoch, ttl, prefix, sid, me, acked ('' or the count of backend
-- messages the client has received, folded in: as the acked script, for
-- a client on the owner), delivered ('' or the count of client messages
-- the backend has confirmed: upFwd, the up mailbox trimmed to it, as the
-- forwarded script does), refresh ('1' or '': see expire), then seq,
-- binary, payload of each backend message, in order.  Each is sent to the
-- node the client is on, if not the owner.  The record's fields that
-- change are written in one HSET.
local f = redis.call('HMGET', KEYS[1], 'epoch', 'attached', 'downAcked', 'downSent', 'upFwd')
if f[1] == false then return -3 end
if f[1] ~= ARGV[1] then return -1 end
local att = f[2]
local notify = att and att ~= '' and att ~= ARGV[5]
local sent = tonumber(f[4])
for i = 9, #ARGV, 3 do
  append(KEYS[3], ARGV[8], ARGV[2], ARGV[i], ARGV[i + 1], ARGV[i + 2])
  if notify then
    redis.call('PUBLISH', ARGV[3] .. 'node:' .. att,
               'd|' .. ARGV[4] .. '|' .. ARGV[i] .. '|' .. ARGV[i + 1] .. '|' .. ARGV[i + 2])
  end
  sent = tonumber(ARGV[i])
end
local set = {}
if sent ~= tonumber(f[4]) then set[#set + 1] = 'downSent'; set[#set + 1] = sent end
local upTo = false
if ARGV[7] ~= '' and tonumber(ARGV[7]) > tonumber(f[5] or 0) then
  upTo = tonumber(ARGV[7])
  set[#set + 1] = 'upFwd'; set[#set + 1] = ARGV[7]
end
local downTo = false
if ARGV[6] ~= '' then
  local count = math.min(tonumber(ARGV[6]), sent)
  if count > tonumber(f[3]) then
    downTo = count
    set[#set + 1] = 'downAcked'; set[#set + 1] = count
  end
end
if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
if upTo then redis.call('XTRIM', KEYS[2], 'MINID', '0-' .. (upTo + 1)) end
if downTo then redis.call('XTRIM', KEYS[3], 'MINID', '0-' .. (downTo + 1)) end
expire(ARGV[8], ARGV[2])
return 1
"""

_UP = _EXPIRE + """
-- KEYS: record, up, down.  ARGV: ttl, prefix, sid, me, acked ('' or the
-- count of backend messages the client has received, folded in: as the
-- acked script), refresh ('1' or '': see expire), then seq, binary,
-- payload for each message, in order.
-- Appends those that follow the last accepted one; returns {status,
-- accepted}: status 1, or -2 when a message is missing before one of them
-- (the rest are not appended).  The record's fields that change are
-- written in one HSET (none for messages all accepted before).
local f = redis.call('HMGET', KEYS[1], 'upRecv', 'owner', 'downAcked', 'downSent')
if f[1] == false then return {-3, 0} end
local recv = tonumber(f[1])
local status = 1
for i = 7, #ARGV, 3 do
  local seq = tonumber(ARGV[i])
  if seq > recv then
    if seq ~= recv + 1 then status = -2; break end
    append(KEYS[2], ARGV[6], ARGV[1], ARGV[i], ARGV[i + 1], ARGV[i + 2])
    redis.call('PUBLISH', ARGV[2] .. 'node:' .. f[2],
               'u|' .. ARGV[3] .. '|' .. ARGV[i] .. '|' .. ARGV[i + 1] .. '|' .. ARGV[i + 2])
    recv = seq
  end
end
local set = {}
if recv > tonumber(f[1]) then set[#set + 1] = 'upRecv'; set[#set + 1] = recv end
local downTo = false
if ARGV[5] ~= '' then
  local count = math.min(tonumber(ARGV[5]), tonumber(f[4]))
  if count > tonumber(f[3]) then
    downTo = count
    set[#set + 1] = 'downAcked'; set[#set + 1] = count
  end
end
if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
if downTo then
  redis.call('XTRIM', KEYS[3], 'MINID', '0-' .. (downTo + 1))
  if f[2] ~= ARGV[4] then
    redis.call('PUBLISH', ARGV[2] .. 'node:' .. f[2], 'a|' .. ARGV[3] .. '|' .. downTo)
  end
end
expire(ARGV[6], ARGV[1])
return {status, recv}
"""

_FORWARDED = _EXPIRE + """
-- KEYS: record, up, down.  ARGV: epoch, count, ttl, delivered, refresh
-- ('1' or '': see expire), then seq, binary, payload of each message the
-- owner accepted itself and its backend has not confirmed, in order.
-- The owner has accepted client messages up to COUNT, and its backend has
-- confirmed those up to DELIVERED: the messages in between stay in the up
-- mailbox (those given are appended after the last one there), so that a
-- takeover hands them to the backend.
local f = redis.call('HMGET', KEYS[1], 'epoch', 'upRecv', 'upFwd')
if f[1] == false then return -3 end
if f[1] ~= ARGV[1] then return -1 end
-- (Those before the first one given that are not in the mailbox are
-- confirmed: no later than DELIVERED.)
local recv = tonumber(f[2])
for i = 6, #ARGV, 3 do
  if tonumber(ARGV[i]) > recv then
    append(KEYS[2], ARGV[5], ARGV[3], ARGV[i], ARGV[i + 1], ARGV[i + 2])
    recv = tonumber(ARGV[i])
  end
end
if recv < tonumber(ARGV[2]) then recv = tonumber(ARGV[2]) end
-- Only what changes is written: the up mailbox holds nothing up to upFwd
-- (trimmed when it was raised), so it is trimmed only when upFwd rises.
local set = {}
if recv > tonumber(f[2]) then set[#set + 1] = 'upRecv'; set[#set + 1] = recv end
local delivered = tonumber(ARGV[4])
local raised = f[3] == false or delivered > tonumber(f[3])
if raised then set[#set + 1] = 'upFwd'; set[#set + 1] = delivered end
if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
if raised then redis.call('XTRIM', KEYS[2], 'MINID', '0-' .. (delivered + 1)) end
expire(ARGV[5], ARGV[3])
return 1
"""

_ACKED = _EXPIRE + """
-- KEYS: record, up, down.  ARGV: count, me, ttl, prefix, sid, refresh
-- ('1' or '': see expire).
-- The client has received COUNT messages.
local f = redis.call('HMGET', KEYS[1], 'downAcked', 'owner', 'downSent')
if f[1] == false then return -3 end
local count = math.min(tonumber(ARGV[1]), tonumber(f[3]))
if count > tonumber(f[1]) then
  redis.call('HSET', KEYS[1], 'downAcked', count)
  redis.call('XTRIM', KEYS[3], 'MINID', '0-' .. (count + 1))
  if f[2] ~= ARGV[2] then
    redis.call('PUBLISH', ARGV[4] .. 'node:' .. f[2], 'a|' .. ARGV[5] .. '|' .. count)
  end
end
expire(ARGV[6], ARGV[3])
return 1
"""

_ATTACH = """
-- KEYS: record.  ARGV: me, kind ('ws' or 'poll'), prefix, sid.
-- Returns {'elsewhere'} when a live node holds it on a WebSocket and this
-- is a poll; {'ended', tombstone} or {'gone'} when there is no record;
-- else {'ok', owner alive (0/1), field, value, ...}.
local f = redis.call('HMGET', KEYS[1], 'attached', 'kind', 'owner')
if f[3] == false then
  local ended = redis.call('GET', KEYS[1] .. ':ended')
  if ended then return {'ended', ended} end
  return {'gone'}
end
local att, kind, owner = f[1], f[2], f[3]
if ARGV[2] == 'poll' and kind == 'ws' and att ~= '' and att ~= ARGV[1]
   and redis.call('EXISTS', ARGV[3] .. 'alive:' .. att) == 1 then
  return {'elsewhere'}
end
redis.call('HSET', KEYS[1], 'attached', ARGV[1], 'kind', ARGV[2])
local n = redis.call('HINCRBY', KEYS[1], 'attachSeq', 1)
local note = 't|' .. ARGV[4] .. '|' .. ARGV[1] .. '|' .. n
if att ~= '' and att ~= ARGV[1] then
  redis.call('PUBLISH', ARGV[3] .. 'node:' .. att, note)
end
if owner ~= ARGV[1] and owner ~= att then
  redis.call('PUBLISH', ARGV[3] .. 'node:' .. owner, note)
end
local alive = redis.call('EXISTS', ARGV[3] .. 'alive:' .. owner)
local reply = {'ok', alive}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do reply[#reply + 1] = all[i] end
return reply
"""

_DETACH = """
-- KEYS: record.  ARGV: me, prefix, sid.
local f = redis.call('HMGET', KEYS[1], 'attached', 'owner')
if f[1] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'attached', '')
if f[2] ~= ARGV[1] then
  redis.call('PUBLISH', ARGV[2] .. 'node:' .. f[2], 'x|' .. ARGV[3] .. '|' .. ARGV[1])
end
return 1
"""

_TAKEOVER = _EXPIRE + """
-- KEYS: record, up, down.  ARGV: me, prefix, ttl.
-- Take the session over if its owner is dead: a new epoch fences the old
-- owner's writes, and the keys' expiry is refreshed (the new owner's
-- writes refresh it from then on).  Returns {'alive', owner} or {'ok',
-- previous owner, field, value, ...}.
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner == false then
  local ended = redis.call('GET', KEYS[1] .. ':ended')
  if ended then return {'ended', ended} end
  return {'gone'}
end
if owner ~= ARGV[1] then
  if redis.call('EXISTS', ARGV[2] .. 'alive:' .. owner) == 1 then return {'alive', owner} end
  redis.call('HINCRBY', KEYS[1], 'epoch', 1)
  redis.call('HSET', KEYS[1], 'owner', ARGV[1])
end
expire('1', ARGV[3])
local reply = {'ok', owner}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do reply[#reply + 1] = all[i] end
return reply
"""

_CLOSING = """
-- KEYS: record.  ARGV: epoch, code, reason, me, prefix, sid.
local f = redis.call('HMGET', KEYS[1], 'epoch', 'attached')
if f[1] == false then return -3 end
if f[1] ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'closing', ARGV[2] .. '|' .. ARGV[3])
if f[2] ~= '' and f[2] ~= ARGV[4] then
  redis.call('PUBLISH', ARGV[5] .. 'node:' .. f[2], 'c|' .. ARGV[6] .. '|' .. ARGV[2] .. '|' .. ARGV[3])
end
return 1
"""

_BACKEND = """
-- KEYS: record.  ARGV: epoch, backend.
local e = redis.call('HGET', KEYS[1], 'epoch')
if e == false then return -3 end
if e ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'backend', ARGV[2])
return 1
"""

_END = """
-- KEYS: record, up, down.  ARGV: epoch, code, reason, me, prefix, sid,
-- then optionally ttl and tombstone ('code|reason': what a later resume
-- hears, kept as RECORD:ended for TTL ms).
-- An epoch of '' ends the session whoever owns it.
local f = redis.call('HMGET', KEYS[1], 'epoch', 'attached')
if f[1] == false then return -3 end
if ARGV[1] ~= '' and f[1] ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if ARGV[8] then redis.call('SET', KEYS[1] .. ':ended', ARGV[8], 'PX', ARGV[7]) end
if f[2] ~= '' and f[2] ~= ARGV[4] then
  redis.call('PUBLISH', ARGV[5] .. 'node:' .. f[2], 'e|' .. ARGV[6] .. '|' .. ARGV[2] .. '|' .. ARGV[3])
end
return 1
"""

_COUNTS = """
-- ARGV: prefix, me, ttl, now, then pool/backend, count, ...
-- Publish this node's connection counts; return every other live node's,
-- as node, pool/backend, count, ...  A node counts while its alive key
-- exists: once it has expired its sessions may be taken over (and are
-- then counted by their new owner), so its counts must not be.
local mine = ARGV[1] .. 'conns:' .. ARGV[2]
redis.call('DEL', mine)
for i = 5, #ARGV, 2 do redis.call('HSET', mine, ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', mine, ARGV[3])
local reply = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', ARGV[1] .. 'nodes', ARGV[4], '+inf')) do
  if node ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. 'alive:' .. node) == 1 then
    local all = redis.call('HGETALL', ARGV[1] .. 'conns:' .. node)
    for i = 1, #all, 2 do
      reply[#reply + 1] = node; reply[#reply + 1] = all[i]; reply[#reply + 1] = all[i + 1]
    end
  end
end
return reply
"""

_REBALANCE = """
-- ARGV: prefix, me, ttl, number of pools wanted, the pools wanted, then
-- the pools to let go.  Each pool's turn to rebalance is the key
-- PREFIX rebalance:POOL, naming the node whose turn it is: taken (or
-- kept) for TTL ms when free or already this node's, deleted when let go
-- (if still this node's).  Returns the pools whose turn is this node's.
local held = {}
local n = tonumber(ARGV[4])
for i = 5, 4 + n do
  local key = ARGV[1] .. 'rebalance:' .. ARGV[i]
  local owner = redis.call('GET', key)
  if owner == false or owner == ARGV[2] then
    redis.call('SET', key, ARGV[2], 'PX', ARGV[3])
    held[#held + 1] = ARGV[i]
  end
end
for i = 5 + n, #ARGV do
  local key = ARGV[1] .. 'rebalance:' .. ARGV[i]
  if redis.call('GET', key) == ARGV[2] then redis.call('DEL', key) end
end
return held
"""

_BEAT = """
-- ARGV: prefix, me, info, ttl, expiry, forget before.  The home shard's
-- heartbeat: this node lives (its alive key, holding INFO, for TTL ms;
-- its entry in the nodes set, scored by when that expires), and nodes
-- whose liveness ended before FORGET are dropped from the set.
redis.call('SET', ARGV[1] .. 'alive:' .. ARGV[2], ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', ARGV[1] .. 'nodes', ARGV[5], ARGV[2])
redis.call('ZREMRANGEBYSCORE', ARGV[1] .. 'nodes', '-inf', ARGV[6])
return 1
"""

_TOUCH = _EXPIRE + """
-- KEYS: record, up, down.  ARGV: ttl.  Keep an idle session's keys.
expire('1', ARGV[1])
return 1
"""

_NOTIFY = """
-- KEYS: record.  ARGV: field naming the node ('owner' or 'attached'),
-- prefix, message.  Publishes MESSAGE to that node, if any.
local node = redis.call('HGET', KEYS[1], ARGV[1])
if node == false or node == '' then return 0 end
return redis.call('PUBLISH', ARGV[2] .. 'node:' .. node, ARGV[3])
"""

SCRIPTS: dict[str, Script] = {
    s.name: s
    for s in (
        Script("create", _CREATE),
        Script("down", _DOWN),
        Script("up", _UP),
        Script("forwarded", _FORWARDED),
        Script("acked", _ACKED),
        Script("attach", _ATTACH),
        Script("detach", _DETACH),
        Script("takeover", _TAKEOVER),
        Script("closing", _CLOSING),
        Script("backend", _BACKEND),
        Script("end", _END),
        Script("notify", _NOTIFY),
        Script("counts", _COUNTS),
        Script("rebalance", _REBALANCE),
        Script("beat", _BEAT),
        Script("touch", _TOUCH),
    )
}



def _batch(scripts: dict[str, Script]) -> Script:
    """
    @return: the script that runs several calls of C{scripts} in one
        C{EVALSHA} (L{gateway.sessionmap._batch}), each script's text the
        body of a function of its own C{KEYS} and C{ARGV}.
    """
    functions = "".join(
        f"scripts[{name!r}] = function(KEYS, ARGV)\n{script.text}\nend\n"
        for name, script in scripts.items())
    return Script("batch", """
-- KEYS: every call's keys, in turn.  ARGV: for each call, its script's
-- name, how many keys and arguments it has, then its arguments.  Returns
-- each call's answer in turn: an error (a call that failed, caught, so
-- that it fails alone), or what the script returns (false for nothing).
local scripts = {}
""" + functions + """
local out, k, i = {}, 0, 1
while i <= #ARGV do
  local run = scripts[ARGV[i]]
  local nk, na = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local keys, argv = {}, {}
  for j = 1, nk do keys[j] = KEYS[k + j] end
  for j = 1, na do argv[j] = ARGV[i + 2 + j] end
  k, i = k + nk, i + 3 + na
  local ok, answer = pcall(run, keys, argv)
  if not ok then
    answer = {err = type(answer) == 'table' and answer.err or tostring(answer)}
  elseif answer == nil then
    answer = false
  end
  out[#out + 1] = answer
end
return out
""")


#: Several calls of L{SCRIPTS} in one.
BATCH = _batch(SCRIPTS)

#: The scripts by their SHA-1, for running one again with C{EVAL}.
BY_SHA: dict[str, Script] = {s.sha: s for s in (*SCRIPTS.values(), BATCH)}
