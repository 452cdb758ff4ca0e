//! An in-process SSH server on 127.0.0.1 speaking the real protocol (russh's server), for
//! tests and benchmarks (feature `testing`): [`TestServer`].
//!
//! It accepts one user with one authorized key or a password, runs a few scripted commands
//! (each on its own task, so many run at once on one connection), serves SFTP from an
//! in-memory file system, counts what happens ([`TestServerStats`]), and can be stopped and
//! restarted on the same port with the same host key.
//!
//! | command | behaviour |
//! |---|---|
//! | `true` / `false` | exit 0 / exit 1 |
//! | `echo TEXT` | `TEXT\n` on stdout, exit 0 |
//! | `fail TEXT` | `TEXT\n` on stderr, exit 3 |
//! | `yes` | `y\n` forever, until the client closes the channel |
//! | `hang` | nothing, until the client closes the channel |
//! | `sleep MS` | exit 0 after MS milliseconds |
//! | `wait-for N` | exit 0 once N commands run at the same time (a barrier: proves parallelism) |
//! | anything else | `unknown command` on stderr, exit 127 |
//!
//! Like OpenSSH's `MaxSessions`, it can refuse channels beyond a number open on one
//! connection ([`TestServer::set_max_sessions`]; the refusals are counted in
//! [`TestServerStats::channels_refused`]).
//!
//! Its SFTP file system refuses every path under `/forbidden/` (permission denied), and can
//! be told to hide file sizes ([`TestServer::hide_sizes`]), as a server streaming a growing
//! or special file does.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    hash::{BuildHasher, RandomState},
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use russh::{
    Channel, ChannelId, ChannelMsg, Preferred,
    keys::{PrivateKey, PublicKey, ssh_key::LineEnding, ssh_key::private::Ed25519Keypair},
    server::{self, Auth, Msg, Server as _, Session, VerifiedPublicKey},
};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::HostProfile;

/// The user the test server accepts.
pub const TEST_USER: &str = "tester";
/// The password the test server accepts (when passwords are allowed).
pub const TEST_PASSWORD: &str = "correct horse battery staple";

/// A fresh ed25519 key (seeded from the process's random hasher state; for tests only).
pub fn random_ed25519() -> PrivateKey {
    let mut seed = [0u8; 32];
    for (i, chunk) in seed.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&RandomState::new().hash_one(i).to_le_bytes());
    }
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}

/// A fixed 2048-bit RSA key, for tests that need an RSA host (generating one takes seconds in
/// a debug build). Public: never use it outside tests.
pub fn rsa_test_key() -> PrivateKey {
    #[allow(clippy::expect_used)]
    PrivateKey::from_openssh(include_str!("testing_rsa_host_key"))
        .expect("the bundled RSA test key parses")
}

/// Writes `key` to `path` in OpenSSH format, readable by its owner only.
pub fn write_private_key(key: &PrivateKey, path: &Path) -> std::io::Result<()> {
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    std::fs::write(path, text.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// What the test server saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestServerStats {
    /// TCP connections accepted.
    pub connections: usize,
    /// Successful logins.
    pub logins: usize,
    /// Exec requests.
    pub execs: usize,
    /// Commands running now.
    pub running: usize,
    /// Most commands running at once.
    pub peak_running: usize,
    /// Commands that ended because the client closed their channel (`yes`, `hang`, or a
    /// `sleep` abandoned).
    pub closed_by_client: usize,
    /// SFTP sessions started.
    pub sftp_sessions: usize,
    /// File bytes sent in SFTP read answers.
    pub sftp_bytes_sent: usize,
    /// Channel opens refused because the connection had `max_sessions` open.
    pub channels_refused: usize,
    /// Most channels open at once on one connection.
    pub peak_channels: usize,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicUsize,
    logins: AtomicUsize,
    execs: AtomicUsize,
    running: AtomicUsize,
    peak_running: AtomicUsize,
    closed_by_client: AtomicUsize,
    sftp_sessions: AtomicUsize,
    sftp_bytes_sent: AtomicUsize,
    channels_refused: AtomicUsize,
    peak_channels: AtomicUsize,
    started: tokio::sync::Notify,
}

type Files = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

struct Shared {
    host_key: PrivateKey,
    preferred: Preferred,
    client_key: PrivateKey,
    accept_password: bool,
    hide_sizes: AtomicBool,
    /// Channels one connection may have open (`usize::MAX`: any number).
    max_sessions: AtomicUsize,
    counters: Counters,
    files: Files,
}

struct Running {
    handle: server::RunningServerHandle,
    task: JoinHandle<()>,
}

/// An SSH server on 127.0.0.1 (see the [module documentation](self)).
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: tokio::sync::Mutex<Option<Running>>,
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// Starts a server on a free port with a fresh host key and a fresh authorized client
    /// key; passwords ([`TEST_PASSWORD`]) are accepted too.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(random_ed25519(), random_ed25519()).await
    }

    /// Starts a server with this host key, accepting this client key.
    pub async fn start_with(host_key: PrivateKey, client_key: PrivateKey) -> std::io::Result<Self> {
        Self::start_with_algorithms(host_key, client_key, Preferred::default()).await
    }

    /// Starts a server that offers only the algorithms of `preferred` (host-key signatures,
    /// MACs, ciphers, key exchanges): an old or a misconfigured server, as a client sees it.
    pub async fn start_with_algorithms(
        host_key: PrivateKey,
        client_key: PrivateKey,
        preferred: Preferred,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = Self {
            addr,
            shared: Arc::new(Shared {
                host_key,
                preferred,
                client_key,
                accept_password: true,
                hide_sizes: AtomicBool::new(false),
                max_sessions: AtomicUsize::new(usize::MAX),
                counters: Counters::default(),
                files: Files::default(),
            }),
            running: tokio::sync::Mutex::new(None),
        };
        *server.running.lock().await = Some(server.serve(listener).await?);
        Ok(server)
    }

    async fn serve(&self, listener: TcpListener) -> std::io::Result<Running> {
        let config = Arc::new(server::Config {
            keys: vec![self.shared.host_key.clone()],
            preferred: self.shared.preferred.clone(),
            auth_rejection_time: Duration::ZERO,
            auth_rejection_time_initial: Some(Duration::ZERO),
            nodelay: true,
            ..server::Config::default()
        });
        let mut factory = Factory {
            shared: Arc::clone(&self.shared),
        };
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let running = factory.run_on_socket(config, &listener);
            let _ = handle_tx.send(running.handle());
            let _ = running.await;
        });
        let handle = handle_rx
            .await
            .map_err(|_| std::io::Error::other("the test server task ended before it started"))?;
        Ok(Running { handle, task })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The host's public key.
    pub fn host_key(&self) -> &PublicKey {
        self.shared.host_key.public_key()
    }

    /// The client key the server accepts.
    pub fn client_key(&self) -> &PrivateKey {
        &self.shared.client_key
    }

    /// The server's known_hosts line (`[127.0.0.1]:PORT ssh-ed25519 AAAA…`).
    pub fn known_hosts_line(&self) -> String {
        format!(
            "[127.0.0.1]:{} {}",
            self.port(),
            self.host_key().to_openssh().unwrap_or_default()
        )
    }

    /// A profile for this server logging in with the key file at `identity_file`.
    pub fn profile(&self, identity_file: &Path) -> HostProfile {
        HostProfile::new("127.0.0.1", self.port(), TEST_USER).with_identity_file(identity_file)
    }

    /// What the server saw so far.
    pub fn stats(&self) -> TestServerStats {
        let c = &self.shared.counters;
        TestServerStats {
            connections: c.connections.load(Ordering::SeqCst),
            logins: c.logins.load(Ordering::SeqCst),
            execs: c.execs.load(Ordering::SeqCst),
            running: c.running.load(Ordering::SeqCst),
            peak_running: c.peak_running.load(Ordering::SeqCst),
            closed_by_client: c.closed_by_client.load(Ordering::SeqCst),
            sftp_sessions: c.sftp_sessions.load(Ordering::SeqCst),
            sftp_bytes_sent: c.sftp_bytes_sent.load(Ordering::SeqCst),
            channels_refused: c.channels_refused.load(Ordering::SeqCst),
            peak_channels: c.peak_channels.load(Ordering::SeqCst),
        }
    }

    /// Refuses (administratively prohibited, as OpenSSH's `MaxSessions` does) a channel
    /// open on a connection that has `max` channels open. A channel counts from its open
    /// until its command ends (the server then closes it) or the client closes it; an SFTP
    /// session counts until the connection closes.
    pub fn set_max_sessions(&self, max: usize) {
        self.shared.max_sessions.store(max, Ordering::SeqCst);
    }

    /// Waits until at least `n` commands run at once (`running`), without polling.
    pub async fn wait_running(&self, n: usize) {
        let counters = &self.shared.counters;
        loop {
            let started = counters.started.notified();
            tokio::pin!(started);
            started.as_mut().enable();
            if counters.running.load(Ordering::SeqCst) >= n {
                return;
            }
            started.await;
        }
    }

    /// The SFTP file at `path`, if any.
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        lock(&self.shared.files).get(path).cloned()
    }

    /// Puts a file in the SFTP file system.
    pub fn put_file(&self, path: &str, data: impl Into<Vec<u8>>) {
        lock(&self.shared.files).insert(path.to_owned(), data.into());
    }

    /// With `true`, SFTP `stat`/`fstat` answers carry no size (reads still serve the bytes).
    pub fn hide_sizes(&self, hide: bool) {
        self.shared.hide_sizes.store(hide, Ordering::SeqCst);
    }

    /// Stops the server: every session is disconnected, no new connection is accepted.
    pub async fn stop(&self) {
        if let Some(running) = self.running.lock().await.take() {
            running.handle.shutdown("test server stopping".into());
            let _ = running.task.await;
        }
    }

    /// Stops the server if it runs, then starts it again on the same port with the same
    /// keys (a server restart, as a client sees it).
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        *self.running.lock().await = Some(self.serve(listener).await?);
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Factory {
    shared: Arc<Shared>,
}

impl server::Server for Factory {
    type Handler = Connection;

    fn new_client(&mut self, _peer: Option<SocketAddr>) -> Connection {
        self.shared
            .counters
            .connections
            .fetch_add(1, Ordering::SeqCst);
        Connection {
            shared: Arc::clone(&self.shared),
            channels: HashMap::new(),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }
}

struct Connection {
    shared: Arc<Shared>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Channels open on this connection (for `max_sessions`).
    open: Arc<AtomicUsize>,
}

impl server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if offer.public_key.key_data() == self.shared.client_key.public_key().key_data() {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if user == TEST_USER
            && key.public_key.key_data() == self.shared.client_key.public_key().key_data()
        {
            self.shared.counters.logins.fetch_add(1, Ordering::SeqCst);
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.shared.accept_password && user == TEST_USER && password == TEST_PASSWORD {
            self.shared.counters.logins.fetch_add(1, Ordering::SeqCst);
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let max = self.shared.max_sessions.load(Ordering::SeqCst);
        let counted = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < max).then_some(open + 1)
            });
        match counted {
            Ok(before) => {
                self.shared
                    .counters
                    .peak_channels
                    .fetch_max(before + 1, Ordering::SeqCst);
                self.channels.insert(channel.id(), channel);
                reply.accept().await;
            }
            Err(_) => {
                self.shared
                    .counters
                    .channels_refused
                    .fetch_add(1, Ordering::SeqCst);
                reply
                    .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
            }
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A channel closed before any request (its command never started).
        if self.channels.remove(&id).is_some() {
            self.open.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(channel) = self.channels.remove(&id) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        session.channel_success(id)?;
        let command = String::from_utf8_lossy(data).into_owned();
        let shared = Arc::clone(&self.shared);
        let counters = &shared.counters;
        counters.execs.fetch_add(1, Ordering::SeqCst);
        let now = counters.running.fetch_add(1, Ordering::SeqCst) + 1;
        counters.peak_running.fetch_max(now, Ordering::SeqCst);
        counters.started.notify_waiters();
        let open = Arc::clone(&self.open);
        tokio::spawn(async move {
            run_command(&shared, channel, &command, &open).await;
            shared.counters.running.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match (name, self.channels.remove(&id)) {
            ("sftp", Some(channel)) => {
                session.channel_success(id)?;
                self.shared
                    .counters
                    .sftp_sessions
                    .fetch_add(1, Ordering::SeqCst);
                let sftp = MemorySftp {
                    shared: Arc::clone(&self.shared),
                    files: Arc::clone(&self.shared.files),
                    handles: HashMap::new(),
                    next: 0,
                };
                russh_sftp::server::run(channel.into_stream(), sftp).await;
            }
            _ => session.channel_failure(id)?,
        }
        Ok(())
    }
}

/// Runs `command` on `channel`; its slot in `open` is given back before the channel is
/// closed, so a client that saw the close may open another at once.
async fn run_command(shared: &Shared, channel: Channel<Msg>, command: &str, open: &AtomicUsize) {
    let (mut read, write) = channel.split();
    let (verb, rest) = command.split_once(' ').unwrap_or((command, ""));
    // Resolves when the client closes the channel (or the connection goes).
    let closed = async {
        loop {
            match read.wait().await {
                Some(ChannelMsg::Close) | None => return,
                _ => {}
            }
        }
    };
    let status = async {
        match verb {
            "true" => Some(0),
            "false" => Some(1),
            "echo" => {
                let _ = write.data_bytes(format!("{rest}\n")).await;
                Some(0)
            }
            "fail" => {
                let _ = write.extended_data_bytes(1, format!("{rest}\n")).await;
                Some(3)
            }
            "sleep" => {
                tokio::time::sleep(Duration::from_millis(rest.parse().unwrap_or(0))).await;
                Some(0)
            }
            "yes" => loop {
                if write
                    .data_bytes(&b"y\ny\ny\ny\ny\ny\ny\ny\n"[..])
                    .await
                    .is_err()
                {
                    return None;
                }
            },
            "hang" => std::future::pending().await,
            "wait-for" => {
                let n: usize = rest.parse().unwrap_or(1);
                loop {
                    let started = shared.counters.started.notified();
                    tokio::pin!(started);
                    started.as_mut().enable();
                    if shared.counters.peak_running.load(Ordering::SeqCst) >= n {
                        break Some(0);
                    }
                    started.await;
                }
            }
            _ => {
                let _ = write
                    .extended_data_bytes(1, format!("{verb}: unknown command\n"))
                    .await;
                Some(127)
            }
        }
    };
    tokio::select! {
        status = status => {
            if let Some(status) = status {
                let _ = write.exit_status(status).await;
            }
            let _ = write.eof().await;
            open.fetch_sub(1, Ordering::SeqCst);
            let _ = write.close().await;
        }
        () = closed => {
            shared.counters.closed_by_client.fetch_add(1, Ordering::SeqCst);
            open.fetch_sub(1, Ordering::SeqCst);
            let _ = write.close().await;
        }
    }
}

/// An SFTP server over an in-memory map of path → contents (directories are implied by
/// paths).
struct MemorySftp {
    shared: Arc<Shared>,
    files: Files,
    handles: HashMap<String, OpenHandle>,
    next: u64,
}

enum OpenHandle {
    File(String),
    Dir { path: String, done: bool },
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

fn file_attrs(size: u64) -> FileAttributes {
    FileAttributes {
        size: Some(size),
        permissions: Some(0o100_644),
        mtime: Some(1_700_000_000),
        ..FileAttributes::default()
    }
}

fn dir_attrs() -> FileAttributes {
    FileAttributes {
        permissions: Some(0o040_755),
        ..FileAttributes::default()
    }
}

impl MemorySftp {
    fn handle(&mut self, open: OpenHandle) -> String {
        self.next += 1;
        let handle = format!("h{}", self.next);
        self.handles.insert(handle.clone(), open);
        handle
    }

    fn is_dir(&self, path: &str) -> bool {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        path == "/" || lock(&self.files).keys().any(|k| k.starts_with(&prefix))
    }

    fn attrs(&self, path: &str) -> Result<FileAttributes, StatusCode> {
        if let Some(data) = lock(&self.files).get(path) {
            let mut attrs = file_attrs(data.len() as u64);
            if self.shared.hide_sizes.load(Ordering::SeqCst) {
                attrs.size = None;
            }
            return Ok(attrs);
        }
        if self.is_dir(path) {
            return Ok(dir_attrs());
        }
        Err(StatusCode::NoSuchFile)
    }
}

impl russh_sftp::server::Handler for MemorySftp {
    type Error = StatusCode;

    fn unimplemented(&self) -> StatusCode {
        StatusCode::OpUnsupported
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, StatusCode> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, StatusCode> {
        if filename.starts_with("/forbidden/") {
            return Err(StatusCode::PermissionDenied);
        }
        {
            let mut files = lock(&self.files);
            let exists = files.contains_key(&filename);
            if !exists && !pflags.contains(OpenFlags::CREATE) {
                return Err(StatusCode::NoSuchFile);
            }
            if !exists || pflags.contains(OpenFlags::TRUNCATE) {
                files.insert(filename.clone(), Vec::new());
            }
        }
        let handle = self.handle(OpenHandle::File(filename));
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, StatusCode> {
        self.handles.remove(&handle);
        Ok(ok(id))
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, StatusCode> {
        let Some(OpenHandle::File(path)) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        let files = lock(&self.files);
        let data = files.get(path).ok_or(StatusCode::NoSuchFile)?;
        let start = usize::try_from(offset).map_err(|_| StatusCode::Eof)?;
        if start >= data.len() {
            return Err(StatusCode::Eof);
        }
        let end = data.len().min(start + len as usize);
        self.shared
            .counters
            .sftp_bytes_sent
            .fetch_add(end - start, Ordering::SeqCst);
        Ok(Data {
            id,
            data: data[start..end].to_vec(),
        })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, StatusCode> {
        let Some(OpenHandle::File(path)) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        let mut files = lock(&self.files);
        let file = files.entry(path.clone()).or_default();
        let start = offset as usize;
        if file.len() < start + data.len() {
            file.resize(start + data.len(), 0);
        }
        file[start..start + data.len()].copy_from_slice(&data);
        Ok(ok(id))
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, StatusCode> {
        Ok(Attrs {
            id,
            attrs: self.attrs(&path)?,
        })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, StatusCode> {
        self.stat(id, path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, StatusCode> {
        let path = match self.handles.get(&handle) {
            Some(OpenHandle::File(path)) | Some(OpenHandle::Dir { path, .. }) => path.clone(),
            None => return Err(StatusCode::Failure),
        };
        self.stat(id, path).await
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, StatusCode> {
        if !self.is_dir(&path) {
            return Err(StatusCode::NoSuchFile);
        }
        let handle = self.handle(OpenHandle::Dir { path, done: false });
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, StatusCode> {
        let Some(OpenHandle::Dir { path, done }) = self.handles.get_mut(&handle) else {
            return Err(StatusCode::Failure);
        };
        if *done {
            return Err(StatusCode::Eof);
        }
        *done = true;
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let mut names: BTreeMap<String, FileAttributes> = BTreeMap::new();
        for (file, data) in lock(&self.files).iter() {
            if let Some(rest) = file.strip_prefix(&prefix) {
                match rest.split_once('/') {
                    Some((dir, _)) => names.insert(dir.to_owned(), dir_attrs()),
                    None => names.insert(rest.to_owned(), file_attrs(data.len() as u64)),
                };
            }
        }
        Ok(Name {
            id,
            files: names
                .into_iter()
                .map(|(name, attrs)| File::new(name, attrs))
                .collect(),
        })
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, StatusCode> {
        Ok(Name {
            id,
            files: vec![File::dummy(path)],
        })
    }
}
