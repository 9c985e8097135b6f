//! Processes: the tokenyard binary under test, core pinning, and what
//! /proc says about memory and CPU.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::upstream::KEYS;

/// Gateways alive now, killed by the signal handler (a signal does not
/// run drop guards).
pub static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// The binary under test: `BENCH_BIN`, else the one cargo built.
pub fn binary() -> String {
    std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tokenyard").to_string())
}

/// Cores the bench uses when pinning: its own threads (load generator and
/// upstream) on the first, the gateway alone on the second. `None` when
/// there are fewer than two cores or `BENCH_PIN=0`.
pub fn pinning() -> Option<(usize, usize)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let off = std::env::var("BENCH_PIN").is_ok_and(|v| v == "0");
    (cores >= 2 && !off && has_taskset()).then_some((0, 1))
}

fn has_taskset() -> bool {
    Command::new("taskset")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Pins every thread of this process (those alive now; threads spawned
/// later inherit it) to `core`.
pub fn pin_self(core: usize) {
    let status = Command::new("taskset")
        .args([
            "-a",
            "-cp",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status();
    assert!(status.is_ok_and(|s| s.success()), "taskset failed");
}

/// A config for tokenyard: the upstream as its one OpenAI-kind provider,
/// the three keys in one tier, state in `dir`.
pub fn config_toml(upstream: SocketAddr, listen: SocketAddr, state: &Path) -> String {
    // 5,000 streams over three keys is ~1,700 in flight on each: above
    // the default `max_in_flight` of 256, which would shed them with 503.
    let mut t = format!(
        "listen = \"{listen}\"\nstate_file = {:?}\n\n[pool]\ntiers = [\"primary\"]\nmax_in_flight = 4096\n\n\
         [gateway]\nmax_concurrency = 20000\n\n\
         [[provider]]\nname = \"bench\"\nkind = \"openai\"\nbase_url = \"http://{upstream}/v1\"\nmodels = [\"*\"]\n",
        state.display().to_string(),
    );
    for (i, key) in KEYS.iter().enumerate() {
        t.push_str(&format!(
            "\n[[credential]]\nname = \"bench-{}\"\ntier = \"primary\"\napi_key = \"{key}\"\n",
            i + 1
        ));
    }
    t
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A headless tokenyard; killed on drop.
pub struct Gateway {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    /// Set when the `listening on` line arrives.
    listening: mpsc::Receiver<()>,
}

impl Gateway {
    /// Spawns `tokenyard serve --no-tui` on a fresh port (pinned to `core`)
    /// and returns at once; see [`Gateway::wait_listening`].
    pub fn spawn(dir: &Path, upstream: SocketAddr, core: Option<usize>, n: usize) -> Gateway {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.join(format!("tokenyard-{n}.toml"));
        let state = dir.join(format!("state-{n}.json"));
        std::fs::write(&config, config_toml(upstream, addr, &state)).expect("write the config");
        let bin = binary();
        let mut cmd = match core {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", &c.to_string(), &bin]);
                cmd
            }
            None => Command::new(&bin),
        };
        let xdg = dir.to_str().expect("a UTF-8 temp path");
        cmd.args(["serve", "--no-tui", "--config"])
            .arg(&config)
            // Never the user's own config or state; the default log level.
            .env_remove("TOKENYARD_CONFIG")
            .env_remove("TOKENYARD_UPSTREAM")
            .env_remove("TOKENYARD_LOG")
            .env_remove("RUST_LOG")
            .env("XDG_CONFIG_HOME", xdg)
            .env("XDG_STATE_HOME", xdg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn tokenyard");
        let pid = child.id();
        LIVE.lock().unwrap().push(pid);
        let log: Arc<Mutex<String>> = Arc::default();
        let (tx, listening) = mpsc::channel();
        drain(child.stdout.take().expect("piped"), log.clone(), Some(tx));
        drain(child.stderr.take().expect("piped"), log.clone(), None);
        Gateway {
            child,
            pid,
            addr,
            log,
            listening,
        }
    }

    pub fn wait_listening(&self) {
        if self
            .listening
            .recv_timeout(Duration::from_secs(30))
            .is_err()
        {
            panic!("tokenyard did not start:\n{}", self.output());
        }
    }

    pub fn output(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid).unwrap_or(0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        LIVE.lock().unwrap().retain(|p| *p != self.pid);
        let _ = self.child.wait();
    }
}

fn drain(pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>, tx: Option<mpsc::Sender<()>>) {
    std::thread::Builder::new()
        .name("bench-pipe".into())
        .spawn(move || {
            let mut tx = tx;
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                if line.contains("listening on http://")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
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

/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// VmRSS of a process and all its descendants (nginx's master and worker,
/// a Python launcher and its server), KiB.
pub fn tree_rss_kib(root: u32) -> u64 {
    tree(root).iter().filter_map(|p| rss_kib(*p)).sum()
}

/// CPU ticks (utime, stime; every thread) of a process and all its
/// descendants.
pub fn tree_ticks(root: u32) -> (u64, u64) {
    tree(root)
        .iter()
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((
                f.get(11)?.parse::<u64>().ok()?,
                f.get(12)?.parse::<u64>().ok()?,
            ))
        })
        .fold((0, 0), |(u, s), (pu, ps)| (u + pu, s + ps))
}

/// A process and all its descendants.
fn tree(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let Some(close) = stat.rfind(')') else {
                continue;
            };
            let ppid = stat[close + 2..]
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// CPU ticks (utime + stime) of this process's threads whose name starts
/// with `prefix`.
pub fn thread_ticks(prefix: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

pub fn clock_ticks() -> f64 {
    command_line("getconf", &["CLK_TCK"])
        .and_then(|s| s.parse().ok())
        .unwrap_or(100.0)
}

/// The first line a command prints, if it runs.
pub fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let text = if text.trim().is_empty() {
        String::from_utf8_lossy(&out.stderr).into_owned()
    } else {
        text.into_owned()
    };
    text.lines().next().map(|l| l.trim().to_string())
}

const HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

/// What `guest_halt_poll_ns` was before [`HaltPoll::set`], to put back.
static HALT_POLL_BEFORE: Mutex<Option<String>> = Mutex::new(None);

/// `BENCH_HALT_POLL_NS`: a KVM guest's halt-poll window for the run (how
/// long an idle core polls before it halts), put back when this is dropped
/// — at the end, on a panic — or by [`HaltPoll::restore`] on a signal.
pub struct HaltPoll;

impl HaltPoll {
    pub fn set(ns: &str) -> Result<HaltPoll, String> {
        let before = std::fs::read_to_string(HALT_POLL_NS).map_err(|e| {
            format!("{HALT_POLL_NS}: {e} (not a KVM guest with the haltpoll cpuidle driver?)")
        })?;
        std::fs::write(HALT_POLL_NS, ns.trim())
            .map_err(|e| format!("{HALT_POLL_NS}: cannot write {ns:?}: {e} (needs root)"))?;
        *HALT_POLL_BEFORE.lock().unwrap() = Some(before.trim().to_string());
        Ok(HaltPoll)
    }

    pub fn restore() {
        if let Some(before) = HALT_POLL_BEFORE.lock().unwrap().take() {
            match std::fs::write(HALT_POLL_NS, &before) {
                Ok(()) => eprintln!("guest_halt_poll_ns back to {before}"),
                Err(e) => eprintln!("cannot put guest_halt_poll_ns back to {before}: {e}"),
            }
        }
    }
}

impl Drop for HaltPoll {
    fn drop(&mut self) {
        HaltPoll::restore();
    }
}

/// How an idle core sleeps, which sets what waking it costs: one request
/// at a time, the gateway's core idles between requests. On a KVM guest
/// with the `haltpoll` cpuidle driver, `guest_halt_poll_ns` is how long a
/// core polls before it halts (0: it halts at once).
fn idle_policy() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let driver =
        read("/sys/devices/system/cpu/cpuidle/current_driver").unwrap_or_else(|| "unknown".into());
    let governor = read("/sys/devices/system/cpu/cpuidle/current_governor")
        .map(|g| format!(", governor {g}"))
        .unwrap_or_default();
    let poll = read("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
        .map(|ns| format!(", guest_halt_poll_ns {ns}"))
        .unwrap_or_default();
    format!("cpuidle driver {driver}{governor}{poll}")
}

pub fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    // Every core of the machine, not just those this process is pinned to.
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let na = || "unknown".to_string();
    println!("machine:   {model}, {cores} cores, {mem} RAM");
    println!(
        "kernel:    {}",
        command_line("uname", &["-sr"]).unwrap_or_else(na)
    );
    println!("idle:      {}", idle_policy());
    println!(
        "toolchain: {}",
        command_line(&rustc, &["-V"]).unwrap_or_else(na)
    );
    let bin = binary();
    println!(
        "binary:    {bin} ({})",
        command_line(&bin, &["--version"]).unwrap_or_else(na)
    );
    if let Some(rev) = command_line(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    ) {
        let dirty = command_line(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "status",
                "--porcelain",
                "--",
                "src",
            ],
        )
        .map_or("", |_| " (src/ has uncommitted changes)");
        println!("commit:    {rev}{dirty}");
    }
    println!(
        "date:      {}",
        command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(na)
    );
}

/// Cold start: spawn the binary, then hammer its port until a chat
/// completion comes back 200. Returns spawn → first 200.
pub fn cold_start(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    upstream: SocketAddr,
    core: Option<usize>,
    n: usize,
) -> Duration {
    let start = Instant::now();
    let gw = Gateway::spawn(dir, upstream, core, n);
    let target = Arc::new(super::client::Target::new(
        "cold",
        &format!("http://{}/v1", gw.addr),
    ));
    let took = rt.block_on(async {
        loop {
            let mut conn = super::client::Conn::new(target.clone());
            if let Ok(a) = conn.chat(super::client::body(0, false, false)).await
                && a.status == 200
            {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tokenyard never answered:\n{}",
                gw.output()
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    });
    drop(gw);
    took
}
