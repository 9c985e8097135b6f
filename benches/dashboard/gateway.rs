//! The `tokenyard` binary under test: spawned in a pseudo-terminal with the
//! dashboard or headless with its output piped, its address read from the
//! screen or the log, and killed on every way out (drop guard, signals).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};

use crate::{KEYS, Mode};

/// The dashboard's terminal: a roomy one, so every pane has rows to draw.
pub const COLS: u16 = 160;
pub const ROWS: u16 = 48;
/// How long a gateway may take to come up.
const STARTUP: Duration = Duration::from_secs(30);
/// What crossterm writes when ratatui hides the cursor, which it does at
/// the end of every `Terminal::draw` (the dashboard shows no cursor): one
/// per frame.
const FRAME_MARK: &[u8] = b"\x1b[?25l";

/// Gateways alive now. Drop guards kill them on every way out that unwinds;
/// a signal does not unwind, and the dashboard's gateway sits in a session
/// of its own, out of reach of the terminal's Ctrl-C.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// On SIGINT, SIGTERM or SIGHUP: kill the gateways, remove `dir`, exit.
pub fn kill_gateways_on_signal(rt: &tokio::runtime::Runtime, dir: PathBuf) {
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

/// The pty side of a dashboard run: a thread drains the terminal (the
/// program would block on writes otherwise) into a vt100 screen, as an
/// operator's terminal would, and counts bytes and frames.
pub struct Pty {
    pub screen: Mutex<vt100::Parser>,
    pub bytes: AtomicU64,
    pub frames: AtomicU64,
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
pub struct Gateway {
    child: Child,
    pub pid: u32,
    pub addr: String,
    pub pty: Option<Arc<Pty>>,
    /// stdout and stderr of a headless gateway, for diagnostics.
    log: Arc<Mutex<String>>,
}

impl Gateway {
    pub fn start(mode: Mode, config: &Path, dir: &Path) -> Gateway {
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

    pub fn output(&self) -> String {
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
