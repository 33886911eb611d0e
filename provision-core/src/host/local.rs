//! The local transport: the machine `provision` runs on, through `/bin/sh`.

use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{HostError, Invocation, Output};

pub(crate) struct LocalTransport {
    name: String,
}

impl LocalTransport {
    pub(crate) fn new(name: &str) -> Self {
        LocalTransport {
            name: name.to_string(),
        }
    }

    pub(crate) fn is_root(&self) -> bool {
        // SAFETY-free: geteuid via the environment of std is not available, ask /proc instead.
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
            })
            .unwrap_or(false)
    }

    fn error(&self, reason: impl std::fmt::Display) -> HostError {
        HostError::Other {
            host: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    pub(crate) async fn run(&self, invocation: Invocation) -> Result<Output, HostError> {
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&invocation.command_line)
            .stdin(if invocation.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| self.error(format!("cannot start /bin/sh: {e}")))?;

        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let input = invocation.stdin;
        let work = async {
            let feed = async {
                if let (Some(mut pipe), Some(data)) = (stdin, input) {
                    // A command that does not read its stdin closes the pipe: not our error.
                    let _ = pipe.write_all(&data).await;
                    let _ = pipe.shutdown().await;
                }
            };
            let mut out = Vec::new();
            let mut err = Vec::new();
            let (_, out_res, err_res) = tokio::join!(
                feed,
                stdout.read_to_end(&mut out),
                stderr.read_to_end(&mut err)
            );
            out_res.and(err_res).map_err(|e| self.error(e))?;
            let status = child.wait().await.map_err(|e| self.error(e))?;
            Ok::<_, HostError>((status, out, err))
        };
        let (status, stdout, stderr) = match invocation.timeout {
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(done) => done?,
                Err(_) => {
                    return Err(HostError::Timeout {
                        host: self.name.clone(),
                        seconds: limit.as_secs(),
                    });
                }
            },
            None => work.await?,
        };
        use std::os::unix::process::ExitStatusExt;
        Ok(Output {
            status: status.code().map(|c| c as u32),
            signal: status.signal().map(|s| format!("SIG{s}")),
            stdout,
            stderr,
        })
    }
}
