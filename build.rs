//! Compiles `proto/*.proto` into Rust at build time with the protoc binary
//! shipped by `protoc-bin-vendored`, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing reads the
    // environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/kv.proto",
            "proto/lock.proto",
            "proto/management.proto",
            "proto/health.proto",
            "proto/etcd/kv.proto",
            "proto/etcd/rpc.proto",
        ],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
