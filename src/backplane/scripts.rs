//! The Lua scripts the backplane runs in Redis, and the key names they touch.
//!
//! Every key of one deployment shares the hash tag `{hub}` after the prefix, so the scripts touch
//! a single slot and a Redis Cluster mode can follow without renaming anything.

/// The Redis keys of one deployment.
pub struct Keys {
    /// Counter: the last sequence number given (`INCR`).
    pub seq: String,
    /// The dataset's epoch: created once per dataset, and again when Redis is found behind what
    /// a node has seen (see [`HELLO`]); part of every id (`<epoch>-<seq>`).
    pub epoch: String,
    /// The seq the epoch started after: its events have higher ones, older entries in the
    /// streams belong to an earlier epoch.
    pub since: String,
    /// The stream of every event, stream id `<seq>-0`, trimmed to `--backplane-retention`.
    pub log: String,
    /// Prefix of the idempotency keys (`<prefix>{hub}:idem:<key>` -> seq, with a TTL).
    pub idem: String,
    /// Prefix of the per-topic streams (`<prefix>{hub}:t:<topic>`): each topic's newest
    /// `--history` events, for resumes older than a node's own cache.
    pub topic: String,
    /// The run id of the Redis process that last said HELLO to a node (Sentinel with
    /// `--backplane-min-replicas 0`: another process means a failover that may have lost
    /// events).
    pub master: String,
    /// With `--backplane-min-replicas`: the highest seq that enough replicas hold.
    pub committed: String,
    /// Written by a sweep so that its `WAIT` covers every seq given before it.
    pub sweep: String,
    /// The `--backplane-min-replicas` of the node whose writer connected last (see [`SETTING`]).
    pub replicas: String,
}

impl Keys {
    /// The keys under `prefix` (`--backplane-prefix`).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            seq: format!("{prefix}{{hub}}:seq"),
            epoch: format!("{prefix}{{hub}}:epoch"),
            since: format!("{prefix}{{hub}}:since"),
            log: format!("{prefix}{{hub}}:log"),
            idem: format!("{prefix}{{hub}}:idem:"),
            topic: format!("{prefix}{{hub}}:t:"),
            master: format!("{prefix}{{hub}}:master"),
            committed: format!("{prefix}{{hub}}:committed"),
            sweep: format!("{prefix}{{hub}}:sweep"),
            replicas: format!("{prefix}{{hub}}:min-replicas"),
        }
    }
}

/// HELLO: KEYS seq, epoch, log, since, master, committed; ARGV candidate epoch, the caller's
/// high-water mark (the highest seq it has read, recorded or had acknowledged), fence ('1':
/// Sentinel with `--backplane-min-replicas 0`), gated ('1': `--backplane-min-replicas` ≥ 1),
/// force ('1': the caller found another event at a seq it delivered, `verify.rs`).
/// Run on every (re)connection, before the link appends or reads anything. Returns `{epoch,
/// counter, since, committed}`.
///
/// - A dataset with no epoch (new, or Redis came back empty) gets the candidate.
/// - A counter behind the caller's mark means Redis's log ends before what the cluster issued or
///   delivered: it came back from an older point (an RDB snapshot, an AOF `everysec` tail, a
///   replica that was behind). Events after that point are lost for some nodes and ids after it
///   may have been given: the dataset starts a new epoch too, and an entry `<since>-0` with field
///   `x` (the new epoch) marks the boundary in the log for readers already past their HELLO.
/// - Fenced: a Redis process other than the one the last HELLO met (its run id differs from the
///   `master` key, which replicas copy) took over without replicated acknowledgements: what the
///   old one acknowledged may be missing, and no node can tell how much, since nodes deliver as
///   they read. The dataset starts a new epoch as well, before any append reaches the new master.
///
/// A new epoch's counter starts at Redis's clock in microseconds, or higher if the caller's mark
/// or the old counter is: seqs keep rising across epochs, and no old id is ever given again (the
/// epoch differs as well). The clock covers ids a node that is not here issued: a counter that
/// started at the clock stays below it while fewer than a million events a second were appended
/// on average, far above what one Redis takes.
///
/// Gated: a dataset without a `committed` mark (new, or written without replicated
/// acknowledgements) counts everything it holds as committed from now on.
pub const HELLO: &str = r#"
local e = redis.call('GET', KEYS[2])
local cur = redis.call('GET', KEYS[1])
local mark = tonumber(ARGV[2])
local behind = e and cur and (tonumber(cur) < mark or ARGV[5] == '1')
if ARGV[3] == '1' then
  local id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  local was = redis.call('GET', KEYS[5])
  if was ~= id then
    redis.call('SET', KEYS[5], id)
    if e and cur then behind = true end
  end
end
if not e or not cur or behind then
  local t = redis.call('TIME')
  local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if mark > start then start = mark end
  if cur and tonumber(cur) >= start then start = tonumber(cur) + 1 end
  e = ARGV[1]
  cur = string.format('%.0f', start)
  redis.call('SET', KEYS[2], e)
  redis.call('SET', KEYS[1], cur)
  redis.call('SET', KEYS[4], cur)
  if behind then
    redis.call('XADD', KEYS[3], cur .. '-0', 'x', e)
  end
end
local c = redis.call('GET', KEYS[6])
if not c then
  c = cur
  if ARGV[4] == '1' then redis.call('SET', KEYS[6], c) end
end
return {e, cur, redis.call('GET', KEYS[4]) or '0', c}
"#;

/// APPEND: a batch of events, in order. KEYS seq, epoch, log, then for each event its
/// idempotency key followed by one stream key per topic; ARGV epoch, retention, idempotency window
/// (seconds), per-topic history, per-topic TTL (seconds), event count, then for each event: topic
/// count, topics (space-separated), event type, data, '1' when it has an idempotency key.
/// One atomic step per batch: for each event the next seq, the log entry `<seq>-0`, the same entry
/// in each topic's stream (trimmed with `MAXLEN ~` to at least the per-topic history: whole radix
/// nodes go, which is cheap), and the idempotency record. A batch costs Redis about half as much
/// per event as one call per event: the script call, the epoch check and the clock are paid once.
/// Returns one `{'OK', seq}` or `{'DUP', seq}` (the key was seen: the original seq) per event,
/// or `{'EPOCH', epoch}` for the whole batch (the dataset is not the one the caller knows: it must
/// say HELLO again).
pub const APPEND: &str = r#"
local e = redis.call('GET', KEYS[2])
if e ~= ARGV[1] then
  return {'EPOCH', e or ''}
end
local t = redis.call('TIME')
local ms = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local hist = tonumber(ARGV[4])
local k, a = 4, 7
local out, touched = {}, {}
for i = 1, tonumber(ARGV[6]) do
  local ntop, topics, etype, data, idem = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  a = a + 5
  local ikey, first, last = KEYS[k], k + 1, k + ntop
  k = last + 1
  local prev = false
  if idem == '1' then
    prev = redis.call('GET', ikey)
  end
  if prev then
    out[i] = {'DUP', prev}
  else
    local seq = string.format('%.0f', redis.call('INCR', KEYS[1]))
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], seq .. '-0',
      't', topics, 'e', etype, 'd', data, 'ts', ms)
    if hist > 0 then
      for j = first, last do
        redis.call('XADD', KEYS[j], 'MAXLEN', '~', ARGV[4], seq .. '-0',
          't', topics, 'e', etype, 'd', data, 'ts', ms)
        if not touched[KEYS[j]] then
          redis.call('EXPIRE', KEYS[j], ARGV[5])
          touched[KEYS[j]] = true
        end
      end
    end
    if idem == '1' then
      redis.call('SET', ikey, seq, 'EX', ARGV[3])
    end
    out[i] = {'OK', seq}
  end
end
return out
"#;

/// FETCH: KEYS streams (topic streams, or the log for patterns); ARGV after, upto, count. For
/// each key: `{complete, entries}` where entries are those with `after < seq <= upto` (at most
/// count) and complete is 1 when the key holds every entry of that range it ever had: it never
/// existed, or nothing was ever trimmed from it (`entries-added` equals `length`), or its first
/// entry is at most `after + 1` (for the log, where every seq is present, that is exact; for a
/// topic stream it is on the safe side: trimmed entries might all have been older than `after`);
/// and fewer than count entries came back.
pub const FETCH: &str = r#"
local after = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  local complete = 1
  if redis.call('EXISTS', k) == 1 then
    local info = redis.call('XINFO', 'STREAM', k)
    local first, len, added = nil, 0, 0
    for n = 1, #info, 2 do
      if info[n] == 'length' then
        len = info[n + 1]
      elseif info[n] == 'entries-added' then
        added = info[n + 1]
      elseif info[n] == 'first-entry' and info[n + 1] then
        first = tonumber(string.match(info[n + 1][1], '^(%d+)'))
      end
    end
    if added ~= len and first and first > after + 1 then
      complete = 0
    end
  end
  local entries = redis.call('XRANGE', k, '(' .. ARGV[1] .. '-0', ARGV[2] .. '-0', 'COUNT', ARGV[3])
  if #entries >= tonumber(ARGV[3]) then complete = 0 end
  out[i] = {complete, entries}
end
return out
"#;

/// COMMIT (`--backplane-min-replicas`): KEYS committed, log; ARGV seq, retention. Run after a
/// `WAIT` confirmed that enough replicas hold every write up to seq's: raises the `committed`
/// key and adds a mark `c` = seq to the log (id `<last seq>-<n>`, after the events it covers),
/// which tells every node's reader that the events up to seq may be delivered.
pub const COMMIT: &str = r#"
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > c then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'c', ARGV[1])
end
return 0
"#;

/// SWEEP: KEYS seq, sweep. A write (so that the `WAIT` after it covers every earlier one)
/// that returns the counter: once replicated, every seq up to it may be committed. Sent when a
/// reader has held events too long without a mark (the COMMIT after their `WAIT` was lost in a
/// failover, or its node died between the two).
pub const SWEEP: &str = r#"
redis.call('INCR', KEYS[2])
return redis.call('GET', KEYS[1]) or '0'
"#;

/// SETTING: KEYS key; ARGV value. Sets the key and returns its previous value (nil when none):
/// a writer says its `--backplane-min-replicas` at every connection and hears the last other
/// node's (`SET … GET` needs Redis 6.2; a script keeps the ACL to EVAL).
pub const SETTING: &str = r#"
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
return old
"#;
