//! Our SPDY server against the Go client Kubernetes uses (moby/spdystream), built from the
//! vendored tree of cri-tools that `ci/critest` unpacks into `target/cri-tools-v1.29.0` (or from
//! the spdystream directory named by `SPDYSTREAM_DIR`). Needs `go`; ignored by default:
//! `cargo test -p crid-backend --test spdy_go -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crid_backend::spdy::{Config, Headers, Session};
use tokio::io::AsyncWriteExt;

fn spdystream_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SPDYSTREAM_DIR") {
        return Some(PathBuf::from(dir));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let vendored = workspace.join("target/cri-tools-v1.29.0/vendor/github.com/moby/spdystream");
    vendored.is_dir().then_some(vendored)
}

/// Builds tests/spdy-go in GOPATH mode (no module download) against the vendored spdystream.
fn build_go_client(scratch: &Path) -> PathBuf {
    let spdystream = spdystream_dir().expect("no spdystream source: run ci/critest once, or set SPDYSTREAM_DIR");
    let gopath = scratch.join("gopath");
    let package = gopath.join("src/spdy-go-client");
    std::fs::create_dir_all(gopath.join("src/github.com/moby")).unwrap();
    std::os::unix::fs::symlink(&spdystream, gopath.join("src/github.com/moby/spdystream")).unwrap();
    std::fs::create_dir_all(&package).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spdy-go/main.go");
    std::fs::copy(source, package.join("main.go")).unwrap();
    let binary = scratch.join("spdy-go-client");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&package)
        .env("GO111MODULE", "off")
        .env("GOPATH", &gopath)
        .env("GOFLAGS", "")
        .env("GOCACHE", scratch.join("gocache"))
        .status()
        .expect("go is installed");
    assert!(status.success(), "go build failed");
    binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs go and the vendored spdystream source (ci/critest unpacks it)"]
async fn go_spdystream_client_echoes_through_our_server() {
    let scratch = tempfile::tempdir().unwrap();
    let client = build_go_client(scratch.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (session, mut incoming) = Session::server(socket, Config::default());
        let mut served = Vec::new();
        while let Some(stream) = incoming.accept().await {
            assert_eq!(stream.headers().get("streamtype"), Some("data"));
            served.push(stream.headers().get("requestid").unwrap().to_owned());
            stream.reply(Headers::new(), false).await.unwrap();
            tokio::spawn(async move {
                let (mut recv, mut send) = stream.split();
                tokio::io::copy(&mut recv, &mut send).await.unwrap();
                send.shutdown().await.unwrap();
            });
        }
        session.closed().await;
        (served.len(), session.stream_count())
    });
    // 5 streams of 1 MiB each: far past the 64 KiB window the Go client never replenishes.
    let output = tokio::task::spawn_blocking(move || {
        Command::new(client).arg(address.to_string()).args(["5", "1048576"]).output().unwrap()
    });
    let output = tokio::time::timeout(Duration::from_secs(120), output).await.expect("the Go client finishes").unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "Go client failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
    let (served, left) = tokio::time::timeout(Duration::from_secs(30), server).await.expect("session ends").unwrap();
    assert_eq!(served, 5);
    assert_eq!(left, 0, "no stream left in the table");
}
