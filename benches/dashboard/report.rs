//! What one run measured, the table row it prints, the machine it ran on,
//! and the medians with their verdicts.

use std::process::Command;

use crate::gateway::{COLS, ROWS};
use crate::{KEYS, Mode, Settings, TARGET_RPS};

/// The targets of the verdict.
const MAX_SLOWDOWN_PCT: f64 = 5.0;
const MAX_TUI_CPU_PCT: f64 = 10.0;

pub fn print_machine(s: &Settings) {
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
pub struct Run {
    pub mode: Mode,
    pub rps: f64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Percent of one core.
    pub gateway_cpu: f64,
    pub gateway_us_per_req: f64,
    pub tui_cpu: Option<f64>,
    pub logger_cpu: Option<f64>,
    pub frames_per_s: Option<f64>,
    pub pty_kib_per_s: Option<f64>,
    pub load_cpu: f64,
    pub sim_cpu: f64,
    pub pty_reader_cpu: Option<f64>,
}

impl Run {
    pub const HEADER: &str = "run mode        req/s  errors  p50 ms  p99 ms  gw CPU%  gw µs/req  tui CPU%  logger%  frames/s  pty KiB/s  load%   sim%  pty-rd%";

    pub fn row(&self, n: usize) -> String {
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

pub fn summary(runs: &[Run], pace: Option<f64>, s: &Settings) {
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
