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

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use tokenyard::sim::{self, Limit, SimAccount, SimConfig, SimHandle};

/// Credentials in the pool (and accounts in the sim), all unlimited, so the
/// gateway rotates among several but never waits for one.
const KEYS: usize = 3;
/// The dashboard's terminal: a roomy one, so every pane has rows to draw.
const COLS: u16 = 160;
const ROWS: u16 = 48;
/// How long a gateway may take to come up.
const STARTUP: Duration = Duration::from_secs(30);
/// The load the verdict is about, and the targets.
const TARGET_RPS: f64 = 2000.0;
const MAX_SLOWDOWN_PCT: f64 = 5.0;
const MAX_TUI_CPU_PCT: f64 = 10.0;
/// What crossterm writes when ratatui hides the cursor, which it does at
/// the end of every `Terminal::draw` (the dashboard shows no cursor): one
/// per frame.
const FRAME_MARK: &[u8] = b"\x1b[?25l";
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

/// Gateways alive now. Drop guards kill them on every way out that unwinds;
/// a signal does not unwind, and the dashboard's gateway sits in a session
/// of its own, out of reach of the terminal's Ctrl-C.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// On SIGINT, SIGTERM or SIGHUP: kill the gateways, remove `dir`, exit.
fn kill_gateways_on_signal(rt: &tokio::runtime::Runtime, dir: PathBuf) {
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
        for pid in LIVE.lock().unwrap().iter() {
            let pid = nix::unistd::Pid::from_raw(*pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("dashboard bench: interrupted; gateways killed");
        std::process::exit(130);
    });
}

fn runtime(name: &str, workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn print_machine(s: &Settings) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "rustc: unknown".into());
    println!("tokenyard dashboard bench");
    println!("machine: {model}, {cores} cores available");
    println!("{rustc}");
    println!(
        "load: {} keep-alive connections, non-streaming chat completions; \
         {} s warm-up + {} s measured per run; {} rounds of both modes (ABBA); \
         {KEYS} unlimited sim accounts, zero latency, 1 chunk; dashboard {COLS}x{ROWS}",
        s.conns, s.warmup, s.secs, s.rounds
    );
    println!(
        "in this process: load generator {} worker thread(s), sim {} worker thread(s)",
        s.load_threads, s.sim_threads
    );
    if let Ok(bin) = std::env::var("BENCH_BIN") {
        println!("binary under test: {bin} (BENCH_BIN)");
    }
    println!();
}

/// What one run measured, over the measured window only.
struct Run {
    mode: Mode,
    rps: f64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    /// Percent of one core.
    gateway_cpu: f64,
    gateway_us_per_req: f64,
    tui_cpu: Option<f64>,
    logger_cpu: Option<f64>,
    frames_per_s: Option<f64>,
    pty_kib_per_s: Option<f64>,
    load_cpu: f64,
    sim_cpu: f64,
    pty_reader_cpu: Option<f64>,
}

impl Run {
    const HEADER: &str = "run mode        req/s  errors  p50 ms  p99 ms  gw CPU%  gw µs/req  tui CPU%  logger%  frames/s  pty KiB/s  load%   sim%  pty-rd%";

    fn row(&self, n: usize) -> String {
        let opt = |v: Option<f64>, w: usize, p: usize| match v {
            Some(v) => format!("{v:>w$.p$}"),
            None => format!("{:>w$}", "-"),
        };
        format!(
            "{n:>3} {:<8} {:>9.0} {:>7} {:>7.2} {:>7.2} {:>8.1} {:>10.1} {} {} {} {} {:>6.1} {:>6.1} {}",
            self.mode.label(),
            self.rps,
            self.errors,
            self.p50_ms,
            self.p99_ms,
            self.gateway_cpu,
            self.gateway_us_per_req,
            opt(self.tui_cpu, 9, 2),
            opt(self.logger_cpu, 8, 2),
            opt(self.frames_per_s, 9, 1),
            opt(self.pty_kib_per_s, 10, 1),
            self.load_cpu,
            self.sim_cpu,
            opt(self.pty_reader_cpu, 8, 1),
        )
    }
}

/// What every run shares.
struct Bench {
    s: Settings,
    /// The sim and the load generator run on runtimes of their own, so
    /// their CPU can be told apart by thread name.
    sim_rt: tokio::runtime::Runtime,
    load_rt: tokio::runtime::Runtime,
    /// Configs and state files of the gateways.
    dir: tempfile::TempDir,
    /// Units of utime and stime in /proc.
    clk_tck: f64,
}

impl Bench {
    /// Run `n`: a fresh sim and gateway, warm-up, `secs` measured.
    fn run(&self, n: usize, mode: Mode, pace: Option<f64>, secs: f64) -> Run {
        let Bench {
            s,
            sim_rt,
            load_rt,
            dir,
            clk_tck,
        } = self;
        let (dir, clk_tck) = (dir.path(), *clk_tck);
        // A fresh sim per run: it logs every request and the log only grows.
        let sim = sim_rt
            .block_on(sim::start(sim_config(), "127.0.0.1:0".parse().unwrap()))
            .expect("the sim starts");
        let config = dir.join(format!("run-{n}.toml"));
        std::fs::write(
            &config,
            config_toml(&sim, &dir.join(format!("state-{n}.json"))),
        )
        .expect("write the config");
        let gw = Gateway::start(mode, &config, dir);
        let show_screen = std::env::var_os("BENCH_SCREEN").is_some();
        let url = format!("http://{}/v1/chat/completions", gw.addr);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(s.conns)
            .tcp_nodelay(true)
            .build()
            .expect("a reqwest client");
        load_rt.block_on(sanity_check(&client, &url, &gw));

        let load = Arc::new(Load::default());
        // Paced: each connection sends one request per period, the connections
        // spread evenly over it.
        let period = pace.map(|rate| Duration::from_secs_f64(s.conns as f64 / rate));
        let tasks: Vec<_> = (0..s.conns)
            .map(|i| {
                let ticks = period.map(|p| (p.mul_f64(i as f64 / s.conns as f64), p));
                load_rt.spawn(client_loop(
                    client.clone(),
                    url.clone(),
                    load.clone(),
                    ticks,
                ))
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(s.warmup));

        let before = Sample::take(&gw, &load);
        load.phase.store(MEASURE, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs_f64(secs));
        let after = Sample::take(&gw, &load);
        load.phase.store(STOP, Ordering::SeqCst);
        if let Some(pty) = gw.pty.as_ref().filter(|_| show_screen) {
            println!("the dashboard at the end of run {n}:");
            println!("{}", pty.screen.lock().unwrap().screen().contents());
        }

        let mut latencies: Vec<u32> = load_rt.block_on(async {
            let mut all = Vec::new();
            for t in tasks {
                match tokio::time::timeout(Duration::from_secs(10), t).await {
                    Ok(Ok(l)) => all.extend(l),
                    _ => panic!("a load task did not stop"),
                }
            }
            all
        });
        drop(gw);
        sim_rt.block_on(sim.shutdown());

        latencies.sort_unstable();
        let wall = after.at.duration_since(before.at).as_secs_f64();
        let ok = after.ok - before.ok;
        let pct = |ticks: u64| ticks as f64 / clk_tck / wall * 100.0;
        let gw_ticks = after.gateway - before.gateway;
        let dashboard = mode == Mode::Dashboard;
        let named = |list: fn(&Sample) -> &Threads, prefix: &str| {
            pct(threads_delta(list(&before), list(&after), prefix))
        };
        Run {
            mode,
            rps: ok as f64 / wall,
            errors: after.errors - before.errors,
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            gateway_cpu: pct(gw_ticks),
            gateway_us_per_req: gw_ticks as f64 / clk_tck * 1e6 / ok.max(1) as f64,
            tui_cpu: dashboard.then(|| named(|s| &s.gateway_threads, "tokenyard-tui")),
            logger_cpu: (dashboard && has_thread(&after.gateway_threads, "tui-logger"))
                .then(|| named(|s| &s.gateway_threads, "tui-logger")),
            frames_per_s: dashboard.then(|| (after.frames - before.frames) as f64 / wall),
            pty_kib_per_s: dashboard.then(|| (after.bytes - before.bytes) as f64 / 1024.0 / wall),
            load_cpu: named(|s| &s.own_threads, "bench-load"),
            sim_cpu: named(|s| &s.own_threads, "bench-sim"),
            pty_reader_cpu: dashboard.then(|| named(|s| &s.own_threads, "bench-pty")),
        }
    }
}

fn sim_config() -> SimConfig {
    SimConfig {
        accounts: (1..=KEYS)
            .map(|i| {
                SimAccount::api_key(
                    format!("bench-{i}"),
                    format!("sk-fake-bench-{i}"),
                    Limit::Unlimited,
                )
            })
            .collect(),
        chunks: 1,
        chunk_interval: Duration::ZERO,
        latency: Duration::ZERO,
        ..SimConfig::default()
    }
}

/// The gateway's config: the sim as its one provider, state in the
/// temporary directory (never the user's own state file).
fn config_toml(sim: &SimHandle, state: &Path) -> String {
    let mut t = format!(
        "listen = \"127.0.0.1:0\"\nstate_file = {:?}\n\n[pool]\ntiers = [\"primary\"]\n\n\
         [[provider]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"sim-*\"]\n",
        state.display().to_string(),
        sim.base_url()
    );
    for i in 1..=KEYS {
        t.push_str(&format!(
            "\n[[credential]]\nname = \"bench-{i}\"\ntier = \"primary\"\napi_key = \"sk-fake-bench-{i}\"\n"
        ));
    }
    t
}

/// One request must succeed before any is counted: a bench that measures
/// how fast the gateway says "no" would be worse than none.
async fn sanity_check(client: &reqwest::Client, url: &str, gw: &Gateway) {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the gateway does not answer: {e}\n{}", gw.output()));
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert!(
        status == 200 && body.contains("choices"),
        "the gateway answered {status}: {body}"
    );
}

const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Shared by the load tasks: counters the main thread samples at the edges
/// of the measured window, and the phase that tells the tasks when to
/// record latencies and when to stop.
#[derive(Default)]
struct Load {
    /// 0 while warming up, then [`MEASURE`], then [`STOP`].
    phase: AtomicU8,
    ok: AtomicU64,
    /// Non-200 answers and transport errors.
    errors: AtomicU64,
}

/// One keep-alive connection's worth of load until told to stop: requests
/// back to back, or with `ticks = (offset, period)` one per period (a late
/// answer delays the next; none are bunched up to catch up). Returns the
/// latencies (µs) of successes in the measured window.
async fn client_loop(
    client: reqwest::Client,
    url: String,
    load: Arc<Load>,
    ticks: Option<(Duration, Duration)>,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut ticker = ticks.map(|(offset, period)| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        if load.phase.load(Ordering::Relaxed) == STOP {
            return latencies;
        }
        let start = Instant::now();
        let ok = match client
            .post(&url)
            .header("content-type", "application/json")
            .body(BODY)
            .send()
            .await
        {
            Ok(resp) => {
                let status = resp.status();
                resp.bytes().await.is_ok() && status == 200
            }
            Err(_) => false,
        };
        if ok {
            load.ok.fetch_add(1, Ordering::Relaxed);
            if load.phase.load(Ordering::Relaxed) == MEASURE {
                latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
        } else {
            load.errors.fetch_add(1, Ordering::Relaxed);
            // Do not spin on a gateway that refuses outright.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// `(tid, comm, utime + stime ticks)` of every live thread of a process.
type Threads = Vec<(u32, String, u64)>;

/// Everything read at one edge of the measured window.
struct Sample {
    at: Instant,
    ok: u64,
    errors: u64,
    /// utime + stime of the whole gateway process (exited threads included).
    gateway: u64,
    gateway_threads: Threads,
    /// This process's threads: load generator, sim, pty reader.
    own_threads: Threads,
    frames: u64,
    bytes: u64,
}

impl Sample {
    fn take(gw: &Gateway, load: &Load) -> Sample {
        let pid = gw.pid.to_string();
        let (frames, bytes) = gw.pty.as_ref().map_or((0, 0), |p| {
            (
                p.frames.load(Ordering::Relaxed),
                p.bytes.load(Ordering::Relaxed),
            )
        });
        Sample {
            at: Instant::now(),
            ok: load.ok.load(Ordering::Relaxed),
            errors: load.errors.load(Ordering::Relaxed),
            gateway: stat_ticks(&format!("/proc/{pid}/stat")).expect("the gateway is running"),
            gateway_threads: threads(&pid),
            own_threads: threads("self"),
            frames,
            bytes,
        }
    }
}

/// utime + stime from a `stat` file of /proc, in clock ticks.
fn stat_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses; fields after it
    // are plain. utime and stime are fields 14 and 15 (state is field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn threads(pid: &str) -> Threads {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid: u32 = e.file_name().to_str()?.parse().ok()?;
        let path = e.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        let ticks = stat_ticks(path.join("stat").to_str()?)?;
        Some((tid, comm.trim().to_string(), ticks))
    })
    .collect()
}

/// CPU ticks over the window of the threads whose name starts with
/// `prefix` (comm is cut at 15 bytes: `tui-logger::mov`). A thread born
/// during the window counts from zero.
fn threads_delta(before: &Threads, after: &Threads, prefix: &str) -> u64 {
    let start: HashMap<u32, u64> = before.iter().map(|(t, _, c)| (*t, *c)).collect();
    after
        .iter()
        .filter(|(_, name, _)| name.starts_with(prefix))
        .map(|(tid, _, c)| c - start.get(tid).copied().unwrap_or(0))
        .sum()
}

fn has_thread(list: &Threads, prefix: &str) -> bool {
    list.iter().any(|(_, name, _)| name.starts_with(prefix))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The pty side of a dashboard run: a thread drains the terminal (the
/// program would block on writes otherwise) into a vt100 screen, as an
/// operator's terminal would, and counts bytes and frames.
struct Pty {
    screen: Mutex<vt100::Parser>,
    bytes: AtomicU64,
    frames: AtomicU64,
    /// The start of everything written, for diagnosing a failed start.
    raw: Mutex<Vec<u8>>,
}

enum Child {
    Pty {
        child: Box<dyn portable_pty::Child + Send + Sync>,
        /// Kept until the child is killed: dropping it hangs up the
        /// terminal.
        _master: Box<dyn MasterPty + Send>,
    },
    Plain(std::process::Child),
}

/// The gateway under test; killed on drop, on every way out.
struct Gateway {
    child: Child,
    pid: u32,
    addr: String,
    pty: Option<Arc<Pty>>,
    /// stdout and stderr of a headless gateway, for diagnostics.
    log: Arc<Mutex<String>>,
}

impl Gateway {
    fn start(mode: Mode, config: &Path, dir: &Path) -> Gateway {
        let bin = std::env::var("BENCH_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tokenyard").to_string());
        let bin = bin.as_str();
        let config = config.to_str().expect("a UTF-8 temp path");
        let xdg = dir.to_str().expect("a UTF-8 temp path");
        // Never the user's own config or state; the default log level in
        // both modes.
        let unset = [
            "TOKENYARD_CONFIG",
            "TOKENYARD_UPSTREAM",
            "TOKENYARD_LOG",
            "RUST_LOG",
        ];
        let set = [
            ("XDG_CONFIG_HOME", xdg),
            ("XDG_STATE_HOME", xdg),
            ("TERM", "xterm-256color"),
        ];
        match mode {
            Mode::Dashboard => {
                let pair = native_pty_system()
                    .openpty(PtySize {
                        rows: ROWS,
                        cols: COLS,
                        pixel_width: 0,
                        pixel_height: 0,
                    })
                    .expect("open a pty");
                let mut cmd = CommandBuilder::new(bin);
                cmd.args(["serve", "--config", config]);
                unset.iter().for_each(|k| cmd.env_remove(k));
                set.iter().for_each(|(k, v)| cmd.env(k, v));
                let child = pair.slave.spawn_command(cmd).expect("spawn tokenyard");
                drop(pair.slave);
                let reader = pair.master.try_clone_reader().expect("pty reader");
                let pty = Arc::new(Pty {
                    screen: Mutex::new(vt100::Parser::new(
                        ROWS.try_into().expect("rows > 0"),
                        COLS.try_into().expect("cols > 0"),
                        0,
                    )),
                    bytes: AtomicU64::new(0),
                    frames: AtomicU64::new(0),
                    raw: Mutex::new(Vec::new()),
                });
                let p = pty.clone();
                std::thread::Builder::new()
                    .name("bench-pty".into())
                    .spawn(move || drain_pty(reader, &p))
                    .expect("spawn the pty reader");
                let pid = child.process_id().expect("the child's pid");
                LIVE.lock().unwrap().push(pid);
                let mut gw = Gateway {
                    child: Child::Pty {
                        child,
                        _master: pair.master,
                    },
                    pid,
                    addr: String::new(),
                    pty: Some(pty),
                    log: Arc::default(),
                };
                gw.addr = gw.wait_for_dashboard();
                gw
            }
            Mode::Headless => {
                let mut cmd = Command::new(bin);
                cmd.args(["serve", "--config", config, "--no-tui"]);
                unset.iter().for_each(|k| {
                    cmd.env_remove(k);
                });
                cmd.envs(set)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let mut child = cmd.spawn().expect("spawn tokenyard");
                let log: Arc<Mutex<String>> = Arc::default();
                let (tx, rx) = mpsc::channel();
                let stdout = child.stdout.take().expect("piped stdout");
                let stderr = child.stderr.take().expect("piped stderr");
                drain_lines(stdout, log.clone(), Some(tx));
                drain_lines(stderr, log.clone(), None);
                let pid = child.id();
                LIVE.lock().unwrap().push(pid);
                let mut gw = Gateway {
                    child: Child::Plain(child),
                    pid,
                    addr: String::new(),
                    pty: None,
                    log,
                };
                gw.addr = rx.recv_timeout(STARTUP).unwrap_or_else(|_| {
                    panic!("no `listening on` line from tokenyard:\n{}", gw.output())
                });
                gw
            }
        }
    }

    /// Waits until every credential is ready on screen; returns the listen
    /// address the header shows.
    fn wait_for_dashboard(&self) -> String {
        let pty = self.pty.as_ref().expect("a dashboard run");
        let ready = format!("{KEYS}/{KEYS} ready");
        let start = Instant::now();
        loop {
            let screen = pty.screen.lock().unwrap().screen().contents();
            if screen.contains(&ready)
                && let Some(at) = screen.find("127.0.0.1:")
            {
                return screen[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
            }
            assert!(
                start.elapsed() < STARTUP,
                "the dashboard did not show {ready:?}; the screen:\n{screen}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn output(&self) -> String {
        match &self.pty {
            Some(p) => String::from_utf8_lossy(&p.raw.lock().unwrap()).into_owned(),
            None => self.log.lock().unwrap().clone(),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        match &mut self.child {
            Child::Pty { child, .. } => {
                let _ = child.kill();
            }
            Child::Plain(c) => {
                let _ = c.kill();
            }
        }
        // Killed: no business of the signal handler any more, and its pid
        // is about to be free for reuse.
        LIVE.lock().unwrap().retain(|p| *p != self.pid);
        match &mut self.child {
            Child::Pty { child, .. } => {
                let _ = child.wait();
            }
            Child::Plain(c) => {
                let _ = c.wait();
            }
        }
    }
}

fn drain_pty(mut reader: Box<dyn Read + Send>, pty: &Pty) {
    let mut buf = vec![0u8; 64 * 1024];
    // The tail of the previous read, shorter than a frame mark, so a mark
    // split across two reads counts once.
    let mut tail: Vec<u8> = Vec::new();
    let mut raw_full = false;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        pty.screen.lock().unwrap().process(chunk);
        pty.bytes.fetch_add(n as u64, Ordering::Relaxed);
        tail.extend_from_slice(chunk);
        let marks = tail
            .windows(FRAME_MARK.len())
            .filter(|w| *w == FRAME_MARK)
            .count();
        pty.frames.fetch_add(marks as u64, Ordering::Relaxed);
        let keep = tail.len().min(FRAME_MARK.len() - 1);
        tail.drain(..tail.len() - keep);
        // Keep the start-up output for diagnostics, not the whole run.
        if !raw_full {
            let mut raw = pty.raw.lock().unwrap();
            raw.extend_from_slice(chunk);
            raw_full = raw.len() > 256 * 1024;
        }
    }
}

/// Drains a pipe line by line into `log` (capped); the first
/// `listening on http://ADDR/v1` line's ADDR goes to `addr`.
fn drain_lines(
    pipe: impl Read + Send + 'static,
    log: Arc<Mutex<String>>,
    addr: Option<mpsc::Sender<String>>,
) {
    std::thread::Builder::new()
        .name("bench-pipe".into())
        .spawn(move || {
            let mut addr = addr;
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(tx) = addr.take()
                {
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_string());
                }
                let mut log = log.lock().unwrap();
                if log.len() < 64 * 1024 {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        })
        .expect("spawn a pipe reader");
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

fn summary(runs: &[Run], pace: Option<f64>, s: &Settings) {
    let of = |mode: Mode, f: fn(&Run) -> Option<f64>| -> f64 {
        median(
            runs.iter()
                .filter(|r| r.mode == mode)
                .filter_map(f)
                .collect(),
        )
    };
    let rps = |m| of(m, |r| Some(r.rps));
    let (tui_rps, headless_rps) = (rps(Mode::Dashboard), rps(Mode::Headless));
    // The spread between runs of one mode: the noise floor of the verdict.
    let range = |mode: Mode| {
        let v = runs.iter().filter(|r| r.mode == mode).map(|r| r.rps);
        let (lo, hi) = v.fold((f64::MAX, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
        format!("{lo:.0}–{hi:.0}")
    };
    let tui_cpu = of(Mode::Dashboard, |r| r.tui_cpu);
    let logger = of(Mode::Dashboard, |r| r.logger_cpu);
    let frames = of(Mode::Dashboard, |r| r.frames_per_s);
    let gw_cpu = |m| of(m, |r| Some(r.gateway_cpu));
    let gw_us = |m| of(m, |r| Some(r.gateway_us_per_req));
    let p99 = |m| of(m, |r| Some(r.p99_ms));
    let errors: u64 = runs.iter().map(|r| r.errors).sum();
    let verdict = |pass: bool| if pass { "PASS" } else { "MISS" };

    println!("medians of {} runs per mode:", s.rounds);
    println!(
        "  throughput       tui {tui_rps:>8.0} req/s   headless {headless_rps:>8.0} req/s   (runs: tui {}, headless {})",
        range(Mode::Dashboard),
        range(Mode::Headless)
    );
    if pace.is_none() {
        let diff = (tui_rps - headless_rps) / headless_rps * 100.0;
        println!(
            "  difference       {diff:>+8.1} %   {} (target: within {MAX_SLOWDOWN_PCT} %)",
            verdict(diff >= -MAX_SLOWDOWN_PCT)
        );
    }
    println!(
        "  gateway CPU      tui {:>8.1} %       headless {:>8.1} %   ({:+.1} points)",
        gw_cpu(Mode::Dashboard),
        gw_cpu(Mode::Headless),
        gw_cpu(Mode::Dashboard) - gw_cpu(Mode::Headless)
    );
    println!(
        "  per request      tui {:>8.1} µs      headless {:>8.1} µs",
        gw_us(Mode::Dashboard),
        gw_us(Mode::Headless)
    );
    println!(
        "  p99 latency      tui {:>8.2} ms      headless {:>8.2} ms",
        p99(Mode::Dashboard),
        p99(Mode::Headless)
    );
    println!(
        "  dashboard thread {tui_cpu:>8.2} % of a core   {} (target: under {MAX_TUI_CPU_PCT} %)",
        verdict(tui_cpu < MAX_TUI_CPU_PCT)
    );
    if frames > 0.0 {
        println!(
            "  frames           {frames:>8.1} /s, {:.2} ms of dashboard-thread CPU each",
            tui_cpu / 100.0 / frames * 1000.0
        );
    }
    if !logger.is_nan() {
        println!("  tui-logger move_events {logger:.2} % of a core");
    }
    println!("  errors (all runs) {errors}");
    // Paced runs fall a hair short of the rate (the last period of the
    // window); flat out must reach the target itself.
    let wanted = pace.map_or(TARGET_RPS, |rate| rate * 0.98);
    if tui_rps.min(headless_rps) < wanted {
        println!(
            "  note: the load reached {:.0} req/s, short of {wanted:.0} req/s",
            tui_rps.min(headless_rps)
        );
    }
}
