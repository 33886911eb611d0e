//! The SSH transport (russh): one authenticated connection per host, one session channel per
//! command, at most [`MAX_CHANNELS`] channels in flight.
//!
//! Host keys are checked strictly against the target's own `known_hosts` file. An unknown key is
//! learned only with `accept_new_host_keys`. A changed key is always refused.

use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, DisconnectReason, Handle, Msg};
use russh::keys::agent::client::AgentClient;
use russh::keys::{self, Algorithm, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{
    Channel, ChannelMsg, ChannelOpenFailure, ChannelReadHalf, ChannelWriteHalf, Disconnect, Sig,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{HostError, Invocation, Output};

/// Channels in flight per connection. OpenSSH refuses the 11th concurrent session channel
/// (`MaxSessions 10` by default); stay below that with some room.
pub(crate) const MAX_CHANNELS: usize = 8;

/// Keepalives without an answer before the connection counts as lost.
const KEEPALIVE_MAX: usize = 3;

/// How long a timed-out command gets to end after SIGTERM before we give its slot up.
const ABANDON_GRACE: Duration = Duration::from_secs(2);

/// Where and how to reach a host over SSH.
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Private key file; tried after the agent (`SSH_AUTH_SOCK`) when `use_agent` is set.
    pub key_file: Option<PathBuf>,
    pub use_agent: bool,
    /// Strict host-key checking against this file (OpenSSH format).
    pub known_hosts: PathBuf,
    /// Learn unknown host keys (like OpenSSH's `StrictHostKeyChecking=accept-new`); a changed
    /// key is refused all the same.
    pub accept_new_host_keys: bool,
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
}

impl SshTarget {
    /// A host reached with one key file (no agent) and strict host-key checking against
    /// `known_hosts`, as the sandbox's and the tests' hosts are: 10 s to connect, a keepalive
    /// every 15 s.
    pub fn with_key_file(
        address: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        key_file: PathBuf,
        known_hosts: PathBuf,
    ) -> SshTarget {
        SshTarget {
            address: address.into(),
            port,
            user: user.into(),
            key_file: Some(key_file),
            use_agent: false,
            known_hosts,
            accept_new_host_keys: false,
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
        }
    }

    /// `address:port` as people write it (`[v6]:port` for IPv6 literals).
    fn display_address(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

/// What `check_server_key` decided, carried out of the handler so that `connect` can report it
/// precisely (russh turns a refusal into a generic "unknown key" error).
#[derive(Debug, Clone)]
enum HostKeyVerdict {
    Known,
    Learned,
    Unknown,
    /// `line` is the physical line of the recorded key (1-based).
    Changed {
        line: usize,
    },
    Failed(String),
}

/// The connection's socket, acknowledging every read at once. sshd sets no `TCP_NODELAY` on
/// non-interactive sessions, so after two small packets in a row (the authentication answer
/// and its host-key notice) it holds the next one, the channel confirmation, until the client
/// acknowledges, and Linux delays that ACK by up to 40 ms: every connection's first command
/// waited that long. Linux may reset `TCP_QUICKACK` after any read, so it is set after each.
struct QuickAck(tokio::net::TcpStream);

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if polled.is_ready() {
            quick_ack(&self.0);
        }
        polled
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn quick_ack(socket: &tokio::net::TcpStream) {
    let _ = socket.set_quickack(true);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn quick_ack(_socket: &tokio::net::TcpStream) {}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// State the session task shares with the transport.
#[derive(Default)]
struct Shared {
    verdict: Mutex<Option<HostKeyVerdict>>,
    disconnect_reason: Mutex<Option<String>>,
}

impl Shared {
    fn verdict(&self) -> Option<HostKeyVerdict> {
        self.verdict
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_verdict(&self, verdict: HostKeyVerdict) {
        *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
    }

    fn disconnect_reason(&self) -> Option<String> {
        self.disconnect_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_disconnect_reason(&self, reason: String) {
        let mut slot = self
            .disconnect_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Keep the first reason: later ones are consequences.
        if slot.is_none() {
            *slot = Some(reason);
        }
    }
}

struct ClientHandler {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    accept_new: bool,
    shared: Arc<Shared>,
}

impl ClientHandler {
    fn judge(&self, key: &keys::PublicKey) -> HostKeyVerdict {
        match keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => HostKeyVerdict::Known,
            Ok(false) if self.accept_new => {
                match learn_host_key(&self.host, self.port, key, &self.known_hosts) {
                    Ok(()) => HostKeyVerdict::Learned,
                    Err(e) => HostKeyVerdict::Failed(format!(
                        "cannot record the host key in {}: {e}",
                        self.known_hosts.display()
                    )),
                }
            }
            Ok(false) => HostKeyVerdict::Unknown,
            Err(keys::Error::KeyChanged { line }) => HostKeyVerdict::Changed {
                line: physical_line(&self.known_hosts, line),
            },
            Err(e) => HostKeyVerdict::Failed(format!(
                "cannot check the host key against {}: {e}",
                self.known_hosts.display()
            )),
        }
    }
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let verdict = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.judge(key),
            // We advertise no certificate algorithms, so a server should never send one.
            PublicKeyOrCertificate::Certificate(_) => HostKeyVerdict::Failed(
                "the server presented a host certificate, which is not supported".to_string(),
            ),
        };
        let accept = matches!(verdict, HostKeyVerdict::Known | HostKeyVerdict::Learned);
        self.shared.set_verdict(verdict);
        Ok(accept)
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        match reason {
            DisconnectReason::ReceivedDisconnect(info) => {
                let message = if info.message.is_empty() {
                    format!("the server disconnected ({:?})", info.reason_code)
                } else {
                    format!(
                        "the server disconnected ({:?}): {}",
                        info.reason_code, info.message
                    )
                };
                self.shared.set_disconnect_reason(message);
                Ok(())
            }
            DisconnectReason::Error(e) => {
                let message = match &e {
                    russh::Error::KeepaliveTimeout => {
                        format!("no answer to {KEEPALIVE_MAX} keepalives")
                    }
                    russh::Error::IO(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                        "the server closed the connection".to_string()
                    }
                    other => other.to_string(),
                };
                self.shared.set_disconnect_reason(message);
                Err(e)
            }
        }
    }
}

/// Append `key` for `host:port` to `path` (trust on first use), in the format
/// `check_known_hosts_path` reads, creating the file (mode 0600) and its directory (mode 0700)
/// when missing.
fn learn_host_key(host: &str, port: u16, key: &keys::PublicKey, path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let key = key.to_openssh().map_err(io::Error::other)?;
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let mut line = String::new();
    let length = file.seek(SeekFrom::End(0))?;
    if length > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.push('\n');
        }
    }
    line.push_str(&format!("{name} {key}\n"));
    // One write on an O_APPEND file: concurrent learners do not interleave their lines.
    file.write_all(line.as_bytes())?;
    file.sync_all()
}

/// russh numbers known_hosts lines without counting `#` comment lines; turn its number back into
/// the line a person sees in an editor.
fn physical_line(path: &Path, counted: usize) -> usize {
    let Ok(file) = std::fs::File::open(path) else {
        return counted;
    };
    let mut seen = 0;
    for (index, line) in BufReader::new(file).split(b'\n').enumerate() {
        let Ok(line) = line else { break };
        if line.first() == Some(&b'#') {
            continue;
        }
        seen += 1;
        if seen == counted {
            return index + 1;
        }
    }
    counted
}

/// The key algorithms already recorded for this host come first, as OpenSSH does: a server with
/// several host keys then shows the one we know instead of one we would take for "unknown".
fn host_key_preference(target: &SshTarget) -> Vec<Algorithm> {
    let defaults = russh::Preferred::DEFAULT.key.to_vec();
    let known: Vec<Algorithm> =
        keys::known_hosts::known_host_keys_path(&target.address, target.port, &target.known_hosts)
            .map(|keys| keys.into_iter().map(|(_, key)| key.algorithm()).collect())
            .unwrap_or_default();
    let is_known = |alg: &Algorithm| {
        known.iter().any(|k| match (k, alg) {
            (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
            (k, alg) => k == alg,
        })
    };
    let (mut first, rest): (Vec<Algorithm>, Vec<Algorithm>) =
        defaults.into_iter().partition(|alg| is_known(alg));
    first.extend(rest);
    first
}

pub(crate) struct SshTransport {
    name: String,
    address: String,
    handle: Handle<ClientHandler>,
    shared: Arc<Shared>,
    slots: Arc<Slots>,
}

impl fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SshTransport({} at {})", self.name, self.address)
    }
}

impl SshTransport {
    pub(crate) async fn connect(name: &str, target: &SshTarget) -> Result<Self, HostError> {
        let address = target.display_address();
        let shared = Arc::new(Shared::default());
        let limit = target.connect_timeout;
        let timed_out = || HostError::ConnectTimeout {
            host: name.to_string(),
            address: address.clone(),
            seconds: limit.as_secs_f64().ceil() as u64,
        };
        let deadline = tokio::time::Instant::now() + limit;

        // TCP first, so that "nothing listens there" and "no SSH answer" are told apart.
        let tcp = tokio::net::TcpStream::connect((target.address.as_str(), target.port));
        let socket = match tokio::time::timeout_at(deadline, tcp).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => {
                return Err(HostError::Connect {
                    host: name.to_string(),
                    address: address.clone(),
                    reason: e.to_string(),
                });
            }
            Ok(Ok(socket)) => socket,
        };
        // A failure here only costs latency.
        let _ = socket.set_nodelay(true);
        let socket = QuickAck(socket);

        let config = client::Config {
            keepalive_interval: Some(target.keepalive_interval).filter(|d| !d.is_zero()),
            keepalive_max: KEEPALIVE_MAX,
            inactivity_timeout: None,
            nodelay: true,
            preferred: russh::Preferred {
                key: host_key_preference(target).into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let handler = ClientHandler {
            host: target.address.clone(),
            port: target.port,
            known_hosts: target.known_hosts.clone(),
            accept_new: target.accept_new_host_keys,
            shared: Arc::clone(&shared),
        };
        let handshake = client::connect_stream(Arc::new(config), socket, handler);
        let handshake = tokio::time::timeout_at(deadline, handshake).await;
        // The verdict first: whatever russh made of a refused key, ours is the precise story.
        let verdict = shared.verdict();
        match verdict {
            Some(HostKeyVerdict::Changed { line }) => {
                return Err(HostError::HostKeyChanged {
                    host: name.to_string(),
                    address,
                    known_hosts: target.known_hosts.clone(),
                    line,
                });
            }
            Some(HostKeyVerdict::Unknown) => {
                return Err(HostError::HostKeyUnknown {
                    host: name.to_string(),
                    address,
                    known_hosts: target.known_hosts.clone(),
                });
            }
            Some(HostKeyVerdict::Failed(reason)) => {
                return Err(HostError::Other {
                    host: name.to_string(),
                    reason: format!("{address}: {reason}"),
                });
            }
            Some(HostKeyVerdict::Known | HostKeyVerdict::Learned) | None => {}
        }
        let mut handle = match handshake {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => {
                let reason = shared.disconnect_reason().unwrap_or_else(|| e.to_string());
                return Err(HostError::Connect {
                    host: name.to_string(),
                    address,
                    reason: format!("SSH handshake failed: {reason}"),
                });
            }
            Ok(Ok(handle)) => handle,
        };

        match tokio::time::timeout_at(deadline, authenticate(&mut handle, target)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(reason)) => {
                let _ = handle
                    .disconnect(Disconnect::ByApplication, "authentication failed", "en")
                    .await;
                return Err(HostError::Auth {
                    host: name.to_string(),
                    user: target.user.clone(),
                    reason,
                });
            }
            Ok(Ok(())) => {}
        }

        Ok(SshTransport {
            name: name.to_string(),
            address,
            handle,
            shared,
            slots: Arc::new(Slots::new()),
        })
    }

    fn disconnected(&self, fallback: impl fmt::Display) -> HostError {
        HostError::Disconnected {
            host: self.name.clone(),
            reason: self
                .shared
                .disconnect_reason()
                .unwrap_or_else(|| fallback.to_string()),
        }
    }

    fn other(&self, reason: impl fmt::Display) -> HostError {
        HostError::Other {
            host: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    /// An error from russh while talking on the connection: lost connection or something else.
    fn channel_error(&self, what: &str, e: russh::Error) -> HostError {
        if self.handle.is_closed() || matches!(e, russh::Error::SendError) {
            self.disconnected(format!("{what}: {e}"))
        } else {
            self.other(format!("{what}: {e}"))
        }
    }

    /// Take a slot and open a session channel in it. A server that allows fewer sessions than
    /// [`MAX_CHANNELS`] (a lower `MaxSessions`) refuses the extra ones; we then give that slot up
    /// for good and wait for a running command to finish instead.
    async fn open_channel(&self) -> Result<(Channel<Msg>, OwnedSemaphorePermit), HostError> {
        loop {
            let permit = Arc::clone(&self.slots.semaphore)
                .acquire_owned()
                .await
                .map_err(|_| self.no_slots_left())?;
            if self.handle.is_closed() {
                return Err(self.disconnected("the connection is closed"));
            }
            match self.handle.channel_open_session().await {
                Ok(channel) => return Ok((channel, permit)),
                Err(russh::Error::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed))
                    if self.slots.others_in_flight() > 0 =>
                {
                    self.slots.retire(permit);
                }
                Err(e) => return Err(self.channel_error("cannot open a session channel", e)),
            }
        }
    }

    fn no_slots_left(&self) -> HostError {
        if self.handle.is_closed() {
            return self.disconnected("the connection is closed");
        }
        self.other(format!(
            "every SSH session of the connection to {} is held by a timed-out command that is \
             still running; reconnect to go on",
            self.address
        ))
    }

    pub(crate) async fn run(&self, invocation: Invocation) -> Result<Output, HostError> {
        let timed_out = |limit: Duration| HostError::Timeout {
            host: self.name.clone(),
            seconds: limit.as_secs_f64().ceil() as u64,
        };
        // The bound covers opening the channel too: a hung host never confirms it.
        let deadline = invocation
            .timeout
            .map(|limit| tokio::time::Instant::now() + limit);
        let (channel, permit) = match (deadline, invocation.timeout) {
            (Some(deadline), Some(limit)) => tokio::time::timeout_at(deadline, self.open_channel())
                .await
                .map_err(|_| timed_out(limit))??,
            _ => self.open_channel().await?,
        };
        let (reader, writer) = channel.split();
        // From here on the channel is closed on every path, even if our caller drops us.
        let mut slot = ChannelSlot {
            reader: Some(reader),
            writer: Some(writer),
            permit: Some(permit),
            slots: Arc::clone(&self.slots),
        };

        let Invocation {
            command_line,
            stdin,
            timeout,
        } = invocation;
        let finished = {
            let (Some(reader), Some(writer)) = (slot.reader.as_mut(), slot.writer.as_ref()) else {
                unreachable!("the slot was just filled");
            };
            let work = async {
                writer
                    .exec(true, command_line)
                    .await
                    .map_err(|e| self.channel_error("cannot start the command", e))?;
                // stdin is written while the output is read: a command may write before it has
                // read all its input, and an unread channel would stall the whole connection.
                let feed = async {
                    if let Some(data) = stdin {
                        // A command that exits without reading its stdin is not our error.
                        let _ = writer.data_bytes(data).await;
                    }
                    // Without stdin the command sees an empty one, as with the local transport.
                    let _ = writer.eof().await;
                };
                let read = read_output(reader);
                tokio::pin!(feed);
                tokio::pin!(read);
                let mut fed = false;
                let outcome = loop {
                    tokio::select! {
                        () = &mut feed, if !fed => fed = true,
                        outcome = &mut read => break outcome,
                    }
                };
                match outcome {
                    ReadOutcome::Closed(output) => Ok(output),
                    ReadOutcome::Refused => {
                        Err(self
                            .other("the server refused to run the command (exec request failed)"))
                    }
                    ReadOutcome::Lost => Err(self.disconnected("the connection ended mid-command")),
                }
            };
            match deadline {
                None => Some(work.await),
                Some(deadline) => tokio::time::timeout_at(deadline, work).await.ok(),
            }
        };
        match finished {
            Some(result) => {
                slot.finish().await;
                result
            }
            None => {
                slot.abandon();
                Err(timed_out(timeout.unwrap_or_default()))
            }
        }
    }

    pub(crate) async fn close(&self) {
        self.shared
            .set_disconnect_reason("the connection was closed by us".to_string());
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// The channel slots of one connection: a semaphore of [`MAX_CHANNELS`] permits, minus the
/// permits given up for good (see [`Slots::retire`]).
struct Slots {
    semaphore: Arc<Semaphore>,
    capacity: AtomicUsize,
}

impl Slots {
    fn new() -> Self {
        Slots {
            semaphore: Arc::new(Semaphore::new(MAX_CHANNELS)),
            capacity: AtomicUsize::new(MAX_CHANNELS),
        }
    }

    /// Give a slot up for good: the server holds it (a timed-out command still running) or does
    /// not have it (a lower `MaxSessions`). With none left, waiting commands fail.
    fn retire(&self, permit: OwnedSemaphorePermit) {
        permit.forget();
        if self.capacity.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.semaphore.close();
        }
    }

    /// Channels in flight besides the caller's own.
    fn others_in_flight(&self) -> usize {
        self.capacity
            .load(Ordering::Acquire)
            .saturating_sub(self.semaphore.available_permits())
            .saturating_sub(1)
    }
}

/// A channel and its slot. [`ChannelSlot::finish`] closes the channel and frees the slot;
/// [`ChannelSlot::abandon`] (a timeout, or dropped unfinished) hands both to a cleanup task.
struct ChannelSlot {
    reader: Option<ChannelReadHalf>,
    writer: Option<ChannelWriteHalf<Msg>>,
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<Slots>,
}

impl ChannelSlot {
    async fn finish(mut self) {
        if let Some(writer) = self.writer.take() {
            // A no-op when the server closed first (russh answered its close already).
            let _ = writer.close().await;
        }
        self.reader = None;
        self.permit = None;
    }

    fn abandon(&mut self) {
        let (Some(reader), Some(writer), Some(permit)) =
            (self.reader.take(), self.writer.take(), self.permit.take())
        else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(abandon_channel(
                reader,
                writer,
                permit,
                Arc::clone(&self.slots),
            ));
        }
        // Without a runtime the connection is going away too; the slot goes with it.
    }
}

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// Stop a command we no longer wait for, and close its channel. Dropping a russh channel sends
/// nothing, and even a closed channel keeps its OpenSSH session slot until the command exits.
///
/// We ask the server to send SIGTERM to the command's process group (OpenSSH does that for
/// non-root logins; for root logins it refuses) and read on for a short grace period. If the
/// server closes the channel, the slot is free again. Otherwise we close it ourselves and give
/// the slot up for good, since we cannot tell when the server frees it: fewer channels in flight
/// beat refused ones.
async fn abandon_channel(
    mut reader: ChannelReadHalf,
    writer: ChannelWriteHalf<Msg>,
    permit: OwnedSemaphorePermit,
    slots: Arc<Slots>,
) {
    let _ = writer.signal(Sig::TERM).await;
    let ended = tokio::time::timeout(ABANDON_GRACE, async {
        while let Some(message) = reader.wait().await {
            if matches!(message, ChannelMsg::Close) {
                return;
            }
        }
    })
    .await
    .is_ok();
    let _ = writer.close().await;
    if ended {
        drop(permit);
    } else {
        slots.retire(permit);
    }
}

enum ReadOutcome {
    /// The server closed the channel: the command is over and all its output is here.
    Closed(Output),
    /// The server said no to the exec request.
    Refused,
    /// The channel ended without a close: the connection is gone.
    Lost,
}

/// Read until the channel closes; `ExitStatus` may arrive before the last data.
async fn read_output(reader: &mut ChannelReadHalf) -> ReadOutcome {
    let mut output = Output::default();
    let mut exec_confirmed = false;
    while let Some(message) = reader.wait().await {
        match message {
            ChannelMsg::Data { data } => output.stdout.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } => output.stderr.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => output.status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                output.signal = Some(signal_label(&signal_name));
            }
            ChannelMsg::Success => exec_confirmed = true,
            ChannelMsg::Failure if !exec_confirmed => return ReadOutcome::Refused,
            ChannelMsg::Close => return ReadOutcome::Closed(output),
            _ => {}
        }
    }
    ReadOutcome::Lost
}

fn signal_label(signal: &Sig) -> String {
    let name = match signal {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name.as_str(),
    };
    format!("SIG{name}")
}

/// ssh-agent first (when enabled), then the key file. On failure, says what was tried.
async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    target: &SshTarget,
) -> Result<(), String> {
    let user = target.user.as_str();
    let mut tried: Vec<String> = Vec::new();

    if target.use_agent {
        if std::env::var_os("SSH_AUTH_SOCK").is_none() {
            tried.push("ssh-agent: SSH_AUTH_SOCK is not set".to_string());
        } else {
            match AgentClient::connect_env().await {
                Err(e) => tried.push(format!("ssh-agent: cannot connect: {e}")),
                Ok(mut agent) => {
                    if let Some(binding) = handle.agent_session_binding() {
                        // Only needed for destination-restricted keys; older agents say no.
                        let _ = agent.bind_session(binding, false).await;
                    }
                    match agent.request_identities().await {
                        Err(e) => tried.push(format!("ssh-agent: cannot list keys: {e}")),
                        Ok(identities) if identities.is_empty() => {
                            tried.push("ssh-agent: holds no keys".to_string());
                        }
                        Ok(identities) => {
                            let count = identities.len();
                            let mut last_error = None;
                            for identity in identities {
                                let key = identity.public_key().into_owned();
                                let hash = if key.algorithm().is_rsa() {
                                    handle
                                        .best_supported_rsa_hash()
                                        .await
                                        .ok()
                                        .flatten()
                                        .flatten()
                                } else {
                                    None
                                };
                                match handle
                                    .authenticate_publickey_with(user, key, hash, &mut agent)
                                    .await
                                {
                                    Ok(result) if result.success() => return Ok(()),
                                    Ok(_) => {}
                                    Err(e) => last_error = Some(e.to_string()),
                                }
                                if handle.is_closed() {
                                    break;
                                }
                            }
                            let mut note = format!("ssh-agent: {count} key(s) refused");
                            if let Some(e) = last_error {
                                note.push_str(&format!(" (last error: {e})"));
                            }
                            tried.push(note);
                        }
                    }
                }
            }
        }
    }

    if let Some(path) = &target.key_file {
        if handle.is_closed() {
            tried.push(format!(
                "key file {}: not tried, the server closed the connection",
                path.display()
            ));
        } else {
            match keys::load_secret_key(path, None) {
                Err(keys::Error::KeyIsEncrypted) => tried.push(format!(
                    "key file {}: it is encrypted; add it to ssh-agent instead",
                    path.display()
                )),
                Err(e) => tried.push(format!("key file {}: cannot load: {e}", path.display())),
                Ok(key) => {
                    let hash = if key.algorithm().is_rsa() {
                        handle
                            .best_supported_rsa_hash()
                            .await
                            .ok()
                            .flatten()
                            .flatten()
                    } else {
                        None
                    };
                    let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
                    match handle.authenticate_publickey(user, key).await {
                        Ok(result) if result.success() => return Ok(()),
                        Ok(_) => tried.push(format!(
                            "key file {}: refused by the server",
                            path.display()
                        )),
                        Err(e) => tried.push(format!("key file {}: {e}", path.display())),
                    }
                }
            }
        }
    }

    if tried.is_empty() {
        return Err("nothing to try: no key file given and ssh-agent is not enabled".to_string());
    }
    Err(format!("tried {}", tried.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::physical_line;

    #[test]
    fn changed_key_line_counts_comment_lines() {
        let dir = std::env::temp_dir().join(format!("provision-ssh-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("known_hosts");
        std::fs::write(&path, "# one\nhost a b\n# two\n\nother a b\n").unwrap();
        // russh counts non-comment lines: 1 = "host", 2 = "", 3 = "other".
        assert_eq!(physical_line(&path, 1), 2);
        assert_eq!(physical_line(&path, 3), 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
