//! CPU time from /proc: the gateway process as a whole and per thread (the
//! dashboard's, tui-logger's, this process's load, sim and pty threads),
//! read at both edges of the measured window.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::gateway::Gateway;
use crate::load::Load;

/// `(tid, comm, utime + stime ticks)` of every live thread of a process.
pub type Threads = Vec<(u32, String, u64)>;

/// Everything read at one edge of the measured window.
pub struct Sample {
    pub at: Instant,
    pub ok: u64,
    pub errors: u64,
    /// utime + stime of the whole gateway process (exited threads included).
    pub gateway: u64,
    pub gateway_threads: Threads,
    /// This process's threads: load generator, sim, pty reader.
    pub own_threads: Threads,
    pub frames: u64,
    pub bytes: u64,
}

impl Sample {
    pub fn take(gw: &Gateway, load: &Load) -> Sample {
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
pub fn threads_delta(before: &Threads, after: &Threads, prefix: &str) -> u64 {
    let start: HashMap<u32, u64> = before.iter().map(|(t, _, c)| (*t, *c)).collect();
    after
        .iter()
        .filter(|(_, name, _)| name.starts_with(prefix))
        .map(|(tid, _, c)| c - start.get(tid).copied().unwrap_or(0))
        .sum()
}

pub fn has_thread(list: &Threads, prefix: &str) -> bool {
    list.iter().any(|(_, name, _)| name.starts_with(prefix))
}

pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
