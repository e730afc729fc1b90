//! CRI latency and throughput, crid against containerd's own CRI, on the real stack
//! (`ci/realstack up`).
//!
//! Each round runs on each runtime, in alternating order so that neither always runs on a
//! warmer machine: RemoveImage of every image but the sandbox's, then a cold PullImage
//! (RemoveImage's garbage collection left nothing of the image, nor of any image sharing its
//! layer: every blob is fetched and every layer unpacked), a warm one (the image
//! is there: only the manifest is resolved); then CRID_BENCH_PARALLEL pod lifecycles at once
//! (default 1; `ci/bench-cri` runs 5, as critest's benchmark does), each on a connection of its
//! own: RunPodSandbox, CreateContainer, StartContainer, StopContainer, RemoveContainer,
//! StopPodSandbox, RemovePodSandbox. Every call is timed at the client, over each runtime's unix
//! socket; the first round warms both up and is not counted. The table gives, per call, the
//! median and p90 of each runtime and the ratio crid / containerd (below 1: crid is faster), and
//! the throughput: pod lifecycles completed per second of the concurrent phase (ratio above 1:
//! crid is faster).
//!
//! Then what a kubelet asks of a busy node every few seconds (its pod lifecycle event
//! generator's relist and its stats provider): with CRID_BENCH_NODE_PODS pods (default 10) each
//! running one container on each runtime, ListPodSandbox, ListContainers, ListContainerStats,
//! ListPodSandboxStats, an ExecSync probe (`true`) in one of its containers and one in every
//! container at once, CRID_BENCH_NODE_READS times each (default 50), the runtimes alternately;
//! then CRID_BENCH_RESTARTS restarts of each runtime's daemon (default 3), timed from the new
//! process's start until it lists the node's pods and containers as they were.
//!
//!   ci/bench-cri [ROUNDS] [--parallel N]        # brings the stack up, then runs this
//!   CRID_BENCH_ROUNDS=20 CRID_BENCH_PARALLEL=5 cargo bench -p crid-backend --bench cri
//!
//! Both runtimes pull from the same local registry into their own containerd, run runc through
//! their own shim, and set up the pod network with the same CNI plugins on bridges of their
//! own, so the figures compare the CRI layers, not the machinery beneath them.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Cri, Kind, stack, unique};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

/// The calls measured, in lifecycle order.
const CALLS: [&str; 9] = [
    "PullImage cold",
    "PullImage warm",
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];

/// The reads of a busy node, in the order each round makes them.
const NODE_READS: [&str; 6] = [
    "ListPodSandbox",
    "ListContainers",
    "ListContainerStats",
    "ListPodSandboxStats",
    "ExecSync",
    "ExecSync, every pod",
];

/// Latencies of one runtime: call name → samples.
type Samples = BTreeMap<&'static str, Vec<Duration>>;

async fn timed<F: std::future::Future<Output = T>, T>(samples: &mut Samples, call: &'static str, future: F) -> T {
    debug_assert!(CALLS.contains(&call) || NODE_READS.contains(&call));
    let started = Instant::now();
    let result = future.await;
    samples.entry(call).or_default().push(started.elapsed());
    result
}

/// The cold and the warm pull of one round, timed into `samples`.
async fn pulls(cri: &mut Cri, samples: &mut Samples) {
    let busybox = cri.image("busybox:latest");
    // A cold pull each round: busybox goes first, and with it (synchronous garbage collection,
    // both runtimes) its blobs and snapshots — but only if no other image shares its layer.
    // containerd's namespace is shared with the real-stack tests, which leave `nonroot` (built
    // on busybox's layer) behind: a "cold" pull there found the layer unpacked and fetched only
    // the manifest and config. So every image but the sandbox image goes.
    let images = cri.images.list_images(ListImagesRequest { filter: None }).await.unwrap().into_inner().images;
    for image in images {
        let is_pause = image.repo_tags.iter().any(|tag| tag.contains("/pause:"));
        if !is_pause {
            cri.remove_image(&image.id).await;
        }
    }
    timed(samples, "PullImage cold", cri.pull(&busybox)).await;
    timed(samples, "PullImage warm", cri.pull(&busybox)).await;
}

/// One pod lifecycle over its own client (a connection of its own: tonic's channels multiplex,
/// and kubelet's pod workers do not wait for each other), every call timed.
async fn lifecycle(
    mut client: RuntimeServiceClient<Channel>,
    who: &'static str,
    pod: PodSandboxConfig,
    container: ContainerConfig,
) -> Samples {
    let mut samples = Samples::new();
    let fail = |call: &str, e: tonic::Status| -> ! { panic!("{who}: {call}: {e}") };
    let run = RunPodSandboxRequest { config: Some(pod.clone()), runtime_handler: String::new() };
    let pod_id = timed(&mut samples, "RunPodSandbox", client.run_pod_sandbox(run))
        .await
        .unwrap_or_else(|e| fail("RunPodSandbox", e))
        .into_inner()
        .pod_sandbox_id;
    let create =
        CreateContainerRequest { pod_sandbox_id: pod_id.clone(), config: Some(container), sandbox_config: Some(pod) };
    let id = timed(&mut samples, "CreateContainer", client.create_container(create))
        .await
        .unwrap_or_else(|e| fail("CreateContainer", e))
        .into_inner()
        .container_id;
    let start = StartContainerRequest { container_id: id.clone() };
    timed(&mut samples, "StartContainer", client.start_container(start))
        .await
        .unwrap_or_else(|e| fail("StartContainer", e));
    let stop = StopContainerRequest { container_id: id.clone(), timeout: 10 };
    timed(&mut samples, "StopContainer", client.stop_container(stop))
        .await
        .unwrap_or_else(|e| fail("StopContainer", e));
    let status = client
        .container_status(ContainerStatusRequest { container_id: id.clone(), verbose: false })
        .await
        .unwrap_or_else(|e| fail("ContainerStatus", e))
        .into_inner()
        .status
        .expect("a status");
    // 0 from the trap; 143 when SIGTERM came before the shell had set the trap (a stop right
    // after the start, under load).
    assert!(
        ContainerState::try_from(status.state) == Ok(ContainerState::ContainerExited)
            && [0, 143].contains(&status.exit_code),
        "{who}: the container exits on SIGTERM: state {}, exit code {}",
        status.state,
        status.exit_code
    );
    let remove = RemoveContainerRequest { container_id: id };
    timed(&mut samples, "RemoveContainer", client.remove_container(remove))
        .await
        .unwrap_or_else(|e| fail("RemoveContainer", e));
    let stop = StopPodSandboxRequest { pod_sandbox_id: pod_id.clone() };
    timed(&mut samples, "StopPodSandbox", client.stop_pod_sandbox(stop))
        .await
        .unwrap_or_else(|e| fail("StopPodSandbox", e));
    let remove = RemovePodSandboxRequest { pod_sandbox_id: pod_id };
    timed(&mut samples, "RemovePodSandbox", client.remove_pod_sandbox(remove))
        .await
        .unwrap_or_else(|e| fail("RemovePodSandbox", e));
    samples
}

/// What the whole machine's CPUs have done so far (every process, kernel included), from the
/// first line of /proc/stat: a round's cost beyond its wall time, and whether it left the
/// CPUs idle (then the lifecycles wait on something other than CPU). `daemons` is the part of
/// `busy` spent in the runtime's own processes (crid and its containerd, or containerd with
/// its CRI plugin); shims, runc and the CNI plugins are the rest.
#[derive(Clone, Copy, Default)]
struct MachineCpu {
    busy: Duration,
    io_wait: Duration,
    idle: Duration,
    daemons: Duration,
}

impl MachineCpu {
    fn now(daemons: &[u32]) -> MachineCpu {
        let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
        let line = stat.lines().next().expect("/proc/stat has a first line");
        let ticks: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().expect("a tick count")).collect();
        assert!(ticks.len() >= 7, "/proc/stat's cpu line: {line}");
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        assert!(per_second > 0, "sysconf(_SC_CLK_TCK)");
        let time = |t: u64| Duration::from_secs_f64(t as f64 / per_second as f64);
        // utime and stime, the 14th and 15th fields, counted after the parenthesised name.
        let process_ticks = |pid: &u32| -> u64 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read a daemon's stat");
            let after_name = &stat[stat.rfind(')').expect("stat names the process") + 1..];
            after_name.split_whitespace().skip(11).take(2).map(|f| f.parse::<u64>().expect("a tick count")).sum()
        };
        // user nice system idle iowait irq softirq (steal, the hypervisor's, is not counted).
        MachineCpu {
            busy: time(ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]),
            io_wait: time(ticks[4]),
            idle: time(ticks[3]),
            daemons: time(daemons.iter().map(process_ticks).sum()),
        }
    }

    fn since(self, before: MachineCpu) -> MachineCpu {
        MachineCpu {
            busy: self.busy.saturating_sub(before.busy),
            io_wait: self.io_wait.saturating_sub(before.io_wait),
            idle: self.idle.saturating_sub(before.idle),
            daemons: self.daemons.saturating_sub(before.daemons),
        }
    }

    fn add(&mut self, other: MachineCpu) {
        self.busy += other.busy;
        self.io_wait += other.io_wait;
        self.idle += other.idle;
        self.daemons += other.daemons;
    }

    /// CPU ms per lifecycle (all, and the daemons'), and the shares of the CPUs' time that
    /// were busy and in I/O wait.
    fn describe(&self, lifecycles: usize) -> String {
        let total = (self.busy + self.io_wait + self.idle).as_secs_f64().max(1e-9);
        format!(
            "{:.0} ms CPU per lifecycle ({:.0} ms of it in the daemons), CPUs {:.0}% busy, {:.0}% in I/O wait",
            ms(self.busy) / lifecycles as f64,
            ms(self.daemons) / lifecycles as f64,
            100.0 * self.busy.as_secs_f64() / total,
            100.0 * self.io_wait.as_secs_f64() / total
        )
    }
}

/// One round on `cri`: the pulls, then `parallel` pod lifecycles at once. Returns the wall time
/// of the lifecycles and what the machine's CPUs did during them.
async fn round(cri: &mut Cri, samples: &mut Samples, parallel: usize) -> (Duration, MachineCpu) {
    pulls(cri, samples).await;
    // Exits at once on SIGTERM: `wait` is interrupted by the trapped signal.
    let command = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"];
    let mut lifecycles = Vec::new();
    for _ in 0..parallel {
        let pod = cri.pod_config(&unique("bench"));
        let container = cri.container_config("app", &command);
        let client = RuntimeServiceClient::new(common::connect(&cri.socket()).await);
        lifecycles.push((client, pod, container));
    }
    let who = cri.kind.name();
    let daemons = cri.daemon_pids();
    let expected = if cri.kind == Kind::Crid { 2 } else { 1 };
    assert_eq!(daemons.len(), expected, "{who}: its daemon processes, found: {daemons:?}");
    let cpu_before = MachineCpu::now(&daemons);
    let started = Instant::now();
    let tasks: Vec<_> = lifecycles
        .into_iter()
        .map(|(client, pod, container)| tokio::spawn(lifecycle(client, who, pod, container)))
        .collect();
    for task in tasks {
        for (call, durations) in task.await.expect("a lifecycle panicked") {
            samples.entry(call).or_default().extend(durations);
        }
    }
    (started.elapsed(), MachineCpu::now(&daemons).since(cpu_before))
}

/// The cgroup under which the busy node's pods run: a pod's stats are its cgroup's, and
/// containerd's CRI refuses them for a pod without one, as kubelet never sends.
const NODE_CGROUP: &str = "/crid-bench-node";

/// Starts `pods` pods on `cri`, each running one container: their ids.
async fn busy_node(cri: &mut Cri, pods: usize) -> Vec<String> {
    cri.pull(&cri.image("busybox:latest")).await;
    let mut ids = Vec::new();
    for _ in 0..pods {
        let mut pod = cri.pod_config(&unique("node"));
        let name = pod.metadata.as_ref().expect("a pod has metadata").name.clone();
        pod.linux.get_or_insert_default().cgroup_parent = format!("{NODE_CGROUP}/{name}");
        let pod_id = cri.run_pod(&pod).await;
        cri.run_container(&pod_id, &pod, "app", &["sleep", "3600"]).await;
        ids.push(pod_id);
    }
    ids
}

/// One of each node read on `cri`, timed into `samples`; each answer is checked against the
/// node's `pods` running pods, so that a runtime that answers less is not measured as faster.
async fn node_reads(cri: &mut Cri, samples: &mut Samples, pods: usize) {
    let who = cri.kind.name();
    let sandboxes =
        timed(samples, "ListPodSandbox", cri.runtime.list_pod_sandbox(ListPodSandboxRequest { filter: None }))
            .await
            .unwrap_or_else(|e| panic!("{who}: ListPodSandbox: {e}"))
            .into_inner()
            .items;
    assert_eq!(sandboxes.len(), pods, "{who}: ListPodSandbox lists the node's pods");
    let containers =
        timed(samples, "ListContainers", cri.runtime.list_containers(ListContainersRequest { filter: None }))
            .await
            .unwrap_or_else(|e| panic!("{who}: ListContainers: {e}"))
            .into_inner()
            .containers;
    assert_eq!(containers.len(), pods, "{who}: ListContainers lists the node's containers");
    let stats = timed(
        samples,
        "ListContainerStats",
        cri.runtime.list_container_stats(ListContainerStatsRequest { filter: None }),
    )
    .await
    .unwrap_or_else(|e| panic!("{who}: ListContainerStats: {e}"))
    .into_inner()
    .stats;
    assert_eq!(stats.len(), pods, "{who}: ListContainerStats has every container");
    for stat in &stats {
        let usage = stat.cpu.as_ref().and_then(|cpu| cpu.usage_core_nano_seconds.as_ref());
        assert!(usage.is_some(), "{who}: a running container's stats carry its CPU usage: {stat:?}");
        let working_set = stat.memory.as_ref().and_then(|memory| memory.working_set_bytes.as_ref());
        assert!(working_set.is_some_and(|w| w.value > 0), "{who}: and its memory: {stat:?}");
    }
    let stats = timed(
        samples,
        "ListPodSandboxStats",
        cri.runtime.list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None }),
    )
    .await
    .unwrap_or_else(|e| panic!("{who}: ListPodSandboxStats: {e}"))
    .into_inner()
    .stats;
    assert_eq!(stats.len(), pods, "{who}: ListPodSandboxStats has every ready pod");
    for stat in &stats {
        let containers = stat.linux.as_ref().map_or(0, |linux| linux.containers.len());
        assert_eq!(containers, 1, "{who}: a pod's stats carry its container's: {stat:?}");
        // Both read the pod's cgroup and its interface: the same work on both sides.
        let linux = stat.linux.as_ref().expect("linux stats");
        let interface = linux.network.as_ref().and_then(|network| network.default_interface.as_ref());
        assert!(
            interface.is_some_and(|interface| interface.name == "eth0") && linux.process.is_some(),
            "{who}: a pod's stats carry its network and process usage: {stat:?}"
        );
    }
    // An exec probe, as kubelet runs one per container every few seconds.
    let probe = ExecSyncRequest { container_id: containers[0].id.clone(), cmd: vec!["true".into()], timeout: 10 };
    let reply = timed(samples, "ExecSync", cri.runtime.exec_sync(probe))
        .await
        .unwrap_or_else(|e| panic!("{who}: ExecSync: {e}"))
        .into_inner();
    assert_eq!(reply.exit_code, 0, "{who}: the probe succeeds: {reply:?}");
    // Then one probe in every container at once, as a node's probes meet: the time until the
    // last answers.
    let probes = containers.iter().map(|container| {
        let mut client = cri.runtime.clone();
        let probe = ExecSyncRequest { container_id: container.id.clone(), cmd: vec!["true".into()], timeout: 10 };
        async move { client.exec_sync(probe).await }
    });
    let replies = timed(samples, "ExecSync, every pod", futures::future::join_all(probes)).await;
    for reply in replies {
        let reply = reply.unwrap_or_else(|e| panic!("{who}: ExecSync: {e}")).into_inner();
        assert_eq!(reply.exit_code, 0, "{who}: every probe succeeds: {reply:?}");
    }
}

/// Polls `cri` until it lists the node's `pods` pods READY and their containers RUNNING; the
/// time since `started` (the restarted daemon's start). A call refused meanwhile (the socket not
/// there yet, a runtime still recovering) is polled again.
async fn until_recovered(cri: &mut Cri, pods: usize, started: Instant) -> Duration {
    let who = cri.kind.name();
    let deadline = started + Duration::from_secs(60);
    let socket = cri.socket();
    let mut client = RuntimeServiceClient::new(common::connect(&socket).await);
    loop {
        let sandboxes = client.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await;
        let containers = client.list_containers(ListContainersRequest { filter: None }).await;
        if let (Ok(sandboxes), Ok(containers)) = (sandboxes, containers) {
            let ready =
                sandboxes.into_inner().items.iter().filter(|s| s.state == PodSandboxState::SandboxReady as i32).count();
            let running = containers
                .into_inner()
                .containers
                .iter()
                .filter(|c| c.state == ContainerState::ContainerRunning as i32)
                .count();
            if (ready, running) == (pods, pods) {
                cri.runtime = client;
                return started.elapsed();
            }
        }
        assert!(Instant::now() < deadline, "{who}: the node's pods are not back 60 s after a restart");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    assert!(!sorted.is_empty() && p <= 100);
    // Nearest rank: the smallest sample with at least p% of the samples at or below it.
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Wall time of each round's concurrent lifecycles, per runtime.
struct Throughput {
    lifecycles: usize,
    crid: Duration,
    containerd: Duration,
    crid_cpu: MachineCpu,
    containerd_cpu: MachineCpu,
}

fn report(rounds: usize, parallel: usize, crid: &Samples, containerd: &Samples, throughput: &Throughput) {
    println!();
    println!(
        "CRI latency over {rounds} rounds of {parallel} concurrent pod lifecycles (ms, measured at the client; \
         ratio = crid / containerd)"
    );
    println!(
        "{:<18} {:>10} {:>12} {:>8}   {:>10} {:>12} {:>8}",
        "call", "crid p50", "ctrd p50", "ratio", "crid p90", "ctrd p90", "ratio"
    );
    for call in CALLS {
        let mut a = crid[call].clone();
        let mut b = containerd[call].clone();
        a.sort();
        b.sort();
        let (a50, b50, a90, b90) = (percentile(&a, 50), percentile(&b, 50), percentile(&a, 90), percentile(&b, 90));
        println!(
            "{:<18} {:>10.1} {:>12.1} {:>7.2}x   {:>10.1} {:>12.1} {:>7.2}x",
            call,
            ms(a50),
            ms(b50),
            ms(a50) / ms(b50),
            ms(a90),
            ms(b90),
            ms(a90) / ms(b90)
        );
    }
    let total = |s: &Samples| -> f64 {
        CALLS.iter().map(|c| s[c].iter().map(|d| ms(*d)).sum::<f64>()).sum::<f64>() / rounds as f64
    };
    let (ta, tb) = (total(crid), total(containerd));
    println!("{:<18} {:>10.1} {:>12.1} {:>7.2}x   (mean per round)", "whole lifecycle", ta, tb, ta / tb);
    // StopContainer leaves the task's delete to the exit path, which RemoveContainer may meet:
    // the two are judged together.
    let pair = |s: &Samples, p: usize| {
        let mut sums: Vec<Duration> =
            s["StopContainer"].iter().zip(&s["RemoveContainer"]).map(|(stop, remove)| *stop + *remove).collect();
        sums.sort();
        percentile(&sums, p)
    };
    println!(
        "{:<18} {:>10.1} {:>12.1} {:>7.2}x   {:>10.1} {:>12.1} {:>7.2}x",
        "Stop+RemoveCtr",
        ms(pair(crid, 50)),
        ms(pair(containerd, 50)),
        ms(pair(crid, 50)) / ms(pair(containerd, 50)),
        ms(pair(crid, 90)),
        ms(pair(containerd, 90)),
        ms(pair(crid, 90)) / ms(pair(containerd, 90))
    );
    let per_second = |wall: Duration| throughput.lifecycles as f64 / wall.as_secs_f64();
    let (a, b) = (per_second(throughput.crid), per_second(throughput.containerd));
    println!();
    println!(
        "throughput: crid {a:.2} pod lifecycles/s, containerd {b:.2}/s: {:.2}x containerd's ({} lifecycles each, \
         {parallel} at a time)",
        a / b,
        throughput.lifecycles
    );
    // Whether the lifecycles were bound by CPU (shims, runc, CNI plugins, the daemons) or
    // waited on something else, and what each runtime's lifecycle cost the machine.
    let n = throughput.lifecycles;
    println!("machine during crid's lifecycles: {}", throughput.crid_cpu.describe(n));
    println!("machine during containerd's lifecycles: {}", throughput.containerd_cpu.describe(n));
    let load: u32 = std::env::var("CRID_BENCH_LOAD").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    if load > 0 {
        println!(
            "under load: {load} busy process(es) ran throughout, for both runtimes alike; the machine's CPU \
             figures include them"
        );
    }
}

fn report_node_reads(pods: usize, reads: usize, crid: &Samples, containerd: &Samples) {
    println!();
    println!(
        "A busy node's reads: {pods} pods, each running one container, {reads} reads of each (ms, measured at the \
         client; ratio = crid / containerd)"
    );
    println!(
        "{:<20} {:>10} {:>12} {:>8}   {:>10} {:>12} {:>8}",
        "call", "crid p50", "ctrd p50", "ratio", "crid p90", "ctrd p90", "ratio"
    );
    for call in NODE_READS {
        let mut a = crid[call].clone();
        let mut b = containerd[call].clone();
        assert_eq!((a.len(), b.len()), (reads, reads), "{call}: measured {reads} times");
        a.sort();
        b.sort();
        let (a50, b50, a90, b90) = (percentile(&a, 50), percentile(&b, 50), percentile(&a, 90), percentile(&b, 90));
        println!(
            "{:<20} {:>10.2} {:>12.2} {:>7.2}x   {:>10.2} {:>12.2} {:>7.2}x",
            call,
            ms(a50),
            ms(b50),
            ms(a50) / ms(b50),
            ms(a90),
            ms(b90),
            ms(a90) / ms(b90)
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; any other arguments are ignored.
    let stack = stack();
    let rounds: usize = std::env::var("CRID_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    assert!(rounds >= 1, "CRID_BENCH_ROUNDS must be at least 1");
    let parallel: usize = std::env::var("CRID_BENCH_PARALLEL").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    assert!(parallel >= 1, "CRID_BENCH_PARALLEL must be at least 1");
    // Warnings only by default: crid's own logging should not be what is measured.
    // CRID_BENCH_LOG (a tracing filter) turns it up to see where a call's time goes; crid's log
    // is then kept in its directory, printed at the end.
    let log_level = std::env::var("CRID_BENCH_LOG").unwrap_or_else(|_| "warn".into());
    let mut crid = Cri::crid_with_log(&stack, "bench", common::crid_binary(), &log_level).await;
    let mut containerd = Cri::reference(&stack, "bench").await;
    assert_eq!((crid.kind, containerd.kind), (Kind::Crid, Kind::Containerd));

    let (mut crid_samples, mut containerd_samples) = (Samples::new(), Samples::new());
    let mut throughput = Throughput {
        lifecycles: 0,
        crid: Duration::ZERO,
        containerd: Duration::ZERO,
        crid_cpu: MachineCpu::default(),
        containerd_cpu: MachineCpu::default(),
    };
    let warmup = 1;
    for n in 0..warmup + rounds {
        let (mut a, mut b) = (Samples::new(), Samples::new());
        let (crid_round, containerd_round) = if n % 2 == 0 {
            let crid_round = round(&mut crid, &mut a, parallel).await;
            (crid_round, round(&mut containerd, &mut b, parallel).await)
        } else {
            let containerd_round = round(&mut containerd, &mut b, parallel).await;
            (round(&mut crid, &mut a, parallel).await, containerd_round)
        };
        if n >= warmup {
            throughput.lifecycles += parallel;
            throughput.crid += crid_round.0;
            throughput.containerd += containerd_round.0;
            throughput.crid_cpu.add(crid_round.1);
            throughput.containerd_cpu.add(containerd_round.1);
            for (into, from) in [(&mut crid_samples, a), (&mut containerd_samples, b)] {
                for (call, samples) in from {
                    into.entry(call).or_default().extend(samples);
                }
            }
        }
        eprint!("\rround {}/{}", n + 1, warmup + rounds);
    }
    eprintln!();
    for samples in [&crid_samples, &containerd_samples] {
        for call in CALLS {
            let per_round = if call.starts_with("PullImage") { 1 } else { parallel };
            assert_eq!(samples[call].len(), rounds * per_round, "{call}: measured {per_round} times a round");
        }
    }
    report(rounds, parallel, &crid_samples, &containerd_samples, &throughput);

    let pods: usize = std::env::var("CRID_BENCH_NODE_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let reads: usize = std::env::var("CRID_BENCH_NODE_READS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    if pods > 0 && reads > 0 {
        let crid_pods = busy_node(&mut crid, pods).await;
        let containerd_pods = busy_node(&mut containerd, pods).await;
        let (mut a, mut b) = (Samples::new(), Samples::new());
        // One unmeasured read each first: the runtimes' first stats of a task.
        node_reads(&mut crid, &mut Samples::new(), pods).await;
        node_reads(&mut containerd, &mut Samples::new(), pods).await;
        for n in 0..reads {
            if n % 2 == 0 {
                node_reads(&mut crid, &mut a, pods).await;
                node_reads(&mut containerd, &mut b, pods).await;
            } else {
                node_reads(&mut containerd, &mut b, pods).await;
                node_reads(&mut crid, &mut a, pods).await;
            }
        }
        report_node_reads(pods, reads, &a, &b);
        // A restart of each runtime's daemon with the node running: crid killed and started
        // again (its containerd stays), containerd's stopped and started again (its CRI lives in
        // it); the time from the new process's start until it lists every pod READY and every
        // container RUNNING.
        let restarts: usize = std::env::var("CRID_BENCH_RESTARTS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
        let (mut crid_restarts, mut containerd_restarts) = (vec![], vec![]);
        for _ in 0..restarts {
            crid.kill9();
            let started = Instant::now();
            crid.spawn(common::crid_binary()).await;
            crid_restarts.push(until_recovered(&mut crid, pods, started).await);
            let started = common::restart_reference_containerd(&stack);
            containerd_restarts.push(until_recovered(&mut containerd, pods, started).await);
        }
        if restarts > 0 {
            crid_restarts.sort();
            containerd_restarts.sort();
            let (a, b) = (percentile(&crid_restarts, 50), percentile(&containerd_restarts, 50));
            println!(
                "{:<20} {:>10.1} {:>12.1} {:>7.2}x   (restart until the node is listed again, median of {restarts})",
                "restart",
                ms(a),
                ms(b),
                ms(a) / ms(b)
            );
        }
        for id in crid_pods {
            crid.remove_pod(&id).await;
        }
        for id in containerd_pods {
            containerd.remove_pod(&id).await;
        }
        common::remove_cgroups_under(NODE_CGROUP).await;
    }
    crid.assert_no_leaks();
    containerd.assert_no_leaks();
    if std::env::var_os("CRID_BENCH_LOG").is_some() {
        let kept = crid.dir.with_extension("log");
        std::fs::copy(crid.dir.join("crid.log"), &kept).unwrap();
        println!("crid's log: {}", kept.display());
    }
}
