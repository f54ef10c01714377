"""The server-side steps, in Lua, and how their calls are packed and their replies read.

Each step declares ``allow-cross-slot-keys`` (Redis/Valkey 7.0+), so one call may handle keys of
several slots served by the node, while every ``UNLINK`` inside stays single-slot. Keys are
passed as ARGV: a key whose slot is not (or no longer) served by the node makes its ``UNLINK``
fail inside ``pcall``, and the caller sends it through the redirect-following path instead. Each
call's work is bounded, so a step never holds a node for long. Availability is detected per node
with ``SCRIPT LOAD`` (refused by old servers and by ACLs without scripting), never assumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clusterinval._core.values import SlotBatch, SlotWalkStep
from clusterinval._io.protocol import ScriptName

__all__ = ["SCRIPTS", "SCRIPT_MAX_KEYS", "batch_argv", "batch_offsets", "sparse_counts",
           "split_calls", "walk_step"]

# ARGV is "<n> key1 .. keyn" per slot batch. The 1-based index of each failed batch's count comes
# back so the caller can retry exactly those batches.
_UNLINK_BATCHES = b"""#!lua flags=allow-cross-slot-keys
local deleted = 0
local failed = {}
local i = 1
local n = #ARGV
while i <= n do
  local count = tonumber(ARGV[i])
  local reply = redis.pcall('UNLINK', unpack(ARGV, i + 1, i + count))
  if type(reply) == 'number' then
    deleted = deleted + reply
  else
    failed[#failed + 1] = i
  end
  i = i + count + 1
end
return {deleted, failed}
"""

# Prefix matching shared by the slot walk and the SCAN step: ``prefix_matcher(first, empty_ok)``
# reads the prefixes from ARGV[first..] and returns ``match(key)`` (true when the key starts with
# one of them) and ``counts()``: the keys matched so far under the first prefix (in ARGV order)
# each starts with, and under every one. Counts go back sparse (0-based prefix index, count, ...
# for the prefixes that matched): a shared pass may carry hundreds, of which a call matches few.
# Prefixes are looked up by the key's first L bytes for each distinct prefix length L, after one
# test of the prefixes' common start: the work per key grows with the number of lengths, not
# with the number of prefixes, and a key without the common start costs one comparison.
_PREFIX_MATCHER = rb"""
local function sparse(counts)
  local out = {}
  for i, n in pairs(counts) do
    out[#out + 1] = i - 1
    out[#out + 1] = n
  end
  return out
end
local function prefix_matcher(first, empty_ok)
  -- by_prefix[prefix] is the prefix's index, or the list of its indexes when it is given more
  -- than once (no table per prefix: a shared pass may carry hundreds, every call).
  local by_prefix, lengths, has_length, per, per_all = {}, {}, {}, {}, {}
  local skip_empty = false
  local common = ARGV[first] or ''
  local nc = #common
  for p = first, #ARGV do
    local i = p - first + 1
    local prefix = ARGV[p]
    local same = by_prefix[prefix]
    if same == nil then
      by_prefix[prefix] = i
      if not has_length[#prefix] then
        has_length[#prefix] = true
        lengths[#lengths + 1] = #prefix
      end
    elseif type(same) == 'number' then
      by_prefix[prefix] = {same, i}
    else
      same[#same + 1] = i
    end
    -- Only an empty prefix could match the empty key (Redis reports it for "*" alone).
    if #prefix == 0 and not empty_ok then skip_empty = true end
    -- The prefixes' common start, shortened only by a prefix that does not begin with it.
    if nc > 0 and string.sub(prefix, 1, nc) ~= common then
      local n = math.min(nc, #prefix)
      local j = 0
      while j < n and string.byte(common, j + 1) == string.byte(prefix, j + 1) do j = j + 1 end
      nc = j
      common = string.sub(common, 1, j)
    end
  end
  table.sort(lengths)
  local nl = #lengths
  local function count(same)
    -- Counts a key under every index of ``same``; returns the first of them.
    if type(same) == 'number' then
      per_all[same] = (per_all[same] or 0) + 1
      return same
    end
    for q = 1, #same do per_all[same[q]] = (per_all[same[q]] or 0) + 1 end
    return same[1]
  end
  -- One prefix length, equal to the common start (one pattern, or the same one several
  -- times): the common test alone decides, and a match is one more for that prefix.
  local only, only_n = nil, 0
  if nl == 1 and nc == lengths[1] and nc > 0 then only = by_prefix[common] end
  local function match(k)
    if (skip_empty and #k == 0) or (nc > 0 and string.sub(k, 1, nc) ~= common) then
      return false
    end
    if only ~= nil then
      only_n = only_n + 1
      return true
    end
    local hit = nil
    for m = 1, nl do
      local len = lengths[m]
      if len > #k then break end
      local same = by_prefix[string.sub(k, 1, len)]
      if same ~= nil then
        local i = count(same)
        if hit == nil or i < hit then hit = i end
      end
    end
    if hit == nil then return false end
    per[hit] = (per[hit] or 0) + 1
    return true
  end
  -- The counts so far, sparse: (first prefix, every prefix).
  local function counts()
    if only_n > 0 then
      if type(only) == 'number' then
        per[only], per_all[only] = only_n, only_n
      else
        per[only[1]] = only_n
        for q = 1, #only do per_all[only[q]] = only_n end
      end
    end
    return sparse(per), sparse(per_all)
  end
  return match, counts
end
"""

# One SCAN step and the deletion of what it found: no key crosses the network. The work per call
# is bounded by SCAN's COUNT, like a plain SCAN. ARGV: cursor, MATCH, COUNT; with prefixes
# (ARGV[4] the empty-key flag, ARGV[5..] the prefixes) MATCH only narrows the SCAN and the keys
# that start with a prefix are the ones deleted, counted per prefix as in the walk.
_SCAN_STEP = b"#!lua flags=allow-cross-slot-keys\n" + _PREFIX_MATCHER + b"""
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local keys = r[2]
local hits, per, per_all = keys, {}, {}
if #ARGV >= 5 then
  -- Prefix mode: MATCH only narrows the SCAN; the keys that start with a prefix are deleted.
  local match, counts = prefix_matcher(5, ARGV[4] == '1')
  hits = {}
  for i = 1, #keys do
    if match(keys[i]) then hits[#hits + 1] = keys[i] end
  end
  per, per_all = counts()
end
local deleted = 0
local failed = {}
for i = 1, #hits do
  local reply = redis.pcall('UNLINK', hits[i])
  if type(reply) == 'number' then
    deleted = deleted + reply
  else
    failed[#failed + 1] = hits[i]
  end
end
return {r[1], #hits, deleted, failed, per, per_all, #keys}
"""

# Walks a node's slots from ARGV[3] to ARGV[4], reading each slot whole (COUNTKEYSINSLOT, then
# GETKEYSINSLOT), keeping the keys that start with one of the prefixes ARGV[7..], and unlinking
# them with one UNLINK per slot (a single slot: never cross-slot). It stops once it has read
# ARGV[1] keys and says where to resume. A slot holding more than ARGV[2] keys is not read (one
# GETKEYSINSLOT of it would hold the node too long): it is reported, and the caller scans that
# node instead. The prefix test is exact for patterns that are a literal prefix followed by '*';
# a key is counted under the first prefix (in ARGV order) it starts with, and also under every
# prefix it starts with (a shared pass credits each caller whose pattern it matches). The empty
# key matches only when ARGV[5] is 1 (Redis reports it for the pattern "*" alone).
#
# Before reading, the call takes what the node itself says it serves (the "myself" line of
# CLUSTER NODES). A slot is read only when the node owns it and is neither migrating nor
# importing it; the others are returned as unproven and never counted as covered. Reading the
# ownership and the slot in one script makes the check atomic: a slot read here was read whole.
# A call of one slot may name, in ARGV[6], a key of that slot that does not exist (a probe): the
# node's own check of that key then proves the slot for a fraction of CLUSTER NODES's cost.
_SLOT_WALK = b"#!lua flags=allow-cross-slot-keys\n" + _PREFIX_MATCHER + rb"""
local budget = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local s = tonumber(ARGV[3])
local hi = tonumber(ARGV[4])
local empty_ok = ARGV[5] == '1'
local probe = ARGV[6]
local match, counts = prefix_matcher(7, empty_ok)
local own_lo, own_hi, moving = {}, {}, {}
local function myself(line)
  local f = {}
  for w in string.gmatch(line, '%S+') do f[#f + 1] = w end
  if not (f[3] and string.find(',' .. f[3] .. ',', ',myself,', 1, true)) then return false end
  for i = 9, #f do
    local t = f[i]
    if string.sub(t, 1, 1) == '[' then
      moving[tonumber(string.match(t, '^%[(%d+)'))] = true
    else
      local a, b = string.match(t, '^(%d+)-(%d+)$')
      if a == nil then a = t; b = t end
      own_lo[#own_lo + 1] = tonumber(a)
      own_hi[#own_hi + 1] = tonumber(b)
    end
  end
  return true
end
-- One slot, with a probe key in it: the node's own cluster check on that key is the proof. It
-- lets a script read a key only in a slot the node serves and that is not being imported; in a
-- slot being migrated away, only a key that is still here (the probe never is). Anything else
-- (an error, the probe present) takes the general proof below.
local probed = false
if probe ~= '' and s == hi then
  probed = redis.pcall('EXISTS', probe) == 0
  if probed then own_lo[1] = s; own_hi[1] = s end
end
if not probed then
  -- Straight to the line that says "myself" (one of a handful to hundreds of lines); every
  -- line is tried only if that word also appears elsewhere (a host name, say).
  local nodes = redis.call('CLUSTER', 'NODES')
  local at = string.find(nodes, 'myself', 1, true)
  local found = false
  if at then
    local first = at
    while first > 1 and string.byte(nodes, first - 1) ~= 10 do first = first - 1 end
    local last = string.find(nodes, '\n', at, true) or (#nodes + 1)
    found = myself(string.sub(nodes, first, last - 1))
  end
  if not found then
    for line in string.gmatch(nodes, '[^\n]+') do
      if string.find(line, 'myself', 1, true) and myself(line) then break end
    end
  end
end
local function settled(slot)
  if moving[slot] then return false end
  for i = 1, #own_lo do
    if slot >= own_lo[i] and slot <= own_hi[i] then return true end
  end
  return false
end
local examined, matched, deleted = 0, 0, 0
local big, failed, unproven = {}, {}, {}
while s <= hi do
  if examined >= budget then break end
  if not settled(s) then
    unproven[#unproven + 1] = s
  else
    local n = redis.call('CLUSTER', 'COUNTKEYSINSLOT', s)
    if n > cap then
      big[#big + 1] = s
    elseif n > 0 then
      local keys = redis.call('CLUSTER', 'GETKEYSINSLOT', s, n)
      examined = examined + #keys
      local hit = {}
      for j = 1, #keys do
        if match(keys[j]) then hit[#hit + 1] = keys[j] end
      end
      local j = 1
      while j <= #hit do
        local last = math.min(j + 499, #hit)
        local reply = redis.pcall('UNLINK', unpack(hit, j, last))
        if type(reply) == 'number' then
          deleted = deleted + reply
        else
          for m = j, last do failed[#failed + 1] = hit[m] end
        end
        j = last + 1
      end
      matched = matched + #hit
    end
  end
  s = s + 1
end
if s > hi then s = -1 end
local per, per_all = counts()
return {s, examined, matched, deleted, big, failed, per, unproven, per_all}
"""

# Keys per batch-script call: bounds how long one call holds a node. Measured on Redis 7.0: a
# 250-key call over ~40 slots takes 0.23-0.29 ms (median); the cost is mostly one UNLINK per slot,
# so even 400 keys in 400 slots stay near 2 ms. 400 rather than 250: fewer calls, fewer round
# trips, 10% faster on 100,000 keys with no longer calls in the benchmark.
SCRIPT_MAX_KEYS = 400


SCRIPTS: dict[ScriptName, bytes] = {
    "batch": _UNLINK_BATCHES, "scan_step": _SCAN_STEP, "slot_walk": _SLOT_WALK,
}


def walk_step(reply: Any) -> SlotWalkStep:
    """A slot-walk reply as a value."""
    return SlotWalkStep(int(reply[0]), int(reply[1]), int(reply[2]), int(reply[3]),
                        [int(s) for s in reply[4] or []], list(reply[5] or []),
                        sparse_counts(reply[6]), [int(s) for s in reply[7] or []],
                        sparse_counts(reply[8]) if len(reply) > 8 else {})


def sparse_counts(flat: Any) -> dict[int, int]:
    """A step's per-prefix counts (``index, count, ...``, matched prefixes only) as a dict."""
    if not flat:
        return {}
    values = iter(flat)
    return {int(i): int(n) for i, n in zip(values, values, strict=False)}  # pairs, in turn


def split_calls(batches: list[SlotBatch]) -> list[list[SlotBatch]]:
    """Slot batches cut into script calls of about ``SCRIPT_MAX_KEYS`` keys."""
    calls: list[list[SlotBatch]] = [[]]
    size = 0
    for batch in batches:
        if size >= SCRIPT_MAX_KEYS:
            calls.append([])
            size = 0
        calls[-1].append(batch)
        size += len(batch[1])
    return calls


def batch_offsets(call: Sequence[SlotBatch]) -> dict[int, int]:
    """Lua's 1-based ARGV index of each batch's count in a packed call -> the batch's index."""
    out: dict[int, int] = {}
    offset = 1
    for index, batch in enumerate(call):
        out[offset] = index
        offset += len(batch[1]) + 1
    return out


def batch_argv(call: Sequence[SlotBatch]) -> list[bytes]:
    """ARGV of one batch call: ``<n> key1 .. keyn`` per slot batch."""
    argv: list[bytes] = []
    for _slot, keys in call:
        argv.append(b"%d" % len(keys))
        argv.extend(keys)
    return argv


