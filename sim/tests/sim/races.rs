//! Races madsim cannot show: the simulator runs every task on one thread, so a check and an
//! insert under two acquisitions of one lock never interleave there. Here the core runs on a
//! multi-threaded tokio runtime against the fakes (normal mode), and the callers of one round,
//! each on a thread of its own, are released together from a barrier, so that they enter the
//! join-or-start sections at the same instant. Each test fails within its rounds, with high
//! probability, on the code these sections had before they were made single acquisitions
//! (get, unlock, insert), and never on the current code.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crid::{Config, CriService};
use crid_sim::fakes::faults::{FaultAction, FaultSite, ScriptedFaults};
use crid_sim::fakes::{BUSYBOX_IMAGE, FakeWorld, NoFaults, PAUSE_IMAGE};
use k8s_cri::v1::*;

/// Worker threads of the runtime, and callers per round: one caller per thread.
const THREADS: usize = 4;
const ROUNDS: usize = 150;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(THREADS).enable_all().build().unwrap()
}

async fn service(world: &Arc<FakeWorld>) -> Arc<CriService> {
    let config = Config { sandbox_image: PAUSE_IMAGE.into(), root_dir: "/var/lib/crid".into(), ..Config::default() };
    let service = CriService::new(config, world.backends()).unwrap();
    service.run().await.unwrap();
    service
}

/// Runs `call` THREADS times at once, each caller driven by a thread of its own (the tasks it
/// spawns run on the runtime's workers): the barrier releases them together once all have
/// arrived. The barrier blocks those threads and never a worker: callers that waited on it
/// inside worker tasks could hold every worker while the last caller sat, unstolen, in a
/// blocked worker's queue, and the round never ended.
async fn together<T, F, Fut>(call: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(THREADS));
    let runtime = tokio::runtime::Handle::current();
    let callers: Vec<_> = (0..THREADS)
        .map(|caller| {
            let (barrier, runtime, future) = (barrier.clone(), runtime.clone(), call(caller));
            let caller = move || {
                barrier.wait();
                runtime.block_on(future)
            };
            #[expect(clippy::disallowed_methods, reason = "a race needs callers on real threads at once")]
            std::thread::spawn(caller) // determinism-ok: a normal-mode test; callers on real threads are its point
        })
        .collect();
    // Joined off the runtime's threads too: the callers' spawned tasks need every worker.
    tokio::task::spawn_blocking(move || callers.into_iter().map(|caller| caller.join().unwrap()).collect())
        .await
        .unwrap()
}

fn pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "races".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: format!("/var/log/pods/races_{name}"),
        ..Default::default()
    }
}

/// Concurrent RunPodSandbox calls with one name are one operation (`run_named_operation`): each
/// caller gets the same id. Two operations started for one name would make all but one caller
/// fail on the name reservation.
#[test]
fn concurrent_run_pod_sandbox_calls_join_one_operation() {
    runtime().block_on(async {
        // Slow enough that the operation is still running when the last caller arrives: a caller
        // that comes after the reply is a new request and rightly finds the name taken.
        let faults = Arc::new(ScriptedFaults::new());
        faults.set_persistent(
            FaultSite::ContainerdCreateContainer,
            None,
            FaultAction::Delay(Duration::from_millis(20)),
        );
        let world = Arc::new(FakeWorld::new(7, faults).with_default_images());
        let service = service(&world).await;
        for round in 0..ROUNDS {
            let name = format!("pod-{round}");
            let results = together(|_| {
                let (service, config) = (service.clone(), pod_config(&name));
                async move {
                    service
                        .run_pod_sandbox(RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
                        .await
                }
            })
            .await;
            let ids: Vec<String> = results
                .into_iter()
                .map(|r| r.unwrap_or_else(|e| panic!("round {round}: a caller got {:?}: {}", e.kind, e.message)))
                .map(|r| r.pod_sandbox_id)
                .collect();
            assert!(ids.iter().all(|id| *id == ids[0]), "round {round}: callers got different sandboxes {ids:?}");
        }
        assert_eq!(service.snapshot().sandboxes.len(), ROUNDS);
        assert!(service.snapshot().operations.is_empty(), "no operation outlives its callers");
    });
}

async fn pulls_started(service: &Arc<CriService>) -> u64 {
    let status = service.status(StatusRequest { verbose: true }).await.unwrap();
    let counters: serde_json::Value = serde_json::from_str(&status.info["counters"]).unwrap();
    counters["pullsStarted"].as_u64().unwrap()
}

/// Concurrent PullImage calls of one reference share one pull (the pull dedup): one pull is
/// started per round, every caller gets its image id.
#[test]
fn concurrent_pulls_of_one_reference_start_one_pull() {
    runtime().block_on(async {
        let world = Arc::new(FakeWorld::new(7, Arc::new(NoFaults)).with_default_images());
        // Slow enough that a round's pull is still running when the last caller arrives.
        world.containerd.set_fetch_latency(Duration::from_millis(20));
        let service = service(&world).await;
        for round in 0..ROUNDS {
            let before = pulls_started(&service).await;
            let results = together(|_| {
                let service = service.clone();
                async move {
                    service
                        .pull_image(PullImageRequest {
                            image: Some(ImageSpec { image: BUSYBOX_IMAGE.into(), ..Default::default() }),
                            ..Default::default()
                        })
                        .await
                }
            })
            .await;
            let ids: Vec<String> = results.into_iter().map(|r| r.unwrap().image_ref).collect();
            assert!(ids.iter().all(|id| *id == ids[0]), "round {round}: {ids:?}");
            assert_eq!(pulls_started(&service).await - before, 1, "round {round}: one pull for {THREADS} callers");
            // Remove it, so that the next round pulls (and fetches) again.
            service
                .remove_image(RemoveImageRequest {
                    image: Some(ImageSpec { image: BUSYBOX_IMAGE.into(), ..Default::default() }),
                })
                .await
                .unwrap();
        }
    });
}
