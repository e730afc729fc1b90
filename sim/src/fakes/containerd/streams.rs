//! Interactive streams: streaming execs (their script runs in the future of the first wait, so
//! the fake still spawns nothing; a `cat` echoes its client's stdin until its end), the task's
//! stdin that attached clients write into, its output (the fake init prints nothing, so an
//! attach lasts until the task exits) and terminal resizes.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crid::error::{Error, Result};
use crid::ports::Clock;
use crid::ports::containerd::*;

use super::FakeContainerd;
use super::tasks::TaskStdin;

impl FakeContainerd {
    /// Runs a streaming exec's script with its client's streams, once (the first wait).
    pub(super) async fn run_streaming_exec(&self, id: &str, exec_id: &str) {
        let streaming = self.state().exec_mut(id, exec_id).ok().and_then(|exec| {
            let streams = exec.streams.take()?;
            Some((streams, exec.output.clone(), exec.echoes_stdin, exec.process.exit_tx.subscribe()))
        });
        let Some((streams, output, echoes_stdin, mut exit_rx)) = streaming else { return };
        let ProcessIo { stdin, mut stdout, mut stderr } = streams;
        let work = async move {
            if let Some(writer) = stdout.as_mut() {
                let _ = writer.write_all(&output.stdout).await;
            }
            if let Some(writer) = stderr.as_mut() {
                let _ = writer.write_all(&output.stderr).await;
            }
            if echoes_stdin {
                if let Some(mut reader) = stdin {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = reader.read(&mut buf).await
                        && n > 0
                    {
                        if let Some(writer) = stdout.as_mut()
                            && writer.write_all(&buf[..n]).await.is_err()
                        {
                            stdout = None;
                        }
                    }
                }
                let now_ns = self.clock.now_ns();
                if let Ok(exec) = self.state().exec_mut(id, exec_id) {
                    exec.process.finish(ExitStatus::new(0, now_ns));
                }
            }
            for writer in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
                let _ = writer.shutdown().await;
            }
        };
        // A killed `cat` stops at once; its client's streams are dropped with the work.
        let killed = async {
            while exit_rx.borrow_and_update().is_none() {
                if exit_rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            () = work => {}
            () = killed, if echoes_stdin => {}
        }
    }

    /// Blocks until the task's init process exited (or the task is gone), without taking part
    /// in the wait bookkeeping of `wait_task`.
    async fn wait_init_exit(&self, id: &str) {
        loop {
            let watched = {
                let mut state = self.state();
                state.tasks.get_mut(id).map(|task| {
                    let deadline = task.init.scripted.map(|s| s.at).filter(|_| task.state == TaskState::Running);
                    (task.init.exit_tx.subscribe(), task.changes.subscribe(), deadline)
                })
            };
            let Some((mut exit_rx, mut task_changes, deadline)) = watched else { return };
            if exit_rx.borrow_and_update().is_some() {
                return;
            }
            tokio::select! {
                biased;
                _ = exit_rx.changed() => {}
                _ = task_changes.changed() => {}
                () = async {
                    match deadline {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }

    pub(super) fn do_resize_pty(&self, id: &str, exec_id: &str, size: TerminalSize) -> Result<()> {
        let mut state = self.state();
        if exec_id.is_empty() {
            state.task_mut(id)?;
        } else {
            state.exec_mut(id, exec_id)?;
        }
        state.resizes.push((id.to_string(), exec_id.to_string(), size));
        Ok(())
    }

    pub(super) fn do_open_task_stdin(&self, id: &str) -> Result<ByteWriter> {
        let mut state = self.state();
        let task = state.task_mut(id)?;
        match task.stdin {
            // The fake init reads nothing: what the client sends is consumed.
            TaskStdin::Open if !task.exited() => Ok(Box::new(tokio::io::sink())),
            _ => Err(Error::precondition(format!("container {id} has no open stdin"))),
        }
    }

    pub(super) async fn do_attach_task_output(
        &self,
        id: &str,
        stdout: Option<ByteWriter>,
        stderr: Option<ByteWriter>,
    ) -> Result<()> {
        self.state().task_mut(id)?;
        self.wait_init_exit(id).await;
        for mut writer in [stdout, stderr].into_iter().flatten() {
            let _ = writer.shutdown().await;
        }
        Ok(())
    }

    pub(super) fn do_close_task_stdin(&self, id: &str) -> Result<()> {
        self.state().task_mut(id).map(|task| {
            if task.stdin == TaskStdin::Open {
                task.stdin = TaskStdin::Closed;
            }
        })
    }

    /// Terminal sizes asked for, in order: (container id, exec id or "", size).
    pub fn resizes(&self) -> Vec<(String, String, TerminalSize)> {
        self.raw_state().resizes.clone()
    }

    /// Terminal sizes exec processes started with, in order: (container id, exec id, size).
    pub fn console_sizes(&self) -> Vec<(String, String, TerminalSize)> {
        self.raw_state().console_sizes.clone()
    }

    /// The stdin of a task, if it exists.
    pub fn task_stdin(&self, id: &str) -> Option<TaskStdin> {
        self.raw_state().tasks.get(id).map(|task| task.stdin)
    }
}
