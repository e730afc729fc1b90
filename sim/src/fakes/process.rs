//! What a fake process does, decided from its argv: the script language that scenarios use to
//! make containers exit, get OOM-killed, ignore SIGTERM, or print output. Pure functions only;
//! the containerd fake applies the outcome.
//!
//! Init processes (a task's pid 1):
//! - `["exit", CODE, AFTER_MS]`: exits with CODE after AFTER_MS;
//! - `["oom", AFTER_MS]`: OOM-killed after AFTER_MS (exit 137 and a TaskOom event);
//! - anything else (e.g. `["sleep", "inf"]`, the pause binary): runs until killed;
//! - any argument equal to `ignore-sigterm`: SIGTERM has no effect.
//!
//! Exec processes:
//! - `["echo", WORDS..]` / `["stderr", WORDS..]`: prints the words to stdout / stderr, exits 0;
//! - `["sh", "-c", "exit N"]`: exits N;
//! - `["sleep", MS]`: exits 0 after MS (`inf`: runs until killed);
//! - `["yes", N_BYTES]`: prints N_BYTES of `y`, exits 0;
//! - `["cat"]`: copies a streaming client's stdin to its stdout, exits 0 at stdin's end;
//! - `["background", MS, WORDS..]`: prints the words, exits 0, and leaves a child in the
//!   background that holds its output open for MS (`inf`: until the exec is deleted);
//! - anything else: "not found" on stderr, exit 127.

use std::time::Duration;

pub const SIGKILL: u32 = 9;
pub const SIGTERM: u32 = 15;
/// What a shell reports for a command it cannot find.
pub const EXIT_NOT_FOUND: u32 = 127;
/// 128 + SIGKILL: what the runtime reports for a killed or OOM-killed process.
pub const EXIT_KILLED: u32 = 128 + SIGKILL;

pub const IGNORE_SIGTERM: &str = "ignore-sigterm";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitScript {
    UntilKilled,
    ExitAfter { code: u32, after: Duration },
    OomAfter { after: Duration },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitBehaviour {
    pub script: InitScript,
    pub ignores_sigterm: bool,
}

fn millis(arg: Option<&String>) -> Option<Duration> {
    arg?.parse::<u64>().ok().map(Duration::from_millis)
}

pub fn init_behaviour(args: &[String]) -> InitBehaviour {
    let word = |index: usize| args.get(index).map(String::as_str);
    let script = match word(0) {
        Some("exit") => match (word(1).and_then(|code| code.parse().ok()), millis(args.get(2))) {
            (Some(code), Some(after)) => InitScript::ExitAfter { code, after },
            _ => InitScript::UntilKilled,
        },
        Some("oom") => millis(args.get(1)).map_or(InitScript::UntilKilled, |after| InitScript::OomAfter { after }),
        _ => InitScript::UntilKilled,
    };
    InitBehaviour { script, ignores_sigterm: args.iter().any(|arg| arg == IGNORE_SIGTERM) }
}

/// The exit code a signal causes, or None when the process survives it. Signals whose default
/// action is to ignore or stop do not end a process; neither does signal 0 (an existence check).
pub fn signal_exit_code(signal: u32, ignores_sigterm: bool) -> Option<u32> {
    match signal {
        SIGTERM if ignores_sigterm => None,
        // 0: probe; 17 SIGCHLD, 18 SIGCONT, 23 SIGURG, 28 SIGWINCH: ignored; 19-22: stop.
        0 | 17..=23 | 28 => None,
        signal => Some(128 + signal),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecScript {
    /// Finished as soon as started.
    Done {
        code: u32,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    SleepThenExit {
        after: Duration,
    },
    UntilKilled,
    /// Copies its stdin to its stdout and exits 0 at stdin's end (at once without a client).
    Cat,
    /// Prints, exits 0 at once, and leaves a child holding its output open this long (None:
    /// until the exec is deleted or its task ends).
    Backgrounded {
        stdout: Vec<u8>,
        output_held: Option<Duration>,
    },
}

/// Each stream is cut at `output_limit_bytes`, as the shim's capped buffers do.
pub fn exec_script(args: &[String], output_limit_bytes: usize) -> ExecScript {
    let capped = |mut bytes: Vec<u8>| {
        bytes.truncate(output_limit_bytes);
        bytes
    };
    let line = |words: &[String]| capped(format!("{}\n", words.join(" ")).into_bytes());
    let word = |index: usize| args.get(index).map(String::as_str);
    match word(0) {
        Some("echo") => ExecScript::Done { code: 0, stdout: line(&args[1..]), stderr: Vec::new() },
        Some("stderr") => ExecScript::Done { code: 0, stdout: Vec::new(), stderr: line(&args[1..]) },
        Some("sh") if word(1) == Some("-c") && args.len() == 3 => {
            match args[2].strip_prefix("exit ").and_then(|code| code.trim().parse().ok()) {
                Some(code) => ExecScript::Done { code, stdout: Vec::new(), stderr: Vec::new() },
                None => not_found(&args[2], output_limit_bytes),
            }
        }
        Some("sleep") if word(1) == Some("inf") => ExecScript::UntilKilled,
        Some("cat") if args.len() == 1 => ExecScript::Cat,
        Some("background") if word(1) == Some("inf") || millis(args.get(1)).is_some() => {
            ExecScript::Backgrounded { stdout: line(&args[2..]), output_held: millis(args.get(1)) }
        }
        Some("sleep") if millis(args.get(1)).is_some() => {
            ExecScript::SleepThenExit { after: millis(args.get(1)).expect("checked by the guard") }
        }
        Some("yes") if word(1).and_then(|n| n.parse::<usize>().ok()).is_some() => {
            let wanted: usize = args[1].parse().expect("checked by the guard");
            ExecScript::Done { code: 0, stdout: vec![b'y'; wanted.min(output_limit_bytes)], stderr: Vec::new() }
        }
        Some(command) => not_found(command, output_limit_bytes),
        None => not_found("", output_limit_bytes),
    }
}

fn not_found(command: &str, output_limit_bytes: usize) -> ExecScript {
    let mut stderr = format!("sh: {command}: not found\n").into_bytes();
    stderr.truncate(output_limit_bytes);
    ExecScript::Done { code: EXIT_NOT_FOUND, stdout: Vec::new(), stderr }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| word.to_string()).collect()
    }

    #[test]
    fn init_scripts() {
        let exit = init_behaviour(&argv(&["exit", "3", "250"]));
        assert_eq!(exit.script, InitScript::ExitAfter { code: 3, after: Duration::from_millis(250) });
        assert!(!exit.ignores_sigterm);
        assert_eq!(
            init_behaviour(&argv(&["oom", "10"])).script,
            InitScript::OomAfter { after: Duration::from_millis(10) }
        );
        let stubborn = init_behaviour(&argv(&["sleep", "inf", "ignore-sigterm"]));
        assert_eq!(stubborn, InitBehaviour { script: InitScript::UntilKilled, ignores_sigterm: true });
        assert_eq!(init_behaviour(&argv(&["exit", "x", "1"])).script, InitScript::UntilKilled);
        assert_eq!(init_behaviour(&[]).script, InitScript::UntilKilled);
    }

    #[test]
    fn signals() {
        assert_eq!(signal_exit_code(SIGKILL, true), Some(137));
        assert_eq!(signal_exit_code(SIGTERM, false), Some(143));
        assert_eq!(signal_exit_code(SIGTERM, true), None);
        assert_eq!(signal_exit_code(2, false), Some(130));
        assert_eq!(signal_exit_code(28, false), None);
    }

    #[test]
    fn exec_scripts() {
        assert_eq!(
            exec_script(&argv(&["echo", "hello", "world"]), 100),
            ExecScript::Done { code: 0, stdout: b"hello world\n".to_vec(), stderr: Vec::new() }
        );
        assert_eq!(
            exec_script(&argv(&["sh", "-c", "exit 4"]), 100),
            ExecScript::Done { code: 4, stdout: Vec::new(), stderr: Vec::new() }
        );
        assert_eq!(
            exec_script(&argv(&["sleep", "20"]), 100),
            ExecScript::SleepThenExit { after: Duration::from_millis(20) }
        );
        let ExecScript::Done { stdout, .. } = exec_script(&argv(&["yes", "5000"]), 1024) else { panic!() };
        assert_eq!(stdout.len(), 1024);
        let ExecScript::Done { code, stderr, .. } = exec_script(&argv(&["frobnicate"]), 1024) else { panic!() };
        assert_eq!(code, 127);
        assert!(String::from_utf8(stderr).unwrap().contains("not found"));
    }
}
