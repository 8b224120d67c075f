//! Compiles `proto/mlcp/v1/**/*.proto` with `protox` (pure Rust; no system `protoc`) and
//! generates prost messages + tonic services with `tonic-prost-build`.
//!
//! The generated Rust and the encoded `FileDescriptorSet` are written to `OUT_DIR` and then
//! copied to `proto/gen/` (only when their content changed), and `src/proto.rs` includes them
//! from there. Keeping them in the source tree makes a checkout self-consistent even when
//! several checkouts share one `CARGO_TARGET_DIR` (cargo then shares one build-script output
//! directory between them, and a run from one checkout could otherwise leak its generated code
//! into another).

use std::path::{Path, PathBuf};

const PROTOS: &[&str] = &[
    "proto/mlcp/v1/types.proto",
    "proto/mlcp/v1/task_service.proto",
    "proto/mlcp/v1/node_service.proto",
    "proto/mlcp/v1/cluster_service.proto",
    "proto/mlcp/v1/raft_service.proto",
    "proto/mlcp/v1/internal/manifest.proto",
];

const GENERATED: &[&str] = &["mlcp.v1.rs", "mlcp.v1.internal.rs", "mlcp_descriptor.bin"];

fn copy_if_changed(from: &Path, to: &Path) -> std::io::Result<()> {
    let new = std::fs::read(from)?;
    if std::fs::read(to).ok().as_deref() != Some(new.as_slice()) {
        std::fs::write(to, new)?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("mlcp_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .out_dir(&out_dir)
        // Deterministic iteration everywhere (the manifest is replicated state).
        .btree_map(".")
        // `--output json` prints messages with their proto field names.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .emit_rerun_if_changed(false)
        .compile_fds(compiler.file_descriptor_set())?;
    let gen_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto/gen");
    std::fs::create_dir_all(&gen_dir)?;
    for name in GENERATED {
        copy_if_changed(&out_dir.join(name), &gen_dir.join(name))?;
    }
    Ok(())
}
