//! containerd's content store: streaming a blob in (Write), reading small blobs out (Read).

use std::collections::{BTreeMap, HashMap};

use super::timing::TimedChannel as Channel;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{AbortRequest, ReadContentRequest, WriteAction, WriteContentRequest};
use crid::error::{Error, ErrorKind, Result};
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::Requests;
use crate::errors::from_status;

/// Largest blob read whole into memory (manifests, indexes, configs).
const MAX_READ_BYTES: usize = 8 * 1024 * 1024;

/// Bytes sent to containerd per Write message. The registry's body arrives in chunks of a few
/// KiB, and containerd answers every message: one message per chunk made a 2 MiB layer some 150
/// round trips. 1 MiB stays well under the 4 MiB gRPC message limit of containerd's server.
const WRITE_MESSAGE_BYTES: usize = 1024 * 1024;

/// Reads a whole (small) blob.
pub async fn read_blob(channel: &Channel, requests: &Requests, digest: &str) -> Result<Vec<u8>> {
    let mut client = ContentClient::new(channel.clone());
    let mut stream = client
        .read(requests.plain(ReadContentRequest { digest: digest.to_string(), offset: 0, size: 0 }))
        .await
        .map_err(from_status)?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(from_status)? {
        out.extend_from_slice(&chunk.data);
        if out.len() > MAX_READ_BYTES {
            return Err(Error::invalid(format!("blob {digest} is larger than {MAX_READ_BYTES} bytes")));
        }
    }
    Ok(out)
}

/// What a Write needs besides the bytes.
pub struct BlobWrite<'a> {
    pub write_ref: String,
    pub digest: &'a str,
    pub size: u64,
    pub lease: Option<String>,
    /// Called after the bytes are known, before commit: labels to set on the committed blob.
    pub labels: &'a (dyn Fn(&[u8]) -> BTreeMap<String, String> + Send + Sync),
    /// Keep the bytes in memory for `labels` (only for small blobs).
    pub keep_bytes: bool,
}

/// How a write ended well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// This write committed the blob, under its lease.
    Committed,
    /// containerd had the blob when the write opened, and added it to the write's lease.
    FoundOnOpen,
    /// Another writer committed the blob while this one wrote: containerd's commit then adds
    /// nothing to this write's lease, which the caller must hold it by if it relies on it.
    CommittedByAnother,
}

/// Streams `body` into the content store and commits it under `digest`. Content that already
/// exists counts as written (see [`Written`]).
pub async fn write_blob<S>(
    channel: &Channel,
    requests: &Requests,
    write: BlobWrite<'_>,
    mut body: S,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Written>
where
    S: futures::Stream<Item = Result<bytes::Bytes>> + Unpin + Send,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(8);
    let mut client = ContentClient::new(channel.clone());
    let request = requests.with_lease(ReceiverStream::new(rx), write.lease.as_deref());
    let base_ref = write.write_ref.clone();
    let base = WriteContentRequest {
        action: WriteAction::Write as i32,
        r#ref: write.write_ref.clone(),
        total: write.size as i64,
        expected: write.digest.to_string(),
        offset: 0,
        data: Vec::new(),
        labels: HashMap::new(),
    };

    // Feeding and reading responses run together: containerd answers every request, and its
    // headers arrive only with the first answer.
    let feed = async move {
        let mut offset: u64 = 0;
        let mut kept = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut ended = false;
        while !ended {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    if write.keep_bytes {
                        kept.extend_from_slice(&chunk);
                    }
                    // Progress counts bytes as they arrive, for the pull's stall watchdog.
                    progress(chunk.len() as u64);
                    pending.extend_from_slice(&chunk);
                    if pending.len() < WRITE_MESSAGE_BYTES {
                        continue;
                    }
                }
                None => ended = true,
            }
            if pending.is_empty() {
                continue;
            }
            let data = std::mem::take(&mut pending);
            let length = data.len() as u64;
            let message = WriteContentRequest { offset: offset as i64, data, ..base.clone() };
            offset += length;
            if tx.send(message).await.is_err() {
                return Err(Error::unavailable("containerd closed the content write"));
            }
        }
        if offset != write.size {
            return Err(Error::invalid(format!("blob {}: got {offset} bytes, expected {}", write.digest, write.size)));
        }
        let labels = (write.labels)(&kept).into_iter().collect();
        let commit =
            WriteContentRequest { action: WriteAction::Commit as i32, offset: offset as i64, labels, ..base.clone() };
        tx.send(commit).await.map_err(|_| Error::unavailable("containerd closed the content write"))?;
        drop(tx);
        Ok(())
    };
    // Whether containerd answered a message before the write failed: the open (the first
    // message) had succeeded then.
    let answered = std::sync::atomic::AtomicBool::new(false);
    let drain = async {
        let mut responses = client.write(request).await.map_err(from_status)?.into_inner();
        while let Some(response) = responses.message().await.map_err(from_status)? {
            answered.store(true, std::sync::atomic::Ordering::Relaxed);
            if response.action == WriteAction::Commit as i32 {
                return Ok(());
            }
        }
        Err(Error::unavailable("content write ended before commit"))
    };
    let write_ref = base_ref;
    let (fed, drained) = futures::join!(feed, drain);
    let result = match (fed, drained) {
        (_, Ok(())) => Ok(Written::Committed),
        (_, Err(e)) if e.kind == ErrorKind::AlreadyExists => {
            if answered.load(std::sync::atomic::Ordering::Relaxed) {
                Ok(Written::CommittedByAnother)
            } else {
                Ok(Written::FoundOnOpen)
            }
        }
        // The feeder's error says why the stream ended early (e.g. the registry failed).
        (Err(e), Err(_)) => Err(e),
        (Ok(()), Err(e)) => Err(e),
    };
    if result.is_err() {
        // Free the half-written ingest; a retry uses a fresh ref anyway.
        let abort = AbortRequest { r#ref: write_ref };
        let _ = ContentClient::new(channel.clone()).abort(requests.plain(abort)).await;
    }
    result
}
