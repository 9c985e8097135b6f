//! The secret sweep over everything the chaos run put out, including the
//! dashboard drawn from its event feed.

use std::path::Path;

use serde_json::Value;
use tokenyard::sim::SimHandle;

use super::client::Outcome;
use super::{ADMIN_KEY, CLIENT_KEY, CREDS, Feed};

/// Every secret the run involved, searched for in every output.
#[allow(clippy::too_many_arguments)]
pub fn sweep_secrets(
    sim: &SimHandle,
    out: &Path,
    err: &Path,
    log_file: &Path,
    state: &Path,
    outcomes: &[Outcome],
    feed: &Feed,
    pool: &Value,
) {
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    // The state file's job is to hold rotated refresh tokens (0600); nothing
    // else in it may be secret.
    let mut rotated = Vec::new();
    if let Some(creds) = file["credentials"].as_object_mut() {
        for c in creds.values_mut() {
            if let Some(rt) = c["refresh_token"].take().as_str() {
                rotated.push(rt.to_owned());
            }
        }
    }
    assert!(!rotated.is_empty(), "the rotated refresh token was saved");
    let mut secrets: Vec<String> = CREDS.iter().map(|c| c.secret.to_owned()).collect();
    secrets.extend([CLIENT_KEY.to_owned(), ADMIN_KEY.to_owned()]);
    secrets.extend(rotated);
    secrets.extend(sim.current_refresh_token("oauth-slow"));
    secrets.extend(sim.issued_access_tokens());

    let responses: Vec<u8> = outcomes.iter().flat_map(|o| o.raw.clone()).collect();
    let outputs = [
        ("stdout", std::fs::read(out).unwrap()),
        ("stderr", std::fs::read(err).unwrap()),
        ("log file", std::fs::read(log_file).unwrap()),
        ("responses", responses),
        ("admin events", feed.raw.clone().into_bytes()),
        ("admin pool", pool.to_string().into_bytes()),
        ("dashboard", dashboard(feed).into_bytes()),
        ("state file", file.to_string().into_bytes()),
    ];
    let trace_lines = outputs[1].1.iter().filter(|&&b| b == b'\n').count();
    // hyper's connection traces alone are hundreds of lines over a run.
    assert!(
        trace_lines > 300,
        "trace logging was on: {trace_lines} lines"
    );
    for (what, bytes) in &outputs {
        for s in &secrets {
            assert!(
                !contains(bytes, s.as_bytes()),
                "a secret ({}…) in the {what}",
                &s[..8]
            );
        }
    }
    println!(
        "  secrets: {} searched for in {} KiB of output ({trace_lines} trace lines): none found",
        secrets.len(),
        outputs.iter().map(|(_, b)| b.len()).sum::<usize>() / 1024
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The dashboard as it would look having watched this run's event feed.
fn dashboard(feed: &Feed) -> String {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use tokenyard::tui::keys::Ui;
    use tokenyard::tui::state::Dashboard;
    use tokenyard::tui::view::{Context, render};

    let now_ms = tokenyard::events::unix_ms(std::time::SystemTime::now());
    let mut d = Dashboard::new("chaos");
    for f in &feed.feed {
        d.apply(f.clone(), now_ms);
    }
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let tz = jiff::tz::TimeZone::UTC;
    let cx = Context {
        now_ms,
        tz: &tz,
        log: None,
    };
    terminal
        .draw(|frame| render(frame, &d, &Ui::default(), &cx))
        .unwrap();
    let screen = format!("{:?}", terminal.backend().buffer());
    assert!(screen.contains("k-all"), "the dashboard drew the pool");
    screen
}
