//! The readable trace: one line per event, stamped with simulated time. Its hash is what the
//! determinism check compares.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

pub struct Trace {
    /// Time zero; set by [`Trace::begin`] inside the runtime.
    start: Mutex<Option<tokio::time::Instant>>,
    lines: Mutex<Vec<String>>,
    /// Print lines as they are recorded (`--trace`).
    echo: bool,
}

impl Trace {
    pub fn new(echo: bool) -> Self {
        Trace { start: Mutex::new(None), lines: Mutex::new(Vec::new()), echo }
    }

    /// Starts the clock of the trace; call inside the runtime.
    pub fn begin(&self) {
        *self.start.lock().unwrap() = Some(crate::fakes::clock::virtual_now());
    }

    fn elapsed(&self) -> std::time::Duration {
        self.start.lock().unwrap().map(|s| s.elapsed()).unwrap_or_default()
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.elapsed().as_millis() as u64
    }

    pub fn now_label(&self) -> String {
        let elapsed = self.elapsed();
        format!("{:>5}.{:06}s", elapsed.as_secs(), elapsed.subsec_micros())
    }

    pub fn log(&self, actor: &str, text: impl AsRef<str>) {
        let line = format!("[{}] {actor:<8} {}", self.now_label(), text.as_ref());
        if self.echo {
            crate::out::line(&line);
        }
        self.lines.lock().unwrap().push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// sha256 over every line, hex.
    pub fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        for line in self.lines.lock().unwrap().iter() {
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
        }
        hex::encode(hasher.finalize())
    }
}

/// Shortens a 64-hex id for the trace; anything else (paths, digests) is kept whole.
pub fn short(id: &str) -> &str {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) { &id[..12] } else { id }
}

/// The trace with what scheduling decides taken out, for the golden traces (snapshots/): each
/// time stamp cut to whole seconds, and each object id (64 hex digits, or the 12 of [`short`])
/// renamed in order of first appearance — `sb0`, `sb1`, … for a sandbox, `ctr0`, … for a
/// container, `id0`, … where no line of the trace says which it is. What is left is the order
/// of events and their outcomes: a change of behaviour shows in it, a change of latency or of
/// random ids does not.
pub fn projection(lines: &[String]) -> Vec<String> {
    let lines: Vec<(String, &str)> = lines.iter().map(|line| split_stamp(line)).collect();
    // First pass: what each id is, from the first line that says.
    let mut kinds: BTreeMap<&str, Kind> = BTreeMap::new();
    for (_, text) in &lines {
        for (start, _) in ids(text) {
            let known = kinds.entry(&text[start..start + SHORT]).or_insert(Kind::Unknown);
            if *known == Kind::Unknown {
                *known = kind_before(&text[..start]);
            }
        }
    }
    // Second pass: names in order of first appearance, one count per kind.
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    let mut counts = [0usize; 3];
    let mut out = Vec::with_capacity(lines.len());
    for (stamp, text) in &lines {
        let mut projected = String::with_capacity(text.len());
        let mut rest = 0;
        for (start, end) in ids(text) {
            let key = &text[start..start + SHORT];
            let name = names.entry(key).or_insert_with(|| {
                let kind = kinds[key];
                let n = &mut counts[kind as usize];
                *n += 1;
                format!("{}{}", kind.prefix(), *n - 1)
            });
            projected.push_str(&text[rest..start]);
            projected.push_str(name);
            rest = end;
        }
        projected.push_str(&text[rest..]);
        out.push(format!("{stamp}{projected}"));
    }
    out
}

/// Length of a short id.
const SHORT: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sandbox = 0,
    Container = 1,
    Unknown = 2,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Sandbox => "sb",
            Kind::Container => "ctr",
            Kind::Unknown => "id",
        }
    }
}

/// What the words before an id say it is (the kubelet's RPC lines and the checkers' objects).
fn kind_before(before: &str) -> Kind {
    let before = before.trim_end();
    const SANDBOX: &[&str] = &["StopPodSandbox", "RemovePodSandbox", "repeated Stop/Remove of", "sandbox"];
    const CONTAINER: &[&str] = &["StartContainer", "ContainerStatus", "StopContainer", "RemoveContainer", "ExecSync"];
    if SANDBOX.iter().any(|w| before.ends_with(w)) || (before.contains("CreateContainer") && before.ends_with(" in")) {
        Kind::Sandbox
    } else if CONTAINER.iter().any(|w| before.ends_with(w))
        || (before.ends_with(" container") && !before.ends_with("containerd container"))
    {
        Kind::Container
    } else {
        Kind::Unknown
    }
}

/// Byte ranges of the ids in `text`: runs of exactly 12 or 64 lowercase hex digits standing
/// alone (not inside a longer word or number).
fn ids(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    let mut found = vec![];
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let word = &bytes[start..i];
        if (word.len() == SHORT || word.len() == 64) && word.iter().all(|&b| hex(b)) {
            found.push((start, i));
        }
    }
    found
}

/// `[   12.345678s] rest` -> (`[   12s] `, `rest`); a line without a stamp is all text.
fn split_stamp(line: &str) -> (String, &str) {
    let parsed = line.strip_prefix('[').and_then(|l| l.split_once("s] ")).and_then(|(stamp, rest)| {
        let secs: u64 = stamp.trim().split_once('.')?.0.parse().ok()?;
        Some((format!("[{secs:>5}s] "), rest))
    });
    parsed.unwrap_or((String::new(), line))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SANDBOX: &str = "a0821957cb40d1f2a0821957cb40d1f2a0821957cb40d1f2a0821957cb40d1f2";
    const CONTAINER: &str = "3666a99b3672e5f43666a99b3672e5f43666a99b3672e5f43666a99b3672e5f4";
    const OTHER: &str = "bf152d6815a4";

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn ids_are_named_by_kind_in_order_of_first_appearance() {
        let trace = lines(&[
            &format!("[    0.006003s] fault    os.write_atomic /var/lib/crid/containers/{CONTAINER}/status -> crash"),
            &format!("[    0.006004s] kubelet  CreateContainer c0.0 in {} -> ok", short(SANDBOX)),
            &format!("[    0.006004s] kubelet  StartContainer {} -> ok", short(CONTAINER)),
            &format!("[    9.999999s] chaos    task_exit on task {OTHER}"),
            &format!("[   10.006008s] kubelet  StopPodSandbox {} -> ok", short(SANDBOX)),
        ]);
        assert_eq!(
            projection(&trace),
            lines(&[
                // The container shows up first in a path, whole; a later line says what it is.
                "[    0s] fault    os.write_atomic /var/lib/crid/containers/ctr0/status -> crash",
                "[    0s] kubelet  CreateContainer c0.0 in sb0 -> ok",
                "[    0s] kubelet  StartContainer ctr0 -> ok",
                "[    9s] chaos    task_exit on task id0",
                "[   10s] kubelet  StopPodSandbox sb0 -> ok",
            ])
        );
    }

    #[test]
    fn the_same_behaviour_with_other_ids_and_latencies_projects_the_same() {
        let run = |sandbox: &str, container: &str, micros: u32| {
            lines(&[
                &format!("[    2.{micros:06}s] kubelet  CreateContainer c0.0 in {sandbox} -> ok"),
                &format!("[    2.{:06}s] kubelet  ContainerStatus {container} -> ok", micros + 1),
                &format!("[    2.{:06}s] kubelet  RemovePodSandbox {sandbox} -> ok", micros + 2),
            ])
        };
        let first = projection(&run("0123456789ab", "ba9876543210", 4001));
        assert_eq!(first, projection(&run("fedcba987654", "456789abcdef", 6003)));
        assert_eq!(first[1], "[    2s] kubelet  ContainerStatus ctr0 -> ok");
        // Two objects swapped is a different behaviour.
        assert_ne!(first, projection(&run("ba9876543210", "ba9876543210", 4001)));
    }

    #[test]
    fn words_that_only_look_like_ids_are_kept() {
        let trace = lines(&[
            "no stamp: rpcs 123456789012345 pods 3, sha 0123456789abc, cri_crash, deadbeefcafe_x",
            "[bad stamp] ContainerStatus ABCDEF012345",
        ]);
        assert_eq!(projection(&trace), trace);
    }
}
