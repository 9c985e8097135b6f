//! The live dashboard: pool state reduced from events, rendered with
//! ratatui, and keys that act on credentials through the same code path as
//! the admin API.

pub mod remote;
pub mod source;

pub use source::{Feed, Source};
