//! `RealContainerd`: the `Containerd` trait over containerd's gRPC API on its unix socket.
//!
//! Every request carries the `containerd-namespace` header of the namespace this client is bound
//! to; what a pull writes additionally carries the pull's `containerd-lease` header so that
//! blobs and snapshots written before the image record exists are not garbage-collected.
//! `registry.rs` implements the `Registry` trait on the same client: fetched blobs go into
//! containerd's content store.

pub mod content;
pub mod convert;
pub mod events;
pub mod metrics;
pub mod registry;
pub mod rootfs;
pub mod spec;
pub mod taskio;
pub mod timing;
pub mod userdb;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, ListSnapshotsRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest, UsageRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    AddResourceRequest, ApplyRequest, CloseIoRequest, CreateContainerRequest, CreateImageRequest,
    CreateRequest as CreateLeaseRequest, CreateTaskRequest, DeleteContainerRequest, DeleteImageRequest,
    DeleteProcessRequest, DeleteRequest as DeleteLeaseRequest, DeleteTaskRequest, ExecProcessRequest,
    GetContainerRequest, GetImageRequest, GetRequest, InfoRequest, KillRequest, ListContainersRequest,
    ListImagesRequest, ListRequest as ListLeasesRequest, MetricsRequest, ResizePtyRequest, Resource as LeaseResource,
    StartRequest, SubscribeRequest, UpdateContainerRequest, UpdateImageRequest, UpdateRequest as UpdateContentRequest,
    UpdateTaskRequest, WaitRequest,
};
use containerd_client::types::Mount as ProtoMount;
use containerd_client::types::v1::Status as ProcessStatus;
use crid::error::{Error, ErrorKind, Result};
use crid::ports::{
    ByteWriter, ContainerRecord, Containerd, Descriptor, EventStream, ExecOutput, ExecSpec, ExitStatus, ImageContent,
    ImageRecord, LeaseRecord, ProcessIo, Resources, SnapshotUsage, TaskInfo, TaskIo, TaskMetrics, TaskState,
    TerminalSize,
};
use hyper_util::rt::TokioIo;
use prost_types::{Any, FieldMask};
use timing::TimedChannel;
use tokio::io::AsyncWriteExt;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Endpoint, Uri};

use crate::errors::from_status;
use crate::pull::{self, ManifestDocument, RegistryClient};
use oci_spec::image::ImageConfiguration;
use taskio::{IoManager, PreparedIo};

/// gRPC messages above tonic's 4 MiB default occur in List calls of busy hosts.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// The label that makes containerd's GC drop a lease at a time (RFC 3339).
const LABEL_GC_EXPIRE: &str = "containerd.io/gc.expire";

/// Opens a lazily connecting channel to containerd's unix socket: a later containerd restart is
/// survived by reconnecting on the next call.
pub fn connect_lazy(socket_path: &str) -> Result<TimedChannel> {
    let path = PathBuf::from(socket_path);
    // The URI is required by tonic but unused: the connector dials the socket.
    let endpoint = Endpoint::try_from("http://[::]:50051")
        .map_err(|e| Error::internal(format!("endpoint: {e}")))?
        .connect_timeout(Duration::from_secs(10));
    Ok(TimedChannel::new(endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    }))))
}

/// Builds requests carrying the namespace (and optionally a lease) header.
#[derive(Clone)]
pub struct Requests {
    namespace: AsciiMetadataValue,
}

impl Requests {
    fn new(namespace: &str) -> Result<Requests> {
        let namespace =
            namespace.parse().map_err(|_| Error::invalid(format!("invalid containerd namespace {namespace:?}")))?;
        Ok(Requests { namespace })
    }

    pub fn plain<T>(&self, message: T) -> tonic::Request<T> {
        self.with_lease(message, None)
    }

    pub fn with_lease<T>(&self, message: T, lease: Option<&str>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("containerd-namespace", self.namespace.clone());
        if let Some(lease) = lease.and_then(|l| l.parse::<AsciiMetadataValue>().ok()) {
            request.metadata_mut().insert("containerd-lease", lease);
        }
        request
    }
}

pub struct ContainerdOptions {
    pub socket_path: String,
    pub namespace: String,
    /// Where task and exec FIFOs live (volatile state).
    pub fifo_dir: PathBuf,
    /// containerd-style registry hosts dir (`<host>/hosts.toml`); None for defaults.
    pub registry_config_path: Option<PathBuf>,
    /// Snapshotter whose snapshots the image configs are labelled with for GC.
    pub default_snapshotter: String,
    /// `max_container_log_line_size`: zero or less is unlimited.
    pub max_log_line_bytes: i64,
}

pub struct RealContainerd {
    channel: TimedChannel,
    namespace: String,
    requests: Requests,
    io: IoManager,
    registry: RegistryClient,
    default_snapshotter: String,
    /// Snapshotter each chain id was unpacked into, for the config's GC label.
    unpacked_into: Mutex<HashMap<String, String>>,
    /// What this process knows without asking: the records it created or updated, and the
    /// mounts Prepare answered with. Task create and container delete need the record's
    /// snapshot and runtime options and the snapshot's mounts; containerd's own client asks for
    /// them on every call (a Containers/Get and a Snapshots/Mounts), which under load costs
    /// milliseconds each. Both are fixed for the life of the object (only crid writes its
    /// namespace; overlay mounts name the snapshot's directories, which a containerd restart
    /// keeps), and a miss — after a restart of crid — asks containerd as before.
    known: Mutex<Known>,
    /// One labelling of an image target at a time: a pull writes its three references at
    /// once, and the two that wait find the first one's label in `known` rather than
    /// reading and labelling the same config again.
    labelling: crid::kmutex::KeyedMutex,
}

#[derive(Default)]
struct Known {
    records: HashMap<String, ContainerRecord>,
    mounts: HashMap<(String, String), Vec<ProtoMount>>,
    /// Image targets (manifest digests) whose config this process has labelled with its
    /// snapshot, with the config's digest. A pull creates three references to one target;
    /// the first labels the config (four round trips), the other two need not. A blob
    /// written again (it had been garbage-collected, and came back without labels) drops
    /// every entry that names it.
    labelled: HashMap<String, String>,
    /// Blobs (`content/<digest>`) and committed snapshots (`snapshots/<snapshotter>/<chain>`)
    /// this process wrote, unpacked or found since its last image delete. A pull's look at
    /// one of these holds it first and then looks (it is most likely there: a re-pull); at
    /// anything else it looks first and holds only what it finds (most likely absent: a cold
    /// pull, whose looks then write nothing to containerd's database). Either order is safe:
    /// what the pull relies on is held before it is looked at for the last time. A wrong guess
    /// costs one round trip. An image delete, whose collection may take any of them, forgets
    /// them all.
    present: HashSet<String>,
}

/// How many blobs and snapshots `Known::present` remembers at most (a few hundred KiB).
const PRESENT_GUESSES_MAX: usize = 4096;

impl RealContainerd {
    fn known_present(&self, key: &str) -> bool {
        self.known.lock().unwrap().present.contains(key)
    }

    pub(super) fn note_present(&self, key: String, present: bool) {
        let mut known = self.known.lock().unwrap();
        if present {
            // A guess, not a record: past this many, start again rather than grow for good on
            // a node that pulls without ever deleting an image.
            if known.present.len() >= PRESENT_GUESSES_MAX {
                known.present.clear();
            }
            known.present.insert(key);
        } else {
            known.present.remove(&key);
        }
    }

    /// Whether a blob or snapshot exists, held by `lease` when it does (see `Known::present`).
    async fn held_if_present<F, Fut>(&self, lease: &str, id: &str, kind: &str, look: F) -> Result<bool>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let key = format!("{kind}/{id}");
        if !self.known_present(&key) && !look().await? {
            return Ok(false);
        }
        self.add_to_lease(lease, id, kind).await?;
        // Looked at (again) once held: collected before that, it is fetched or unpacked.
        let present = look().await?;
        self.note_present(key, present);
        Ok(present)
    }

    /// A blob is about to be written anew: what was known of its labels no longer holds.
    fn forget_labels_of(&self, digest: &str) {
        self.known.lock().unwrap().labelled.retain(|target, config| target != digest && config != digest);
    }
}

fn grpc<T>(result: std::result::Result<tonic::Response<T>, tonic::Status>) -> Result<T> {
    result.map(tonic::Response::into_inner).map_err(from_status)
}

fn exit_status(code: u32, exited_at: Option<&prost_types::Timestamp>) -> ExitStatus {
    ExitStatus::new(code, exited_at.map(convert::timestamp_ns).unwrap_or(0))
}

fn json_any(type_url: &str, value: Vec<u8>) -> Any {
    Any { type_url: type_url.to_string(), value }
}

impl RealContainerd {
    pub fn new(options: ContainerdOptions) -> Result<RealContainerd> {
        let io = IoManager::new(options.fifo_dir).with_limits(options.max_log_line_bytes);
        io.sweep_earlier_execs();
        Ok(RealContainerd {
            channel: connect_lazy(&options.socket_path)?,
            requests: Requests::new(&options.namespace)?,
            namespace: options.namespace,
            io,
            registry: RegistryClient::new(options.registry_config_path)?,
            default_snapshotter: options.default_snapshotter,
            unpacked_into: Mutex::new(HashMap::new()),
            known: Mutex::new(Known::default()),
            labelling: crid::kmutex::KeyedMutex::new(),
        })
    }

    /// containerd's version, which also proves that it answers.
    pub async fn version(&self) -> Result<String> {
        let response = grpc(VersionClient::new(self.channel.clone()).version(tonic::Request::new(())).await)?;
        Ok(format!("{} {}", response.version, response.revision))
    }

    fn req<T>(&self, message: T) -> tonic::Request<T> {
        self.requests.plain(message)
    }

    fn containers(&self) -> ContainersClient<TimedChannel> {
        ContainersClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }
    fn tasks(&self) -> TasksClient<TimedChannel> {
        TasksClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }
    fn images(&self) -> ImagesClient<TimedChannel> {
        ImagesClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }
    fn snapshots(&self) -> SnapshotsClient<TimedChannel> {
        SnapshotsClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    async fn rootfs_mounts(&self, record: &ContainerRecord) -> Result<Vec<ProtoMount>> {
        if record.snapshot_key.is_empty() {
            return Ok(Vec::new());
        }
        self.snapshot_mounts(&record.snapshotter, &record.snapshot_key).await
    }

    async fn snapshot_mounts(&self, snapshotter: &str, key: &str) -> Result<Vec<ProtoMount>> {
        let known = (snapshotter.to_string(), key.to_string());
        if let Some(mounts) = self.known.lock().unwrap().mounts.get(&known) {
            return Ok(mounts.clone());
        }
        let request = MountsRequest { snapshotter: known.0.clone(), key: known.1.clone() };
        let mounts = grpc(self.snapshots().mounts(self.req(request)).await)?.mounts;
        self.known.lock().unwrap().mounts.insert(known, mounts.clone());
        Ok(mounts)
    }

    /// The record as this process last wrote it, else as containerd has it.
    async fn known_container(&self, id: &str) -> Result<ContainerRecord> {
        if let Some(record) = self.known.lock().unwrap().records.get(id) {
            return Ok(record.clone());
        }
        self.get_container(id).await
    }

    /// References a blob or snapshot from a lease, whether or not it exists yet: from then on
    /// containerd's garbage collector keeps it until the lease goes (see `content_exists`).
    pub(crate) async fn add_to_lease(&self, lease: &str, id: &str, kind: &str) -> Result<()> {
        let request = AddResourceRequest {
            id: lease.to_string(),
            resource: Some(LeaseResource { id: id.to_string(), r#type: kind.to_string() }),
        };
        grpc(LeasesClient::new(self.channel.clone()).add_resource(self.req(request)).await)
            .map(|_| ())
            .map_err(|e| e.context(format!("hold {kind} {id} under lease {lease}")))
    }

    async fn snapshot_stat_exists(&self, snapshotter: &str, key: &str) -> Result<bool> {
        let request = StatSnapshotRequest { snapshotter: snapshotter.to_string(), key: key.to_string() };
        match self.snapshots().stat(self.req(request)).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
            Err(status) => Err(from_status(status)),
        }
    }

    async fn content_info_exists(&self, digest: &str) -> Result<bool> {
        let mut client = containerd_client::services::v1::content_client::ContentClient::new(self.channel.clone());
        match client.info(self.req(InfoRequest { digest: digest.to_string() })).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
            Err(status) => Err(from_status(status)),
        }
    }

    /// Reads an image's manifest (through an index, for this platform) and config.
    async fn read_image(
        &self,
        target: &Descriptor,
    ) -> Result<(Descriptor, ManifestDocument, Descriptor, ImageConfiguration)> {
        let mut manifest_desc = target.clone();
        let read = |digest: String| async move { content::read_blob(&self.channel, &self.requests, &digest).await };
        let mut document = ManifestDocument::parse(&read(target.digest.clone()).await?, Some(&target.media_type))?;
        if let ManifestDocument::Index(_) = document {
            manifest_desc =
                document.platform_manifest().ok_or_else(|| Error::not_found("no manifest for this platform"))??;
            document =
                ManifestDocument::parse(&read(manifest_desc.digest.clone()).await?, Some(&manifest_desc.media_type))?;
        }
        let mut config = document.config().ok_or_else(|| Error::invalid("the platform's manifest is an index"))??;
        let config_bytes = read(config.digest.clone()).await?;
        config.size_bytes = config_bytes.len() as u64;
        Ok((manifest_desc, document, config, pull::parse_image_config(&config_bytes)?))
    }

    /// Labels the image config with its unpacked snapshot so that containerd's GC keeps the
    /// snapshot chain while the image exists (what containerd's unpacker does).
    async fn label_config_snapshot(&self, record: &ImageRecord) -> Result<()> {
        let labelled = || self.known.lock().unwrap().labelled.contains_key(&record.target.digest);
        if labelled() {
            return Ok(());
        }
        let _labelling = self.labelling.lock(&record.target.digest).await;
        if labelled() {
            return Ok(());
        }
        let (_, _, config, config_doc) = match self.read_image(&record.target).await {
            Ok(found) => found,
            // Not yet complete: nothing to protect.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(chain_id) = pull::chain_ids(config_doc.rootfs().diff_ids()).pop() else { return Ok(()) };
        let snapshotter = self
            .unpacked_into
            .lock()
            .unwrap()
            .get(&chain_id)
            .cloned()
            .unwrap_or_else(|| self.default_snapshotter.clone());
        let key = format!("containerd.io/gc.ref.snapshot.{snapshotter}");
        let info = containerd_client::services::v1::Info {
            digest: config.digest.clone(),
            size: 0,
            created_at: None,
            updated_at: None,
            labels: HashMap::from([(key.clone(), chain_id)]),
        };
        let request = UpdateContentRequest {
            info: Some(info),
            update_mask: Some(FieldMask { paths: vec![format!("labels.{key}")] }),
        };
        let mut client = containerd_client::services::v1::content_client::ContentClient::new(self.channel.clone());
        grpc(client.update(self.req(request)).await)?;
        self.known.lock().unwrap().labelled.insert(record.target.digest.clone(), config.digest);
        Ok(())
    }

    /// One Tasks/Delete. A shim that exits while containerd talks to it (its last task went,
    /// it was killed, or a concurrent delete of the same task finished first) makes containerd
    /// answer with the shim's error, although it has dropped the task all the same; whether
    /// the task is gone is then a question for containerd.
    async fn delete_task_once(&self, id: &str) -> Result<ExitStatus> {
        let delete = || async move {
            let mut tasks = self.tasks();
            grpc(tasks.delete(self.req(DeleteTaskRequest { container_id: id.to_string() })).await)
        };
        let response = match delete().await {
            Err(e) if e.find_cause::<crate::errors::ShimConnectionClosed>().is_some() => {
                let request = GetRequest { container_id: id.to_string(), exec_id: String::new() };
                match grpc(self.tasks().get(self.req(request)).await) {
                    Err(gone) if gone.is_not_found() => {
                        return Err(Error::not_found(format!("task {id}: deleted as its shim exited ({})", e.message)));
                    }
                    _ => delete().await?,
                }
            }
            other => other?,
        };
        Ok(exit_status(response.exit_status, response.exited_at.as_ref()))
    }

    async fn wait_process(&self, id: &str, exec_id: &str) -> Result<ExitStatus> {
        let request = WaitRequest { container_id: id.to_string(), exec_id: exec_id.to_string() };
        let response = grpc(self.tasks().wait(self.req(request)).await)?;
        Ok(exit_status(response.exit_status, response.exited_at.as_ref()))
    }

    async fn kill_process(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let request = KillRequest { container_id: id.to_string(), exec_id: exec_id.to_string(), signal, all };
        let result = grpc(self.tasks().kill(self.req(request)).await).map(|_| ());
        tracing::debug!(container_id = id, exec_id, signal, all, ok = result.is_ok(), "kill");
        match result {
            // The shim exited during the kill: its task's delete (the exit path's, racing this
            // kill) shut it down. Whether anything is left to signal is containerd's to say:
            // a task that is gone or stopped has nothing left, as if the kill had found none.
            Err(e) if e.find_cause::<crate::errors::ShimConnectionClosed>().is_some() => {
                let request = GetRequest { container_id: id.to_string(), exec_id: exec_id.to_string() };
                match grpc(self.tasks().get(self.req(request)).await) {
                    Err(gone) if gone.is_not_found() => {
                        Err(Error::not_found(format!("task {id}: gone as its shim exited ({})", e.message)))
                    }
                    Ok(response)
                        if response.process.as_ref().is_some_and(|p| task_state(p.status) == TaskState::Stopped) =>
                    {
                        Err(Error::not_found(format!("task {id}: stopped as its shim exited ({})", e.message)))
                    }
                    _ => Err(e),
                }
            }
            other => other,
        }
    }
}

impl RealContainerd {
    /// The OCI process of an exec: the container's own, with the exec's command and terminal.
    async fn exec_process(&self, id: &str, exec: &ExecSpec) -> Result<Any> {
        let record = self.get_container(id).await?;
        let mut workload = record.spec;
        workload.args = exec.args.clone();
        workload.tty = exec.tty;
        let mut process = spec::process(&workload)?;
        if let Some(size) = exec.console_size.filter(|_| exec.tty) {
            // runc sets the terminal's size before the process starts.
            let size = oci_spec::runtime::BoxBuilder::default()
                .height(u64::from(size.height))
                .width(u64::from(size.width))
                .build()
                .map_err(|e| Error::internal(format!("console size: {e}")))?;
            process.set_console_size(Some(size));
        }
        Ok(json_any(spec::PROCESS_TYPE_URL, spec::to_json(&process)?))
    }

    /// Creates and starts an exec process on the FIFOs of `prepared`; when either step fails,
    /// nothing of it is left (the process deleted in containerd, its FIFOs and copiers gone).
    async fn create_and_start_exec(&self, id: &str, exec_id: &str, process: Any, prepared: PreparedIo) -> Result<u32> {
        let request = ExecProcessRequest {
            container_id: id.to_string(),
            stdin: prepared.stdin.clone(),
            stdout: prepared.stdout.clone(),
            stderr: prepared.stderr.clone(),
            terminal: prepared.terminal,
            spec: Some(process),
            exec_id: exec_id.to_string(),
        };
        // Unlike a task's, an exec's FIFOs are opened by the shim at Start, so the dummy writers
        // are held until then.
        let created = grpc(self.tasks().exec(self.req(request)).await);
        if let Err(e) = created {
            self.io.remove_exec(id, exec_id).await;
            return Err(e);
        }
        let start = StartRequest { container_id: id.to_string(), exec_id: exec_id.to_string() };
        let started = grpc(self.tasks().start(self.req(start)).await);
        drop(prepared.keepalive);
        match started {
            Ok(response) => Ok(response.pid),
            Err(e) => {
                let delete = DeleteProcessRequest { container_id: id.to_string(), exec_id: exec_id.to_string() };
                let _ = self.tasks().delete_process(self.req(delete)).await;
                self.io.remove_exec(id, exec_id).await;
                Err(e)
            }
        }
    }
}

fn task_state(status: i32) -> TaskState {
    match ProcessStatus::try_from(status).unwrap_or(ProcessStatus::Unknown) {
        ProcessStatus::Created => TaskState::Created,
        ProcessStatus::Running => TaskState::Running,
        ProcessStatus::Stopped => TaskState::Stopped,
        ProcessStatus::Paused => TaskState::Paused,
        ProcessStatus::Pausing => TaskState::Pausing,
        ProcessStatus::Unknown => TaskState::Unknown,
    }
}

#[async_trait]
impl Containerd for RealContainerd {
    fn namespace(&self) -> String {
        self.namespace.clone()
    }

    // ---- containers ----

    async fn create_container(&self, mut record: ContainerRecord) -> Result<ContainerRecord> {
        // Nothing to look up on the host (the common case): no blocking task for an empty list.
        if record.spec.resolved_devices.is_none() && record.spec.devices.is_empty() && !record.spec.host_devices {
            record.spec.resolved_devices = Some(Vec::new());
        }
        if record.spec.resolved_devices.is_none() {
            let spec = record.spec.clone();
            let devices = tokio::task::spawn_blocking(move || rootfs::resolve_devices(&spec))
                .await
                .map_err(|e| Error::internal(format!("resolve devices: {e}")))??;
            record.spec.resolved_devices = Some(devices);
        }
        let volumes = rootfs::volumes_to_fill(&record.spec);
        if !volumes.is_empty() {
            let mounts = self.rootfs_mounts(&record).await?;
            let mounts: Vec<(String, String, Vec<String>)> =
                mounts.into_iter().map(|m| (m.r#type, m.source, m.options)).collect();
            tokio::task::spawn_blocking(move || rootfs::fill_volumes(&volumes, &userdb::layer_dirs(&mounts)))
                .await
                .map_err(|e| Error::internal(format!("fill image volumes: {e}")))?
                .map_err(|e| e.context("failed to fill image volumes"))?;
        }
        if let Some(path) = record.spec.seccomp_profile.strip_prefix("localhost/")
            && record.spec.resolved_seccomp.is_none()
        {
            record.spec.resolved_seccomp = Some(spec::read_seccomp_profile(path).await?);
        }
        let container = convert::to_proto_container(&record)?;
        let response =
            grpc(self.containers().create(self.req(CreateContainerRequest { container: Some(container) })).await)?;
        let created = response.container.ok_or_else(|| Error::internal("containerd returned no container"))?;
        let created = convert::from_proto_container(created)?;
        self.known.lock().unwrap().records.insert(created.id.clone(), created.clone());
        Ok(created)
    }

    async fn get_container(&self, id: &str) -> Result<ContainerRecord> {
        let response = grpc(self.containers().get(self.req(GetContainerRequest { id: id.to_string() })).await)?;
        convert::from_proto_container(response.container.ok_or_else(|| Error::not_found(format!("container {id}")))?)
    }

    async fn runtime_spec(&self, id: &str) -> Result<serde_json::Value> {
        let response = grpc(self.containers().get(self.req(GetContainerRequest { id: id.to_string() })).await)?;
        let spec = response
            .container
            .and_then(|c| c.spec)
            .ok_or_else(|| Error::not_found(format!("spec of container {id}")))?;
        serde_json::from_slice(&spec.value)
            .map_err(|e| Error::internal(format!("container {id}: bad runtime spec: {e}")))
    }

    async fn list_containers(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerRecord>> {
        // Filtering here rather than with containerd's filter syntax avoids quoting label values.
        let response = grpc(self.containers().list(self.req(ListContainersRequest { filters: Vec::new() })).await)?;
        let mut records = Vec::new();
        for container in response.containers {
            if labels.iter().all(|(k, v)| container.labels.get(k) == Some(v)) {
                records.push(convert::from_proto_container(container)?);
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    async fn update_container(&self, record: &ContainerRecord) -> Result<()> {
        let container = convert::to_proto_container(record)?;
        // The OCI spec is derived from the workload, so it is rewritten with it.
        let mask = FieldMask { paths: vec!["labels".into(), "extensions".into(), "spec".into()] };
        let request = UpdateContainerRequest { container: Some(container), update_mask: Some(mask) };
        // Forgotten first: should the update fail after it was applied, the next use asks.
        self.known.lock().unwrap().records.remove(&record.id);
        let updated = grpc(self.containers().update(self.req(request)).await)?;
        if let Some(updated) = updated.container {
            let updated = convert::from_proto_container(updated)?;
            self.known.lock().unwrap().records.insert(updated.id.clone(), updated);
        }
        Ok(())
    }

    async fn delete_container(&self, id: &str, cleanup_snapshot: bool) -> Result<()> {
        let record = match self.known_container(id).await {
            Err(e) if e.is_not_found() => {
                self.io.forget_container(id).await;
                return Err(e);
            }
            other => other?,
        };
        // The record and the snapshot go at once: neither needs the other gone first
        // (containerd's own client removes the snapshot before the record), and the snapshot's
        // removal (30-40 ms under load on the real stack) no longer follows the record's. A
        // record left behind without its snapshot is deleted by the next attempt, which finds the
        // snapshot gone.
        let delete_record =
            async { grpc(self.containers().delete(self.req(DeleteContainerRequest { id: id.to_string() })).await) };
        let remove_snapshot = async {
            if !cleanup_snapshot || record.snapshot_key.is_empty() {
                return Ok(());
            }
            match self.remove_snapshot(&record.snapshotter, &record.snapshot_key).await {
                Err(e) if !e.is_not_found() => Err(e.context(format!("remove snapshot of {id}"))),
                _ => Ok(()),
            }
        };
        let (deleted, snapshot_removed) = tokio::join!(delete_record, remove_snapshot);
        self.known.lock().unwrap().records.remove(id);
        if let Err(error) = deleted {
            if error.is_not_found() {
                self.io.forget_container(id).await;
            }
            return Err(error);
        }
        // The container is gone from containerd: so are its FIFOs, whatever became of its task.
        self.io.forget_container(id).await;
        snapshot_removed
    }

    // ---- tasks ----

    async fn create_task(&self, id: &str, io: &TaskIo) -> Result<u32> {
        let record = self.known_container(id).await?;
        let rootfs = self.rootfs_mounts(&record).await?;
        let prepared = self.io.prepare_task(id, &io.log_path, io.tty, io.stdin)?;
        let request = CreateTaskRequest {
            container_id: id.to_string(),
            rootfs,
            stdin: prepared.stdin.clone(),
            stdout: prepared.stdout.clone(),
            stderr: prepared.stderr.clone(),
            terminal: prepared.terminal,
            checkpoint: None,
            // The shim reads its options from the task request (BinaryName, Root,
            // SystemdCgroup); the container record carries the same for tools.
            options: convert::runc_options(&record.spec),
            runtime_path: record.spec.runtime_path.clone(),
        };
        let result = grpc(self.tasks().create(self.req(request)).await);
        // The shim has opened its ends of the FIFOs (or never will): the real EOF may now show.
        drop(prepared.keepalive);
        match result {
            Ok(response) => Ok(response.pid),
            Err(e) => {
                self.io.finish_task(id).await;
                Err(e)
            }
        }
    }

    async fn start_task(&self, id: &str) -> Result<u32> {
        let request = StartRequest { container_id: id.to_string(), exec_id: String::new() };
        Ok(grpc(self.tasks().start(self.req(request)).await)?.pid)
    }

    async fn kill_task(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        self.kill_process(id, "", signal, all).await
    }

    async fn delete_task(&self, id: &str) -> Result<ExitStatus> {
        let response = match self.delete_task_once(id).await {
            Err(e) if e.kind == ErrorKind::FailedPrecondition => {
                // Still running, or frozen: kill everything in it (runc thaws the cgroup after
                // signalling), wait for the exit, then delete.
                match self.kill_process(id, "", libc::SIGKILL as u32, true).await {
                    Err(e) if !e.is_not_found() => return Err(e),
                    _ => {}
                }
                match self.wait_process(id, "").await {
                    // Gone meanwhile: a concurrent delete finished first.
                    Err(e) if e.is_not_found() => Err(e),
                    // Its shim exited during the wait; the delete asks containerd what is left.
                    Err(e) if e.find_cause::<crate::errors::ShimConnectionClosed>().is_some() => {
                        self.delete_task_once(id).await
                    }
                    Err(e) => return Err(e),
                    Ok(_) => self.delete_task_once(id).await,
                }
            }
            other => other,
        };
        match response {
            Ok(exit) => {
                self.io.finish_task(id).await;
                Ok(exit)
            }
            Err(e) if e.is_not_found() => {
                // Deleted before: a delete whose reply was lost, one while crid was down, or a
                // concurrent one (the exit path's and RemoveContainer's) that finished first.
                self.io.finish_task(id).await;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn wait_task(&self, id: &str) -> Result<ExitStatus> {
        self.io.reattach(id);
        self.wait_process(id, "").await
    }

    async fn task_info(&self, id: &str) -> Result<TaskInfo> {
        let request = GetRequest { container_id: id.to_string(), exec_id: String::new() };
        let process = grpc(self.tasks().get(self.req(request)).await)?
            .process
            .ok_or_else(|| Error::not_found(format!("task {id}")))?;
        let state = task_state(process.status);
        if matches!(state, TaskState::Running | TaskState::Created | TaskState::Paused) {
            self.io.reattach(id);
        }
        let exit = (state == TaskState::Stopped).then(|| exit_status(process.exit_status, process.exited_at.as_ref()));
        Ok(TaskInfo { pid: process.pid, state, exit })
    }

    async fn task_metrics(&self, id: &str) -> Result<TaskMetrics> {
        let request = MetricsRequest { filters: vec![format!("id=={id}")] };
        let response = grpc(self.tasks().metrics(self.req(request)).await)?;
        let metric = response
            .metrics
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| Error::not_found(format!("no metrics for task {id}")))?;
        let data = metric.data.ok_or_else(|| Error::internal(format!("metrics of {id} carry no data")))?;
        let timestamp_ns = metric.timestamp.as_ref().map(convert::timestamp_ns).unwrap_or_else(crate::clock::now_ns);
        metrics::decode(&data.type_url, &data.value, timestamp_ns)
    }

    async fn tasks_metrics(&self, ids: &[&str]) -> Result<BTreeMap<String, TaskMetrics>> {
        // containerd reads the filters of one request as alternatives.
        let request = MetricsRequest { filters: ids.iter().map(|id| format!("id=={id}")).collect() };
        let response = grpc(self.tasks().metrics(self.req(request)).await)?;
        let mut metrics = BTreeMap::new();
        for metric in response.metrics {
            let Some(data) = metric.data else {
                tracing::warn!(id = %metric.id, "task metrics carry no data");
                continue;
            };
            let timestamp_ns =
                metric.timestamp.as_ref().map(convert::timestamp_ns).unwrap_or_else(crate::clock::now_ns);
            match metrics::decode(&data.type_url, &data.value, timestamp_ns) {
                Ok(decoded) => {
                    metrics.insert(metric.id, decoded);
                }
                Err(error) => tracing::warn!(id = %metric.id, %error, "task metrics not understood"),
            }
        }
        Ok(metrics)
    }

    async fn update_task_resources(&self, id: &str, resources: &Resources) -> Result<()> {
        let linux = spec::linux_resources(resources)?;
        let request = UpdateTaskRequest {
            container_id: id.to_string(),
            resources: Some(json_any(spec::RESOURCES_TYPE_URL, spec::to_json(&linux)?)),
            annotations: HashMap::new(),
        };
        grpc(self.tasks().update(self.req(request)).await).map(|_| ())
    }

    async fn reopen_task_log(&self, id: &str) -> Result<()> {
        self.io.reattach(id);
        self.io.reopen_log(id)
    }

    // ---- exec processes ----

    async fn exec_start(&self, id: &str, exec: &ExecSpec) -> Result<u32> {
        let process = self.exec_process(id, exec).await?;
        let prepared = self.io.prepare_exec(id, &exec.exec_id, exec.tty, exec.output_limit_bytes)?;
        self.create_and_start_exec(id, &exec.exec_id, process, prepared).await
    }

    async fn exec_wait(&self, id: &str, exec_id: &str) -> Result<ExitStatus> {
        self.wait_process(id, exec_id).await
    }

    async fn exec_output_closed(&self, id: &str, exec_id: &str) -> Result<()> {
        self.io.drain_exec(id, exec_id).await
    }

    async fn exec_kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        self.kill_process(id, exec_id, signal, false).await
    }

    async fn exec_output(&self, id: &str, exec_id: &str) -> Result<ExecOutput> {
        let (stdout, stderr) = self.io.exec_output(id, exec_id)?;
        Ok(ExecOutput { stdout, stderr })
    }

    async fn exec_delete(&self, id: &str, exec_id: &str) -> Result<()> {
        let delete = || async move {
            let request = DeleteProcessRequest { container_id: id.to_string(), exec_id: exec_id.to_string() };
            let mut tasks = self.tasks();
            grpc(tasks.delete_process(self.req(request)).await)
        };
        let result = match delete().await {
            Err(e) if e.kind == ErrorKind::FailedPrecondition => {
                let _ = self.kill_process(id, exec_id, libc::SIGKILL as u32, false).await;
                let _ = self.wait_process(id, exec_id).await;
                delete().await.map(|_| ())
            }
            other => other.map(|_| ()),
        };
        self.io.remove_exec(id, exec_id).await;
        result
    }

    // ---- interactive streams ----

    async fn exec_start_streaming(&self, id: &str, exec: &ExecSpec, io: ProcessIo) -> Result<u32> {
        let process = self.exec_process(id, exec).await?;
        // After the client's stdin ends and its FIFO is closed, CloseIO makes the shim close
        // the process's stdin even where the FIFO's EOF alone does not (a terminal).
        let close_io = {
            let mut tasks = self.tasks();
            let request =
                self.req(CloseIoRequest { container_id: id.to_string(), exec_id: exec.exec_id.clone(), stdin: true });
            async move {
                let _ = tasks.close_io(request).await;
            }
        };
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let prepared = self.io.prepare_exec_streaming(id, &exec.exec_id, exec.tty, io, started, close_io)?;
        let result = self.create_and_start_exec(id, &exec.exec_id, process, prepared).await;
        // The shim has opened the stdin FIFO (or never will): the client's EOF may now close it.
        let _ = started_tx.send(());
        result
    }

    async fn resize_pty(&self, id: &str, exec_id: &str, size: TerminalSize) -> Result<()> {
        let request = ResizePtyRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            width: u32::from(size.width),
            height: u32::from(size.height),
        };
        grpc(self.tasks().resize_pty(self.req(request)).await).map(|_| ())
    }

    async fn open_task_stdin(&self, id: &str) -> Result<ByteWriter> {
        self.io.reattach(id);
        self.io.task_stdin(id)
    }

    async fn attach_task_output(&self, id: &str, stdout: Option<ByteWriter>, stderr: Option<ByteWriter>) -> Result<()> {
        self.io.reattach(id);
        let (stdout_chunks, stderr_chunks) = self.io.subscribe_output(id)?;
        // Each stream is forwarded until it ends (the task's output did: it exited) or its client
        // stops reading; a stream that has already ended (or never exists: stderr with a tty)
        // ends its writer at once. The attach ends when both have, as containerd's.
        let forward = |chunks: Option<taskio::OutputChunks>, writer: Option<ByteWriter>| async move {
            let mut writer = writer;
            if let Some(mut chunks) = chunks {
                while let Some(chunk) = chunks.recv().await {
                    if let Some(out) = writer.as_mut()
                        && out.write_all(&chunk).await.is_err()
                    {
                        return;
                    }
                }
            }
            if let Some(mut out) = writer {
                let _ = out.shutdown().await;
            }
        };
        tokio::join!(forward(stdout_chunks, stdout), forward(stderr_chunks, stderr));
        Ok(())
    }

    async fn close_task_stdin(&self, id: &str) -> Result<()> {
        self.io.close_task_stdin(id);
        let request = CloseIoRequest { container_id: id.to_string(), exec_id: String::new(), stdin: true };
        grpc(self.tasks().close_io(self.req(request)).await).map(|_| ())
    }

    // ---- images and content ----

    async fn content_exists(&self, digest: &str, lease: &str) -> Result<bool> {
        self.held_if_present(lease, digest, "content", || self.content_info_exists(digest)).await
    }

    async fn snapshot_exists(&self, snapshotter: &str, chain_id: &str, lease: &str) -> Result<bool> {
        let kind = format!("snapshots/{snapshotter}");
        self.held_if_present(lease, chain_id, &kind, || self.snapshot_stat_exists(snapshotter, chain_id)).await
    }

    async fn apply_layer(
        &self,
        snapshotter: &str,
        chain_id: &str,
        parent_chain_id: &str,
        layer: &Descriptor,
        lease: &str,
    ) -> Result<()> {
        let mut suffix = [0u8; 8];
        crate::os::fill_random(&mut suffix);
        // A unique key: a concurrent or crashed unpack of the same layer never collides with ours.
        let key = format!("extract-{}-{chain_id}", hex::encode(suffix));
        let prepare = PrepareSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.clone(),
            parent: parent_chain_id.to_string(),
            labels: HashMap::new(),
        };
        let mounts = grpc(self.snapshots().prepare(self.requests.with_lease(prepare, Some(lease))).await)?.mounts;
        let result = async {
            let apply = ApplyRequest {
                diff: Some(convert::to_proto_descriptor(layer)),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            };
            grpc(DiffClient::new(self.channel.clone()).apply(self.requests.with_lease(apply, Some(lease))).await)?;
            let commit = CommitSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                name: chain_id.to_string(),
                key: key.clone(),
                labels: HashMap::new(),
            };
            match grpc(self.snapshots().commit(self.requests.with_lease(commit, Some(lease))).await) {
                Ok(_) => Ok(()),
                // Committed meanwhile by another unpack: containerd's commit added nothing to
                // this lease then, and the pull is about to rely on the snapshot.
                Err(error) if error.is_already_exists() => {
                    let kind = format!("snapshots/{snapshotter}");
                    self.add_to_lease(lease, chain_id, &kind).await?;
                    self.note_present(format!("{kind}/{chain_id}"), true);
                    Err(error)
                }
                Err(error) => Err(error),
            }
        }
        .await;
        if result.is_err() {
            let _ = self.remove_snapshot(snapshotter, &key).await;
        } else {
            self.unpacked_into.lock().unwrap().insert(chain_id.to_string(), snapshotter.to_string());
            self.note_present(format!("snapshots/{snapshotter}/{chain_id}"), true);
        }
        result.map_err(|e| e.context(format!("unpack layer {}", layer.digest)))
    }

    async fn prepare_snapshot(&self, snapshotter: &str, key: &str, parent_chain_id: &str, lease: &str) -> Result<()> {
        let request = PrepareSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
            parent: parent_chain_id.to_string(),
            labels: HashMap::new(),
        };
        let prepared = grpc(self.snapshots().prepare(self.requests.with_lease(request, Some(lease))).await)?;
        self.known.lock().unwrap().mounts.insert((snapshotter.to_string(), key.to_string()), prepared.mounts);
        Ok(())
    }

    async fn read_rootfs_files(
        &self,
        snapshotter: &str,
        key: &str,
        paths: &[&str],
        max_bytes: usize,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let mounts = self.snapshot_mounts(snapshotter, key).await?;
        let mounts: Vec<(String, String, Vec<String>)> =
            mounts.into_iter().map(|m| (m.r#type, m.source, m.options)).collect();
        let paths: Vec<String> = paths.iter().map(|p| p.trim_start_matches('/').to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let layers = userdb::layer_dirs(&mounts);
            paths.iter().map(|path| userdb::read_layer_file(&layers, path, max_bytes)).collect()
        })
        .await
        .map_err(|e| Error::internal(format!("read from the rootfs: {e}")))
    }

    async fn remove_snapshot(&self, snapshotter: &str, key: &str) -> Result<()> {
        self.known.lock().unwrap().mounts.remove(&(snapshotter.to_string(), key.to_string()));
        let request = RemoveSnapshotRequest { snapshotter: snapshotter.to_string(), key: key.to_string() };
        grpc(self.snapshots().remove(self.req(request)).await).map(|_| ())
    }

    async fn snapshots_usage(&self, snapshotter: &str) -> Result<BTreeMap<String, SnapshotUsage>> {
        let request = ListSnapshotsRequest { snapshotter: snapshotter.to_string(), filters: Vec::new() };
        let mut stream = grpc(self.snapshots().list(self.req(request)).await)?;
        let mut keys = Vec::new();
        while let Some(batch) = stream.message().await.map_err(from_status)? {
            keys.extend(batch.info.into_iter().map(|info| info.name));
        }
        let mut by_key = BTreeMap::new();
        for key in keys {
            let request = UsageRequest { snapshotter: snapshotter.to_string(), key: key.clone() };
            match grpc(self.snapshots().usage(self.req(request)).await) {
                Ok(usage) => {
                    // Negative numbers from containerd count as nothing.
                    let usage =
                        SnapshotUsage { size_bytes: usage.size.max(0) as u64, inodes: usage.inodes.max(0) as u64 };
                    by_key.insert(key, usage);
                }
                // Removed since the listing: it uses nothing now.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(by_key)
    }

    async fn create_image(&self, record: &ImageRecord) -> Result<()> {
        let request = CreateImageRequest { image: Some(convert::to_proto_image(record)), source_date_epoch: None };
        grpc(self.images().create(self.req(request)).await)?;
        self.label_config_snapshot(record).await
    }

    async fn update_image(&self, record: &ImageRecord) -> Result<()> {
        let mask = FieldMask { paths: vec!["target".into(), "labels".into()] };
        let request = UpdateImageRequest {
            image: Some(convert::to_proto_image(record)),
            update_mask: Some(mask),
            source_date_epoch: None,
        };
        grpc(self.images().update(self.req(request)).await)?;
        self.label_config_snapshot(record).await
    }

    async fn get_image(&self, name: &str) -> Result<ImageRecord> {
        let response = grpc(self.images().get(self.req(GetImageRequest { name: name.to_string() })).await)?;
        Ok(convert::from_proto_image(response.image.ok_or_else(|| Error::not_found(format!("image {name}")))?))
    }

    async fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let response = grpc(self.images().list(self.req(ListImagesRequest { filters: Vec::new() })).await)?;
        let mut images: Vec<ImageRecord> = response.images.into_iter().map(convert::from_proto_image).collect();
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    async fn delete_image(&self, name: &str, sync: bool) -> Result<()> {
        let request = DeleteImageRequest { name: name.to_string(), sync, target: None };
        let deleted = grpc(self.images().delete(self.req(request)).await).map(|_| ());
        self.known.lock().unwrap().present.clear();
        deleted
    }

    async fn image_content(&self, record: &ImageRecord) -> Result<ImageContent> {
        let (manifest, document, config, config_doc) = self.read_image(&record.target).await?;
        let layers = document.layer_descriptors()?;
        let mut complete = true;
        for layer in &layers {
            if !self.content_info_exists(&layer.digest).await? {
                complete = false;
            }
        }
        let size_bytes = manifest.size_bytes + config.size_bytes + layers.iter().map(|l| l.size_bytes).sum::<u64>();
        Ok(ImageContent {
            config_digest: config.digest,
            chain_id: pull::chain_ids(config_doc.rootfs().diff_ids()).pop().unwrap_or_default(),
            size_bytes,
            image_config: pull::image_config(&config_doc),
            complete,
        })
    }

    async fn create_lease(&self, id: &str, labels: &BTreeMap<String, String>, expire_after: Duration) -> Result<()> {
        let expire_after = chrono::Duration::from_std(expire_after)
            .map_err(|_| Error::invalid(format!("lease expiry {expire_after:?} out of range")))?;
        let expires_at = chrono::Utc::now() + expire_after;
        let mut labels: HashMap<String, String> = labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.insert(LABEL_GC_EXPIRE.to_string(), expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let request = CreateLeaseRequest { id: id.to_string(), labels };
        grpc(LeasesClient::new(self.channel.clone()).create(self.req(request)).await).map(|_| ())
    }

    async fn list_leases(&self) -> Result<Vec<LeaseRecord>> {
        let response =
            grpc(LeasesClient::new(self.channel.clone()).list(self.req(ListLeasesRequest::default())).await)?;
        let mut leases: Vec<LeaseRecord> = response
            .leases
            .into_iter()
            .map(|lease| LeaseRecord { id: lease.id, labels: lease.labels.into_iter().collect() })
            .collect();
        leases.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(leases)
    }

    async fn delete_lease(&self, id: &str) -> Result<()> {
        let request = DeleteLeaseRequest { id: id.to_string(), sync: false };
        grpc(LeasesClient::new(self.channel.clone()).delete(self.req(request)).await).map(|_| ())
    }

    // ---- events ----

    async fn subscribe(&self) -> Result<EventStream> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let request = self.req(SubscribeRequest { filters: events::subscribe_filters(&self.namespace) });
        let mut client = EventsClient::new(self.channel.clone());
        // containerd sends the response headers only with the first event, so the call itself
        // must not be awaited here: the stream is opened in the background and the receiver
        // ends (None) when it fails or closes.
        tokio::spawn(async move {
            let mut stream = match client.subscribe(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    tracing::warn!(error = %status, "containerd event subscription failed");
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(envelope)) => {
                        if tx.send(events::decode(envelope)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        tracing::warn!(error = %status, "containerd event stream ended");
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// For the daemon: a client with the usual defaults.
pub fn shared(options: ContainerdOptions) -> Result<Arc<RealContainerd>> {
    RealContainerd::new(options).map(Arc::new)
}
