//! The cost of the unix socket's `:authority` repair (crid_grpc::authority): the same CRI
//! service behind crid's own listener (every connection through the layer) and behind a plain
//! tonic listener, measured in the same run, alternating, with a tonic client (a valid
//! authority: the layer still re-encodes every header block), then the rewriter alone.
//! `cargo bench -p crid-sim --bench authority`; CRID_BENCH_CALLS sets the calls per round.

#[cfg(madsim)]
fn main() {
    eprintln!("the authority benchmark runs in normal mode: cargo bench -p crid-sim --bench authority");
}

#[cfg(not(madsim))]
fn main() {
    normal::main();
}

#[cfg(not(madsim))]
#[expect(clippy::disallowed_methods, reason = "a normal-mode benchmark: wall time is what it measures")]
mod normal {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crid::{Config, CriService};
    use crid_grpc::CriGrpc;
    use crid_grpc::authority::AuthorityRewriter;
    use crid_sim::fakes::{FakeWorld, NoFaults, PAUSE_IMAGE};
    use hyper_util::rt::TokioIo;
    use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
    use k8s_cri::v1::{ListContainersRequest, VersionRequest};
    use tokio::net::{UnixListener, UnixStream};
    use tonic::transport::{Channel, Endpoint, Uri};

    const ROUNDS: usize = 5;
    const PARALLEL_CLIENTS: usize = 8;

    async fn connect(path: PathBuf) -> Channel {
        Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
            }))
            .await
            .unwrap()
    }

    fn percentile(sorted: &[Duration], p: f64) -> f64 {
        sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6
    }

    /// `calls` sequential Version + ListContainers pairs; the latency of each pair.
    async fn sequential(client: &mut RuntimeServiceClient<Channel>, calls: usize, out: &mut Vec<Duration>) {
        for _ in 0..calls {
            let started = Instant::now(); // determinism-ok: a normal-mode benchmark; wall time is what it measures.
            client.version(VersionRequest { version: "v1".into() }).await.unwrap();
            client.list_containers(ListContainersRequest::default()).await.unwrap();
            out.push(started.elapsed());
        }
    }

    /// Wall time of `calls` Version calls spread over parallel clients, each its own connection.
    async fn parallel(socket: &Path, calls: usize) -> Duration {
        let mut clients = Vec::new();
        for _ in 0..PARALLEL_CLIENTS {
            clients.push(RuntimeServiceClient::new(connect(socket.to_path_buf()).await));
        }
        let started = Instant::now(); // determinism-ok: a normal-mode benchmark; wall time is what it measures.
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                tokio::spawn(async move {
                    for _ in 0..calls / PARALLEL_CLIENTS {
                        client.version(VersionRequest { version: "v1".into() }).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        started.elapsed()
    }

    #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    pub async fn main() {
        let calls: usize = std::env::var("CRID_BENCH_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000); // determinism-ok: a normal-mode benchmark's configuration; no simulation runs here.
        let dir = tempfile::tempdir().unwrap();
        let world = Arc::new(FakeWorld::new(7, Arc::new(NoFaults)).with_default_images());
        let config = Config { sandbox_image: PAUSE_IMAGE.into(), ..Config::default() };
        let service = CriService::new(config, world.backends()).unwrap();
        service.run().await.unwrap();

        let fixed = dir.path().join("fixed.sock");
        let plain = dir.path().join("plain.sock");
        tokio::spawn(crid_grpc::serve_unix(
            service.clone(),
            UnixListener::bind(&fixed).unwrap(),
            std::future::pending(),
        ));
        let grpc = CriGrpc::new(service.clone());
        let listener = UnixListener::bind(&plain).unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(grpc.runtime_server())
                .add_service(grpc.image_server())
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        let mut fixed_client = RuntimeServiceClient::new(connect(fixed.clone()).await);
        let mut plain_client = RuntimeServiceClient::new(connect(plain.clone()).await);
        // Warm both paths.
        sequential(&mut fixed_client, 50, &mut Vec::new()).await;
        sequential(&mut plain_client, 50, &mut Vec::new()).await;

        let (mut with_layer, mut without) = (Vec::new(), Vec::new());
        let (mut par_with, mut par_without) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..ROUNDS {
            sequential(&mut fixed_client, calls / ROUNDS, &mut with_layer).await;
            sequential(&mut plain_client, calls / ROUNDS, &mut without).await;
            par_with += parallel(&fixed, calls / ROUNDS).await;
            par_without += parallel(&plain, calls / ROUNDS).await;
        }
        with_layer.sort();
        without.sort();
        println!("{calls} calls each, {ROUNDS} alternating rounds; Version+ListContainers pairs, microseconds");
        println!("{:<34} {:>10} {:>10} {:>8}", "", "layer", "plain", "ratio");
        for (name, p) in [("sequential pair p50", 0.5), ("sequential pair p90", 0.9)] {
            let (a, b) = (percentile(&with_layer, p), percentile(&without, p));
            println!("{name:<34} {a:>10.1} {b:>10.1} {:>7.2}x", a / b);
        }
        let per_call = |total: Duration| total.as_secs_f64() * 1e6 / calls as f64;
        let (a, b) = (per_call(par_with), per_call(par_without));
        println!("{:<34} {a:>10.1} {b:>10.1} {:>7.2}x", format!("{PARALLEL_CLIENTS} clients, wall per Version"), a / b);

        // The rewriter alone, on a grpc-go-like stream: header blocks and 1 KiB DATA frames.
        let mut encoder = loona_hpack::Encoder::new();
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let blocks = 10_000u32;
        for i in 0..blocks {
            let stream_id = 2 * i + 1;
            let headers: [(&[u8], &[u8]); 6] = [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", b"/runtime.v1.RuntimeService/ListContainers"),
                (b":authority", b"%2Frun%2Fcrid%2Fcrid.sock"),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
            ];
            let block = encoder.encode(headers);
            for (kind, flags, payload) in [(1u8, 4u8, block), (0, 1, vec![0; 1024])] {
                stream.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
                stream.extend_from_slice(&[kind, flags]);
                stream.extend_from_slice(&stream_id.to_be_bytes());
                stream.extend_from_slice(&payload);
            }
        }
        let mut rewriter = AuthorityRewriter::new();
        let mut out = Vec::with_capacity(stream.len() + 1024);
        let started = Instant::now(); // determinism-ok: a normal-mode benchmark; wall time is what it measures.
        for chunk in stream.chunks(32 * 1024) {
            rewriter.feed(chunk, &mut out).unwrap();
        }
        let elapsed = started.elapsed();
        assert_eq!(rewriter.rewritten(), u64::from(blocks));
        println!(
            "rewriter alone: {:.2} us per request (header block + 1 KiB DATA), {:.0} MB/s",
            elapsed.as_secs_f64() * 1e6 / f64::from(blocks),
            stream.len() as f64 / elapsed.as_secs_f64() / 1e6
        );
    }
}
