//! What the store holds about each credential, besides its tokens: the
//! cooldown, the operator's switch and the failure count, and the
//! operator's ops sent to every replica.

use super::types::parse_cred;
use super::wire::field;
use super::*;

impl SharedStore {
    /// Everything stored about each credential; a credential Redis knows
    /// nothing of comes back as the default (ready, no tokens).
    pub async fn load(&self, names: &[&str]) -> Result<HashMap<String, SharedCred>, SharedError> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for name in names {
            pipe.hgetall(self.inner.keys.cred(name));
        }
        let r: redis::RedisResult<Vec<HashMap<String, String>>> =
            pipe.query_async(&mut self.con()).await;
        let hashes = self.check(|| format!("reading {} credential(s)", names.len()), r)?;
        Ok(names
            .iter()
            .zip(hashes)
            .map(|(name, h)| (name.to_string(), parse_cred(&h)))
            .collect())
    }

    /// Moves the cooldown of `name` to end at `until_ms` (wall-clock unix
    /// ms), unless the stored one already ends as late or later. Returns
    /// whether it was written (and so published).
    pub async fn extend_cooldown(
        &self,
        name: &str,
        until_ms: u64,
        kind: CooldownKind,
        reason: &str,
    ) -> Result<bool, SharedError> {
        let r: redis::RedisResult<i64> = self
            .inner
            .scripts
            .extend_cooldown
            .key(self.inner.keys.cred(name))
            .arg(until_ms)
            .arg(wire::kind_str(kind))
            .arg(reason)
            .arg(self.inner.keys.channel())
            .arg(self.message(name, Field::Cooldown))
            .invoke_async(&mut self.con())
            .await;
        Ok(self.check(|| format!("extending the cooldown of {name:?}"), r)? == 1)
    }

    /// See [`SharedState::add_usage`]: one pipeline of four increments and
    /// two expiries (a day's counts live two days, a minute's two minutes).
    pub async fn add_usage(
        &self,
        name: &str,
        day: u64,
        minute: u64,
        tokens: u64,
    ) -> Result<SharedUsage, SharedError> {
        let day_key = self.inner.keys.usage(name, "d", day);
        let minute_key = self.inner.keys.usage(name, "m", minute);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hincr(&day_key, "answers", 1)
            .hincr(&day_key, "tokens", tokens)
            .expire(&day_key, 2 * 86_400)
            .ignore()
            .hincr(&minute_key, "answers", 1)
            .hincr(&minute_key, "tokens", tokens)
            .expire(&minute_key, 120)
            .ignore();
        let r: redis::RedisResult<(u64, u64, u64, u64)> = pipe.query_async(&mut self.con()).await;
        let (day_answers, day_tokens, minute_answers, minute_tokens) =
            self.check(|| format!("adding usage of {name:?}"), r)?;
        Ok(SharedUsage {
            day_answers,
            day_tokens,
            minute_answers,
            minute_tokens,
        })
    }

    /// Every replica's counts of local day `day`, for each of `names` that
    /// has any: one pipeline of `HMGET`s.
    pub async fn day_usage(
        &self,
        names: &[&str],
        day: u64,
    ) -> Result<HashMap<String, crate::vocab::DayCounts>, SharedError> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for name in names {
            pipe.cmd("HMGET")
                .arg(self.inner.keys.usage(name, "d", day))
                .arg("answers")
                .arg("tokens");
        }
        let r: redis::RedisResult<Vec<(Option<u64>, Option<u64>)>> =
            pipe.query_async(&mut self.con()).await;
        let found = self.check(|| "reading the day's usage".to_string(), r)?;
        Ok(names
            .iter()
            .zip(found)
            .filter_map(|(name, (answers, tokens))| {
                Some((
                    name.to_string(),
                    crate::vocab::DayCounts {
                        answers: answers?,
                        tokens: tokens.unwrap_or(0),
                    },
                ))
            })
            .collect())
    }

    /// The operator's switch. Publishes only if it changed.
    pub async fn set_disabled(&self, name: &str, disabled: bool) -> Result<(), SharedError> {
        let value = if disabled { "1" } else { "0" };
        self.set_field(name, field::DISABLED, value, Field::Disabled)
            .await
    }

    /// The consecutive-failure count (last writer wins). Publishes only if
    /// it changed.
    pub async fn set_failures(&self, name: &str, failures: u32) -> Result<(), SharedError> {
        self.set_field(
            name,
            field::FAILURES,
            &failures.to_string(),
            Field::Failures,
        )
        .await
    }

    async fn set_field(
        &self,
        name: &str,
        hash_field: &str,
        value: &str,
        field: Field,
    ) -> Result<(), SharedError> {
        let r: redis::RedisResult<i64> = self
            .inner
            .scripts
            .set_field
            .key(self.inner.keys.cred(name))
            .arg(hash_field)
            .arg(value)
            .arg(self.inner.keys.channel())
            .arg(self.message(name, field))
            .invoke_async(&mut self.con())
            .await;
        self.check(|| format!("setting {hash_field} of {name:?}"), r)
            .map(|_| ())
    }

    /// Sends an operator op to every other replica.
    pub async fn publish_op(&self, op: &Op) -> Result<(), SharedError> {
        let r: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(self.inner.keys.channel())
            .arg(Message::op(&self.inner.id, op))
            .query_async(&mut self.con())
            .await;
        self.check(|| format!("publishing {op:?}"), r).map(|_| ())
    }
}
