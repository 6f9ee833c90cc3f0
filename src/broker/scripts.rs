//! The Lua scripts behind the broker's multi-step operations. Each runs atomically in Redis, so
//! a chunk reference is always in exactly one place — the stream (new or pending), the retry
//! set, or (after its last attempt) the dead-letter stream — however many workers call them at
//! once. Every key a script touches shares the prefix's hash tag, so they also run on Redis
//! Cluster.

/// Extends a lease: if `consumer` still owns the pending entry, resets its idle time (XCLAIM
/// with JUSTID, which leaves the delivery counter alone) and returns 1; returns 0 if another
/// consumer reclaimed it or it is no longer pending.
///
/// KEYS: stream. ARGV: group, consumer, entry id.
pub(super) const EXTEND_LEASE: &str = r#"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if pending[1] == nil or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"#;

/// Takes over entries pending longer than the visibility timeout, scanning the pending list from
/// a cursor (XAUTOCLAIM), and returns `{next cursor, {{id, fields, deliveries}, ...}}`. The
/// delivery count comes from XPENDING after the claim (which incremented it).
///
/// KEYS: stream. ARGV: group, consumer, min idle ms, cursor, count.
pub(super) const RECLAIM: &str = r#"
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local entries = {}
for _, entry in ipairs(claimed[2]) do
  if entry then
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    local deliveries = 1
    if pending[1] then deliveries = pending[1][4] end
    table.insert(entries, {entry[1], entry[2], deliveries})
  end
end
return {claimed[1], entries}
"#;

/// Moves a pending entry that `consumer` still owns to the retry set (acknowledged and deleted
/// from the stream, added to the set with its due time). Returns 0, and changes nothing, if the
/// consumer no longer owns it.
///
/// KEYS: stream, retry set. ARGV: group, consumer, entry id, due (Unix ms), member.
pub(super) const RETRY_LATER: &str = r#"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if pending[1] == nil or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
return 1
"#;

/// Moves up to `limit` retries that are due back onto the stream, and returns how many.
/// Members are `<batch id>|<chunk index>|<failed attempts>`.
///
/// KEYS: retry set, stream. ARGV: now (Unix ms), limit.
pub(super) const PROMOTE_DUE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local batch, chunk, attempts = string.match(member, '^(.*)|(%d+)|(%d+)$')
  if batch then
    redis.call('XADD', KEYS[2], '*', 'batch', batch, 'chunk', chunk, 'attempts', attempts)
  end
end
return #due
"#;

/// Records a chunk that failed its last attempt on the capped dead-letter stream and
/// acknowledges and deletes its entry, in one step.
///
/// KEYS: stream, dead-letter stream. ARGV: group, entry id, max length, batch id, chunk index,
/// attempts, reason, consumer, time (Unix ms).
pub(super) const DEAD_LETTER: &str = r#"
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'batch', ARGV[4], 'chunk', ARGV[5],
  'attempts', ARGV[6], 'reason', ARGV[7], 'worker', ARGV[8], 'time', ARGV[9])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"#;

/// Lists every chunk reference Redis holds — in the retry set and on the stream (new or
/// pending) — in one atomic read, as `<batch id>|<chunk index>[|...]` strings, so the
/// reconciler never mistakes a chunk moving between the two for a lost one.
///
/// KEYS: stream, retry set.
pub(super) const QUEUED_REFERENCES: &str = r#"
local references = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local fields, batch, chunk = entry[2], nil, nil
  for i = 1, #fields, 2 do
    if fields[i] == 'batch' then batch = fields[i + 1] elseif fields[i] == 'chunk' then chunk = fields[i + 1] end
  end
  if batch and chunk then table.insert(references, batch .. '|' .. chunk) end
end
return references
"#;
