//! The simulator's stdout. `println!` panics when the reader has gone away, so
//! `crid-sim run --trace | head` used to end in "failed printing to stdout"; every line the
//! command line and the trace echo print goes through [`line`] instead, which ends the process
//! quietly (status 0) once the reader has closed the pipe.

use std::io::{self, Write};

/// What became of a line written to a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Ok,
    /// The reader closed the pipe (`| head`): nothing more will be read.
    Closed,
}

/// Writes `text` and a newline to `out` and flushes it. A broken pipe is [`Written::Closed`],
/// not an error; any other failure is.
pub fn write_line(out: &mut impl Write, text: &str) -> io::Result<Written> {
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(Written::Ok),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Written::Closed),
        Err(e) => Err(e),
    }
}

/// Prints a line on stdout. When stdout is a closed pipe the process ends here with status 0,
/// as a command does when `head` has read enough; when stdout fails otherwise (a full disk) it
/// ends with status 2 and says so on stderr.
pub fn line(text: &str) {
    match write_line(&mut io::stdout().lock(), text) {
        Ok(Written::Ok) => {}
        Ok(Written::Closed) => quit(0),
        Err(e) => {
            eprintln!("crid-sim: cannot write to stdout: {e}");
            quit(2)
        }
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "nobody reads the output any more; unwinding through a simulated run to return from main would only delay the end"
)]
fn quit(status: i32) -> ! {
    std::process::exit(status) // determinism-ok: ends the process once its output is gone; no run reads anything after.
}

/// `println!` through [`line`]: `outln!()`, `outln!("{x}")`.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::out::line("")
    };
    ($($arg:tt)*) => {
        $crate::out::line(&format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that fails every write with `kind`.
    struct Failing(io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(self.0))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(self.0))
        }
    }

    #[test]
    fn a_line_and_its_newline_reach_the_stream() {
        let mut out = Vec::new();
        assert_eq!(write_line(&mut out, "seed 1").unwrap(), Written::Ok);
        assert_eq!(write_line(&mut out, "").unwrap(), Written::Ok);
        assert_eq!(out, b"seed 1\n\n");
    }

    #[test]
    fn a_closed_reader_is_not_an_error() {
        assert_eq!(write_line(&mut Failing(io::ErrorKind::BrokenPipe), "x").unwrap(), Written::Closed);
    }

    #[test]
    fn other_write_failures_are_errors() {
        let err = write_line(&mut Failing(io::ErrorKind::StorageFull), "x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }
}
