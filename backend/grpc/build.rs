//! Generates the CRI's service stubs (servers and clients of `runtime.v1`) with
//! madsim-tonic-build: real tonic code for a normal build and madsim's simulated transport for
//! `--cfg madsim`, both over k8s-cri's message types (`extern_path`), so that the simulator runs
//! the same service impl as production. The proto is the one k8s-cri ships in its package.
//!
//! Finding that proto: k8s-cri declares no `links` key, so it passes no `DEP_` variables, and
//! its source may sit in any registry directory (a mirror, a vendored tree). Cargo itself knows
//! where the package it resolved lives: `cargo metadata --offline --locked` reads it from the
//! lock file and the local sources, without network, and its resolve graph names the very
//! k8s-cri this crate depends on, whatever other versions the tree may hold.
//! `CRID_CRI_PROTO` overrides the path for a build that cannot run cargo.
//!
//! A second set of servers (`OUT_DIR/sending/`, used by the real build) sends
//! GetContainerEvents' messages as the core's `crid::ContainerEvent`, which encodes itself as a
//! `ContainerEventResponse` straight from the statuses it read (see the core's
//! `events/container_event.rs`) instead of first copying them into CRI messages. Clients, and
//! madsim's transport (which hands the message over as a value), keep k8s-cri's type.

use std::path::{Path, PathBuf};
use std::process::Command;

const CRI_CRATE: &str = "k8s-cri";
const PROTO_IN_CRATE: &str = "proto/v1.proto";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CRID_CRI_PROTO");
    let proto = match std::env::var_os("CRID_CRI_PROTO") {
        Some(path) => PathBuf::from(path),
        None => cri_crate_dir().join(PROTO_IN_CRATE),
    };
    assert!(proto.is_file(), "the CRI proto is not at {}", proto.display());
    let include = proto.parent().expect("a file has a parent").to_path_buf();
    madsim_tonic_build::configure()
        .extern_path(".runtime.v1", "::k8s_cri::v1")
        .compile_protos(&[&proto], &[&include])
        .unwrap_or_else(|error| panic!("generating the CRI services from {}: {error}", proto.display()));
    let sending = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("sending");
    std::fs::create_dir_all(&sending).expect("create the sending servers' directory");
    madsim_tonic_build::configure()
        .build_client(false)
        .out_dir(&sending)
        .extern_path(".runtime.v1", "::k8s_cri::v1")
        .extern_path(".runtime.v1.ContainerEventResponse", "::crid::ContainerEvent")
        .compile_protos(&[&proto], &[&include])
        .unwrap_or_else(|error| panic!("generating the CRI servers from {}: {error}", proto.display()));
}

/// The source directory of the k8s-cri package this crate depends on.
fn cri_crate_dir() -> PathBuf {
    let cargo = std::env::var_os("CARGO").expect("cargo runs build scripts with CARGO set");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked", "--manifest-path"])
        .arg(manifest_dir.join("Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed (it runs offline and needs every package of Cargo.lock: run `cargo fetch --locked`, \
         as ci/deps does): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("metadata lists packages");
    let ours = std::env::var("CARGO_PKG_NAME").expect("CARGO_PKG_NAME");
    let own_manifest = manifest_dir.join("Cargo.toml");
    let our_id = packages
        .iter()
        .find(|p| {
            p["name"] == ours.as_str() && Path::new(p["manifest_path"].as_str().unwrap_or_default()) == own_manifest
        })
        .and_then(|p| p["id"].as_str())
        .expect("cargo metadata lists this package");
    let nodes = metadata["resolve"]["nodes"].as_array().expect("metadata has a resolve graph");
    let dependency_ids: Vec<&str> = nodes
        .iter()
        .find(|node| node["id"] == our_id)
        .and_then(|node| node["dependencies"].as_array())
        .expect("the resolve graph has this package")
        .iter()
        .filter_map(|id| id.as_str())
        .collect();
    let manifest = packages
        .iter()
        .find(|p| p["name"] == CRI_CRATE && p["id"].as_str().is_some_and(|id| dependency_ids.contains(&id)))
        .and_then(|p| p["manifest_path"].as_str())
        .unwrap_or_else(|| panic!("{ours} depends on {CRI_CRATE}, but cargo metadata does not say where it is"));
    Path::new(manifest).parent().expect("a manifest has a directory").to_path_buf()
}
