//! The Redis store behind shared pool state, against a real `redis-server`
//! on a loopback port (one per test, killed on drop). Skipped with a note
//! when `redis-server` is not installed, unless `TOKENYARD_REQUIRE_REDIS=1`
//! (`.ci/run` sets it), which makes a missing server a failure.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokenyard::secret::Secret;
use tokenyard::shared::{
    Change, CooldownKind, Field, HEARTBEAT, NewTokens, Op, SharedError, SharedStore, StoreOutcome,
};
use tokio::sync::broadcast;

use server::RedisServer;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn connect(server: &RedisServer, ns: &str) -> SharedStore {
    SharedStore::connect(&server.url(), None, ns)
        .await
        .expect("connect to the test redis")
}

/// The next change matching `want`, within `within`.
async fn next_change(
    rx: &mut broadcast::Receiver<Change>,
    within: Duration,
    want: impl Fn(&Change) -> bool,
) -> Option<Change> {
    tokio::time::timeout(within, async {
        loop {
            match rx.recv().await {
                Ok(c) if want(&c) => return Some(c),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

async fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn tokens(access: &str, refresh: Option<&str>) -> NewTokens {
    NewTokens {
        access_token: Secret::new(access),
        expires_ms: now_ms() + 3_600_000,
        refresh_token: refresh.map(Secret::new),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_only_ever_extends() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = connect(&server, "cd").await;
    let b = connect(&server, "cd").await;
    let t = now_ms();

    assert!(
        a.extend_cooldown("k", t + 10_000, CooldownKind::RateLimited, "429 on a")
            .await
            .unwrap()
    );
    // A milder (earlier) deadline from another replica loses, even a quota one.
    assert!(
        !b.extend_cooldown("k", t + 5_000, CooldownKind::Quota, "quota on b")
            .await
            .unwrap()
    );
    let cd = b.load(&["k"]).await.unwrap()["k"].cooldown.clone().unwrap();
    assert_eq!(
        (cd.until_ms, cd.kind, cd.reason.as_str()),
        (t + 10_000, CooldownKind::RateLimited, "429 on a")
    );
    // At the same deadline, quota is the stricter kind.
    assert!(
        b.extend_cooldown("k", t + 10_000, CooldownKind::Quota, "quota on b")
            .await
            .unwrap()
    );
    assert!(
        !a.extend_cooldown("k", t + 10_000, CooldownKind::RateLimited, "again")
            .await
            .unwrap()
    );
    assert_eq!(
        a.load(&["k"]).await.unwrap()["k"]
            .cooldown
            .as_ref()
            .unwrap()
            .kind,
        CooldownKind::Quota
    );

    // Two writers racing with interleaved deadlines: the latest wins.
    let mut tasks = Vec::new();
    for (i, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for j in 0..100u64 {
                let until = t + 20_000 + (j * 2 + i as u64) * 37 % 5_000;
                store
                    .extend_cooldown("race", until, CooldownKind::RateLimited, "race")
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let max = (0..100u64)
        .flat_map(|j| [0u64, 1].map(|i| t + 20_000 + (j * 2 + i) * 37 % 5_000))
        .max()
        .unwrap();
    let loaded = a.load(&["race", "never-seen"]).await.unwrap();
    assert_eq!(loaded["race"].cooldown.as_ref().unwrap().until_ms, max);
    assert_eq!(loaded["never-seen"], Default::default());

    // The plain fields.
    a.set_disabled("k", true).await.unwrap();
    a.set_failures("k", 3).await.unwrap();
    let k = &b.load(&["k"]).await.unwrap()["k"];
    assert!(k.disabled);
    assert_eq!(k.failures, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_other_replicas_fast_and_carry_no_secret() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = connect(&server, "ch").await;
    let b = connect(&server, "ch").await;
    let mut b_rx = b.changes();
    let mut a_rx = a.changes();

    // Latency of a write on A until B hears of it (write round trip included).
    let mut samples = Vec::new();
    for i in 0..50u64 {
        let start = Instant::now();
        a.extend_cooldown("k", now_ms() + 60_000 + i, CooldownKind::RateLimited, "429")
            .await
            .unwrap();
        let got = next_change(
            &mut b_rx,
            Duration::from_secs(2),
            |c| matches!(c, Change::Credential { name, field: Field::Cooldown } if name == "k"),
        )
        .await;
        assert!(got.is_some(), "change {i} never arrived");
        samples.push(start.elapsed());
    }
    samples.sort();
    let (p50, p90, max) = (samples[25], samples[45], samples[49]);
    println!("cooldown write on A -> change on B, 50 samples: p50 {p50:?} p90 {p90:?} max {max:?}");
    assert!(
        p90 < Duration::from_millis(100),
        "p90 {p90:?} is over 100 ms"
    );

    // Every kind of write, and ops, arrive; a store never hears itself.
    let secret = "rt-very-secret-0123456789";
    let seeded = a
        .seed_refresh_token("oauth", &Secret::new(secret))
        .await
        .unwrap();
    let lock = a
        .try_lock_refresh("oauth", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    a.store_refresh(
        &lock,
        seeded.version,
        &tokens("at-very-secret-0123456789", None),
    )
    .await
    .unwrap();
    a.release(lock).await.unwrap();
    a.set_disabled("k", true).await.unwrap();
    a.set_failures("k", 2).await.unwrap();
    a.publish_op(&Op::UseNext {
        credential: "k".into(),
    })
    .await
    .unwrap();
    a.publish_op(&Op::Rotate).await.unwrap();
    let want = [
        Change::Credential {
            name: "oauth".into(),
            field: Field::Tokens,
        },
        Change::Credential {
            name: "oauth".into(),
            field: Field::Tokens,
        },
        Change::Credential {
            name: "k".into(),
            field: Field::Disabled,
        },
        Change::Credential {
            name: "k".into(),
            field: Field::Failures,
        },
        Change::Op(Op::UseNext {
            credential: "k".into(),
        }),
        Change::Op(Op::Rotate),
    ];
    for w in want {
        let got = next_change(&mut b_rx, Duration::from_secs(2), |_| true).await;
        assert_eq!(got.as_ref(), Some(&w));
        assert!(!format!("{got:?}").contains("secret"));
    }
    // An unchanged value publishes nothing.
    a.set_failures("k", 2).await.unwrap();
    a.publish_op(&Op::Probe {
        credential: "k".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        next_change(&mut b_rx, Duration::from_secs(2), |_| true).await,
        Some(Change::Op(Op::Probe {
            credential: "k".into()
        }))
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(
        a_rx.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));

    // Another namespace on the same server hears nothing of this one.
    let other = connect(&server, "other").await;
    let mut other_rx = other.changes();
    a.set_failures("k", 5).await.unwrap();
    assert!(
        next_change(&mut b_rx, Duration::from_secs(2), |_| true)
            .await
            .is_some()
    );
    assert!(matches!(
        other_rx.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_lock_holder_among_thirty_contenders_on_three_replicas() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let stores = [
        connect(&server, "lock").await,
        connect(&server, "lock").await,
        connect(&server, "lock").await,
    ];
    let barrier = Arc::new(tokio::sync::Barrier::new(30));
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = stores[i % 3].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .try_lock_refresh("c", Duration::from_secs(10))
                .await
                .unwrap()
        }));
    }
    let mut holders = Vec::new();
    for t in tasks {
        if let Some(lock) = t.await.unwrap() {
            holders.push(lock);
        }
    }
    println!("30 contenders on 3 stores: {} holder(s)", holders.len());
    assert_eq!(holders.len(), 1);
    let lock = holders.pop().unwrap();
    assert!(
        stores[0]
            .try_lock_refresh("c", Duration::from_secs(10))
            .await
            .unwrap()
            .is_none()
    );
    // Another credential's lock is independent.
    assert!(
        stores[1]
            .try_lock_refresh("d", Duration::from_secs(10))
            .await
            .unwrap()
            .is_some()
    );
    let fence = lock.fence();
    assert!(stores[2].release(lock).await.unwrap());
    let next = stores[1]
        .try_lock_refresh("c", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert!(next.fence() > fence, "fencing tokens only grow");
}

/// The whole protocol with a fake token endpoint that rotates the refresh
/// token on every call: 30 requests on 3 replicas that all need a token
/// cause one call, and all end up with its access token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_is_single_flight_across_replicas() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let stores = [
        connect(&server, "sf").await,
        connect(&server, "sf").await,
        connect(&server, "sf").await,
    ];
    for s in &stores {
        s.seed_refresh_token("c", &Secret::new("rt-0-configured-token"))
            .await
            .unwrap();
    }
    let calls = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = stores[i % 3].clone();
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            let mut rx = store.changes();
            loop {
                let t = store.tokens("c").await.unwrap().unwrap();
                if let (Some(at), Some(exp)) = (&t.access_token, t.access_expires_ms)
                    && exp > now_ms()
                {
                    return at.expose().to_string();
                }
                if let Some(lock) = store
                    .try_lock_refresh("c", Duration::from_secs(10))
                    .await
                    .unwrap()
                {
                    // Re-read under the lock: someone may have just finished.
                    let t = store.tokens("c").await.unwrap().unwrap();
                    if t.access_token.is_none() {
                        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let new =
                            tokens(&format!("at-{n}"), Some(&format!("rt-{n}-rotated-token")));
                        assert!(
                            store
                                .store_refresh(&lock, t.version, &new)
                                .await
                                .unwrap()
                                .is_stored()
                        );
                    }
                    store.release(lock).await.unwrap();
                    continue;
                }
                let _ = next_change(&mut rx, Duration::from_millis(200), |c| {
                    matches!(
                        c,
                        Change::Credential {
                            field: Field::Tokens,
                            ..
                        }
                    )
                })
                .await;
            }
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        seen.insert(t.await.unwrap());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "token endpoint calls");
    assert_eq!(seen, HashSet::from(["at-1".to_string()]));
    let t = stores[0].tokens("c").await.unwrap().unwrap();
    assert_eq!(t.version, 2);
    assert_eq!(t.refresh_token.unwrap().expose(), "rt-1-rotated-token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_passes_the_lock_on_and_fences_out_its_old_holder() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = connect(&server, "lease").await;
    let b = connect(&server, "lease").await;
    let v = a
        .seed_refresh_token("c", &Secret::new("rt-1-configured-token"))
        .await
        .unwrap()
        .version;
    assert_eq!(v, 1);

    let stuck = a
        .try_lock_refresh("c", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    assert!(
        b.try_lock_refresh("c", Duration::from_secs(10))
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = b
        .try_lock_refresh("c", Duration::from_secs(10))
        .await
        .unwrap()
        .expect("lease ran out");
    assert!(fresh.fence() > stuck.fence());

    // The old holder comes back from its slow refresh: refused, and it
    // cannot release the new holder's lock either.
    let late = tokens("at-from-a", Some("rt-2-from-a-token"));
    assert_eq!(
        a.store_refresh(&stuck, v, &late).await.unwrap(),
        StoreOutcome::FencedOut
    );
    assert!(!a.release(stuck).await.unwrap());
    assert!(
        a.try_lock_refresh("c", Duration::from_secs(10))
            .await
            .unwrap()
            .is_none()
    );

    let good = tokens("at-from-b", Some("rt-2-from-b-token"));
    assert_eq!(
        b.store_refresh(&fresh, v, &good).await.unwrap(),
        StoreOutcome::Stored { version: 2 }
    );
    assert!(b.release(fresh).await.unwrap());
    let t = a.tokens("c").await.unwrap().unwrap();
    assert_eq!(t.refresh_token.unwrap().expose(), "rt-2-from-b-token");
    assert_eq!(t.access_token.unwrap().expose(), "at-from-b");
    assert_eq!(t.version, 2);

    // A's rotated token, put back at the version it would have had: Redis
    // holds that version already (B's), so it stays.
    let kept = a
        .restore_refresh_token("c", &Secret::new("rt-2-from-a-token"), v + 1)
        .await
        .unwrap();
    assert_eq!(kept.refresh_token.unwrap().expose(), "rt-2-from-b-token");

    // A lease that runs out with nobody taking over: the store is still
    // refused, and putting the rotated token back is what saves it.
    let slow = a
        .try_lock_refresh("c", Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rotated = tokens("at-3", Some("rt-3-from-a-token"));
    assert_eq!(
        a.store_refresh(&slow, 2, &rotated).await.unwrap(),
        StoreOutcome::FencedOut
    );
    let saved = a
        .restore_refresh_token("c", rotated.refresh_token.as_ref().unwrap(), 3)
        .await
        .unwrap();
    assert_eq!(
        (saved.refresh_token.unwrap().expose(), saved.version),
        ("rt-3-from-a-token", 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_refresh_token_never_overwrites_a_newer_one() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = connect(&server, "cas").await;
    let b = connect(&server, "cas").await;
    a.seed_refresh_token("c", &Secret::new("rt-1-configured-token"))
        .await
        .unwrap();
    // B read version 1 a while ago...
    let stale = b.tokens("c").await.unwrap().unwrap();
    assert_eq!(stale.version, 1);

    // ...then A refreshed and the provider rotated the token.
    let lock = a
        .try_lock_refresh("c", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        a.store_refresh(&lock, 1, &tokens("at-2", Some("rt-2-rotated-token")))
            .await
            .unwrap(),
        StoreOutcome::Stored { version: 2 }
    );
    a.release(lock).await.unwrap();

    // B, holding the lock properly but with its stale version: refused.
    let lock = b
        .try_lock_refresh("c", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        b.store_refresh(
            &lock,
            stale.version,
            &tokens("at-old", Some("rt-old-token-xyz"))
        )
        .await
        .unwrap(),
        StoreOutcome::Superseded { version: 2 }
    );
    let t = b.tokens("c").await.unwrap().unwrap();
    assert_eq!(
        t.refresh_token.as_ref().unwrap().expose(),
        "rt-2-rotated-token"
    );
    assert_eq!(t.access_token.as_ref().unwrap().expose(), "at-2");

    // A refresh that returns the same refresh token keeps the version.
    assert_eq!(
        b.store_refresh(&lock, 2, &tokens("at-3", Some("rt-2-rotated-token")))
            .await
            .unwrap(),
        StoreOutcome::Stored { version: 2 }
    );
    assert_eq!(
        b.store_refresh(&lock, 2, &tokens("at-4", None))
            .await
            .unwrap(),
        StoreOutcome::Stored { version: 2 }
    );
    b.release(lock).await.unwrap();
    assert_eq!(
        a.tokens("c")
            .await
            .unwrap()
            .unwrap()
            .access_token
            .unwrap()
            .expose(),
        "at-4"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_replica_to_seed_a_refresh_token_wins() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let stores = [
        connect(&server, "seed").await,
        connect(&server, "seed").await,
        connect(&server, "seed").await,
    ];
    assert_eq!(stores[0].tokens("c").await.unwrap(), None);
    let mut tasks = Vec::new();
    for (i, s) in stores.iter().enumerate() {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.seed_refresh_token("c", &Secret::new(format!("rt-config-of-replica-{i}")))
                .await
                .unwrap()
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert!(
        results.iter().all(|r| r == &results[0]),
        "all see the same token"
    );
    let winner = results[0].refresh_token.clone().unwrap();
    assert_eq!(results[0].version, 1);
    assert_eq!(results[0].seed_fingerprint, Some(winner.fingerprint()));

    // A later replica, even with another configured token, keeps the stored
    // (possibly rotated) one, and can tell its config differs.
    let later = stores[1]
        .seed_refresh_token("c", &Secret::new("rt-config-changed"))
        .await
        .unwrap();
    assert_eq!(later.refresh_token, Some(winner));
    assert_ne!(
        later.seed_fingerprint,
        Some(Secret::new("rt-config-changed").fingerprint())
    );

    // An operator's explicit replacement does win, as a new version.
    let new = Secret::new("rt-operator-pasted-token");
    assert_eq!(stores[2].replace_refresh_token("c", &new).await.unwrap(), 2);
    let t = stores[0].tokens("c").await.unwrap().unwrap();
    assert_eq!((t.refresh_token, t.version), (Some(new), 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_shows_in_health_and_ends_in_a_resync() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let a = connect(&server, "restart").await;
    let b = connect(&server, "restart").await;
    let mut rx = a.changes();
    let mut b_rx = b.changes();
    assert!(a.healthy());
    // Mid-refresh when Redis dies (and comes back empty).
    a.seed_refresh_token("c", &Secret::new("rt-1-configured-token"))
        .await
        .unwrap();
    let held = a
        .try_lock_refresh("c", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();

    server.stop();
    let down = wait_for(Duration::from_secs(5), || !a.healthy())
        .await
        .expect("healthy() never went false");
    let err = a
        .extend_cooldown("k", now_ms() + 1_000, CooldownKind::RateLimited, "429")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&server.url()) && text.contains("\"k\""),
        "{text}"
    );

    server.restart();
    let restarted = Instant::now();
    let resync = next_change(&mut rx, Duration::from_secs(10), |c| *c == Change::Resync).await;
    assert!(resync.is_some(), "no Resync after the restart");
    let back = restarted.elapsed();
    assert!(a.healthy());
    // B notices on its own schedule (on loaded cores, well after A): until
    // its Resync, its first command may still meet the dead connection.
    let resync = next_change(&mut b_rx, Duration::from_secs(10), |c| *c == Change::Resync).await;
    assert!(resync.is_some(), "no Resync for B after the restart");
    println!(
        "redis killed: unhealthy after {down:?}; restarted: Resync and healthy after {back:?}"
    );

    // The empty Redis: a lock taken now has a larger fence than any from
    // before, so the old holder is refused; its rotated token, put back at
    // its version, beats the configured one another replica re-seeded.
    let b_lock = b
        .try_lock_refresh("c", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(b_lock.fence() > held.fence());
    let rotated = tokens("at-2", Some("rt-2-rotated-token"));
    assert_eq!(
        a.store_refresh(&held, 1, &rotated).await.unwrap(),
        StoreOutcome::FencedOut
    );
    b.release(b_lock).await.unwrap();
    let reseeded = b
        .seed_refresh_token("c", &Secret::new("rt-1-configured-token"))
        .await
        .unwrap();
    assert_eq!(reseeded.version, 1);
    let restored = a
        .restore_refresh_token("c", rotated.refresh_token.as_ref().unwrap(), 2)
        .await
        .unwrap();
    assert_eq!(
        restored.refresh_token.unwrap().expose(),
        "rt-2-rotated-token"
    );
    let stale = b
        .restore_refresh_token("c", &Secret::new("rt-1-configured-token"), 1)
        .await
        .unwrap();
    assert_eq!(
        (stale.refresh_token.unwrap().expose(), stale.version),
        ("rt-2-rotated-token", 2)
    );

    // Both stores work again, including notifications between them.
    assert!(
        wait_for(Duration::from_secs(5), || b.healthy())
            .await
            .is_some()
    );
    a.extend_cooldown("k", now_ms() + 5_000, CooldownKind::RateLimited, "429")
        .await
        .unwrap();
    let got = next_change(&mut b_rx, Duration::from_secs(2), |c| {
        matches!(
            c,
            Change::Credential {
                field: Field::Cooldown,
                ..
            }
        )
    })
    .await;
    assert!(got.is_some(), "B hears A after the restart");
}

/// A server that stops answering without closing anything (a partition)
/// is noticed by the heartbeat alone, commands fail within their timeout
/// rather than hang, and a quiet healthy connection is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_is_noticed_by_the_heartbeat() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = connect(&server, "silent").await;
    let mut rx = a.changes();

    // Quiet but healthy for a few heartbeats: no resync, still healthy.
    let quiet = next_change(&mut rx, HEARTBEAT * 3, |_| true).await;
    assert_eq!(quiet, None, "a healthy idle subscription produced a change");
    assert!(a.healthy());

    server.freeze(true);
    let down = wait_for(Duration::from_secs(10), || !a.healthy()).await;
    let started = Instant::now();
    let failed = a
        .extend_cooldown("k", now_ms() + 1_000, CooldownKind::RateLimited, "429")
        .await;
    let command = started.elapsed();
    server.freeze(false);
    let down = down.expect("healthy() never went false without any command");
    assert!(failed.is_err(), "a command to a frozen server failed");
    assert!(command < Duration::from_secs(5), "command took {command:?}");
    let thawed = Instant::now();
    let resync = next_change(&mut rx, Duration::from_secs(10), |c| *c == Change::Resync).await;
    println!(
        "frozen redis: unhealthy after {down:?} (heartbeat only), a command failed after \
         {command:?}; thawed: Resync after {:?}",
        thawed.elapsed()
    );
    assert!(resync.is_some(), "no Resync after the thaw");
    assert!(a.healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_debug_errors_or_messages() {
    let password = "redis-password-0123456789";
    let Some(server) = RedisServer::start_with(&["--requirepass", password]) else {
        return;
    };
    let pw = Secret::new(password);

    // Wrong or missing password: errors name the URL, never the password.
    let with_pw = format!("redis://:{password}@127.0.0.1:{}", server.port());
    let wrong = format!(
        "redis://:not-the-password-987654@127.0.0.1:{}",
        server.port()
    );
    for (url, given) in [(server.url(), None), (wrong.clone(), None)] {
        let err = SharedStore::connect(&url, given, "sec").await.unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, SharedError::Connect { .. }), "{shown}");
        assert!(
            !shown.contains("password-0123") && !shown.contains("987654"),
            "{shown}"
        );
        assert!(
            shown.contains(&format!("127.0.0.1:{}", server.port())),
            "{shown}"
        );
    }
    let bad = SharedStore::connect("http://:secret-in-url-555@host", None, "sec")
        .await
        .unwrap_err();
    assert!(!format!("{bad} {bad:?}").contains("555"), "{bad:?}");
    let bad = SharedStore::connect("not a url secret-666", None, "sec")
        .await
        .unwrap_err();
    assert!(!format!("{bad} {bad:?}").contains("666"), "{bad:?}");
    assert!(matches!(
        SharedStore::connect(&server.url(), Some(&pw), "a{b}").await,
        Err(SharedError::BadNamespace { .. })
    ));

    // The Secret password wins over the one (wrong) in the URL; a password in
    // the URL works too.
    let a = SharedStore::connect(&wrong, Some(&pw), "sec")
        .await
        .unwrap();
    let b = SharedStore::connect(&with_pw, None, "sec").await.unwrap();
    let mut rx = b.changes();

    let rt = "rt-top-secret-not-a-real-key-one";
    let at = "at-top-secret-not-a-real-key-two";
    let seeded = a.seed_refresh_token("c", &Secret::new(rt)).await.unwrap();
    let lock = a
        .try_lock_refresh("c", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let new = tokens(at, Some("rt-top-secret-not-a-real-key-three"));
    let lock_debug = format!("{lock:?} {new:?}");
    a.store_refresh(&lock, seeded.version, &new).await.unwrap();
    a.release(lock).await.unwrap();
    let loaded = b.load(&["c"]).await.unwrap();
    let stored = b.tokens("c").await.unwrap().unwrap();
    assert_eq!(stored.access_token.as_ref().unwrap().expose(), at);
    let change = next_change(&mut rx, Duration::from_secs(2), |_| true).await;

    let everything =
        format!("{a:?} {b:?} {seeded:?} {loaded:?} {stored:?} {change:?} {lock_debug}");
    println!("{everything}");
    for needle in ["top-secret", "password-0123", "987654"] {
        assert!(
            !everything.contains(needle),
            "{needle} leaked: {everything}"
        );
    }
    assert!(format!("{a:?}").contains(&format!("127.0.0.1:{}", server.port())));
}

mod server {

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// How long a fresh server may take to accept connections.
    const READY_WITHIN: Duration = Duration::from_secs(10);

    /// A `redis-server` child process, killed on drop. Persistence is off: a
    /// restart starts empty, like a crashed cache without a disk.
    pub struct RedisServer {
        port: u16,
        args: Vec<String>,
        child: Option<Child>,
        log: PathBuf,
    }

    impl RedisServer {
        /// Starts a server on a free loopback port.
        pub fn start() -> Option<RedisServer> {
            Self::start_with(&[])
        }

        /// Like [`RedisServer::start`], with extra arguments for the server
        /// (e.g. `["--requirepass", "…"]`).
        pub fn start_with(args: &[&str]) -> Option<RedisServer> {
            if let Err(e) = Command::new("redis-server")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
            {
                let why = format!(
                    "redis-server cannot run ({e}); install it: apt-get install -y redis-server"
                );
                if std::env::var_os("TOKENYARD_REQUIRE_REDIS")
                    .is_some_and(|v| !v.is_empty() && v != "0")
                {
                    panic!("TOKENYARD_REQUIRE_REDIS=1 but {why}");
                }
                eprintln!("SKIPPED: {why}");
                return None;
            }
            // Redis cannot pick a free port itself: take one from the OS, let
            // it go, and hand it over. Another process may grab it in between,
            // so try a few.
            let mut last = String::new();
            for _ in 0..5 {
                let port = TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("a free loopback port")
                    .port();
                let mut server = RedisServer {
                    port,
                    args: args.iter().map(|a| a.to_string()).collect(),
                    child: None,
                    log: std::env::temp_dir()
                        .join(format!("tokenyard-redis-{}-{port}.log", std::process::id())),
                };
                match server.spawn() {
                    Ok(()) => return Some(server),
                    Err(e) => last = e,
                }
            }
            panic!("redis-server did not start: {last}");
        }

        pub fn port(&self) -> u16 {
            self.port
        }

        /// `redis://127.0.0.1:PORT`.
        pub fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections stay
        /// open but nothing answers, like a network partition.
        pub fn freeze(&self, frozen: bool) {
            use nix::sys::signal::{Signal, kill};
            let child = self.child.as_ref().expect("server running");
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let sig = if frozen {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            kill(pid, sig).expect("signal redis-server");
        }

        /// Kills the server (SIGKILL, like a crash) and waits for it to go.
        pub fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// Starts it again on the same port (empty: persistence is off).
        pub fn restart(&mut self) {
            self.stop();
            let mut last = String::new();
            for _ in 0..20 {
                match self.spawn() {
                    Ok(()) => return,
                    Err(e) => last = e,
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("redis-server did not restart on port {}: {last}", self.port);
        }

        fn spawn(&mut self) -> Result<(), String> {
            let port = self.port.to_string();
            let log = self.log.display().to_string();
            let mut child = Command::new("redis-server")
                .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
                .args(["--appendonly", "no", "--daemonize", "no"])
                .args(["--loglevel", "warning", "--logfile", &log])
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot spawn redis-server: {e}"))?;
            let deadline = Instant::now() + READY_WITHIN;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    return Err(format!("exited with {status}: {}", log.trim()));
                }
                if answers(self.port) {
                    self.child = Some(child);
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "not answering on port {} after {READY_WITHIN:?}",
                        self.port
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Whether something on `port` answers a PING like Redis (a `NOAUTH`
    /// error counts: the server is up, it wants a password).
    fn answers(port: u16) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(n) if n > 0 => buf[0] == b'+' || buf[..n].starts_with(b"-NOAUTH"),
            _ => false,
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            self.stop();
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
