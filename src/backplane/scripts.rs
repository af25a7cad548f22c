//! The Lua scripts the backplane runs in Redis, and the key names they touch.
//!
//! Every key of one deployment shares the hash tag `{hub}` after the prefix, so the scripts touch
//! a single slot and a Redis Cluster mode can follow without renaming anything.

/// The Redis keys of one deployment.
pub struct Keys {
    /// Counter: the last sequence number given (`INCR`).
    pub seq: String,
    /// The dataset's epoch: created once per dataset, part of every id (`<epoch>-<seq>`).
    pub epoch: String,
    /// The stream of every event, stream id `<seq>-0`, trimmed to `--backplane-retention`.
    pub log: String,
    /// Prefix of the idempotency keys (`<prefix>{hub}:idem:<key>` -> seq, with a TTL).
    pub idem: String,
}

impl Keys {
    /// The keys under `prefix` (`--backplane-prefix`).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            seq: format!("{prefix}{{hub}}:seq"),
            epoch: format!("{prefix}{{hub}}:epoch"),
            log: format!("{prefix}{{hub}}:log"),
            idem: format!("{prefix}{{hub}}:idem:"),
        }
    }
}

/// HELLO: KEYS seq, epoch; ARGV candidate epoch, floor seq. Creates the epoch when the dataset
/// has none (a new or emptied Redis) and starts its counter at Redis's clock in microseconds, or
/// past the caller's last seq if that is higher: a node that outlived the data keeps seeing
/// rising seqs, and ids of the new dataset never repeat old ones (the epoch differs too).
/// Returns `{epoch, counter}`.
pub const HELLO: &str = r#"
local e = redis.call('GET', KEYS[2])
if not e then
  e = ARGV[1]
  redis.call('SET', KEYS[2], e)
end
local cur = redis.call('GET', KEYS[1])
if not cur then
  local t = redis.call('TIME')
  local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local floor = tonumber(ARGV[2])
  if floor > start then start = floor end
  cur = string.format('%.0f', start)
  redis.call('SET', KEYS[1], cur)
end
return {e, cur}
"#;

/// APPEND: KEYS seq, epoch, log, idempotency key; ARGV epoch, retention, idempotency window
/// (seconds), topics (space-separated), event type, data, '1' when an idempotency key is given.
/// One atomic step: the next seq, the stream entry `<seq>-0`, and the idempotency record.
/// Returns `{'OK', seq}`, `{'DUP', seq}` (the key was seen: the original seq) or
/// `{'EPOCH', epoch}` (the dataset is not the one the caller knows: it must say HELLO again).
pub const APPEND: &str = r#"
local e = redis.call('GET', KEYS[2])
if e ~= ARGV[1] then
  return {'EPOCH', e or ''}
end
if ARGV[7] == '1' then
  local prev = redis.call('GET', KEYS[4])
  if prev then return {'DUP', prev} end
end
local seq = string.format('%.0f', redis.call('INCR', KEYS[1]))
local t = redis.call('TIME')
local ms = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], seq .. '-0',
  't', ARGV[4], 'e', ARGV[5], 'd', ARGV[6], 'ts', ms)
if ARGV[7] == '1' then
  redis.call('SET', KEYS[4], seq, 'EX', ARGV[3])
end
return {'OK', seq}
"#;
