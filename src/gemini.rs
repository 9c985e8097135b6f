//! Generated protobuf messages and the gRPC client/server for the Gemini
//! API (`google.ai.generativelanguage.v1beta`) and Google's error model
//! (`google.rpc`).
//!
//! The definitions live in `proto/` (subsets of Google's published files,
//! with the real field numbers); `build.rs` compiles them without `protoc`.
//! Well-known types (`Struct`, `Duration`, `Any`) are `prost_types`.

/// `google.ai.generativelanguage.v1beta`: `GenerativeService` and its
/// messages. The client is `generative_service_client::GenerativeServiceClient`,
/// the server `generative_service_server::GenerativeServiceServer`.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v1beta {
    include!(concat!(
        env!("OUT_DIR"),
        "/google.ai.generativelanguage.v1beta.rs"
    ));
}

/// `google.rpc`: `Status` (the payload of `grpc-status-details-bin`) and the
/// error details tokenyard reads: `RetryInfo`, `QuotaFailure`, `ErrorInfo`.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod rpc {
    include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));

    /// Type URL of a packed [`RetryInfo`].
    pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";
    /// Type URL of a packed [`QuotaFailure`].
    pub const QUOTA_FAILURE_TYPE_URL: &str = "type.googleapis.com/google.rpc.QuotaFailure";
    /// Type URL of a packed [`ErrorInfo`].
    pub const ERROR_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.ErrorInfo";
}
