//! What a source sends the dashboard. Its own module so that both sources
//! ([`super::source`]'s local pool and [`super::remote`]) name it without
//! naming each other: the source module picks between them, the remote one
//! knows only this.

use crate::events::{Event, PoolSnapshot};

/// One message from a source to the dashboard.
#[derive(Debug, Clone)]
pub enum Feed {
    /// The whole pool. Replaces what the dashboard had: sent first, after a
    /// lag and after every (re)connect.
    Snapshot(PoolSnapshot),
    Event(Event),
    /// The connection to a remote instance is gone; the dashboard says
    /// "disconnected, retrying" until the next `Snapshot`.
    Disconnected(String),
}
