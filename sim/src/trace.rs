//! The readable trace: one line per event, stamped with simulated time. Its hash is what the
//! determinism check compares.

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
