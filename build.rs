//! Generates the Gemini gRPC messages, client and server from `proto/`.
//!
//! The `.proto` files are parsed by protox (pure Rust), so building needs no
//! `protoc` on the machine; tonic-prost-build then generates code from the
//! resulting descriptor set into `OUT_DIR`, where `src/gemini.rs` includes it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "proto/google/ai/generativelanguage/v1beta/generative_service.proto",
        "proto/google/rpc/status.proto",
        "proto/google/rpc/error_details.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        // The sim serves the same service on loopback.
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
