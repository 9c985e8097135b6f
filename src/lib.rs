//! tokenyard: an LLM API gateway that rotates a pool of credentials around
//! rate limits.
//!
//! The parts, and how a request flows through them, are described in the
//! README's architecture section.

pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod events;
pub mod gateway;
pub mod gemini;
pub mod json;
pub mod metrics;
pub mod pool;
pub mod report;
pub mod secret;
pub mod shared;
pub mod sim;
pub mod translate;
pub mod transport;
pub mod tui;
pub mod upstream;
pub mod vocab;
