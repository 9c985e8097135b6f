//! The live dashboard: pool state reduced from events, rendered with
//! ratatui, and keys that act on credentials through the same code path as
//! the admin API.

pub mod app;
pub mod feed;
pub mod keys;
pub mod remote;
pub mod source;
pub mod state;
pub mod view;

pub use app::{Exit, run};
pub use source::{Feed, Source};

/// Runs the dashboard on its own thread (`tokenyard-tui`) and waits for it
/// without blocking the runtime. A panic on that thread restores the
/// terminal and comes back as an error.
pub async fn run_on_thread(
    source: std::sync::Arc<Source>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Exit> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("tokenyard-tui".into())
        .spawn(move || {
            let _ = tx.send(run(source, runtime, stop));
        })?;
    match rx.await {
        Ok(Ok(exit)) => Ok(exit),
        Ok(Err(e)) => Err(anyhow::anyhow!("the dashboard failed: {e}")),
        Err(_) => Err(anyhow::anyhow!(
            "the dashboard panicked (message above); the terminal was restored"
        )),
    }
}
