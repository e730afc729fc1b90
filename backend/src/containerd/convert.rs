//! Conversions between crid's records and containerd's protos.

use std::collections::{BTreeMap, HashMap};

use containerd_client::services::v1::Container;
use containerd_client::services::v1::Image;
use containerd_client::services::v1::container::Runtime;
use containerd_client::types::Descriptor as ProtoDescriptor;
use crid::error::{Error, Result};
use crid::ports::{ContainerRecord, Descriptor, ImageRecord, WorkloadSpec};
use prost_types::{Any, Timestamp};

use super::spec;

/// Extension key holding the `WorkloadSpec` the OCI spec was derived from, so that a record read
/// back is exactly the record written.
pub const WORKLOAD_EXTENSION: &str = "io.crid.workload-spec";
/// type_url of crid's own extensions; containerd stores their bytes opaquely.
pub const EXTENSION_TYPE_URL: &str = "crid.io/extension";

pub fn timestamp_ns(ts: &Timestamp) -> i64 {
    ts.seconds.saturating_mul(1_000_000_000).saturating_add(ts.nanos as i64)
}

/// type_url of the runc shim's options, as containerd's typeurl registry names them.
pub const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

/// The runc v2 shim's `Options` message (containerd's `runc/options/oci.proto`), which the
/// containerd-client crate does not generate; field numbers are the proto's.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuncOptionsProto {
    #[prost(bool, tag = "1")]
    pub no_pivot_root: bool,
    #[prost(bool, tag = "2")]
    pub no_new_keyring: bool,
    #[prost(string, tag = "3")]
    pub shim_cgroup: String,
    #[prost(uint32, tag = "4")]
    pub io_uid: u32,
    #[prost(uint32, tag = "5")]
    pub io_gid: u32,
    #[prost(string, tag = "6")]
    pub binary_name: String,
    #[prost(string, tag = "7")]
    pub root: String,
    #[prost(string, tag = "8")]
    pub criu_path: String,
    #[prost(bool, tag = "9")]
    pub systemd_cgroup: bool,
    #[prost(string, tag = "10")]
    pub criu_image_path: String,
    #[prost(string, tag = "11")]
    pub criu_work_path: String,
}

/// The handler's runc options as the shim reads them; None when all are defaults, so that the
/// shim applies its own.
pub fn runc_options(workload: &WorkloadSpec) -> Option<Any> {
    let o = &workload.runc_options;
    if *o == crid::config::RuncOptions::default() {
        return None;
    }
    let message = RuncOptionsProto {
        no_pivot_root: o.no_pivot_root,
        no_new_keyring: o.no_new_keyring,
        shim_cgroup: o.shim_cgroup.clone(),
        io_uid: o.io_uid,
        io_gid: o.io_gid,
        binary_name: o.binary_name.clone(),
        root: o.root.clone(),
        criu_path: o.criu_path.clone(),
        systemd_cgroup: o.systemd_cgroup,
        criu_image_path: o.criu_image_path.clone(),
        criu_work_path: o.criu_work_path.clone(),
    };
    Some(Any { type_url: RUNC_OPTIONS_TYPE_URL.into(), value: prost::Message::encode_to_vec(&message) })
}

pub fn to_proto_container(record: &ContainerRecord) -> Result<Container> {
    let oci = spec::build(&record.id, &record.spec)?;
    let workload = serde_json::to_vec(&record.spec).map_err(|e| Error::internal(format!("encode workload: {e}")))?;
    let mut extensions: HashMap<String, Any> = record
        .extensions
        .iter()
        .map(|(k, v)| (k.clone(), Any { type_url: EXTENSION_TYPE_URL.into(), value: v.clone() }))
        .collect();
    extensions.insert(WORKLOAD_EXTENSION.into(), Any { type_url: EXTENSION_TYPE_URL.into(), value: workload });
    Ok(Container {
        id: record.id.clone(),
        labels: record.labels.clone().into_iter().collect(),
        image: record.image.clone(),
        runtime: Some(Runtime { name: record.runtime.clone(), options: runc_options(&record.spec) }),
        spec: Some(Any { type_url: spec::SPEC_TYPE_URL.into(), value: spec::to_json(&oci)? }),
        snapshotter: record.snapshotter.clone(),
        snapshot_key: record.snapshot_key.clone(),
        created_at: None,
        updated_at: None,
        extensions,
        sandbox: String::new(),
    })
}

pub fn from_proto_container(container: Container) -> Result<ContainerRecord> {
    let mut extensions: BTreeMap<String, Vec<u8>> =
        container.extensions.into_iter().map(|(k, v)| (k, v.value)).collect();
    let spec: WorkloadSpec = match extensions.remove(WORKLOAD_EXTENSION) {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::internal(format!("container {}: bad workload extension: {e}", container.id)))?,
        // Not created by crid (or by an older crid): an empty spec the core can recognise.
        None => WorkloadSpec::default(),
    };
    Ok(ContainerRecord {
        id: container.id,
        labels: container.labels.into_iter().collect(),
        image: container.image,
        runtime: container.runtime.map(|r| r.name).unwrap_or_default(),
        snapshotter: container.snapshotter,
        snapshot_key: container.snapshot_key,
        spec,
        extensions,
        created_at_ns: container.created_at.as_ref().map(timestamp_ns).unwrap_or(0),
    })
}

pub fn to_proto_descriptor(d: &Descriptor) -> ProtoDescriptor {
    ProtoDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size_bytes as i64,
        annotations: HashMap::new(),
    }
}

pub fn from_proto_descriptor(d: ProtoDescriptor) -> Descriptor {
    Descriptor { media_type: d.media_type, digest: d.digest, size_bytes: d.size.max(0) as u64 }
}

pub fn to_proto_image(record: &ImageRecord) -> Image {
    Image {
        name: record.name.clone(),
        labels: record.labels.clone().into_iter().collect(),
        target: Some(to_proto_descriptor(&record.target)),
        created_at: None,
        updated_at: None,
    }
}

pub fn from_proto_image(image: Image) -> ImageRecord {
    ImageRecord {
        name: image.name,
        labels: image.labels.into_iter().collect(),
        target: image.target.map(from_proto_descriptor).unwrap_or_else(|| Descriptor {
            media_type: String::new(),
            digest: String::new(),
            size_bytes: 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_record_round_trips() {
        let mut record = ContainerRecord {
            id: "abc".into(),
            labels: [("io.cri-containerd.kind".to_string(), "sandbox".to_string())].into(),
            image: "img".into(),
            runtime: "io.containerd.runc.v2".into(),
            snapshotter: "overlayfs".into(),
            snapshot_key: "abc".into(),
            spec: WorkloadSpec { args: vec!["sleep".into()], sandbox: true, ..Default::default() },
            extensions: [("meta".to_string(), b"{}".to_vec())].into(),
            created_at_ns: 0,
        };
        let back = from_proto_container(to_proto_container(&record).unwrap()).unwrap();
        record.created_at_ns = back.created_at_ns;
        assert_eq!(back, record);
    }
}
