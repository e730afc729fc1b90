//! In-memory stores of sandboxes, containers and images, the truncated-id index and the name
//! registrars. Stores are `BTreeMap`s so that listing order never depends on hashing.

pub mod container;
pub mod cpu_rate;
pub mod image;
pub mod registrar;
pub mod sandbox;
pub mod table;

pub use container::{Container, ContainerMetadata, ContainerState, ContainerStatus};
pub use cpu_rate::CpuRate;
pub use image::{Image, ImageStore};
pub use registrar::Registrar;
pub use sandbox::{Sandbox, SandboxMetadata, SandboxState, SandboxStatus};
pub use table::Table;

/// Encodes a protobuf message as hex, to carry CRI configs inside JSON metadata losslessly.
pub fn encode_message<M: prost::Message>(message: &M) -> String {
    hex::encode(message.encode_to_vec())
}

pub fn decode_message<M: prost::Message + Default>(text: &str) -> crate::error::Result<M> {
    let bytes = hex::decode(text).map_err(|e| crate::error::Error::internal(format!("bad hex in metadata: {e}")))?;
    M::decode(bytes.as_slice()).map_err(|e| crate::error::Error::internal(format!("bad protobuf in metadata: {e}")))
}
