//! A fork server: one long-lived `crid-sim fork-server` process per worker that has parsed the
//! scenario once and, for each seed, forks a fresh single-threaded child that runs the seed and
//! writes its report to a pipe. It keeps what spawning a process per seed gives — nothing a
//! previous run left behind (madsim's global task ids, std's hash keys) can change a run — and
//! saves the per-seed cost of exec, dynamic loading, argument parsing and the one-time setup
//! of the libraries the core uses (the image reference grammar's regex is compiled once, in
//! the server).
//!
//! Forking is sound here only because the server never starts a thread or a madsim runtime:
//! the child is then an exact copy of a single-threaded process, with no lock held by a thread
//! that no longer exists. Each child starts the seed's own thread, as a spawned process does.
//!
//! Protocol on the server's stdin: a line with the length in bytes of the scenario's TOML,
//! then the TOML, then one line `SEED KEEP_TRACE` (0 or 1) per seed. The server answers each
//! seed with one line on stdout: the report as JSON, or `error: ` and what went wrong.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Stdio}; // determinism-ok: the server and its pipes live outside any run; each forked child runs one seed alone.

use crate::runner::{RunReport, run_seed};
use crate::scenario::Scenario;

/// The client side, in a worker of [`crate::summary::run_seeds`].
pub struct ForkServer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ForkServer {
    /// Starts `exe fork-server` and hands it the scenario.
    pub fn start(exe: &Path, scenario: &Scenario) -> Result<ForkServer, String> {
        let text = toml::to_string(scenario).map_err(|e| format!("scenario does not serialise: {e}"))?;
        #[expect(
            clippy::disallowed_methods,
            reason = "the parent only starts the fork server; each of its children is one deterministic run"
        )]
        let mut child = std::process::Command::new(exe) // determinism-ok: starts the fork server, outside any run.
            .arg("fork-server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // A child's own stderr comes back in its answer; the server writes nothing else.
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {} fork-server: {e}", exe.display()))?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("fork server without pipes".to_string());
        };
        let handed = write!(stdin, "{}\n{text}", text.len()).and_then(|()| stdin.flush());
        let mut server = ForkServer { child, stdin: Some(stdin), stdout: BufReader::new(stdout) };
        handed.map_err(|e| format!("cannot hand the scenario to the fork server: {e}"))?;
        // The server answers a ping (an empty line) once it has parsed the scenario, so that a
        // server that cannot run (no fork on this system, a bad scenario) is found before the
        // first seed and the caller can fall back to spawning.
        server.request("\n")?;
        Ok(server)
    }

    /// Runs one seed in a fresh child of the server.
    pub fn run(&mut self, seed: u64, keep_trace: bool) -> Result<RunReport, String> {
        let answer = self.request(&format!("{seed} {}\n", u8::from(keep_trace)))?;
        serde_json::from_str(&answer).map_err(|e| format!("bad report from the fork server ({e})"))
    }

    fn request(&mut self, line: &str) -> Result<String, String> {
        let stdin = self.stdin.as_mut().ok_or("fork server closed")?;
        stdin.write_all(line.as_bytes()).and_then(|()| stdin.flush()).map_err(|e| format!("fork server gone: {e}"))?;
        let mut answer = String::new();
        match self.stdout.read_line(&mut answer) {
            Ok(0) => Err("fork server gone: no answer".to_string()),
            Ok(_) => match answer.trim_end().strip_prefix("error: ") {
                Some(error) => Err(error.to_string()),
                None => Ok(answer.trim_end().to_string()),
            },
            Err(e) => Err(format!("fork server gone: {e}")),
        }
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        // End of input ends the server.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The server: `crid-sim fork-server`. Returns the process's exit code.
pub fn serve() -> i32 {
    // Neither standard stream stays locked across a fork: a child's seed thread must not find
    // a lock held by the server's thread.
    let scenario = match read_scenario(&mut std::io::stdin().lock()) {
        Ok(scenario) => scenario,
        Err(e) => {
            eprintln!("error: fork server: {e}");
            return 2;
        }
    };
    // Compiles the image reference grammar's regex (a lazily built static in crid's naming)
    // once, here, instead of in every child: it is a pure function of the grammar.
    let _ = crid::naming::normalize_image_ref("docker.io/library/busybox:latest");
    let mut output = std::io::stdout();
    let mut line = String::new();
    loop {
        line.clear();
        match std::io::stdin().read_line(&mut line) {
            Ok(0) => return 0,
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: fork server: cannot read a request: {e}");
                return 2;
            }
        }
        let answer = match line.trim() {
            "" => Ok("ready".to_string()),
            request => parse_request(request).and_then(|(seed, keep_trace)| run_forked(&scenario, seed, keep_trace)),
        };
        let written = match answer {
            Ok(report) => writeln!(output, "{report}"),
            Err(error) => writeln!(output, "error: {}", error.replace('\n', " ")),
        };
        if written.and_then(|()| output.flush()).is_err() {
            // The client is gone.
            return 0;
        }
    }
}

fn read_scenario(input: &mut impl BufRead) -> Result<Scenario, String> {
    let mut header = String::new();
    input.read_line(&mut header).map_err(|e| format!("cannot read the scenario's length: {e}"))?;
    let length: usize = header.trim().parse().map_err(|_| format!("bad scenario length {header:?}"))?;
    let mut text = vec![0; length];
    input.read_exact(&mut text).map_err(|e| format!("cannot read the scenario: {e}"))?;
    let text = String::from_utf8(text).map_err(|e| format!("scenario is not UTF-8: {e}"))?;
    Scenario::parse(&text)
}

fn parse_request(request: &str) -> Result<(u64, bool), String> {
    let bad = || format!("bad request {request:?}: want SEED KEEP_TRACE");
    let (seed, keep) = request.split_once(' ').ok_or_else(bad)?;
    Ok((seed.parse().map_err(|_| bad())?, keep == "1"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array it is given, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks a child that runs the seed; returns its report's JSON.
fn run_forked(scenario: &Scenario, seed: u64, keep_trace: bool) -> Result<String, String> {
    let (report_read, report_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    // SAFETY: this process has a single thread (the server starts none and never starts a
    // madsim runtime), so the child's copy of memory has no lock held by a vanished thread.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop((report_read, stderr_read));
        child(scenario, seed, keep_trace, report_write, stderr_write);
    }
    drop((report_write, stderr_write));
    let (report, stderr) = read_both(report_read, stderr_read);
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    let report = report.map_err(|e| format!("cannot read the report of seed {seed}: {e}"))?;
    let exited_ok = waited == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if exited_ok && !report.is_empty() {
        return String::from_utf8(report).map_err(|e| format!("report of seed {seed} is not UTF-8: {e}"));
    }
    let how = if waited != pid {
        format!("cannot wait for it: {}", std::io::Error::last_os_error())
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("exit status {}", libc::WEXITSTATUS(status))
    };
    let stderr = String::from_utf8_lossy(&stderr.unwrap_or_default()).into_owned();
    Err(format!("the child of seed {seed} failed ({how}); stderr: {}", stderr.lines().last().unwrap_or_default()))
}

/// The forked child: runs the seed, writes the report, and exits without returning into the
/// server's loop (nor running its destructors, which belong to the server).
fn child(scenario: &Scenario, seed: u64, keep_trace: bool, report: OwnedFd, stderr: OwnedFd) -> ! {
    // SAFETY: dup2 onto the standard descriptors of this, the child's, process: its stdout
    // would otherwise be the server's answer channel and its stdin the server's requests.
    unsafe {
        libc::dup2(stderr.as_raw_fd(), 1);
        libc::dup2(stderr.as_raw_fd(), 2);
    }
    drop(stderr);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut run = run_seed(scenario, seed, false);
        if run.passed() && !keep_trace {
            run.trace.clear();
        }
        let json = serde_json::to_string(&run).expect("report serialises");
        std::fs::File::from(report).write_all(json.as_bytes()) // determinism-ok: the report is written after the run has ended.
    }));
    let code = match outcome {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("cannot write the report: {e}");
            1
        }
        Err(_) => 101,
    };
    // SAFETY: ends the child at once; `_exit` skips the server's atexit handlers and buffers.
    unsafe { libc::_exit(code) }
}

/// Reads a child's report and stderr pipes to their ends, together, so that neither fills up
/// while the other is read.
fn read_both(report: OwnedFd, stderr: OwnedFd) -> (std::io::Result<Vec<u8>>, std::io::Result<Vec<u8>>) {
    let mut files = [Some(std::fs::File::from(report)), Some(std::fs::File::from(stderr))]; // determinism-ok: the parent reads a finished child's pipes, outside any run.
    let mut data = [Vec::new(), Vec::new()];
    let mut buffer = vec![0; 64 * 1024];
    while files.iter().any(Option::is_some) {
        let mut polled: Vec<libc::pollfd> = files
            .iter()
            .flatten()
            .map(|file| libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: `polled` is a valid array of `polled.len()` pollfd structures.
        let ready = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return (Err(std::io::Error::new(error.kind(), format!("poll: {error}"))), Ok(data[1].clone()));
        }
        for entry in polled.iter().filter(|p| p.revents != 0) {
            let index = files.iter().position(|f| f.as_ref().is_some_and(|f| f.as_raw_fd() == entry.fd)).unwrap();
            let file = files[index].as_mut().unwrap();
            match file.read(&mut buffer) {
                Ok(0) => files[index] = None,
                Ok(n) => data[index].extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), Ok(data[1].clone())),
            }
        }
    }
    let [report, stderr] = data;
    (Ok(report), Ok(stderr))
}
