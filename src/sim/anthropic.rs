//! The simulated Anthropic Messages API. (Being written.)
