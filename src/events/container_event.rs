//! A container event as the core sends it to GetContainerEvents subscribers, and the status of a
//! container as of one moment, read once and shared.
//!
//! A CRI container event carries the status of every container of its pod: an exit storm in
//! pods of ten reads ten statuses per exit. Built as `k8s_cri` messages, each status copied the
//! container's id, name, labels, annotations, mounts and log path (about seven allocations) on
//! the exit path, only for the transport to encode and drop them. A [`ContainerStatusView`]
//! instead holds the container itself (whose config never changes), its status record (which
//! the store replaces whole on a change, so it is shared, not copied) and the image names as
//! the image store had them. The pod's status is read the same way ([`PodSandboxStatusView`]: the
//! sandbox and its state, not copies of its metadata, labels and annotations). The event
//! encodes straight from the views ([`prost::Message`] for [`ContainerEvent`]), with the bytes a
//! `ContainerEventResponse` built from the same moment would have;
//! [`ContainerEvent::to_response`] builds that message for in-process consumers.

use std::sync::Arc;

use k8s_cri::v1::{
    ContainerEventResponse, ContainerEventType, ImageSpec, LinuxContainerResources, LinuxPodSandboxStatus, Namespace,
    NamespaceOption, PodIp, PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus,
};
use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};

use crate::store::container::{ContainerStatus, REASON_COMPLETED, REASON_ERROR};
use crate::store::image::Image;
use crate::store::{Container, ContainerState, Sandbox, SandboxState};

/// What a status takes from the image store: the image's first repo tag and first repo digest
/// (none when the image is gone). Shared by the statuses of one batch.
#[derive(Debug, Default)]
pub struct ImageNames {
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageNames {
    pub(crate) fn of(image: Option<&Image>) -> Self {
        ImageNames {
            tag: image.and_then(|image| image.tags().next()).map(str::to_string),
            digest: image.and_then(|image| image.digests().next()).map(str::to_string),
        }
    }

    pub(crate) fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub(crate) fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
}

pub(crate) fn cri_state(state: ContainerState) -> k8s_cri::v1::ContainerState {
    match state {
        ContainerState::Created => k8s_cri::v1::ContainerState::ContainerCreated,
        ContainerState::Running => k8s_cri::v1::ContainerState::ContainerRunning,
        ContainerState::Exited => k8s_cri::v1::ContainerState::ContainerExited,
        ContainerState::Unknown => k8s_cri::v1::ContainerState::ContainerUnknown,
    }
}

/// A container's CRI status as of the moment it was read: the container (its id and config
/// are fixed at creation) and its status record. The store replaces a status whole on every
/// change, so the record is shared, not copied: reading one is a lock and a reference count.
#[derive(Clone)]
pub struct ContainerStatusView {
    container: Arc<Container>,
    images: Arc<ImageNames>,
    status: Arc<ContainerStatus>,
}

impl ContainerStatusView {
    /// Reads `container`'s status now; `images` are the names of its image (`image_ref`).
    pub(crate) fn read(container: Arc<Container>, images: Arc<ImageNames>) -> Self {
        let status = container.shared_status();
        ContainerStatusView { container, images, status }
    }

    pub fn id(&self) -> &str {
        self.container.id.as_str()
    }

    pub fn state(&self) -> ContainerState {
        self.status.state()
    }

    pub fn exit_code(&self) -> i32 {
        self.status.exit_code
    }

    /// The reason as containerd 1.7 reports it: an exit without one is named by its code.
    fn reason(&self) -> &str {
        let status = &self.status;
        if !status.reason.is_empty() {
            &status.reason
        } else if self.state() == ContainerState::Exited {
            if status.exit_code == 0 { REASON_COMPLETED } else { REASON_ERROR }
        } else {
            ""
        }
    }

    /// The resources in CRI form, converted only when the status is encoded or turned into a
    /// message: an event read in process (or dropped at a full channel) never pays for it.
    fn resources(&self) -> Option<LinuxContainerResources> {
        self.status.resources.as_ref().map(crate::spec::resources_to_cri)
    }

    /// The image's first repo tag, when the image is known (see [`status_image`]).
    fn image_tag(&self) -> Option<&str> {
        self.images.tag()
    }

    /// The image's first repo digest, else the id of the image the container was created from.
    fn image_ref(&self) -> &str {
        self.images.digest().unwrap_or(self.container.metadata.image_ref.as_str())
    }

    /// The status as a CRI message.
    pub fn to_message(&self) -> k8s_cri::v1::ContainerStatus {
        let container = &self.container;
        let status = &self.status;
        let (image, image_ref) =
            status_image(container.config.image.as_ref(), &container.metadata.image_ref, &self.images);
        k8s_cri::v1::ContainerStatus {
            id: container.id.to_string(),
            metadata: container.config.metadata.clone(),
            state: cri_state(self.state()) as i32,
            created_at: status.created_at_ns,
            started_at: status.started_at_ns,
            finished_at: status.finished_at_ns,
            exit_code: status.exit_code,
            image: Some(image),
            image_ref,
            reason: self.reason().to_string(),
            message: status.message.clone(),
            labels: container.config.labels.clone(),
            annotations: container.config.annotations.clone(),
            mounts: container.config.mounts.clone(),
            log_path: container.metadata.log_path.clone(),
            resources: self
                .resources()
                .map(|linux| k8s_cri::v1::ContainerResources { linux: Some(linux), windows: None }),
            ..Default::default()
        }
    }

    // The fields of `runtime.v1.ContainerStatus`, written in field order as prost writes the
    // message `to_message` builds: proto3 leaves out a scalar or string at its default and
    // writes every present message, even an empty one.

    fn image_spec_len(&self) -> usize {
        match (self.image_tag(), &self.container.config.image) {
            (Some(tag), _) => str_len(1, tag),
            (None, Some(spec)) => prost::Message::encoded_len(spec),
            (None, None) => 0,
        }
    }

    fn resources_len(linux: &LinuxContainerResources) -> usize {
        encoding::message::encoded_len(1, linux)
    }

    fn encoded_len(&self) -> usize {
        let container = &self.container;
        let config = &container.config;
        let status = &self.status;
        let image_len = self.image_spec_len();
        str_len(1, container.id.as_str())
            + config.metadata.as_ref().map_or(0, |m| encoding::message::encoded_len(2, m))
            + int64_len(3, cri_state(self.state()) as i64)
            + int64_len(4, status.created_at_ns)
            + int64_len(5, status.started_at_ns)
            + int64_len(6, status.finished_at_ns)
            + int64_len(7, i64::from(status.exit_code))
            + delimited_len(8, image_len)
            + str_len(9, self.image_ref())
            + str_len(10, self.reason())
            + str_len(11, &status.message)
            + string_map_len(12, &config.labels)
            + string_map_len(13, &config.annotations)
            + encoding::message::encoded_len_repeated(14, &config.mounts)
            + str_len(15, &container.metadata.log_path)
            + self.resources().map_or(0, |linux| delimited_len(16, Self::resources_len(&linux)))
    }

    fn encode_fields(&self, buf: &mut impl BufMut) {
        let container = &self.container;
        let config = &container.config;
        let status = &self.status;
        put_str(1, container.id.as_str(), buf);
        if let Some(metadata) = &config.metadata {
            encoding::message::encode(2, metadata, buf);
        }
        put_int(3, cri_state(self.state()) as i64, buf);
        put_int(4, status.created_at_ns, buf);
        put_int(5, status.started_at_ns, buf);
        put_int(6, status.finished_at_ns, buf);
        put_int(7, i64::from(status.exit_code), buf);
        put_delimited_header(8, self.image_spec_len(), buf);
        match (self.image_tag(), &config.image) {
            (Some(tag), _) => put_str(1, tag, buf),
            (None, Some(spec)) => prost::Message::encode_raw(spec, buf),
            (None, None) => {}
        }
        put_str(9, self.image_ref(), buf);
        put_str(10, self.reason(), buf);
        put_str(11, &status.message, buf);
        put_string_map(12, &config.labels, buf);
        put_string_map(13, &config.annotations, buf);
        encoding::message::encode_repeated(14, &config.mounts, buf);
        put_str(15, &container.metadata.log_path, buf);
        if let Some(linux) = self.resources() {
            put_delimited_header(16, Self::resources_len(&linux), buf);
            encoding::message::encode(1, &linux, buf);
        }
    }
}

impl std::fmt::Debug for ContainerStatusView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerStatusView")
            .field("id", &self.id())
            .field("state", &self.state())
            .field("exit_code", &self.exit_code())
            .field("reason", &self.reason())
            .finish_non_exhaustive()
    }
}

pub(crate) fn sandbox_cri_state(state: SandboxState) -> PodSandboxState {
    match state {
        SandboxState::Ready => PodSandboxState::SandboxReady,
        SandboxState::NotReady | SandboxState::Unknown => PodSandboxState::SandboxNotready,
    }
}

/// A pod's CRI status as of the moment it was read: the sandbox (its id and config are fixed
/// at creation) and a copy of what changes. Every container event carries its pod's status,
/// and built as a message it copied the pod's metadata, labels and annotations each time.
#[derive(Clone)]
pub struct PodSandboxStatusView {
    sandbox: Arc<Sandbox>,
    state: SandboxState,
    created_at_ns: i64,
    /// Whether the pod's IPs are reported (else its network status is empty):
    /// [`Sandbox::reports_network`].
    network: bool,
}

impl PodSandboxStatusView {
    pub(crate) fn read(sandbox: Arc<Sandbox>) -> Self {
        let status = sandbox.status();
        let network = sandbox.reports_network();
        PodSandboxStatusView { state: status.state, created_at_ns: status.created_at_ns, network, sandbox }
    }

    pub fn id(&self) -> &str {
        self.sandbox.id.as_str()
    }

    /// The status as a CRI message.
    pub fn to_message(&self) -> PodSandboxStatus {
        let sandbox = &self.sandbox;
        PodSandboxStatus {
            id: sandbox.id.to_string(),
            metadata: sandbox.config.metadata.clone(),
            state: sandbox_cri_state(self.state) as i32,
            created_at: self.created_at_ns,
            // Always there, empty when no address is reported, as containerd sends it.
            network: Some(if self.network {
                PodSandboxNetworkStatus {
                    ip: sandbox.metadata.ip.clone(),
                    additional_ips: sandbox.metadata.additional_ips.iter().map(|ip| PodIp { ip: ip.clone() }).collect(),
                }
            } else {
                PodSandboxNetworkStatus::default()
            }),
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace { options: Some(self.namespace_options().clone()) }),
            }),
            labels: sandbox.config.labels.clone(),
            annotations: sandbox.config.annotations.clone(),
            runtime_handler: sandbox.metadata.reported_runtime_handler().to_string(),
        }
    }

    /// The namespace options its status reports: the config's, else the defaults (POD for
    /// each), as containerd always reports them.
    fn namespace_options(&self) -> &NamespaceOption {
        static NONE_ASKED: std::sync::LazyLock<NamespaceOption> = std::sync::LazyLock::new(NamespaceOption::default);
        let linux = self.sandbox.config.linux.as_ref();
        linux
            .and_then(|l| l.security_context.as_ref())
            .and_then(|context| context.namespace_options.as_ref())
            .unwrap_or(&NONE_ASKED)
    }

    /// The length of the `PodSandboxNetworkStatus` message's fields.
    fn network_len(&self) -> usize {
        let metadata = &self.sandbox.metadata;
        str_len(1, &metadata.ip)
            + metadata.additional_ips.iter().map(|ip| delimited_len(2, str_len(1, ip))).sum::<usize>()
    }

    /// The lengths of the `Namespace` and the `LinuxPodSandboxStatus` messages' fields.
    fn linux_lens(options: &NamespaceOption) -> (usize, usize) {
        let namespace = encoding::message::encoded_len(2, options);
        (namespace, delimited_len(1, namespace))
    }

    // The fields of `runtime.v1.PodSandboxStatus`, in field order as prost writes them.

    fn encoded_len(&self) -> usize {
        let sandbox = &self.sandbox;
        let config = &sandbox.config;
        str_len(1, sandbox.id.as_str())
            + config.metadata.as_ref().map_or(0, |m| encoding::message::encoded_len(2, m))
            + int64_len(3, sandbox_cri_state(self.state) as i64)
            + int64_len(4, self.created_at_ns)
            + delimited_len(5, if self.network { self.network_len() } else { 0 })
            + delimited_len(6, Self::linux_lens(self.namespace_options()).1)
            + string_map_len(7, &config.labels)
            + string_map_len(8, &config.annotations)
            + str_len(9, sandbox.metadata.reported_runtime_handler())
    }

    fn encode_fields(&self, buf: &mut impl BufMut) {
        let sandbox = &self.sandbox;
        let config = &sandbox.config;
        put_str(1, sandbox.id.as_str(), buf);
        if let Some(metadata) = &config.metadata {
            encoding::message::encode(2, metadata, buf);
        }
        put_int(3, sandbox_cri_state(self.state) as i64, buf);
        put_int(4, self.created_at_ns, buf);
        if !self.network {
            put_delimited_header(5, 0, buf);
        } else {
            put_delimited_header(5, self.network_len(), buf);
            put_str(1, &sandbox.metadata.ip, buf);
            for ip in &sandbox.metadata.additional_ips {
                put_delimited_header(2, str_len(1, ip), buf);
                put_str(1, ip, buf);
            }
        }
        let options = self.namespace_options();
        let (namespace, linux) = Self::linux_lens(options);
        put_delimited_header(6, linux, buf);
        put_delimited_header(1, namespace, buf);
        encoding::message::encode(2, options, buf);
        put_string_map(7, &config.labels, buf);
        put_string_map(8, &config.annotations, buf);
        put_str(9, sandbox.metadata.reported_runtime_handler(), buf);
    }
}

impl std::fmt::Debug for PodSandboxStatusView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodSandboxStatusView")
            .field("id", &self.id())
            .field("state", &self.state)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

/// The image a container status names, as containerd 1.7 reports it: while the image the
/// container was created from (`image_id`) is known, its first repo tag and its first repo
/// digest; otherwise the config's image and that id. (The encoder writes the same from
/// [`ContainerStatusView::image_tag`] and [`ContainerStatusView::image_ref`].)
fn status_image(config_image: Option<&ImageSpec>, image_id: &str, names: &ImageNames) -> (ImageSpec, String) {
    let spec = match &names.tag {
        Some(tag) => ImageSpec { image: tag.clone(), ..Default::default() },
        None => config_image.cloned().unwrap_or_default(),
    };
    (spec, names.digest.as_deref().unwrap_or(image_id).to_string())
}

/// The length of a length-delimited field (a string or a message) whose contents take `len`
/// bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    encoding::key_len(tag) + encoding::encoded_len_varint(len as u64) + len
}

/// The key and length of a length-delimited field; its `len` bytes of contents follow.
fn put_delimited_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    encoding::encode_key(tag, WireType::LengthDelimited, buf);
    encoding::encode_varint(len as u64, buf);
}

fn str_len(tag: u32, value: &str) -> usize {
    if value.is_empty() { 0 } else { delimited_len(tag, value.len()) }
}

fn put_str(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        put_delimited_header(tag, value.len(), buf);
        buf.put_slice(value.as_bytes());
    }
}

/// An int32 or int64 field (int32 is written as its sign-extended 64-bit varint).
fn int64_len(tag: u32, value: i64) -> usize {
    if value == 0 { 0 } else { encoding::key_len(tag) + encoding::encoded_len_varint(value as u64) }
}

fn put_int(tag: u32, value: i64, buf: &mut impl BufMut) {
    if value != 0 {
        encoding::encode_key(tag, WireType::Varint, buf);
        encoding::encode_varint(value as u64, buf);
    }
}

type StringMap = std::collections::HashMap<String, String>;

fn string_map_len(tag: u32, map: &StringMap) -> usize {
    encoding::hash_map::encoded_len(encoding::string::encoded_len, encoding::string::encoded_len, tag, map)
}

fn put_string_map(tag: u32, map: &StringMap, buf: &mut impl BufMut) {
    encoding::hash_map::encode(
        encoding::string::encode,
        encoding::string::encoded_len,
        encoding::string::encode,
        encoding::string::encoded_len,
        tag,
        map,
        buf,
    );
}

/// One container event (`runtime.v1.ContainerEventResponse`): its container, type and time, and
/// the status of its pod and of each of the pod's containers as of that time.
#[derive(Clone, Debug, Default)]
pub struct ContainerEvent {
    pub container_id: String,
    pub event_type: i32,
    pub created_at_ns: i64,
    pub pod_sandbox_status: Option<PodSandboxStatusView>,
    pub containers: Vec<ContainerStatusView>,
}

impl ContainerEvent {
    pub fn event_type(&self) -> Option<ContainerEventType> {
        ContainerEventType::try_from(self.event_type).ok()
    }

    /// The status of the event's own container, when its pod still has it.
    pub fn own_status(&self) -> Option<&ContainerStatusView> {
        self.containers.iter().find(|status| status.id() == self.container_id)
    }

    /// The event as a CRI message.
    pub fn to_response(&self) -> ContainerEventResponse {
        ContainerEventResponse {
            container_id: self.container_id.clone(),
            container_event_type: self.event_type,
            created_at: self.created_at_ns,
            pod_sandbox_status: self.pod_sandbox_status.as_ref().map(PodSandboxStatusView::to_message),
            containers_statuses: self.containers.iter().map(ContainerStatusView::to_message).collect(),
        }
    }
}

/// Encodes as `runtime.v1.ContainerEventResponse`, what the gRPC layer sends. Decoding is not
/// supported: nothing receives this type (clients decode `ContainerEventResponse`), so a decode
/// skips every field.
impl prost::Message for ContainerEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_str(1, &self.container_id, buf);
        put_int(2, i64::from(self.event_type), buf);
        put_int(3, self.created_at_ns, buf);
        if let Some(pod) = &self.pod_sandbox_status {
            put_delimited_header(4, pod.encoded_len(), buf);
            pod.encode_fields(buf);
        }
        for status in &self.containers {
            put_delimited_header(5, status.encoded_len(), buf);
            status.encode_fields(buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        str_len(1, &self.container_id)
            + int64_len(2, i64::from(self.event_type))
            + int64_len(3, self.created_at_ns)
            + self.pod_sandbox_status.as_ref().map_or(0, |pod| delimited_len(4, pod.encoded_len()))
            + self.containers.iter().map(|status| delimited_len(5, status.encoded_len())).sum::<usize>()
    }

    fn clear(&mut self) {
        *self = ContainerEvent::default();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::store::image::Image;

    const ID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn image(references: &[&str]) -> Image {
        Image {
            id: ID.into(),
            references: references.iter().map(|r| r.to_string()).collect::<BTreeSet<_>>(),
            chain_id: "sha256:c".into(),
            size_bytes: 1,
            config: Default::default(),
        }
    }

    fn sandbox(ip: &str, additional_ips: &[&str], config: k8s_cri::v1::PodSandboxConfig) -> Arc<Sandbox> {
        let metadata = crate::store::SandboxMetadata {
            version: "v1".into(),
            id: "5a2d".into(),
            name: "web_default_uid_0".into(),
            config: String::new(),
            netns_path: "/var/run/netns/cni-5a2d".into(),
            ip: ip.into(),
            additional_ips: additional_ips.iter().map(|ip| ip.to_string()).collect(),
            runtime_handler: "runc".into(),
            requested_runtime_handler: None,
            cni_result: None,
            network_setup_attempted: true,
            host_network: false,
        };
        let status = crate::store::SandboxStatus {
            state: SandboxState::Ready,
            pid: 7,
            created_at_ns: 1_700_000_000_000_000_000,
            exited_at_ns: 0,
            exit_code: 0,
        };
        Arc::new(Sandbox::new(metadata, config, status))
    }

    /// Encoded from the view, a pod status decodes as the message built from it, field for
    /// field: each optional part present and absent.
    #[test]
    fn pod_status_encodes_as_its_message() {
        use k8s_cri::v1::{
            LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, PodSandboxConfig, PodSandboxMetadata,
        };
        use prost::Message;
        let full = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                uid: "uid".into(),
                namespace: "default".into(),
                attempt: 2,
            }),
            labels: [("app".to_string(), "web".to_string()), ("empty".to_string(), String::new())].into(),
            annotations: [("note".to_string(), "ü".repeat(200))].into(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Container as i32,
                        target_id: "c0".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        // A Linux config without a security context still reports its (empty) namespaces.
        let bare_linux = PodSandboxConfig { linux: Some(LinuxPodSandboxConfig::default()), ..Default::default() };
        let cases = [
            sandbox("10.88.0.5", &["fd00::5", "", "10.89.0.5"], full.clone()),
            sandbox("", &[], full),
            sandbox("10.88.0.6", &[], bare_linux),
            sandbox("10.88.0.7", &[], PodSandboxConfig::default()),
        ];
        for sandbox in cases {
            // Ready; NOTREADY with its netns open; NOTREADY once Stop closed the netns.
            for (stopped, torn_down) in [(false, false), (true, false), (true, true)] {
                if stopped {
                    sandbox.update_status(|status| status.state = SandboxState::NotReady).unwrap();
                }
                if torn_down {
                    sandbox.mark_network_torn_down();
                }
                let view = PodSandboxStatusView::read(sandbox.clone());
                assert_eq!(view.network, !torn_down, "the network is reported while the netns is open");
                let mut bytes = Vec::new();
                view.encode_fields(&mut bytes);
                assert_eq!(bytes.len(), view.encoded_len(), "encoded length of {view:?}");
                let decoded = PodSandboxStatus::decode(bytes.as_slice()).expect("decodes");
                assert_eq!(decoded, view.to_message(), "{view:?}");
            }
        }
    }

    #[test]
    fn status_image_names_the_first_tag_and_the_first_digest() {
        let config = ImageSpec {
            image: ID.into(),
            annotations: [("a".to_string(), "b".to_string())].into(),
            ..Default::default()
        };
        let known = image(&[
            "docker.io/library/busybox:latest",
            "docker.io/library/alpine:3",
            "docker.io/library/busybox@sha256:bbbb",
            "docker.io/library/alpine@sha256:aaaa",
            ID,
        ]);
        let (spec, image_ref) = status_image(Some(&config), ID, &ImageNames::of(Some(&known)));
        assert_eq!(spec, ImageSpec { image: "docker.io/library/alpine:3".into(), ..Default::default() });
        assert_eq!(image_ref, "docker.io/library/alpine@sha256:aaaa");

        // Only a digest reference left: the config's image spec (as sent) and the digest.
        let (spec, image_ref) =
            status_image(Some(&config), ID, &ImageNames::of(Some(&image(&["r/x@sha256:cccc", ID]))));
        assert_eq!(spec, config);
        assert_eq!(image_ref, "r/x@sha256:cccc");

        // Only a tag: the tag, and the id.
        let (spec, image_ref) = status_image(Some(&config), ID, &ImageNames::of(Some(&image(&["r/x:1", ID]))));
        assert_eq!(spec.image, "r/x:1");
        assert_eq!(image_ref, ID);

        // The image is gone: the config's spec and the id the container was created from.
        assert_eq!(status_image(Some(&config), ID, &ImageNames::of(None)), (config.clone(), ID.to_string()));
    }
}
