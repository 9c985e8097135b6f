//! What tokenyard costs per request, next to the upstream reached directly
//! (and, driven by `benches/peers.sh`, next to other gateways).
//!
//! A minimal hyper upstream runs in this process (its evidence of being
//! fast enough is printed first), the real `tokenyard` binary runs headless
//! in front of it, and a hyper load generator in this process measures,
//! alternating gateway and direct so machine drift hits both:
//! 1. added latency, one request at a time (p50/p99 over `BENCH_SEQ`);
//! 2. throughput at `BENCH_CONNS` keep-alive connections;
//! 3. streaming (1 role + 64 content chunks, 20 ms apart): added time to
//!    first byte and inter-chunk gap, then 100 / 1,000 / 5,000 streams at
//!    once until a chunk is more than 10 intervals late, with the gateway's
//!    resident memory per open stream;
//! 4. 429 failover: the third key answers 429 (`retry-after: 0`) to three
//!    of every five requests it gets; success rate and the added latency of
//!    the requests that met a 429 (the upstream says which);
//! 5. cold start: spawn → first 200.
//!
//! With two or more cores this process (upstream and load generator) is
//! pinned to core 0 and the gateway to core 1 (`BENCH_PIN=0` turns that
//! off); `TCP_NODELAY` is set on every socket.
//!
//! `cargo bench --bench gateway` runs all five. `-- --upstream-only PORT`
//! only serves the upstream. `-- --upstream-port PORT --target NAME=URL
//! [--header NAME=HEADER:VALUE] [--pid NAME=PID] [--proxy-only NAME]`
//! runs workloads 1, 2 and 4 (1 and 2 for a `--proxy-only` one) against
//! gateways already running in front of the upstream on PORT, next to
//! tokenyard and direct, and prints one table (see `benches/peers.sh`).
//! Knobs (environment): `BENCH_SEQ` (2000), `BENCH_CONNS` (64),
//! `BENCH_SECS` (5), `BENCH_WARMUP_SECS` (1), `BENCH_ROUNDS` (2),
//! `BENCH_STREAMS` (200), `BENCH_STREAM_CONC` (20), `BENCH_LEVELS`
//! (`100,1000,5000`), `BENCH_FAILOVER` (2000), `BENCH_COLD` (5), `BENCH_BIN`
//! (another tokenyard binary), `BENCH_HALT_POLL_NS` (on a KVM guest with
//! the haltpoll cpuidle driver, how long an idle core polls before halting,
//! for this run; root; put back after).
//!
//! Under `cargo test --benches` (no `--bench` argument) it only says so and
//! exits: the numbers need a quiet machine and a release build.

#[path = "gateway/client.rs"]
mod client;
#[path = "gateway/procs.rs"]
mod procs;
#[path = "gateway/report.rs"]
mod report;
#[path = "gateway/stats.rs"]
mod stats;
#[path = "gateway/upstream.rs"]
mod upstream;
#[path = "gateway/workloads.rs"]
mod workloads;

use std::net::SocketAddr;
use std::sync::Arc;

use client::Target;
use workloads::{Bench, Settings};

/// A gateway the peers script started, measured next to tokenyard.
pub struct Peer {
    pub name: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub pid: Option<u32>,
    /// A plain reverse proxy: workloads 1 and 2 only.
    pub proxy_only: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("gateway bench: skipped outside `cargo bench --bench gateway`");
        return;
    }
    let (upstream_port, only_upstream, peers) = parse_args(&args);
    let up_rt = runtime("bench-up");
    let listen: SocketAddr = format!("127.0.0.1:{}", upstream_port.unwrap_or(0))
        .parse()
        .expect("a port");
    let (upstream, seen) = up_rt
        .block_on(upstream::start(listen))
        .unwrap_or_else(|e| panic!("cannot bind the upstream on {listen}: {e}"));
    if only_upstream {
        println!("upstream listening on http://{upstream}/v1 (Ctrl-C stops it)");
        up_rt.block_on(std::future::pending::<()>());
    }
    let _halt_poll = std::env::var("BENCH_HALT_POLL_NS")
        .ok()
        .map(|ns| procs::HaltPoll::set(&ns).unwrap_or_else(|e| panic!("BENCH_HALT_POLL_NS: {e}")));
    let bench = Bench {
        s: Settings::from_env(),
        up_rt,
        load_rt: runtime("bench-load"),
        upstream,
        seen,
        dir: tempfile::tempdir().expect("a temporary directory"),
        pin: procs::pinning(),
        clk_tck: procs::clock_ticks(),
        started: std::cell::Cell::new(0),
    };
    kill_gateways_on_signal(&bench.load_rt);
    if let Some((own, _)) = bench.pin {
        procs::pin_self(own);
    }
    println!("tokenyard gateway bench");
    procs::print_machine();
    match bench.pin {
        Some((own, gw)) => println!(
            "pinning:   upstream + load generator (this process) on core {own}, each gateway alone on core {gw}"
        ),
        None => println!("pinning:   none"),
    }
    println!(
        "upstream:  http://{upstream}/v1 (keys {})\n",
        upstream::KEYS.join(", ")
    );
    if peers.is_empty() {
        report::all(&bench);
    } else {
        report::peers(&bench, &peers);
    }
}

/// `(--upstream-port | --upstream-only PORT, only, peers)`.
fn parse_args(args: &[String]) -> (Option<u16>, bool, Vec<Peer>) {
    let mut port = None;
    let mut only = false;
    let mut peers: Vec<Peer> = Vec::new();
    let split = |v: &str, flag: &str| -> (String, String) {
        let (k, v) = v
            .split_once('=')
            .unwrap_or_else(|| panic!("{flag} wants NAME=VALUE, got {v:?}"));
        (k.to_string(), v.to_string())
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| panic!("{a} needs a value"))
                .clone()
        };
        match a.as_str() {
            "--bench" => {}
            "--upstream-port" | "--upstream-only" => {
                only |= a == "--upstream-only";
                port = Some(value().parse().expect("a port number"));
            }
            "--target" => {
                let (name, url) = split(&value(), a);
                peers.push(Peer {
                    name,
                    url,
                    headers: Vec::new(),
                    pid: None,
                    proxy_only: false,
                });
            }
            "--header" | "--pid" | "--proxy-only" => {
                let v = value();
                let (name, rest) = if a == "--proxy-only" {
                    (v.clone(), String::new())
                } else {
                    split(&v, a)
                };
                let peer = peers
                    .iter_mut()
                    .find(|p| p.name == name)
                    .unwrap_or_else(|| panic!("{a} {v:?}: no --target named {name:?} before it"));
                match a.as_str() {
                    "--header" => {
                        let (h, val) = rest.split_once(':').expect("--header NAME=HEADER:VALUE");
                        peer.headers
                            .push((h.trim().to_string(), val.trim().to_string()));
                    }
                    "--pid" => peer.pid = Some(rest.parse().expect("a pid")),
                    _ => peer.proxy_only = true,
                }
            }
            other => panic!("unknown argument {other:?} (see the top of benches/gateway.rs)"),
        }
    }
    (port, only, peers)
}

impl Peer {
    pub fn target(&self) -> Arc<Target> {
        let mut t = Target::new(&self.name, &self.url);
        for (h, v) in &self.headers {
            t = t.header(h, v);
        }
        Arc::new(t)
    }
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// On SIGINT, SIGTERM or SIGHUP: kill the gateways this bench started and
/// exit (drop guards do not run on a signal).
fn kill_gateways_on_signal(rt: &tokio::runtime::Runtime) {
    use tokio::signal::unix::{SignalKind, signal};
    let _in_runtime = rt.enter();
    let mut signals: Vec<_> = [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ]
    .into_iter()
    .map(|kind| signal(kind).expect("a signal handler"))
    .collect();
    rt.spawn(async move {
        let any = signals.iter_mut().map(|s| Box::pin(s.recv()));
        futures_util::future::select_all(any).await;
        for pid in procs::LIVE.lock().unwrap().iter() {
            let pid = nix::unistd::Pid::from_raw(*pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        eprintln!("gateway bench: interrupted; gateways killed");
        procs::HaltPoll::restore();
        std::process::exit(130);
    });
}
