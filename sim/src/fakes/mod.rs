//! In-memory fakes of the backend traits: what the simulated CRI node talks to.
//!
//! The fakes stand for containerd, its shims, the CNI plugins and the host, all of which survive
//! a crash of the CRI process; so they live outside the simulated node, spawn no task of their
//! own and keep every piece of state in ordered maps behind plain mutexes. Randomness comes from
//! the world's seed, time from the runtime's (virtual) clock, and every call first asks the
//! [`faults::FaultInjector`] what to do.

pub mod clock;
pub mod cni;
pub mod containerd;
pub mod faults;
pub mod os;
pub mod process;
pub mod registry;
pub mod stream;

use std::collections::BTreeMap;
use std::sync::Arc;

use crid::ports::Backends;
use crid::ports::containerd::ImageConfig;

pub use self::clock::SimClock;
pub use self::cni::{CniOp, FakeCni, LedgerEntry};
pub use self::containerd::{
    ACTIVE_SNAPSHOT_BYTES, ExecInfo, FakeContainerd, FetchPlan, Holdings, SnapshotInfo, SnapshotKind,
};
pub use self::faults::{FaultAction, FaultInjector, FaultSite, NoFaults, ScriptedFaults};
pub use self::os::{FakeFile, FakeOs};
pub use self::registry::{chain_ids, layer_digest};
pub use self::stream::FakeStreamServer;

pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.8";
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:latest";
pub const NGINX_IMAGE: &str = "docker.io/library/nginx:latest";

/// Everything outside the CRI process, built from one seed.
pub struct FakeWorld {
    pub containerd: Arc<FakeContainerd>,
    pub cni: Arc<FakeCni>,
    pub os: Arc<FakeOs>,
    pub clock: Arc<SimClock>,
    pub stream: Arc<FakeStreamServer>,
    pub faults: Arc<dyn FaultInjector>,
}

/// Each fake draws from its own stream, so that one fake drawing more does not shift another's
/// draws (better shrinking, steadier traces).
fn sub_seed(seed: u64, salt: u64) -> u64 {
    seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl FakeWorld {
    /// Must be called inside the runtime (the clock starts at the runtime's current instant).
    /// CNI starts with a loaded network config.
    pub fn new(seed: u64, faults: Arc<dyn FaultInjector>) -> Self {
        let clock = Arc::new(SimClock::new());
        let os = Arc::new(FakeOs::new(sub_seed(seed, 1), faults.clone()));
        let cni = Arc::new(FakeCni::new(faults.clone(), true, Some(os.clone())));
        let containerd = Arc::new(FakeContainerd::new(clock.clone(), faults.clone()));
        let stream = Arc::new(FakeStreamServer::new(sub_seed(seed, 2), clock.clone(), faults.clone()));
        FakeWorld { containerd, cni, os, clock, stream, faults }
    }

    /// With the default images in the registry (see [`FakeWorld::register_default_images`]).
    pub fn with_default_images(self) -> Self {
        self.register_default_images();
        self
    }

    /// Registers the pause image, busybox (2 layers) and nginx (sharing busybox's first layer),
    /// under their normalized references.
    pub fn register_default_images(&self) {
        let env = vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
        let pause = ImageConfig { entrypoint: vec!["/pause".into()], env: env.clone(), ..ImageConfig::default() };
        self.containerd.add_registry_image(PAUSE_IMAGE, vec![(layer_digest("pause-3.8"), 311_000)], pause);
        let busybox = ImageConfig { cmd: vec!["sh".into()], env: env.clone(), ..ImageConfig::default() };
        let base = (layer_digest("busybox-base"), 2_200_000);
        self.containerd.add_registry_image(
            BUSYBOX_IMAGE,
            vec![base.clone(), (layer_digest("busybox-bin"), 48_000)],
            busybox,
        );
        let nginx = ImageConfig {
            entrypoint: vec!["/docker-entrypoint.sh".into()],
            cmd: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
            env,
            stop_signal: "SIGQUIT".into(),
            labels: BTreeMap::from([("maintainer".to_string(), "NGINX Docker Maintainers".to_string())]),
            ..ImageConfig::default()
        };
        let nginx_layers = vec![base, (layer_digest("nginx-bin"), 25_000_000), (layer_digest("nginx-conf"), 1_400)];
        self.containerd.add_registry_image(NGINX_IMAGE, nginx_layers, nginx);
    }

    /// The backends to hand to the CRI core.
    pub fn backends(&self) -> Backends {
        Backends {
            containerd: self.containerd.clone(),
            // The fake containerd serves as the registry too: fetches fill its content store.
            registry: self.containerd.clone(),
            cni: self.cni.clone(),
            os: self.os.clone(),
            clock: self.clock.clone(),
            stream: self.stream.clone(),
        }
    }
}
