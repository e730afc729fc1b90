//! Conversions between crid's records and containerd's protos.

use std::collections::{BTreeMap, HashMap};

use containerd_client::services::v1::Container;
use containerd_client::services::v1::Image;
use containerd_client::services::v1::container::Runtime;
use containerd_client::types::Descriptor as ProtoDescriptor;
use crid::backend::{ContainerRecord, Descriptor, ImageRecord, WorkloadSpec};
use crid::error::{Error, Result};
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
        runtime: Some(Runtime { name: record.runtime.clone(), options: None }),
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
