//! CNI in memory: a host-local IPAM pool, a ledger of every ADD and DEL, and an optional chained
//! plugin that fails after IPAM allocated (SPEC B16), which is how addresses leak in practice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crid::error::{Error, ErrorKind, Result};
use crid::ports::cni::{Cni, CniResult, IpConfig, PodNetwork};

use super::faults::{self, FaultInjector, FaultSite};
use super::os::FakeOs;

pub const CONF_DIR: &str = "/etc/cni/net.d";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const POOL_FIRST: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
const POOL_LAST: Ipv4Addr = Ipv4Addr::new(10, 88, 255, 254);

/// The configuration the fake pretends to have loaded when none was written: containerd's
/// default bridge network.
fn default_config() -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "containerd-net",
        "plugins": [
            {
                "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": "10.88.0.0/16" }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    })
    .to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CniOp {
    Add,
    Del,
}

/// One ADD or DEL as the CRI issued it, with its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub sandbox_id: String,
    pub op: CniOp,
    /// None when the call succeeded.
    pub error: Option<String>,
    /// The address the sandbox holds once the call finished.
    pub address_after: Option<String>,
}

impl LedgerEntry {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

struct CniState {
    /// Conf files present in the conf dir (what `load` would find).
    config_present: bool,
    loaded: bool,
    chained_failure: bool,
    conf_files: BTreeMap<String, String>,
    /// Shared with the checks that read it after every call; copied on the next change.
    allocations: Arc<BTreeMap<String, Ipv4Addr>>,
    in_use: BTreeSet<Ipv4Addr>,
    ledger: Vec<LedgerEntry>,
}

pub struct FakeCni {
    state: Mutex<CniState>,
    faults: Arc<dyn FaultInjector>,
    /// When set, ADD fails for a namespace that does not exist, as the bridge plugin does.
    os: Option<Arc<FakeOs>>,
}

fn not_initialized() -> Error {
    Error::precondition("cni config not initialized")
}

impl CniState {
    /// Lowest free address first, so that runs are reproducible and leaks show up as gaps.
    fn allocate(&mut self, sandbox_id: &str) -> Result<Ipv4Addr> {
        if let Some(address) = self.allocations.get(sandbox_id) {
            return Ok(*address);
        }
        let (first, last) = (u32::from(POOL_FIRST), u32::from(POOL_LAST));
        // Allocations are dense from the bottom, so the first gap is found within len+1 probes.
        let free =
            (first..=last).map(Ipv4Addr::from).find(|address| !self.in_use.contains(address)).ok_or_else(|| {
                Error::new(
                    ErrorKind::ResourceExhausted,
                    "failed to allocate for range 0: no IP addresses available in range set",
                )
            })?;
        self.in_use.insert(free);
        Arc::make_mut(&mut self.allocations).insert(sandbox_id.to_string(), free);
        Ok(free)
    }

    fn free(&mut self, sandbox_id: &str) {
        if let Some(address) = Arc::make_mut(&mut self.allocations).remove(sandbox_id) {
            assert!(self.in_use.remove(&address), "IPAM pool lost track of {address}");
        }
    }

    fn record(&mut self, sandbox_id: &str, op: CniOp, result: &Result<impl Sized>) {
        let address_after = self.allocations.get(sandbox_id).map(Ipv4Addr::to_string);
        let error = result.as_ref().err().map(ToString::to_string);
        self.ledger.push(LedgerEntry { sandbox_id: sandbox_id.to_string(), op, error, address_after });
    }
}

impl FakeCni {
    /// `config_present`: whether the conf dir holds a network config, which also counts as
    /// already loaded (as after a start-up load).
    pub fn new(faults: Arc<dyn FaultInjector>, config_present: bool, os: Option<Arc<FakeOs>>) -> Self {
        FakeCni {
            state: Mutex::new(CniState {
                config_present,
                loaded: config_present,
                chained_failure: false,
                conf_files: BTreeMap::new(),
                allocations: Arc::default(),
                in_use: BTreeSet::new(),
                ledger: Vec::new(),
            }),
            faults,
            os,
        }
    }

    fn state(&self) -> MutexGuard<'_, CniState> {
        self.state.lock().expect("fake cni lock poisoned")
    }

    /// Adds or removes the conf files; takes effect at the next `load`.
    pub fn set_config_present(&self, present: bool) {
        let mut state = self.state();
        state.config_present = present;
        if !present {
            state.conf_files.clear();
        }
    }

    /// While set, ADD allocates an address and then the second plugin fails (SPEC B16).
    pub fn set_chained_failure(&self, on: bool) {
        self.state().chained_failure = on;
    }

    /// Sandbox id → address, for "IPAM allocations == live sandboxes".
    /// (Shared, not copied: the checks read it after every call.)
    pub fn allocations(&self) -> Arc<BTreeMap<String, Ipv4Addr>> {
        self.state().allocations.clone()
    }

    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.state().ledger.clone()
    }

    pub fn is_loaded(&self) -> bool {
        self.state().loaded
    }

    /// Conf file path → contents written through `write_config`.
    pub fn conf_files(&self) -> BTreeMap<String, String> {
        self.state().conf_files.clone()
    }

    fn netns_missing(&self, network: &PodNetwork) -> Option<Error> {
        let os = self.os.as_ref()?;
        if network.netns_path.is_empty() || !os.netns_exists(&network.netns_path) {
            return Some(Error::internal(format!(
                "plugin type=\"bridge\" failed (add): failed to open netns {:?}: no such file or directory",
                network.netns_path
            )));
        }
        None
    }

    fn add(&self, network: &PodNetwork) -> Result<CniResult> {
        if !self.state().loaded {
            return Err(not_initialized());
        }
        if let Some(error) = self.netns_missing(network) {
            return Err(error);
        }
        let mut state = self.state();
        let address = state.allocate(&network.sandbox_id)?;
        if state.chained_failure {
            return Err(Error::internal(format!(
                "plugin type=\"portmap\" failed (add): sandbox {}: chained plugin failed after IPAM gave {address}",
                network.sandbox_id
            )));
        }
        let interface = if network.interface_name.is_empty() { "eth0" } else { network.interface_name.as_str() };
        let ip =
            IpConfig { interface: interface.to_string(), address: address.to_string(), gateway: GATEWAY.to_string() };
        let raw = serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": ip.interface, "sandbox": network.netns_path}],
            "ips": [{"interface": 0, "address": format!("{address}/16"), "gateway": ip.gateway}],
            "routes": [{"dst": "0.0.0.0/0"}],
        })
        .to_string();
        Ok(CniResult { ips: vec![ip], raw })
    }
}

#[async_trait]
impl Cni for FakeCni {
    async fn load(&self) -> Result<()> {
        let after = faults::before(&*self.faults, FaultSite::CniLoad, CONF_DIR).await?;
        let result = {
            let mut state = self.state();
            state.loaded = state.config_present;
            if state.loaded {
                Ok(())
            } else {
                Err(Error::precondition(format!("no network config found in {CONF_DIR}: cni plugin not initialized")))
            }
        };
        after.finish(result).await
    }

    async fn status(&self) -> Result<()> {
        let after = faults::before(&*self.faults, FaultSite::CniStatus, CONF_DIR).await?;
        let result = if self.state().loaded { Ok(()) } else { Err(not_initialized()) };
        after.finish(result).await
    }

    async fn setup(&self, network: &PodNetwork) -> Result<CniResult> {
        let id = network.sandbox_id.as_str();
        let after = match faults::before(&*self.faults, FaultSite::CniSetup, id).await {
            Ok(after) => after,
            Err(error) => {
                let result: Result<()> = Err(error.clone());
                self.state().record(id, CniOp::Add, &result);
                return Err(error);
            }
        };
        let result = after.finish(self.add(network)).await;
        self.state().record(id, CniOp::Add, &result);
        result
    }

    async fn teardown(&self, network: &PodNetwork) -> Result<()> {
        let id = network.sandbox_id.as_str();
        let after = match faults::before(&*self.faults, FaultSite::CniTeardown, id).await {
            Ok(after) => after,
            Err(error) => {
                let result: Result<()> = Err(error.clone());
                self.state().record(id, CniOp::Del, &result);
                return Err(error);
            }
        };
        let result = {
            let mut state = self.state();
            if state.loaded {
                state.free(id);
                Ok(())
            } else {
                // go-cni refuses DEL without a loaded network, so the address stays allocated.
                Err(Error::precondition("cni plugin not initialized: failed to destroy network"))
            }
        };
        let result = after.finish(result).await;
        self.state().record(id, CniOp::Del, &result);
        result
    }

    fn config_json(&self) -> String {
        let state = self.state();
        if !state.loaded {
            return "{}".to_string();
        }
        state.conf_files.values().next_back().cloned().unwrap_or_else(default_config)
    }

    async fn write_config(&self, file_name: &str, contents: &str) -> Result<String> {
        let path = format!("{CONF_DIR}/{file_name}");
        let after = faults::before(&*self.faults, FaultSite::CniWriteConfig, &path).await?;
        {
            let mut state = self.state();
            state.conf_files.insert(path.clone(), contents.to_string());
            state.config_present = true;
            // The conf syncer reloads on the file event; the fake folds that in.
            state.loaded = true;
        }
        after.finish(Ok(path)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::faults::{FaultAction, NoFaults, ScriptedFaults};

    fn pod(id: &str) -> PodNetwork {
        PodNetwork {
            sandbox_id: id.to_string(),
            netns_path: format!("/var/run/netns/cni-{id}"),
            interface_name: "eth0".to_string(),
            args: BTreeMap::new(),
            port_mappings: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn allocates_lowest_free_and_frees_idempotently() {
        let cni = FakeCni::new(Arc::new(NoFaults), true, None);
        let a = cni.setup(&pod("a")).await.unwrap();
        assert_eq!(a.ips[0].address, "10.88.0.2");
        assert_eq!(a.ips[0].gateway, "10.88.0.1");
        assert_eq!(cni.setup(&pod("b")).await.unwrap().ips[0].address, "10.88.0.3");
        assert_eq!(cni.setup(&pod("a")).await.unwrap().ips[0].address, "10.88.0.2", "ADD is idempotent per sandbox");
        cni.teardown(&pod("a")).await.unwrap();
        cni.teardown(&pod("a")).await.unwrap();
        assert_eq!(cni.setup(&pod("c")).await.unwrap().ips[0].address, "10.88.0.2");
        assert_eq!(cni.allocations().len(), 2);
        assert_eq!(cni.ledger().len(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn chained_failure_leaks_until_del() {
        let faults = Arc::new(ScriptedFaults::new());
        let cni = FakeCni::new(faults.clone(), true, None);
        cni.set_chained_failure(true);
        assert!(cni.setup(&pod("a")).await.is_err());
        assert_eq!(cni.allocations()["a"].to_string(), "10.88.0.2", "IPAM allocated despite the failed ADD");
        faults.push(
            FaultSite::CniTeardown,
            Some("a"),
            FaultAction::Fail(ErrorKind::Internal, "plugin 2 failed DEL".into()),
        );
        assert!(cni.teardown(&pod("a")).await.is_err());
        assert_eq!(cni.allocations().len(), 1);
        cni.teardown(&pod("a")).await.unwrap();
        assert!(cni.allocations().is_empty());
        let ops: Vec<(CniOp, bool)> = cni.ledger().iter().map(|entry| (entry.op, entry.ok())).collect();
        assert_eq!(ops, vec![(CniOp::Add, false), (CniOp::Del, false), (CniOp::Del, true)]);
    }

    #[tokio::test(start_paused = true)]
    async fn status_follows_config() {
        let cni = FakeCni::new(Arc::new(NoFaults), false, None);
        assert_eq!(cni.status().await.unwrap_err().message, "cni config not initialized");
        assert!(cni.load().await.is_err());
        assert!(cni.setup(&pod("a")).await.is_err());
        let path = cni.write_config("10-crid.conflist", "{\"name\":\"x\"}").await.unwrap();
        assert_eq!(path, "/etc/cni/net.d/10-crid.conflist");
        cni.status().await.unwrap();
        assert_eq!(cni.config_json(), "{\"name\":\"x\"}");
    }

    #[tokio::test(start_paused = true)]
    async fn add_needs_the_netns_when_checked() {
        let os = Arc::new(FakeOs::new(1, Arc::new(NoFaults)));
        let cni = FakeCni::new(Arc::new(NoFaults), true, Some(os.clone()));
        assert!(cni.setup(&pod("a")).await.is_err());
        assert!(cni.allocations().is_empty());
        crid::ports::Os::netns_create(&*os, "/var/run/netns/cni-a").await.unwrap();
        cni.setup(&pod("a")).await.unwrap();
    }
}
