//! Generated protobuf types and gRPC stubs.
//!
//! The Vitess packages are wire-identical to Vitess 24 (checked in CI by
//! `check-wire-compat`); `vtorc::v1` is our own API.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

macro_rules! vitess_package {
    ($($name:ident),* $(,)?) => {
        $(
            pub mod $name {
                include!(concat!(env!("OUT_DIR"), "/", stringify!($name), ".rs"));
            }
        )*
    };
}

vitess_package!(
    vtrpc,
    vttime,
    logutil,
    topodata,
    vtorcdata,
    querythrottler,
    replicationdata,
    tabletmanagerdata,
    tabletmanagerservice,
    query,
    queryservice,
    vtctldata,
    vtctlservice,
);

/// vtorc-rs's own API (package `vtorc.v1`).
pub mod vtorc {
    pub mod v1 {
        tonic::include_proto!("vtorc.v1");
    }
}

/// The encoded `FileDescriptorSet` of every package above, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vtorc_descriptor");
