//! Compiles `proto/*.proto` into Rust at build time with the protoc binary
//! shipped by `protoc-bin-vendored`, so no system protoc is needed, and
//! generates the proto3 JSON mapping of etcd's messages for its gateway.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing reads the
    // environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("etcd-descriptors.bin");
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/kv.proto",
            "proto/lock.proto",
            "proto/management.proto",
            "proto/health.proto",
        ],
        &["proto"],
    )?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .compile_protos(
            &[
                "proto/etcd/kv.proto",
                "proto/etcd/rpc.proto",
                "proto/etcd/v3lock.proto",
                "proto/etcd/v3election.proto",
            ],
            &["proto"],
        )?;
    let set = std::fs::read(&descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".etcdserverpb", ".mvccpb", ".v3lockpb", ".v3electionpb"])?;
    // The build profile, for `--version`: packages must ship release builds,
    // and a benchmark must say what it measured.
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    let opt = std::env::var("OPT_LEVEL").unwrap_or_else(|_| "?".into());
    println!("cargo:rustc-env=FERRIUM_BUILD_PROFILE={profile} build, opt-level {opt}");
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
