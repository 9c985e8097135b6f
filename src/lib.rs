//! tokenyard: an LLM API gateway that rotates a pool of credentials around
//! rate limits.

pub mod sim;
