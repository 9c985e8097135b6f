//! What goes over Redis besides the hashes: key names and the pub/sub
//! message format (the [`Change`]s the pool sees live in `pool::store`).
//! Nothing here does I/O.

use serde::{Deserialize, Serialize};

use super::{Change, Field, Op};
use crate::vocab::CooldownKind;

/// The `{…}` around the namespace is a Redis Cluster hash tag: every key of
/// one namespace lands in the same slot, so the Lua scripts that touch a
/// credential's hash and its lock together stay legal on a cluster too.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
    channel: String,
}

impl Keys {
    pub(super) fn new(namespace: &str) -> Keys {
        let prefix = format!("tokenyard:{{{namespace}}}");
        Keys {
            channel: format!("{prefix}:changes"),
            prefix,
        }
    }

    /// The hash holding everything about one credential.
    pub(super) fn cred(&self, name: &str) -> String {
        format!("{}:cred:{name}", self.prefix)
    }

    /// The refresh lock of one credential (a string holding the holder's
    /// fencing token, with a TTL of the lease).
    pub(super) fn lock(&self, name: &str) -> String {
        format!("{}:lock:{name}", self.prefix)
    }

    /// One credential's usage for one UTC day or one minute (both counted
    /// from the epoch): a hash of `answers` and `tokens`, expiring once no
    /// budget can look at it.
    pub(super) fn usage(&self, name: &str, span: &str, n: u64) -> String {
        format!("{}:usage:{name}:{span}{n}", self.prefix)
    }

    /// One session's pin (session affinity): a string holding the
    /// credential's name, with the affinity TTL. `hex` is the session's
    /// hash, never the client's own id.
    pub(super) fn session(&self, hex: &str) -> String {
        format!("{}:session:{hex}", self.prefix)
    }

    pub(super) fn channel(&self) -> &str {
        &self.channel
    }
}

/// Field names inside a credential's hash (see the module doc).
pub(super) mod field {
    pub const COOLDOWN_UNTIL: &str = "cooldown_until_ms";
    pub const COOLDOWN_KIND: &str = "cooldown_kind";
    pub const COOLDOWN_REASON: &str = "cooldown_reason";
    pub const DISABLED: &str = "disabled";
    pub const FAILURES: &str = "failures";
    pub const REFRESH_TOKEN: &str = "refresh_token";
    pub const REFRESH_VERSION: &str = "refresh_version";
    pub const REFRESH_SEED_FP: &str = "refresh_seed_fp";
    pub const ACCESS_TOKEN: &str = "access_token";
    pub const ACCESS_EXPIRES: &str = "access_expires_ms";
}

pub(super) fn kind_str(kind: CooldownKind) -> &'static str {
    match kind {
        CooldownKind::RateLimited => "rate_limited",
        CooldownKind::Quota => "quota",
    }
}

pub(super) fn parse_kind(s: &str) -> CooldownKind {
    // Unknown kinds (a newer replica's) are treated as the milder one: the
    // deadline, which is what keeps a credential out of rotation, is kept.
    if s == "quota" {
        CooldownKind::Quota
    } else {
        CooldownKind::RateLimited
    }
}

/// One pub/sub message. Never carries a secret: names and field kinds only,
/// and the replica it came from so a replica can skip its own messages.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Message {
    pub from: String,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Body {
    Change { credential: String, field: Field },
    Op { op: Op },
}

impl Message {
    pub(super) fn change(from: &str, credential: &str, field: Field) -> String {
        Message {
            from: from.to_string(),
            body: Body::Change {
                credential: credential.to_string(),
                field,
            },
        }
        .encode()
    }

    pub(super) fn op(from: &str, op: &Op) -> String {
        Message {
            from: from.to_string(),
            body: Body::Op { op: op.clone() },
        }
        .encode()
    }

    fn encode(&self) -> String {
        serde_json::to_string(self).expect("plain strings serialize")
    }

    /// The change this message announces, or `None` for our own messages
    /// and for ones this version cannot read.
    pub(super) fn decode(payload: &[u8], own_id: &str) -> Option<Change> {
        let m: Message = serde_json::from_slice(payload).ok()?;
        if m.from == own_id {
            return None;
        }
        Some(match m.body {
            Body::Change { credential, field } => Change::Credential {
                name: credential,
                field,
            },
            Body::Op { op } => Change::Op(op),
        })
    }
}

/// Checks a namespace: it sits inside a hash tag, so no braces, and nothing
/// that makes keys hard to read or type.
pub(super) fn check_namespace(ns: &str) -> Result<(), &'static str> {
    if ns.is_empty() || ns.len() > 64 {
        return Err("must be 1-64 characters");
    }
    if ns
        .chars()
        .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
    {
        return Err("must not hold braces, spaces or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_skip_their_sender() {
        let m = Message::change("me", "team-a", Field::Cooldown);
        assert_eq!(
            m,
            r#"{"from":"me","kind":"change","credential":"team-a","field":"cooldown"}"#
        );
        assert_eq!(Message::decode(m.as_bytes(), "me"), None);
        assert_eq!(
            Message::decode(m.as_bytes(), "you"),
            Some(Change::Credential {
                name: "team-a".into(),
                field: Field::Cooldown
            })
        );
        let op = Message::op(
            "me",
            &Op::UseNext {
                credential: "x".into(),
            },
        );
        assert_eq!(
            op,
            r#"{"from":"me","kind":"op","op":{"op":"use_next","credential":"x"}}"#
        );
        assert_eq!(
            Message::decode(Message::op("me", &Op::Rotate).as_bytes(), "you"),
            Some(Change::Op(Op::Rotate))
        );
        assert_eq!(
            Message::decode(b"{\"from\":\"x\",\"kind\":\"new\"}", "y"),
            None
        );
        assert_eq!(Message::decode(b"garbage", "y"), None);
    }

    #[test]
    fn keys_share_one_hash_tag_per_namespace() {
        let k = Keys::new("prod");
        assert_eq!(k.cred("a"), "tokenyard:{prod}:cred:a");
        assert_eq!(k.lock("a"), "tokenyard:{prod}:lock:a");
        assert_eq!(k.channel(), "tokenyard:{prod}:changes");
        assert!(check_namespace("prod-eu.1").is_ok());
        assert!(check_namespace("").is_err());
        assert!(check_namespace("a{b}").is_err());
        assert!(check_namespace("a b").is_err());
    }
}
