//! Generates Rust types, tonic clients and tonic servers for `proto/`.
//!
//! Our own `.proto` files are compiled by `protox` (pure Rust), so building
//! vtorc itself needs no `protoc`; the descriptor set is also written out for
//! gRPC server reflection. (The `etcd-client` dependency still runs `protoc`
//! in its own build script; the README's setup installs it.)

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "vitess/vtrpc.proto",
    "vitess/vttime.proto",
    "vitess/logutil.proto",
    "vitess/topodata.proto",
    "vitess/vtorcdata.proto",
    "vitess/querythrottler.proto",
    "vitess/replicationdata.proto",
    "vitess/tabletmanagerdata.proto",
    "vitess/tabletmanagerservice.proto",
    "vitess/query.proto",
    "vitess/queryservice.proto",
    "vitess/vtctldata.proto",
    "vitess/vtctlservice.proto",
    "vtorc/v1/vtorc.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files: Vec<String> = PROTOS.iter().map(|p| format!("proto/{p}")).collect();
    let fds = protox::compile(&files, ["proto"])?;

    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out.join("vtorc_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        // Maps decode in any order and encode sorted by key, so a record we
        // re-encode is byte-identical to one Vitess wrote with sorted maps.
        .btree_map(".")
        // Tablet aliases are map keys and sort as Vitess sorts them (cell, uid).
        .type_attribute(".topodata.TabletAlias", "#[derive(PartialOrd, Ord)]")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
