//! The simulated Gemini gRPC service. (Being written.)
