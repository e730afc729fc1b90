//! The registry the fake pulls from and the content store its fetches fill, with counters of
//! fetches and applies for the deduplication invariant (B21).

use std::collections::BTreeMap;
use std::time::Duration;

use crid::error::{Error, Result};
use crid::ports::containerd::*;
use crid::ports::registry::*;

use super::super::registry;
use super::FakeContainerd;

/// A fetch without a plan reports progress in this many steps, spread over the fetch latency.
const FETCH_PROGRESS_STEPS: u64 = 4;

/// How one blob comes down from the registry, to script slow or stuck pulls (SPEC B23).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchPlan {
    /// `bytes` every `every`, until the blob is complete.
    Trickle { bytes: u64, every: Duration },
    /// Delivers `bytes` (the whole blob when larger), then stalls until the caller gives up.
    StallAfter { bytes: u64 },
}

/// Counts operations per key and how many ran at once on one key: the B21 invariant is that no
/// two run concurrently on the same blob or chain id.
pub(super) struct Dedup<K: Ord> {
    pub(super) count: BTreeMap<K, u64>,
    /// Work started although its result already existed (a blob already in the content store,
    /// a snapshot already committed): what deduplication must prevent.
    pub(super) redundant: u64,
    pub(super) in_flight: BTreeMap<K, u32>,
    pub(super) max_concurrent: u32,
}

impl<K: Ord + Clone> Dedup<K> {
    pub(super) fn new() -> Self {
        Dedup { count: BTreeMap::new(), redundant: 0, in_flight: BTreeMap::new(), max_concurrent: 0 }
    }

    pub(super) fn begin(&mut self, key: &K) {
        *self.count.entry(key.clone()).or_default() += 1;
        let in_flight = self.in_flight.entry(key.clone()).or_default();
        *in_flight += 1;
        self.max_concurrent = self.max_concurrent.max(*in_flight);
    }

    pub(super) fn end(&mut self, key: &K) {
        let in_flight = self.in_flight.get_mut(key).expect("end without begin");
        *in_flight -= 1;
        if *in_flight == 0 {
            self.in_flight.remove(key);
        }
    }
}

/// Marks a fetch or apply in flight for as long as the caller's future lives: a caller that
/// gives up (is dropped) ends it too.
pub(super) struct InFlight<'a> {
    pub(super) containerd: &'a FakeContainerd,
    pub(super) key: InFlightKey,
}

pub(super) enum InFlightKey {
    Fetch(String),
    Apply((String, String)),
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.containerd.raw_state();
        match &self.key {
            InFlightKey::Fetch(digest) => state.fetches.end(digest),
            InFlightKey::Apply(key) => state.applies.end(key),
        }
    }
}

impl FakeContainerd {
    /// Every fetch sleeps this long in total (progress is reported in steps along the way).
    pub fn set_fetch_latency(&self, latency: Duration) {
        self.raw_state().fetch_latency = latency;
    }

    /// Scripts how one blob is fetched; None restores the default.
    pub fn set_fetch_plan(&self, digest: &str, plan: Option<FetchPlan>) {
        let mut state = self.raw_state();
        match plan {
            Some(plan) => state.fetch_plans.insert(digest.to_string(), plan),
            None => state.fetch_plans.remove(digest),
        };
    }

    /// Makes the registry serve `reference`. Returns what resolving it gives.
    pub fn add_registry_image(
        &self,
        reference: &str,
        layers: Vec<(String, u64)>,
        config: ImageConfig,
    ) -> ResolvedImage {
        let image = registry::build_image(reference, &layers, config);
        let mut state = self.raw_state();
        state.manifests.insert(image.manifest.digest.clone(), image.clone());
        state.registry.insert(reference.to_string(), image.clone());
        image
    }

    /// The registry serves `reference` only to pulls with this username and password; any
    /// other credentials, or none, are refused as unauthorized (FailedPrecondition, as the real
    /// backend reports a 401 or 403).
    pub fn require_credentials(&self, reference: &str, username: &str, password: &str) {
        self.raw_state()
            .registry_credentials
            .insert(reference.to_string(), (username.to_string(), password.to_string()));
    }

    /// What the registry serves for `reference`, for tests (no fault, no lease).
    pub fn registry_image(&self, reference: &str) -> Option<ResolvedImage> {
        self.raw_state().registry.get(reference).cloned()
    }

    /// The registry stops serving `reference` (a deleted tag); stored content is unaffected.
    pub fn remove_registry_image(&self, reference: &str) -> bool {
        self.raw_state().registry.remove(reference).is_some()
    }

    /// Digest → size of every blob in the content store.
    pub fn content(&self) -> BTreeMap<String, u64> {
        self.raw_state().content.clone()
    }

    pub fn fetch_count(&self, digest: &str) -> u64 {
        self.raw_state().fetches.count.get(digest).copied().unwrap_or(0)
    }

    /// Fetches of blobs that were already in the content store.
    pub fn redundant_fetches(&self) -> u64 {
        self.raw_state().fetches.redundant
    }

    pub fn total_fetches(&self) -> u64 {
        self.raw_state().fetches.count.values().sum()
    }

    /// The most fetches of one blob that were ever in flight at once (1 when deduplicated).
    pub fn max_concurrent_fetch_same_blob(&self) -> u32 {
        self.raw_state().fetches.max_concurrent
    }

    /// Fetches and applies currently in flight (0 at quiescence).
    pub fn pulls_in_flight(&self) -> usize {
        let state = self.raw_state();
        state.fetches.in_flight.len() + state.applies.in_flight.len()
    }

    /// How a blob's bytes arrive: (bytes, delay before them) steps, and whether it then stalls.
    pub(super) fn fetch_steps(&self, blob: &Descriptor) -> (Vec<(u64, Duration)>, bool) {
        let state = self.raw_state();
        let size = blob.size_bytes;
        match state.fetch_plans.get(&blob.digest).copied() {
            None if state.fetch_latency.is_zero() || size == 0 => (vec![(size, Duration::ZERO)], false),
            None => {
                let step_bytes = size.div_ceil(FETCH_PROGRESS_STEPS);
                let steps = size.div_ceil(step_bytes);
                let step_latency = state.fetch_latency / u32::try_from(steps).expect("at most 4 steps");
                let mut left = size;
                let mut plan = Vec::new();
                while left > 0 {
                    let bytes = step_bytes.min(left);
                    plan.push((bytes, step_latency));
                    left -= bytes;
                }
                (plan, false)
            }
            Some(FetchPlan::Trickle { bytes, every }) => {
                assert!(bytes > 0, "a trickle must move bytes");
                let mut left = size;
                let mut plan = Vec::new();
                while left > 0 {
                    let step = bytes.min(left);
                    plan.push((step, every));
                    left -= step;
                }
                (plan, false)
            }
            Some(FetchPlan::StallAfter { bytes }) => (vec![(bytes.min(size), Duration::ZERO)], true),
        }
    }

    /// Refuses credentials the registry does not take for `reference`.
    pub(super) fn authorize(&self, reference: &str, auth: &RegistryAuth) -> Result<()> {
        match self.raw_state().registry_credentials.get(reference) {
            Some((username, password)) if (username, password) != (&auth.username, &auth.password) => {
                Err(Error::precondition(format!("{reference}: unauthorized: authentication required")))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn do_resolve(&self, reference: &str, auth: &RegistryAuth) -> Result<ResolvedImage> {
        self.authorize(reference, auth)?;
        self.raw_state().registry.get(reference).cloned().ok_or_else(|| {
            Error::not_found(format!("failed to resolve reference \"{reference}\": {reference}: not found"))
        })
    }

    pub(super) fn do_read_config(
        &self,
        reference: &str,
        config: &Descriptor,
        auth: &RegistryAuth,
    ) -> Result<ImageConfigRead> {
        let image = self.do_resolve(reference, auth)?;
        if image.config.digest != config.digest {
            return Err(Error::not_found(format!("{reference}: blob {}: not found", config.digest)));
        }
        Ok(image.config_part())
    }

    pub(super) async fn do_fetch_blob(
        &self,
        reference: &str,
        blob: &Descriptor,
        lease: &str,
        progress: ProgressFn<'_>,
    ) -> Result<()> {
        let mut connection = self.connection.subscribe();
        let in_flight = {
            let mut state = self.raw_state();
            state.check_lease(lease)?;
            let image =
                state.registry.get(reference).ok_or_else(|| Error::not_found(format!("{reference}: not found")))?;
            let served = image.manifest.digest == blob.digest
                || image.config.digest == blob.digest
                || image.layers.iter().any(|layer| layer.digest == blob.digest);
            if !served {
                return Err(Error::not_found(format!("{reference}: blob {}: not found", blob.digest)));
            }
            if state.content.contains_key(&blob.digest) {
                state.fetches.redundant += 1;
            }
            state.fetches.begin(&blob.digest);
            InFlight { containerd: self, key: InFlightKey::Fetch(blob.digest.clone()) }
        };
        let (steps, stalls) = self.fetch_steps(blob);
        for (bytes, delay) in steps {
            self.pause(&mut connection, delay).await?;
            progress(bytes);
        }
        if stalls {
            // A registry that stops sending: only the caller's deadline ends this.
            let _ = connection.changed().await;
            return Err(Self::connection_lost());
        }
        // The commit, as containerd's: under a lease that still exists, which then holds it.
        let committed = {
            let mut state = self.state();
            let held = state.lease_mut(lease).map(|held| {
                held.content.insert(blob.digest.clone());
            });
            if held.is_ok() {
                state.content.insert(blob.digest.clone(), blob.size_bytes);
            }
            held
        };
        drop(in_flight);
        committed
    }
}
