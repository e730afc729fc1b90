//! CRI latency, crid against containerd's own CRI, on the real stack (`ci/realstack up`).
//!
//! Each round runs one pod lifecycle on each runtime, in alternating order so that neither
//! always runs on a warmer machine: RemoveImage, then a cold PullImage (RemoveImage's garbage
//! collection left nothing of the image: every blob is fetched and every layer unpacked), a
//! warm one (the image is there: only the manifest is resolved), RunPodSandbox, CreateContainer,
//! StartContainer, StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox. Every call is
//! timed at the client, over each runtime's unix socket; the first round warms both up and is
//! not counted. The table gives, per call, the median and p90 of each runtime and the ratio
//! crid / containerd (below 1: crid is faster).
//!
//!   ci/bench-cri [ROUNDS]                       # brings the stack up, then runs this
//!   CRID_BENCH_ROUNDS=20 cargo bench -p crid-backend --bench cri
//!
//! Both runtimes pull from the same local registry into their own containerd, run runc through
//! their own shim, and set up the pod network with the same CNI plugins on bridges of their
//! own, so the figures compare the CRI layers, not the machinery beneath them.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Cri, Kind, stack, unique};
use k8s_cri::v1::*;

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

/// Latencies of one runtime: call name → samples.
type Samples = BTreeMap<&'static str, Vec<Duration>>;

async fn timed<F: std::future::Future<Output = T>, T>(samples: &mut Samples, call: &'static str, future: F) -> T {
    debug_assert!(CALLS.contains(&call));
    let started = Instant::now();
    let result = future.await;
    samples.entry(call).or_default().push(started.elapsed());
    result
}

/// One lifecycle on `cri`, every call timed into `samples`.
async fn round(cri: &mut Cri, samples: &mut Samples) {
    let busybox = cri.image("busybox:latest");
    // A cold pull each round: the image goes first, and with it (synchronous garbage
    // collection, both runtimes) its blobs and snapshots.
    let present = cri
        .images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec { image: busybox.clone(), ..Default::default() }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .is_some();
    if present {
        cri.remove_image(&busybox).await;
    }
    timed(samples, "PullImage cold", cri.pull(&busybox)).await;
    timed(samples, "PullImage warm", cri.pull(&busybox)).await;

    let pod = cri.pod_config(&unique("bench"));
    let pod_id = timed(samples, "RunPodSandbox", cri.run_pod(&pod)).await;
    // Exits at once on SIGTERM: `wait` is interrupted by the trapped signal.
    let command = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"];
    let id = timed(samples, "CreateContainer", cri.create_container(&pod_id, &pod, "app", &command)).await;
    timed(samples, "StartContainer", cri.start_container(&id)).await;
    timed(samples, "StopContainer", cri.stop_container(&id, 10)).await;
    let (state, code) = cri.container_state(&id).await;
    assert_eq!(
        (state, code),
        (ContainerState::ContainerExited, 0),
        "{}: the container exits on SIGTERM",
        cri.kind.name()
    );
    timed(samples, "RemoveContainer", cri.remove_container(&id)).await;
    timed(samples, "StopPodSandbox", cri.stop_pod(&pod_id)).await;
    timed(samples, "RemovePodSandbox", cri.remove_pod_only(&pod_id)).await;
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

fn report(rounds: usize, crid: &Samples, containerd: &Samples) {
    println!();
    println!("CRI latency over {rounds} rounds (ms, measured at the client; ratio = crid / containerd)");
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
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; any other arguments are ignored.
    let stack = stack();
    let rounds: usize = std::env::var("CRID_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    assert!(rounds >= 1, "CRID_BENCH_ROUNDS must be at least 1");
    // Warnings only by default: crid's own logging should not be what is measured.
    // CRID_BENCH_LOG (a tracing filter) turns it up to see where a call's time goes; crid's log
    // is then kept in its directory, printed at the end.
    let log_level = std::env::var("CRID_BENCH_LOG").unwrap_or_else(|_| "warn".into());
    let mut crid = Cri::crid_with_log(&stack, "bench", common::crid_binary(), &log_level).await;
    let mut containerd = Cri::reference(&stack, "bench").await;
    assert_eq!((crid.kind, containerd.kind), (Kind::Crid, Kind::Containerd));

    let (mut crid_samples, mut containerd_samples) = (Samples::new(), Samples::new());
    let warmup = 1;
    for n in 0..warmup + rounds {
        let (mut a, mut b) = (Samples::new(), Samples::new());
        if n % 2 == 0 {
            round(&mut crid, &mut a).await;
            round(&mut containerd, &mut b).await;
        } else {
            round(&mut containerd, &mut b).await;
            round(&mut crid, &mut a).await;
        }
        if n >= warmup {
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
        assert!(CALLS.iter().all(|c| samples[c].len() == rounds), "every call measured once per round");
    }
    report(rounds, &crid_samples, &containerd_samples);
    crid.assert_no_leaks();
    containerd.assert_no_leaks();
    if std::env::var_os("CRID_BENCH_LOG").is_some() {
        let kept = crid.dir.with_extension("log");
        std::fs::copy(crid.dir.join("crid.log"), &kept).unwrap();
        println!("crid's log: {}", kept.display());
    }
}
