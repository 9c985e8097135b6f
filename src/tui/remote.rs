//! The dashboard's view of a tokenyard instance elsewhere, over its admin
//! API: `GET /admin/pool`, `GET /admin/events` (SSE) and the command
//! endpoints.
//!
//! (Being written.)

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::source::Feed;
use crate::events::Command;
use crate::secret::Secret;

#[derive(Clone)]
pub struct Remote {
    base: url::Url,
    admin_key: Option<Secret>,
}

impl Remote {
    pub fn new(base: url::Url, admin_key: Option<Secret>) -> Self {
        Remote { base, admin_key }
    }

    pub fn label(&self) -> String {
        self.base.to_string()
    }

    pub async fn feed(self, _tx: mpsc::Sender<Feed>, _stop: CancellationToken) {
        let _ = &self.admin_key;
    }

    pub async fn command(&self, _cmd: Command) -> Result<String, String> {
        Err("not written yet".into())
    }
}
