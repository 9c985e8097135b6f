//! The real binary in a pseudo-terminal, its screen read back through a
//! vt100 emulator: what an operator would see, and what keys they press.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};

pub struct Tui {
    pub master: Box<dyn MasterPty + Send>,
    child: Box<dyn Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    parser: Arc<Mutex<vt100::Parser>>,
    /// Everything the program wrote, for diagnosing a failed wait.
    raw: Arc<Mutex<Vec<u8>>>,
    /// Set when the reader thread has read the pty to its end: only then
    /// is the last thing an exited program wrote (leaving the alternate
    /// screen, say) in `parser` and `raw`.
    drained: Arc<AtomicBool>,
}

impl Tui {
    /// Starts `tokenyard args…` in a `cols`×`rows` terminal.
    pub fn spawn(args: &[&str], env: &[(&str, &str)], cols: u16, rows: u16) -> Tui {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pty");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_tokenyard"));
        cmd.args(args);
        cmd.env("TERM", "xterm-256color");
        // Never the user's own config or state.
        cmd.env_remove("TOKENYARD_CONFIG");
        cmd.env_remove("TOKENYARD_UPSTREAM");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = pty.slave.spawn_command(cmd).expect("spawn tokenyard");
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().expect("pty reader");
        let writer = pty.master.take_writer().expect("pty writer");
        let parser = Arc::new(Mutex::new(vt100::Parser::new(
            rows.try_into().expect("rows > 0"),
            cols.try_into().expect("cols > 0"),
            0,
        )));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let drained = Arc::new(AtomicBool::new(false));
        let (p, r, d) = (parser.clone(), raw.clone(), drained.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    // EOF (EIO on Linux) once every slave end is closed.
                    Ok(0) | Err(_) => {
                        d.store(true, Ordering::Release);
                        return;
                    }
                    Ok(n) => {
                        p.lock().unwrap().process(&buf[..n]);
                        r.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                }
            }
        });
        Tui {
            master: pty.master,
            child,
            writer,
            parser,
            raw,
            drained,
        }
    }

    /// The screen as text, one line per row.
    pub fn screen(&self) -> String {
        self.parser.lock().unwrap().screen().contents()
    }

    pub fn alternate_screen(&self) -> bool {
        self.parser.lock().unwrap().screen().alternate_screen()
    }

    pub fn cursor_hidden(&self) -> bool {
        self.parser.lock().unwrap().screen().hide_cursor()
    }

    /// Everything written so far, lossily decoded.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.raw.lock().unwrap()).into_owned()
    }

    pub fn press(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    /// Waits until `ok(screen)` holds; panics with the screen after `limit`.
    pub async fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            if start.elapsed() > limit {
                panic!("timed out waiting for {what}; the screen:\n{s}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the process to exit and for everything it wrote to be
    /// read (on loaded cores the reader thread can lag the exit); `None`
    /// if it is still running after `limit` (then it is killed).
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<portable_pty::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Bounded too: a slave end leaked into another process
                // would hold off EOF; the caller's asserts then decide.
                while !self.drained.load(Ordering::Acquire) && start.elapsed() <= limit {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                return Some(status);
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.process_id()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.pid().expect("the child has a pid") as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
    }

    /// The terminal's line discipline is cooked and echoing (not raw).
    pub fn cooked(&self) -> bool {
        use nix::sys::termios::LocalFlags;
        let t = self.master.get_termios().expect("termios of the pty");
        t.local_flags.contains(LocalFlags::ICANON) && t.local_flags.contains(LocalFlags::ECHO)
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The row of `screen` that mentions `needle`.
pub fn row<'a>(screen: &'a str, needle: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no row with {needle:?} on the screen:\n{screen}"))
}
