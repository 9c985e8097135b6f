//! Session affinity's memory: which credential served each session last,
//! so the next turn of a conversation lands on the same key (a provider's
//! prompt cache is per key or account) while that key can serve.
//!
//! Pure: no clock reads, no I/O. Sessions are known by a [`SessionKey`], a
//! hash of the client's signal; the signal itself is never kept. The table
//! is bounded: a session unused for the TTL is forgotten, and past
//! `max` sessions the least recently used goes first.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// A session, known by the first 64 bits of a SHA-256 of the provider's
/// name and the client's signal: the same on every replica and version,
/// apart per provider (a pin names one provider's credential), and not
/// the signal (which may be a user id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(u64);

impl SessionKey {
    pub fn new(provider: &str, signal: &[u8]) -> SessionKey {
        let mut h = Sha256::new();
        h.update(b"tokenyard-session\0");
        h.update(provider.as_bytes());
        h.update(b"\0");
        h.update(signal);
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        SessionKey(u64::from_be_bytes(first))
    }

    /// All 16 hex digits (the shared store's key).
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The short form logs and notices show: 8 hex digits and an ellipsis.
impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}…", self.0 >> 32)
    }
}

#[derive(Debug, Clone)]
struct Pin {
    credential: String,
    last_used: Instant,
    /// Position in the use order (`Sessions::order`).
    seq: u64,
    /// When the shared store last got this pin; `None`: never. The store's
    /// copy expires after the TTL, so a session in use is written again
    /// well before that.
    shared_at: Option<Instant>,
}

/// The pins, least recently used first.
#[derive(Debug, Clone)]
pub struct Sessions {
    ttl: Duration,
    max: usize,
    pins: HashMap<SessionKey, Pin>,
    /// Use order: `seq` → session. The oldest entries are the first to run
    /// out of TTL and the first evicted, so both look only at the front.
    order: BTreeMap<u64, SessionKey>,
    seq: u64,
}

impl Sessions {
    pub fn new(ttl: Duration, max: usize) -> Sessions {
        Sessions {
            ttl,
            max: max.max(1),
            pins: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
        }
    }

    /// New limits (a reload); a smaller `max` evicts at once.
    pub fn set_limits(&mut self, ttl: Duration, max: usize) {
        self.ttl = ttl;
        self.max = max.max(1);
        self.evict();
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The credential `key` is pinned to, if the pin is alive; counts as a
    /// use (the TTL starts again).
    pub fn get(&mut self, key: SessionKey, now: Instant) -> Option<&str> {
        self.purge(now);
        self.seq += 1;
        let seq = self.seq;
        let pin = self.pins.get_mut(&key)?;
        self.order.remove(&pin.seq);
        self.order.insert(seq, key);
        pin.seq = seq;
        pin.last_used = now;
        Some(&pin.credential)
    }

    /// Pins `key` to `credential`. Returns the credential it was pinned to
    /// before, if another.
    pub fn pin(&mut self, key: SessionKey, credential: &str, now: Instant) -> Option<String> {
        self.purge(now);
        self.seq += 1;
        let seq = self.seq;
        let fresh = Pin {
            credential: credential.to_string(),
            last_used: now,
            seq,
            shared_at: None,
        };
        let before = match self.pins.insert(key, fresh) {
            Some(old) => {
                self.order.remove(&old.seq);
                (old.credential != credential).then_some(old.credential)
            }
            None => None,
        };
        self.order.insert(seq, key);
        self.evict();
        before
    }

    /// Whether `key`'s pin should go to the shared store now (never sent,
    /// or sent over a quarter of the TTL ago); marks it sent.
    pub fn due_for_sharing(&mut self, key: SessionKey, now: Instant) -> Option<String> {
        let quarter = self.ttl / 4;
        let pin = self.pins.get_mut(&key)?;
        let due = pin
            .shared_at
            .is_none_or(|at| now.saturating_duration_since(at) >= quarter);
        if !due {
            return None;
        }
        pin.shared_at = Some(now);
        Some(pin.credential.clone())
    }

    /// Takes the pin the shared store holds (another replica's): like
    /// [`Sessions::pin`], already shared.
    pub fn adopt(&mut self, key: SessionKey, credential: &str, now: Instant) {
        self.pin(key, credential, now);
        if let Some(pin) = self.pins.get_mut(&key) {
            pin.shared_at = Some(now);
        }
    }

    /// Live sessions.
    pub fn len(&mut self, now: Instant) -> usize {
        self.purge(now);
        self.pins.len()
    }

    pub fn is_empty(&mut self, now: Instant) -> bool {
        self.len(now) == 0
    }

    /// Live sessions per credential name.
    pub fn per_credential(&mut self, now: Instant) -> HashMap<String, usize> {
        self.purge(now);
        let mut out = HashMap::new();
        for pin in self.pins.values() {
            *out.entry(pin.credential.clone()).or_default() += 1;
        }
        out
    }

    /// Forgets sessions unused for the TTL (they are the oldest).
    fn purge(&mut self, now: Instant) {
        while let Some((&seq, &key)) = self.order.first_key_value() {
            let alive = self
                .pins
                .get(&key)
                .is_some_and(|p| now.saturating_duration_since(p.last_used) < self.ttl);
            if alive {
                break;
            }
            self.order.remove(&seq);
            self.pins.remove(&key);
        }
    }

    /// Drops the least recently used past `max`.
    fn evict(&mut self) {
        while self.pins.len() > self.max {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            self.pins.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SessionKey {
        SessionKey::new("openai", s.as_bytes())
    }

    #[test]
    fn keys_are_stable_apart_per_provider_and_show_no_signal() {
        assert_eq!(key("conv-1"), key("conv-1"));
        assert_ne!(key("conv-1"), key("conv-2"));
        assert_ne!(key("conv-1"), SessionKey::new("anthropic", b"conv-1"));
        // The store's key is fixed across versions: a change would split
        // a cluster's pins during a rolling upgrade.
        assert_eq!(key("conv-1").hex().len(), 16);
        let short = key("conv-1").to_string();
        assert_eq!(short.chars().count(), 9);
        assert!(key("conv-1").hex().starts_with(short.trim_end_matches('…')));
        assert!(!short.contains("conv"));
    }

    #[test]
    fn a_pin_lives_for_the_ttl_since_its_last_use() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut s = Sessions::new(ttl, 10);
        assert_eq!(s.pin(key("a"), "key-a", t0), None);
        assert_eq!(s.get(key("a"), t0 + ttl / 2), Some("key-a"));
        // Used at ttl/2, so alive until 1.5 ttl.
        assert_eq!(s.get(key("a"), t0 + ttl + ttl / 4), Some("key-a"));
        assert_eq!(s.len(t0 + ttl + ttl / 4), 1);
        assert_eq!(s.get(key("a"), t0 + 3 * ttl), None);
        assert_eq!(s.len(t0 + 3 * ttl), 0);
    }

    #[test]
    fn repinning_says_where_the_session_was() {
        let t0 = Instant::now();
        let mut s = Sessions::new(Duration::from_secs(60), 10);
        s.pin(key("a"), "key-a", t0);
        assert_eq!(s.pin(key("a"), "key-a", t0), None);
        assert_eq!(s.pin(key("a"), "key-b", t0), Some("key-a".to_string()));
        assert_eq!(s.get(key("a"), t0), Some("key-b"));
        assert_eq!(s.len(t0), 1);
    }

    #[test]
    fn past_max_the_least_recently_used_goes() {
        let t0 = Instant::now();
        let mut s = Sessions::new(Duration::from_secs(60), 3);
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            s.pin(key(name), "key-a", t0 + Duration::from_millis(i as u64));
        }
        // "a" is used again, so "b" is now the oldest.
        s.get(key("a"), t0 + Duration::from_millis(5));
        s.pin(key("d"), "key-b", t0 + Duration::from_millis(6));
        assert_eq!(s.len(t0), 3);
        assert_eq!(s.get(key("b"), t0), None);
        assert!(s.get(key("a"), t0).is_some());
        assert!(s.get(key("c"), t0).is_some());
        assert!(s.get(key("d"), t0).is_some());
        let counts = s.per_credential(t0);
        assert_eq!(counts["key-a"], 2);
        assert_eq!(counts["key-b"], 1);
        // A smaller limit (a reload) evicts at once.
        s.set_limits(Duration::from_secs(60), 1);
        assert_eq!(s.len(t0), 1);
        // Memory stays bounded however many sessions come by.
        let mut s = Sessions::new(Duration::from_secs(60), 100);
        for i in 0..10_000 {
            s.pin(key(&i.to_string()), "key-a", t0);
        }
        assert_eq!(s.pins.len(), 100);
        assert_eq!(s.order.len(), 100);
    }

    #[test]
    fn sharing_is_due_when_new_and_again_after_a_quarter_ttl() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut s = Sessions::new(ttl, 10);
        s.pin(key("a"), "key-a", t0);
        assert_eq!(s.due_for_sharing(key("a"), t0).as_deref(), Some("key-a"));
        assert_eq!(s.due_for_sharing(key("a"), t0 + ttl / 8), None);
        assert!(s.due_for_sharing(key("a"), t0 + ttl / 4).is_some());
        // A move is shared at once.
        s.pin(key("a"), "key-b", t0 + ttl / 4);
        assert_eq!(
            s.due_for_sharing(key("a"), t0 + ttl / 4).as_deref(),
            Some("key-b")
        );
        // Another replica's pin is already in the store.
        s.adopt(key("b"), "key-c", t0);
        assert_eq!(s.due_for_sharing(key("b"), t0), None);
        assert_eq!(s.due_for_sharing(key("nobody"), t0), None);
    }
}
