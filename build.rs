//! Compiles `proto/mlcp/v1/**/*.proto` with `protox` (pure Rust; no system `protoc`) and
//! generates prost messages + tonic services with `tonic-prost-build`. Also writes the
//! encoded `FileDescriptorSet` to `$OUT_DIR/mlcp_descriptor.bin` (`proto::FILE_DESCRIPTOR_SET`).

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/mlcp/v1/types.proto",
    "proto/mlcp/v1/task_service.proto",
    "proto/mlcp/v1/node_service.proto",
    "proto/mlcp/v1/cluster_service.proto",
    "proto/mlcp/v1/raft_service.proto",
    "proto/mlcp/v1/internal/manifest.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("mlcp_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        // Deterministic iteration everywhere (the manifest is replicated state).
        .btree_map(".")
        // `--output json` prints messages with their proto field names.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .emit_rerun_if_changed(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
