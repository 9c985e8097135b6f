//! The Lua scripts behind every write. A script runs atomically in Redis,
//! so "read, decide, write, publish" cannot interleave with another
//! replica's write; and since each script publishes its own change, a write
//! and its notification are never split by a crash.
//!
//! `redis::Script` sends `EVALSHA` and loads the script on `NOSCRIPT`, so a
//! restarted (empty) server is handled without our help.

use redis::Script;

/// Sets the cooldown only if it ends later than the stored one (at an equal
/// deadline, `quota` beats `rate_limited`).
/// KEYS: cred. ARGV: until_ms, kind, reason, channel, payload.
/// Returns 1 if written, 0 if the stored cooldown was as strict or stricter.
const EXTEND_COOLDOWN: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], 'cooldown_until_ms') or '0') or 0
local new = tonumber(ARGV[1])
local stricter = new > cur
if new == cur and ARGV[2] == 'quota'
   and redis.call('HGET', KEYS[1], 'cooldown_kind') ~= 'quota' then
  stricter = true
end
if not stricter then return 0 end
redis.call('HSET', KEYS[1], 'cooldown_until_ms', ARGV[1],
           'cooldown_kind', ARGV[2], 'cooldown_reason', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"#;

/// Sets one plain field, publishing only when the value changed.
/// KEYS: cred. ARGV: field, value, channel, payload. Returns 1 if changed.
const SET_FIELD: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"#;

/// Takes the refresh lock if nobody holds it. The fencing token is the
/// per-credential counter plus one, but at least the server's clock in
/// microseconds: it grows with every grant even across a Redis that lost
/// its data (a holder from before the loss must not match a new grant).
/// `%.0f` because Lua would print a number this large as `1.7e+15`.
/// KEYS: lock, cred. ARGV: lease_ms. Returns the fencing token, or 0.
const ACQUIRE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local fence = (tonumber(redis.call('HGET', KEYS[2], 'fence') or '0') or 0) + 1
local clock = tonumber(t[1]) * 1000000 + tonumber(t[2])
if clock > fence then fence = clock end
local s = string.format('%.0f', fence)
redis.call('HSET', KEYS[2], 'fence', s)
redis.call('SET', KEYS[1], s, 'PX', ARGV[1])
return s
"#;

/// Deletes the lock only if `fence` still holds it.
/// KEYS: lock. ARGV: fence. Returns 1 if released.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// The compare-and-set after a refresh. Refused unless `fence` still holds
/// the lock and the refresh token is still at `expected_version`; then
/// stores the access token, and the refresh token with version + 1 if it
/// differs from the stored one.
/// KEYS: cred, lock. ARGV: fence, expected_version, access_token,
/// expires_ms, new refresh token ('' = none), channel, payload.
/// Returns {1, version} stored, {-1, version} fenced out,
/// {-2, version} superseded (version is the stored one).
const STORE_REFRESH: &str = r#"
local version = tonumber(redis.call('HGET', KEYS[1], 'refresh_version') or '0') or 0
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {-1, version} end
if version ~= tonumber(ARGV[2]) then return {-2, version} end
redis.call('HSET', KEYS[1], 'access_token', ARGV[3], 'access_expires_ms', ARGV[4])
if ARGV[5] ~= '' and ARGV[5] ~= redis.call('HGET', KEYS[1], 'refresh_token') then
  version = redis.call('HINCRBY', KEYS[1], 'refresh_version', 1)
  redis.call('HSET', KEYS[1], 'refresh_token', ARGV[5])
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return {1, version}
"#;

/// Writes the refresh token only if none is stored (first replica wins),
/// then returns what is stored either way.
/// KEYS: cred. ARGV: token, fingerprint, channel, payload.
/// Returns {written, refresh_token, refresh_version, access_token,
/// access_expires_ms, refresh_seed_fp} (missing fields as false/nil).
const SEED: &str = r#"
local written = 0
if redis.call('HEXISTS', KEYS[1], 'refresh_token') == 0 then
  redis.call('HINCRBY', KEYS[1], 'refresh_version', 1)
  redis.call('HSET', KEYS[1], 'refresh_token', ARGV[1], 'refresh_seed_fp', ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  written = 1
end
local f = redis.call('HMGET', KEYS[1], 'refresh_token', 'refresh_version',
                     'access_token', 'access_expires_ms', 'refresh_seed_fp')
return {written, f[1], f[2], f[3], f[4], f[5]}
"#;

/// Puts back a refresh token this replica knows at `version`, if Redis
/// holds an older version or none (it lost its data); never replaces a
/// version as new or newer.
/// KEYS: cred. ARGV: token, version, channel, payload. Returns like SEED.
const RESTORE: &str = r#"
local written = 0
local cur = tonumber(redis.call('HGET', KEYS[1], 'refresh_version') or '0') or 0
if cur < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'refresh_token', ARGV[1], 'refresh_version', ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  written = 1
end
local f = redis.call('HMGET', KEYS[1], 'refresh_token', 'refresh_version',
                     'access_token', 'access_expires_ms', 'refresh_seed_fp')
return {written, f[1], f[2], f[3], f[4], f[5]}
"#;

/// Replaces the refresh token whatever is stored (an operator's new token),
/// with version + 1, and forgets the cached access token.
/// KEYS: cred. ARGV: token, fingerprint, channel, payload. Returns the new
/// version.
const REPLACE: &str = r#"
local version = redis.call('HINCRBY', KEYS[1], 'refresh_version', 1)
redis.call('HSET', KEYS[1], 'refresh_token', ARGV[1], 'refresh_seed_fp', ARGV[2])
redis.call('HDEL', KEYS[1], 'access_token', 'access_expires_ms')
redis.call('PUBLISH', ARGV[3], ARGV[4])
return version
"#;

/// The scripts, hashed once per store.
pub(super) struct Scripts {
    pub extend_cooldown: Script,
    pub set_field: Script,
    pub acquire: Script,
    pub release: Script,
    pub store_refresh: Script,
    pub seed: Script,
    pub restore: Script,
    pub replace: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            extend_cooldown: Script::new(EXTEND_COOLDOWN),
            set_field: Script::new(SET_FIELD),
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            store_refresh: Script::new(STORE_REFRESH),
            seed: Script::new(SEED),
            restore: Script::new(RESTORE),
            replace: Script::new(REPLACE),
        }
    }
}
