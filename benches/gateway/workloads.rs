//! The five workloads. Each takes the targets to compare (always with the
//! upstream reached directly among them), runs them alternately and
//! returns raw numbers; `gateway.rs` prints them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::client::{self, Sample, StreamRun, Target};
use super::procs::{self, Gateway};
use super::stats::{p50_p99, pct_ms};
use super::upstream::{self, CHUNK_INTERVAL, Upstream};

/// Everything the workloads share.
pub struct Bench {
    pub s: Settings,
    /// The upstream's runtime (threads `bench-up`) and the load
    /// generator's (`bench-load`), one worker each, so their CPU can be
    /// told apart.
    pub up_rt: tokio::runtime::Runtime,
    pub load_rt: tokio::runtime::Runtime,
    pub upstream: SocketAddr,
    pub seen: Arc<Upstream>,
    /// Configs and state files of the gateways this bench starts.
    pub dir: tempfile::TempDir,
    /// (core of this process, core of the gateway).
    pub pin: Option<(usize, usize)>,
    pub clk_tck: f64,
    /// Gateways started so far, for file names.
    pub started: std::cell::Cell<usize>,
}

pub struct Settings {
    pub seq: usize,
    pub conns: usize,
    pub secs: f64,
    pub warmup: f64,
    pub rounds: usize,
    pub streams: usize,
    pub stream_conc: usize,
    pub levels: Vec<usize>,
    pub failover: usize,
    pub cold: usize,
    /// Workloads to run (`BENCH_ONLY=1,4`); all by default.
    pub only: Vec<u8>,
}

impl Settings {
    pub fn from_env() -> Settings {
        Settings {
            seq: env_or("BENCH_SEQ", 2000),
            conns: env_or("BENCH_CONNS", 64),
            secs: env_or("BENCH_SECS", 5.0),
            warmup: env_or("BENCH_WARMUP_SECS", 1.0),
            rounds: env_or("BENCH_ROUNDS", 2),
            streams: env_or("BENCH_STREAMS", 200),
            stream_conc: env_or("BENCH_STREAM_CONC", 20),
            levels: std::env::var("BENCH_LEVELS")
                .unwrap_or_else(|_| "100,1000,5000".into())
                .split(',')
                .map(|n| n.trim().parse().expect("BENCH_LEVELS: numbers"))
                .collect(),
            failover: env_or("BENCH_FAILOVER", 2000),
            cold: env_or("BENCH_COLD", 5),
            only: std::env::var("BENCH_ONLY")
                .unwrap_or_else(|_| "1,2,3,4,5".into())
                .split(',')
                .map(|n| n.trim().parse().expect("BENCH_ONLY: workload numbers"))
                .collect(),
        }
    }

    pub fn runs(&self, workload: u8) -> bool {
        self.only.contains(&workload)
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

impl Bench {
    pub fn gateway_core(&self) -> Option<usize> {
        self.pin.map(|(_, g)| g)
    }

    /// A fresh headless tokenyard in front of the upstream, listening.
    pub fn tokenyard(&self) -> Gateway {
        let n = self.started.get() + 1;
        self.started.set(n);
        let gw = Gateway::spawn(self.dir.path(), self.upstream, self.gateway_core(), n);
        gw.wait_listening();
        gw
    }

    pub fn direct(&self) -> Arc<Target> {
        Arc::new(Target::direct(self.upstream))
    }
}

/// Workload 1 for `targets` (the first is direct).
pub fn sequential(b: &Bench, targets: &[Arc<Target>]) -> Vec<Sample> {
    let warmup = (b.s.seq / 10).max(50);
    b.load_rt
        .block_on(client::alternating(targets, b.s.seq, warmup))
}

/// One flat-out run.
pub struct Flat {
    pub name: String,
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
    pub errors: u64,
    /// CPU the upstream spent per request in this run, µs.
    pub upstream_us: f64,
    /// CPU the gateway (its whole process tree) spent per request, µs,
    /// when its pid is known.
    pub gateway_us: Option<f64>,
    /// The part of `gateway_us` spent in the kernel (system time).
    pub gateway_sys_us: Option<f64>,
    /// Resident memory of the gateway after the run (KiB), if known.
    pub rss_kib: Option<u64>,
}

impl Flat {
    /// One row of several runs of the same target: the mean of each figure
    /// (errors summed, the last run's memory).
    pub fn mean(runs: Vec<Flat>) -> Flat {
        let n = runs.len().max(1) as f64;
        let avg = |f: &dyn Fn(&Flat) -> f64| runs.iter().map(f).sum::<f64>() / n;
        let avg_opt = |f: &dyn Fn(&Flat) -> Option<f64>| {
            let v: Option<Vec<f64>> = runs.iter().map(f).collect();
            v.map(|v| v.iter().sum::<f64>() / n)
        };
        Flat {
            name: runs.first().map_or_else(String::new, |r| r.name.clone()),
            rps: avg(&|r| r.rps),
            p50: avg(&|r| r.p50),
            p99: avg(&|r| r.p99),
            errors: runs.iter().map(|r| r.errors).sum(),
            upstream_us: avg(&|r| r.upstream_us),
            gateway_us: avg_opt(&|r| r.gateway_us),
            gateway_sys_us: avg_opt(&|r| r.gateway_sys_us),
            rss_kib: runs.last().and_then(|r| r.rss_kib),
        }
    }
}

/// A flat-out run of `secs` after `warmup` (seconds).
pub fn flat_out(
    b: &Bench,
    target: &Arc<Target>,
    (warmup, secs): (f64, f64),
    rss: &dyn Fn() -> Option<u64>,
    pid: Option<u32>,
) -> Flat {
    let before = procs::thread_ticks("bench-up");
    let gw_before = pid.map(procs::tree_ticks);
    let (sample, window) = b.load_rt.block_on(client::flat_out(
        target.clone(),
        b.s.conns,
        Duration::from_secs_f64(warmup),
        Duration::from_secs_f64(secs),
    ));
    let ticks = procs::thread_ticks("bench-up") - before;
    let gw_ticks = pid.zip(gw_before).map(|(p, (user, sys))| {
        let (u, s) = procs::tree_ticks(p);
        (u - user, s - sys)
    });
    let (p50, p99) = p50_p99(&sample.ok);
    // The upstream also served the warm-up and the tail; charge its CPU to
    // every request of the whole run, estimated from the window's rate.
    let rps = sample.ok.len() as f64 / window.as_secs_f64();
    let served = rps * (secs + warmup);
    Flat {
        name: target.name.clone(),
        rps,
        p50,
        p99,
        errors: sample.errors,
        upstream_us: ticks as f64 / b.clk_tck * 1e6 / served.max(1.0),
        gateway_us: gw_ticks.map(|(u, s)| (u + s) as f64 / b.clk_tck * 1e6 / served.max(1.0)),
        gateway_sys_us: gw_ticks.map(|(_, s)| s as f64 / b.clk_tck * 1e6 / served.max(1.0)),
        rss_kib: rss(),
    }
}

/// Workload 3, first part: streams at low concurrency.
#[derive(Default)]
pub struct StreamStats {
    pub ttfb: Vec<u32>,
    pub gaps: Vec<u32>,
    pub relay: Vec<u32>,
    pub failed: usize,
}

pub fn stream_stats(b: &Bench, target: &Arc<Target>) -> StreamStats {
    let runs = b.load_rt.block_on(client::streams(
        target.clone(),
        b.s.streams,
        b.s.stream_conc,
        Duration::from_millis(3),
    ));
    let mut st = StreamStats {
        ttfb: Vec::new(),
        gaps: Vec::new(),
        relay: Vec::new(),
        failed: 0,
    };
    for r in runs {
        if !r.ok {
            st.failed += 1;
            continue;
        }
        st.ttfb.push(r.ttfb_us);
        st.gaps.extend(r.gaps_us);
        st.relay.extend(r.relay_us);
    }
    st
}

/// Workload 3, second part: `n` streams open at once.
pub struct Level {
    pub n: usize,
    pub ok: usize,
    /// Worst chunk: client arrival − due, ms.
    pub max_late: f64,
    pub p99_late: f64,
    /// Worst chunk: upstream send − due (the upstream's own lag), ms.
    pub upstream_late: f64,
    /// Gateway RSS with every stream open minus its RSS before the first
    /// level, per stream, KiB.
    pub kib_per_stream: Option<f64>,
    pub rss_open_kib: Option<u64>,
}

impl Level {
    /// A chunk later than ten intervals is late.
    pub fn late(&self) -> bool {
        self.max_late > CHUNK_INTERVAL.as_secs_f64() * 1000.0 * 10.0 || self.ok < self.n
    }
}

/// `baseline`: the gateway's RSS before the first level. Each level is
/// measured against it, not against the RSS just before the level: memory
/// an earlier level left resident would be reused unseen and make the
/// later levels look cheaper per stream than they are.
pub fn level(b: &Bench, target: &Arc<Target>, n: usize, gw: Option<(&Gateway, u64)>) -> Level {
    let idle = gw.map(|(_, baseline)| baseline);
    let gw = gw.map(|(gw, _)| gw);
    // Every stream starts within one second; all are open from then until
    // the first ends (64 × 20 ms = 1.28 s after it started).
    let stagger = Duration::from_secs(1) / n as u32;
    let task = b
        .load_rt
        .spawn(client::streams(target.clone(), n, n, stagger));
    std::thread::sleep(Duration::from_millis(1150));
    let open = gw.map(Gateway::rss_kib);
    let runs: Vec<StreamRun> = b.load_rt.block_on(task).expect("the streams task");
    let ok = runs.iter().filter(|r| r.ok).count();
    let late: Vec<u32> = runs
        .iter()
        .map(|r| r.max_late_us.min(u32::MAX as u64) as u32)
        .collect();
    Level {
        n,
        ok,
        max_late: late.iter().copied().max().unwrap_or(0) as f64 / 1000.0,
        p99_late: pct_ms(&late, 0.99),
        upstream_late: runs
            .iter()
            .map(|r| r.max_upstream_late_us)
            .max()
            .unwrap_or(0) as f64
            / 1000.0,
        kib_per_stream: idle
            .zip(open)
            .map(|(i, o)| o.saturating_sub(i) as f64 / n as f64),
        rss_open_kib: open,
    }
}

/// Workload 4 for one gateway.
pub struct Failover {
    pub name: String,
    pub n: usize,
    pub ok: usize,
    /// Requests the upstream answered 429 at least once (ground truth).
    pub retried: Vec<u32>,
    pub plain: Vec<u32>,
    /// Requests whose `x-tokenyard-attempts` was above 1 (tokenyard only).
    pub attempts_gt1: Option<usize>,
    /// Failures by status (0: no answer at all).
    pub failures: std::collections::BTreeMap<u16, usize>,
    /// The first transport error, if any.
    pub first_error: Option<String>,
}

pub fn failover(b: &Bench, target: &Arc<Target>, first_id: u64) -> Failover {
    let answers = b
        .load_rt
        .block_on(client::failover(target.clone(), b.s.failover, first_id));
    let limited = b.seen.rate_limited.lock().unwrap().clone();
    let mut f = Failover {
        name: target.name.clone(),
        n: answers.len(),
        ok: 0,
        retried: Vec::new(),
        plain: Vec::new(),
        attempts_gt1: None,
        failures: Default::default(),
        first_error: None,
    };
    for (id, a) in answers {
        let a = a.map_err(|e| f.first_error.get_or_insert(e).clone()).ok();
        let status = a.as_ref().map_or(0, |a| a.status);
        let Some(a) = a.filter(|_| status == 200) else {
            *f.failures.entry(status).or_default() += 1;
            continue;
        };
        f.ok += 1;
        if let Some(n) = a.attempts {
            *f.attempts_gt1.get_or_insert(0) += usize::from(n > 1);
        }
        if limited.contains(&id) {
            f.retried.push(a.micros);
        } else {
            f.plain.push(a.micros);
        }
    }
    f
}

/// The upstream's evidence: the sim (no delay, one chunk) against the
/// hand-written server the bench uses, both reached directly at full load
/// for a short run. (The minimal hyper server it replaced is no longer
/// measured; the numbers that decided it are in `upstream.rs`.) Returns
/// (label, req/s, upstream µs CPU per request).
pub fn choose_upstream(b: &Bench) -> Vec<(&'static str, f64, f64)> {
    use tokenyard::sim::{self, Limit, SimAccount, SimConfig};
    let cfg = SimConfig {
        accounts: upstream::KEYS
            .iter()
            .enumerate()
            .map(|(i, k)| SimAccount::api_key(format!("bench-{}", i + 1), *k, Limit::Unlimited))
            .collect(),
        models: vec!["bench-model".into()],
        chunks: 1,
        chunk_interval: Duration::ZERO,
        latency: Duration::ZERO,
        ..SimConfig::default()
    };
    let sim = b
        .up_rt
        .block_on(async { sim::start(cfg, "127.0.0.1:0".parse().unwrap()).await })
        .expect("the sim starts");
    let sim_target = Arc::new(Target::direct(sim.addr()));
    let sim_run = flat_out(b, &sim_target, (0.5, 2.0), &|| None, None);
    b.up_rt.block_on(sim.shutdown());
    let own_run = flat_out(b, &b.direct(), (0.5, 2.0), &|| None, None);
    vec![
        ("sim (no delay, 1 chunk)", sim_run.rps, sim_run.upstream_us),
        ("hand-written HTTP/1.1", own_run.rps, own_run.upstream_us),
    ]
}
