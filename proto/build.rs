//! Generates the gRPC client and server code and the descriptor set that
//! server reflection serves.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [
        "ringkv/v1/rawkv.proto",
        "ringkv/v1/replica.proto",
        "ringkv/v1/admin.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("ringkv_descriptor.bin"))
        .bytes(".")
        .compile_protos(&protos, &["."])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
