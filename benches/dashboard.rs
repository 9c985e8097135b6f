//! What the live dashboard costs. The real `tokenyard` binary proxies to the
//! simulator (in this process) under load from this process, once with the
//! dashboard open in a pseudo-terminal and once with `--no-tui`, alternating
//! so machine drift cancels out. Reported per run: throughput, errors, latency, the gateway's
//! CPU, and with the dashboard the CPU of its `tokenyard-tui` thread (and of
//! tui-logger's `move_events` thread), frames and bytes drawn.
//!
//! Two phases. Flat out: every connection sends its next request as soon as
//! the last is answered, so throughput is what the machine can do and the
//! dashboard's cost shows as lost throughput. Paced: a fixed rate
//! (`BENCH_RATE`, 2,000 req/s), where both modes serve the same load and the
//! cost shows as gateway CPU.
//!
//! `cargo bench --bench dashboard`. Knobs (environment):
//! `BENCH_SECS` (measured seconds per run, 8), `BENCH_WARMUP_SECS` (2),
//! `BENCH_ROUNDS` (4: each round runs both modes), `BENCH_CONNS` (keep-alive
//! client connections, 48), `BENCH_RATE` (req/s of the paced phase, 2000;
//! 0 skips it), `BENCH_LOAD_THREADS` / `BENCH_SIM_THREADS` (runtime workers
//! of the load generator and the sim in this process, 1), `BENCH_SCREEN`
//! (set: print the dashboard as it looked at the end of each of its runs),
//! `BENCH_BIN` (another tokenyard binary to measure, e.g. a patched build).
//!
//! Under `cargo test --benches` (no `--bench` argument) it only says so and
//! exits: the numbers need a quiet machine and a release build.

#[path = "dashboard/gateway.rs"]
mod gateway;
#[path = "dashboard/load.rs"]
mod load;
#[path = "dashboard/procfs.rs"]
mod procfs;
#[path = "dashboard/report.rs"]
mod report;
#[path = "dashboard/runs.rs"]
mod runs;

use std::str::FromStr;

use gateway::kill_gateways_on_signal;
use procfs::clock_ticks;
use report::{Run, print_machine, summary};
use runs::Bench;

/// Credentials in the pool (and accounts in the sim), all unlimited, so the
/// gateway rotates among several but never waits for one.
const KEYS: usize = 3;
/// The load the verdict is about: the paced phase's default rate, and the
/// throughput flat out must reach.
const TARGET_RPS: f64 = 2000.0;
const BODY: &str = r#"{"model":"sim-small","messages":[{"role":"user","content":"hi"}]}"#;

struct Settings {
    secs: f64,
    warmup: f64,
    rounds: usize,
    conns: usize,
    /// Requests a second of the paced phase; 0 skips it.
    rate: f64,
    load_threads: usize,
    sim_threads: usize,
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            secs: env_or("BENCH_SECS", 8.0),
            warmup: env_or("BENCH_WARMUP_SECS", 2.0),
            rounds: env_or("BENCH_ROUNDS", 4),
            conns: env_or("BENCH_CONNS", 48),
            rate: env_or("BENCH_RATE", TARGET_RPS),
            load_threads: env_or("BENCH_LOAD_THREADS", 1),
            sim_threads: env_or("BENCH_SIM_THREADS", 1),
        }
    }
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `serve` on a terminal: the dashboard is up.
    Dashboard,
    /// `serve --no-tui`, stdout to a pipe.
    Headless,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Dashboard => "tui",
            Mode::Headless => "headless",
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("dashboard bench: skipped outside `cargo bench --bench dashboard`");
        return;
    }
    let s = Settings::from_env();
    print_machine(&s);
    let bench = Bench {
        sim_rt: runtime("bench-sim", s.sim_threads),
        load_rt: runtime("bench-load", s.load_threads),
        dir: tempfile::tempdir().expect("a temporary directory"),
        clk_tck: clock_ticks(),
        s,
    };
    kill_gateways_on_signal(&bench.load_rt, bench.dir.path().to_owned());
    let s = &bench.s;
    // The first run after a build met a cold page cache and a busy machine:
    // one short run that counts for nothing.
    let prime = bench.run(0, Mode::Headless, None, 1.0);
    println!("priming run (not counted): {:.0} req/s\n", prime.rps);

    let mut n = 0;
    let paced = (s.rate > 0.0).then_some(Some(s.rate));
    for pace in std::iter::once(None).chain(paced) {
        match pace {
            None => println!("flat out: {} connections, back to back", s.conns),
            Some(rate) => println!("\npaced: {rate:.0} req/s over {} connections", s.conns),
        }
        println!("{}", Run::HEADER);
        let mut runs = Vec::new();
        for round in 0..s.rounds {
            // ABBA order: a drift that is linear in time hits both modes
            // alike.
            let order = if round % 2 == 0 {
                [Mode::Dashboard, Mode::Headless]
            } else {
                [Mode::Headless, Mode::Dashboard]
            };
            for mode in order {
                n += 1;
                let run = bench.run(n, mode, pace, s.secs);
                println!("{}", run.row(n));
                runs.push(run);
            }
        }
        summary(&runs, pace, s);
    }
}

fn runtime(name: &str, workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
