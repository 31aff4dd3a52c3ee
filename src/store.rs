//! The call store: what lets calls survive a crash or a restart of xccd.
//!
//! One file per call under `<[state] dir>/calls/`, `<call id>.call`: a header line
//! `XCCCALL <version> <length> <crc32>` and a JSON body (ports, each leg's configuration with its
//! SRTP keys, latched addresses, SRTP progress checkpoints, the gRPC session's offer/answer state,
//! and an opaque signalling blob for the SIP layer). Files are written to `*.tmp`, fsynced, renamed
//! over the old one and the directory fsynced, so a crash leaves either the old or the new record,
//! never a mix. A file whose header, length, checksum or JSON is wrong is logged with its path,
//! renamed `*.corrupt-<unix time>` and skipped; the other calls still resume.
//!
//! Nothing here runs on the packet path. A writer thread ([`spawn_writer`]) wakes on every control
//! change ([`StoreHandle::poke`], sent by [`Persisting`] around the media plane) and at least every
//! [`SYNC_EVERY`], reads what the workers published lock-free ([`MediaControl::resume_points`]),
//! and rewrites a call's file only when its record changed: a control change, a new latch, or an
//! SRTP index crossing a checkpoint (every 2^14 packets, every ROC change). Calls that ended are
//! deleted at once.
//!
//! **SIP hook.** The B2BUA stores its dialog state per call with [`StoreHandle::set_signalling`]
//! (opaque bytes; `None` clears it) and gets it back after a restart from [`Resumed::signalling`],
//! after the call's media has been restored. It calls [`StoreHandle::poke`] after any change it
//! wants on disk at once.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use xcc_core::ids::{CallId, LegSide};
use xcc_core::media::{
    AllocatedCall, CallSnapshot, LegConfig, LegPorts, LegResume, MediaControl, PoolStatus,
    RelayedPorts, ResumePoint,
};
use xcc_grpc::media::MediaPlane;
use xcc_grpc::session::{SessionTable, StoredSession};

/// Format version written in every header; another version is set aside, not guessed at.
pub const VERSION: u32 = 1;
/// Magic word starting every call file.
const MAGIC: &str = "XCCCALL";
/// The writer looks for SRTP checkpoints, latches and ended calls at least this often (control
/// changes wake it at once). 250 ms rather than 100: a round reads every live call's published
/// state, 3.5 % of xccd's CPU at 750 calls every 100 ms (docs/load.md); a checkpoint or latch a
/// crash catches unwritten is no worse for 250 ms (a resumed sender estimates its index from the
/// checkpoint and the relayed sequence numbers, and an unlatched leg latches again).
pub const SYNC_EVERY: Duration = Duration::from_millis(250);
/// Largest call file read back (a call record is a few kilobytes).
const MAX_FILE: u64 = 1 << 20;

/// `[state]`: where the store lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// State directory (the unit's `StateDirectory=xcc`); calls are kept under `calls/`.
    pub dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/xcc"),
        }
    }
}

/// Why the store failed; logged, never fatal (xccd runs on, calls just would not survive).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A call file is not a valid record.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// One call as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredCall {
    /// Call id.
    pub call: CallId,
    /// Allocation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Ports per leg.
    pub ports: [LegPorts; 2],
    /// Per leg: configuration, latches, SRTP checkpoint.
    pub legs: [LegResume; 2],
    /// The gRPC session driving the call, if any.
    pub session: Option<StoredSession>,
    /// Opaque SIP dialog state (the B2BUA's), if any.
    #[serde(with = "blob", default)]
    pub signalling: Option<Vec<u8>>,
    /// The client leg's TURN allocations (`[turn]`), refreshed again after a restart.
    #[serde(default)]
    pub relay: Option<RelayedPorts>,
}

/// Base64 for the opaque blob.
mod blob {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

impl StoredCall {
    /// The media plane's part.
    pub fn resume_point(&self) -> ResumePoint {
        ResumePoint {
            call: self.call,
            created: UNIX_EPOCH + Duration::from_millis(self.created_unix_ms),
            ports: self.ports,
            legs: self.legs.clone(),
            relay: self.relay,
        }
    }
}

/// Encodes a record as a call file.
pub fn encode(call: &StoredCall) -> Vec<u8> {
    // Serializing plain data structures with string keys cannot fail.
    let body = serde_json::to_vec(call).unwrap_or_default();
    let mut out = format!(
        "{MAGIC} {VERSION} {} {:08x}\n",
        body.len(),
        crc32fast::hash(&body)
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Decodes a call file; the error says what is wrong (for the log line).
pub fn decode(bytes: &[u8]) -> Result<StoredCall, String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not text")?;
    let mut fields = header.split(' ');
    if fields.next() != Some(MAGIC) {
        return Err("not a call file (bad magic)".into());
    }
    let version: u32 = fields
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or("bad version field")?;
    if version != VERSION {
        return Err(format!("version {version}, this xccd reads {VERSION}"));
    }
    let len: usize = fields
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or("bad length field")?;
    let crc = fields
        .next()
        .and_then(|v| u32::from_str_radix(v, 16).ok())
        .ok_or("bad checksum field")?;
    let body = &bytes[nl + 1..];
    if body.len() != len {
        return Err(format!(
            "truncated or padded: {} body bytes, header says {len}",
            body.len()
        ));
    }
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("unreadable record: {e}"))
}

/// The open store: the `calls/` directory.
#[derive(Debug)]
pub struct Store {
    /// `<dir>/calls`.
    calls: PathBuf,
}

impl Store {
    /// Opens (creating, mode 0700) `<dir>/calls` and reads every stored call. Leftover `*.tmp`
    /// files (a write cut by a crash; the previous record is intact) are removed; corrupt files
    /// are logged and set aside as `*.corrupt-<unix time>`.
    pub fn open(dir: &Path) -> Result<(Store, Vec<StoredCall>), StoreError> {
        let calls = dir.join("calls");
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&calls)
            .map_err(io(&calls))?;
        let mut found = Vec::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&calls)
            .map_err(io(&calls))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        for path in names {
            match path.extension().and_then(|e| e.to_str()) {
                Some("tmp") => {
                    let _ = std::fs::remove_file(&path);
                }
                Some("call") => match read_call(&path) {
                    Ok(call) => found.push(call),
                    Err(reason) => set_aside(&path, &reason),
                },
                _ => {}
            }
        }
        let store = Store { calls };
        store.sync_dir();
        Ok((store, found))
    }

    fn path_of(&self, call: CallId) -> PathBuf {
        self.calls.join(format!("{}.call", call.0))
    }

    /// Writes a record durably: temp file, fsync, rename, directory fsync.
    pub fn write(&self, call: &StoredCall) -> Result<(), StoreError> {
        self.write_file(call)?;
        self.sync_dir();
        Ok(())
    }

    /// [`Store::write`] without the directory fsync: the rename is durable only after the next
    /// [`Store::sync_dir`], so a batch of writes shares one directory fsync. Returns the record's
    /// size.
    fn write_file(&self, call: &StoredCall) -> Result<usize, StoreError> {
        let path = self.path_of(call.call);
        let tmp = path.with_extension("tmp");
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source| StoreError::Io { path: p, source }
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            // SRTP keys are inside: owner only.
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let bytes = encode(call);
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(bytes.len())
    }

    /// Deletes a call's record (the call ended); a missing file is fine.
    pub fn remove(&self, call: CallId) -> Result<(), StoreError> {
        if self.unlink(call)? {
            self.sync_dir();
        }
        Ok(())
    }

    /// [`Store::remove`] without the directory fsync (see [`Store::write_file`]); true when a
    /// file was there.
    fn unlink(&self, call: CallId) -> Result<bool, StoreError> {
        let path = self.path_of(call);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Makes renames and unlinks durable.
    fn sync_dir(&self) {
        if let Err(e) = std::fs::File::open(&self.calls).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %self.calls.display(), error = %e, "fsync of the store directory failed");
        }
    }
}

fn read_call(path: &Path) -> Result<StoredCall, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_FILE), &mut bytes)
        .map_err(|e| e.to_string())?;
    decode(&bytes)
}

fn set_aside(path: &Path, reason: &str) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{secs}"));
    let aside = PathBuf::from(aside);
    match std::fs::rename(path, &aside) {
        Ok(()) => tracing::error!(
            path = %path.display(), moved_to = %aside.display(), reason,
            "corrupt call record set aside; that call cannot resume"
        ),
        Err(e) => tracing::error!(
            path = %path.display(), reason, error = %e,
            "corrupt call record could not be moved aside"
        ),
    }
}

/// What the writer thread is told.
#[derive(Debug)]
enum Msg {
    /// Something changed: sync now.
    Poke,
    /// The control plane released this call: delete its record now, never write it again; the
    /// sender (if any) is told once the deletion is durable.
    Released(CallId, Option<mpsc::SyncSender<()>>),
    /// The SIP layer's blob for a call.
    Signalling(CallId, Option<Vec<u8>>),
    /// Final sync (after a drain, when ended calls must be deleted), then stop.
    FinishAndStop,
    /// Stop without touching the files (a fast stop: calls resume on the next start).
    Stop,
}

/// How the control plane (gRPC sessions, SIP) tells the store about changes. Cheap to clone;
/// when xccd runs without a store, every call is a no-op.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: Option<mpsc::Sender<Msg>>,
}

impl StoreHandle {
    /// A handle and the receiver [`spawn_writer`] takes.
    pub fn channel() -> (StoreHandle, StoreInbox) {
        let (tx, rx) = mpsc::channel();
        (StoreHandle { tx: Some(tx) }, StoreInbox(rx))
    }

    /// A handle that stores nothing.
    pub fn disabled() -> StoreHandle {
        StoreHandle { tx: None }
    }

    fn send(&self, msg: Msg) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(msg);
        }
    }

    /// A call's control state changed: write it now.
    pub fn poke(&self) {
        self.send(Msg::Poke);
    }

    /// A call was released by signalling: its record is deleted before this returns (bounded by
    /// one second), so a crash right after a hang-up never resurrects the call.
    pub fn released(&self, call: CallId) {
        let (tx, rx) = mpsc::sync_channel(1);
        if let Some(sender) = &self.tx
            && sender.send(Msg::Released(call, Some(tx))).is_ok()
            && rx.recv_timeout(Duration::from_secs(1)).is_err()
        {
            tracing::warn!(%call, "call record deletion not confirmed within 1 s");
        }
    }

    /// SIP hook: the B2BUA's opaque dialog state for `call` (`None` clears it), stored with the
    /// call and handed back by [`Resumed::signalling`] after a restart.
    pub fn set_signalling(&self, call: CallId, blob: Option<Vec<u8>>) {
        self.send(Msg::Signalling(call, blob));
    }
}

/// The receiving end of a [`StoreHandle`].
#[derive(Debug)]
pub struct StoreInbox(mpsc::Receiver<Msg>);

/// What came back from the store at start-up.
#[derive(Debug, Default)]
pub struct Resumed {
    /// Calls forwarding again.
    pub calls: Vec<CallId>,
    /// Stored calls that could not resume (ports gone or busy, a bad session record): reported
    /// and deleted.
    pub dropped: Vec<CallId>,
    /// SIP dialog blobs of resumed calls, for the B2BUA.
    pub signalling: HashMap<CallId, Vec<u8>>,
}

/// Restores every stored call: media first (exact ports), then its gRPC session.
pub fn resume(
    store: &Store,
    stored: Vec<StoredCall>,
    media: &MediaControl,
    sessions: &SessionTable,
) -> Resumed {
    let mut out = Resumed::default();
    for rec in stored {
        let call = rec.call;
        let restored = media.restore(rec.resume_point()).map_err(|e| e.to_string());
        let restored = restored.and_then(|_| match rec.session.clone() {
            Some(s) => sessions.restore(s).map_err(|e| {
                let _ = media.release(call);
                e.to_string()
            }),
            None => Ok(()),
        });
        match restored {
            Ok(()) => {
                tracing::info!(%call, "stored call resumed");
                if let Some(blob) = rec.signalling {
                    out.signalling.insert(call, blob);
                }
                out.calls.push(call);
            }
            Err(reason) => {
                tracing::warn!(%call, %reason, "stored call cannot resume; dropped");
                if let Err(e) = store.remove(call) {
                    tracing::error!(error = %e, "cannot delete a dropped call's record");
                }
                out.dropped.push(call);
            }
        }
    }
    out
}

/// The writer thread: owns the store, woken by the handles.
pub struct Writer {
    store: Store,
    media: MediaControl,
    sessions: Arc<SessionTable>,
    /// Last record written per call (`None`: a file is on disk but what it holds is not known,
    /// e.g. resumed, or its last rewrite failed): a record is rewritten only when it changed.
    written: HashMap<CallId, Option<StoredCall>>,
    /// [`SessionTable::changes`] when the last round exported every session: while it has not
    /// moved, a round compares only what the media plane published and exports nothing.
    session_changes: u64,
    /// Released by signalling but maybe not yet gone from the media plane: never written again.
    released: HashSet<CallId>,
    /// SIP blobs.
    signalling: HashMap<CallId, Vec<u8>>,
    /// The media plane's resume generation of each call when its record was last found
    /// written (see [`MediaControl::resume_points_changed`]): such a call is not read again until
    /// its generation moves. A call is dropped from here when anything else in its record may
    /// have changed (its signalling blob, a failed write) and all are when the sessions moved.
    generations: HashMap<CallId, u64>,
}

/// Starts the writer; `resumed` are the calls [`resume`] restored (their blobs are kept).
pub fn spawn_writer(
    store: Store,
    inbox: StoreInbox,
    media: MediaControl,
    sessions: Arc<SessionTable>,
    resumed: &Resumed,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut w = Writer {
        store,
        media,
        sessions,
        // Resumed calls have a record on disk: known here, so a call that ends before its first
        // rewrite still has its record deleted (an unknown record is always rewritten).
        written: resumed.calls.iter().map(|&c| (c, None)).collect(),
        // Sessions are exported in the first round whatever the count says.
        session_changes: u64::MAX,
        released: HashSet::new(),
        signalling: resumed.signalling.clone(),
        generations: HashMap::new(),
    };
    std::thread::Builder::new()
        .name("xcc-store".into())
        .spawn(move || {
            // Record writes (an fsync each) wait for the media workers, never the reverse.
            xcc_core::priority::lower_current_thread();
            w.run(inbox.0)
        })
}

/// Releases taken from the inbox whose deletions are not yet durable: confirmed together after
/// one directory fsync.
#[derive(Default)]
struct Releasing {
    /// A file was unlinked: the directory needs an fsync.
    unlinked: bool,
    /// Who waits for the confirmation.
    waiting: Vec<mpsc::SyncSender<()>>,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        // Messages taken while a sync was writing (releases are handled there at once).
        let mut deferred: Vec<Msg> = Vec::new();
        loop {
            let first = if deferred.is_empty() {
                match rx.recv_timeout(SYNC_EVERY) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            } else {
                None
            };
            let batch: Vec<Msg> = std::mem::take(&mut deferred)
                .into_iter()
                .chain(first)
                .chain(rx.try_iter())
                .collect();
            let mut releasing = Releasing::default();
            for msg in batch {
                match msg {
                    Msg::Poke => {}
                    Msg::Released(call, done) => self.release(call, done, &mut releasing),
                    Msg::Signalling(call, Some(blob)) => {
                        self.signalling.insert(call, blob);
                        self.generations.remove(&call);
                    }
                    Msg::Signalling(call, None) => {
                        self.signalling.remove(&call);
                        self.generations.remove(&call);
                    }
                    Msg::FinishAndStop => {
                        self.confirm(releasing);
                        self.sync(&rx, &mut deferred);
                        return;
                    }
                    Msg::Stop => {
                        self.confirm(releasing);
                        return;
                    }
                }
            }
            self.confirm(releasing);
            self.sync(&rx, &mut deferred);
        }
    }

    /// A call released by signalling: never written again, its file unlinked now (durable at
    /// [`Writer::confirm`]).
    fn release(
        &mut self,
        call: CallId,
        done: Option<mpsc::SyncSender<()>>,
        releasing: &mut Releasing,
    ) {
        self.released.insert(call);
        self.signalling.remove(&call);
        self.written.remove(&call);
        self.generations.remove(&call);
        match self.store.unlink(call) {
            Ok(unlinked) => releasing.unlinked |= unlinked,
            Err(e) => tracing::error!(error = %e, "cannot delete a call record"),
        }
        releasing.waiting.extend(done);
    }

    /// Makes the batch's deletions durable (one directory fsync) and tells the waiters.
    fn confirm(&self, releasing: Releasing) {
        if releasing.unlinked {
            self.store.sync_dir();
        }
        for done in releasing.waiting {
            let _ = done.try_send(());
        }
    }

    /// Releases that arrived while the writer was busy are handled at once (their senders,
    /// e.g. the SIP task answering a BYE, wait for them); anything else waits for the next round.
    fn take_releases(&mut self, rx: &mpsc::Receiver<Msg>, deferred: &mut Vec<Msg>) {
        let mut releasing = Releasing::default();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Released(call, done) => self.release(call, done, &mut releasing),
                other => deferred.push(other),
            }
        }
        self.confirm(releasing);
    }

    /// Writes changed records, deletes those of calls that ended. The renames and unlinks share
    /// one directory fsync at the end; between two record writes, releases are served.
    ///
    /// A round costs nothing per unchanged call: only calls whose media-plane generation moved
    /// (configuration, latches, SRTP checkpoints) or whose signalling changed are read, their
    /// part of a record is compared with the last record written, and sessions are exported
    /// only when the session table changed since the last round (measured: encoding every record
    /// every round took 8 % of xccd's CPU at 750 calls, reading and comparing every call every
    /// round ~2 %, docs/load.md).
    fn sync(&mut self, rx: &mpsc::Receiver<Msg>, deferred: &mut Vec<Msg>) {
        // Read before exporting: a mutation after this read moves the count again, so the next
        // round exports it.
        let session_changes = self.sessions.changes();
        let sessions_moved = session_changes != self.session_changes;
        if sessions_moved {
            // A session's part of any record may have changed: every call is read this round.
            self.generations.clear();
        }
        let scan = self.media.resume_points_changed(&self.generations);
        let live: HashSet<CallId> = scan.live.iter().copied().collect();
        self.released.retain(|c| live.contains(c));
        self.generations.retain(|c, _| live.contains(c));
        let mut renamed = Vec::new();
        for (generation, p) in scan.changed {
            if self.released.contains(&p.call) {
                continue;
            }
            let legs = p.legs.map(|mut l| {
                l.srtp = l.srtp.checkpoint();
                l
            });
            let signalling = self.signalling.get(&p.call);
            let last = self.written.get(&p.call).and_then(Option::as_ref);
            if let Some(last) = last
                && !sessions_moved
                && last.legs == legs
                && last.ports == p.ports
                && last.relay == p.relay
                && last.signalling.as_ref() == signalling
            {
                self.generations.insert(p.call, generation);
                continue;
            }
            let rec = StoredCall {
                call: p.call,
                created_unix_ms: p
                    .created
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                ports: p.ports,
                legs,
                session: self.sessions.export(p.call),
                signalling: signalling.cloned(),
                relay: p.relay,
            };
            if last == Some(&rec) {
                self.generations.insert(p.call, generation);
                continue;
            }
            match self.store.write_file(&rec) {
                Ok(bytes) => {
                    tracing::debug!(call = %p.call, bytes, "call record written");
                    self.generations.insert(p.call, generation);
                    renamed.push(rec);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot write a call record");
                    // Whatever is on disk is no longer known to match: retried next round.
                    if let Some(entry) = self.written.get_mut(&p.call) {
                        *entry = None;
                    }
                    self.generations.remove(&p.call);
                }
            }
            self.take_releases(rx, deferred);
        }
        self.session_changes = session_changes;
        let gone: Vec<CallId> = self
            .written
            .keys()
            .filter(|c| !live.contains(c))
            .copied()
            .collect();
        let mut unlinked = false;
        for call in gone {
            self.written.remove(&call);
            self.signalling.remove(&call);
            match self.store.unlink(call) {
                Ok(u) => {
                    unlinked |= u;
                    tracing::debug!(%call, "call record deleted");
                }
                Err(e) => tracing::error!(error = %e, "cannot delete a call record"),
            }
        }
        if unlinked || !renamed.is_empty() {
            self.store.sync_dir();
        }
        for rec in renamed {
            // Released while its write was in flight: the file is already gone, keep it so.
            if !self.released.contains(&rec.call) {
                self.written.insert(rec.call, Some(rec));
            }
        }
    }
}

/// Opens the store under `config.dir`, resumes its calls and starts the writer. A store that
/// cannot be opened is logged and xccd runs without one (calls then would not survive a restart).
pub fn start(
    config: &StateConfig,
    inbox: StoreInbox,
    media: &MediaControl,
    sessions: &Arc<SessionTable>,
) -> (Resumed, Option<std::thread::JoinHandle<()>>) {
    let (store, stored) = match Store::open(&config.dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "call store unavailable: calls will not survive a restart");
            return (Resumed::default(), None);
        }
    };
    let found = stored.len();
    let resumed = resume(&store, stored, media, sessions);
    tracing::info!(
        dir = %config.dir.display(), found, resumed = resumed.calls.len(),
        dropped = resumed.dropped.len(), "call store opened"
    );
    match spawn_writer(store, inbox, media.clone(), sessions.clone(), &resumed) {
        Ok(t) => (resumed, Some(t)),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the call store writer");
            (resumed, None)
        }
    }
}

/// How the daemon stops the writer.
pub fn stop(handle: &StoreHandle, finish: bool) {
    handle.send(if finish {
        Msg::FinishAndStop
    } else {
        Msg::Stop
    });
}

/// The media plane as the gRPC sessions see it, telling the store about every change.
pub struct Persisting {
    /// The real media plane.
    pub inner: MediaControl,
    /// The store to poke.
    pub store: StoreHandle,
}

impl MediaPlane for Persisting {
    fn allocate(&self) -> xcc_core::Result<AllocatedCall> {
        let r = self.inner.allocate();
        self.store.poke();
        r
    }
    fn configure_leg(
        &self,
        call: CallId,
        side: LegSide,
        config: LegConfig,
    ) -> xcc_core::Result<()> {
        let r = self.inner.configure_leg(call, side, config);
        self.store.poke();
        r
    }
    fn release(&self, call: CallId) -> xcc_core::Result<()> {
        self.store.released(call);
        self.inner.release(call)
    }
    fn snapshot(&self, call: CallId) -> xcc_core::Result<CallSnapshot> {
        self.inner.snapshot(call)
    }
    fn calls(&self) -> Vec<CallSnapshot> {
        self.inner.calls()
    }
    fn pool_status(&self) -> PoolStatus {
        self.inner.pool_status()
    }
    fn workers(&self) -> usize {
        self.inner.workers()
    }
    fn retiring_ports(&self) -> usize {
        self.inner.retiring_ports()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> StoredCall {
        StoredCall {
            call: CallId(42),
            created_unix_ms: 1_700_000_000_000,
            ports: [
                LegPorts {
                    rtp: 30000,
                    rtcp: 30001,
                },
                LegPorts {
                    rtp: 30002,
                    rtcp: 30003,
                },
            ],
            legs: Default::default(),
            session: None,
            signalling: Some(b"dialog".to_vec()),
            relay: Some(RelayedPorts {
                rtp: "203.0.113.10:49200".parse().unwrap(),
                rtcp: "203.0.113.10:49202".parse().unwrap(),
                mapped: Some("198.51.100.1:30000".parse().unwrap()),
            }),
        }
    }

    #[test]
    fn a_record_round_trips_and_any_damage_is_named() {
        let bytes = encode(&record());
        assert_eq!(decode(&bytes).unwrap(), record());
        let e = decode(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let mut flipped = bytes.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x20;
        assert!(decode(&flipped).unwrap_err().contains("checksum"));
        let v2 = String::from_utf8(bytes.clone())
            .unwrap()
            .replacen("XCCCALL 1 ", "XCCCALL 2 ", 1);
        assert!(decode(v2.as_bytes()).unwrap_err().contains("version 2"));
        assert!(decode(b"").is_err());
        assert!(decode(b"garbage\n{}").unwrap_err().contains("magic"));
    }

    #[test]
    fn open_sets_corrupt_files_aside_and_keeps_good_ones() {
        let dir = std::env::temp_dir().join(format!("xcc-store-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, found) = Store::open(&dir).unwrap();
        assert!(found.is_empty());
        store.write(&record()).unwrap();
        let mut other = record();
        other.call = CallId(43);
        store.write(&other).unwrap();
        let bad = dir.join("calls/43.call");
        let bytes = std::fs::read(&bad).unwrap();
        std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
        std::fs::write(dir.join("calls/44.tmp"), b"half a write").unwrap();
        let (_, found) = Store::open(&dir).unwrap();
        assert_eq!(found, vec![record()]);
        let names: Vec<String> = std::fs::read_dir(dir.join("calls"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.iter().any(|n| n.starts_with("43.call.corrupt-")),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        store.remove(CallId(42)).unwrap();
        store.remove(CallId(42)).unwrap();
        let (_, found) = Store::open(&dir).unwrap();
        assert!(found.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A store over a real one-worker media engine on loopback ports `ports`, its writer
    /// running, as xccd wires them: sessions drive the media plane through `Persisting`.
    struct Rig {
        engine: xcc_core::media::MediaEngine,
        media: MediaControl,
        handle: StoreHandle,
        sessions: Arc<SessionTable>,
        resumed: Resumed,
        writer: std::thread::JoinHandle<()>,
    }

    /// Boots a [`Rig`] on `dir` (kept as it is: a second boot resumes what the first stored).
    fn boot(dir: &Path, ports: (u16, u16)) -> Rig {
        use xcc_core::media::{MediaConfig, MediaEngine};
        let (engine, _events) = MediaEngine::start(MediaConfig {
            bind_address: [127, 0, 0, 1].into(),
            port_min: ports.0,
            port_max: ports.1,
            workers: 1,
            ..MediaConfig::default()
        })
        .unwrap();
        let media = engine.control();
        let (handle, inbox) = StoreHandle::channel();
        let sessions = Arc::new(SessionTable::new(
            Arc::new(Persisting {
                inner: media.clone(),
                store: handle.clone(),
            }),
            xcc_grpc::session::Advertised {
                client: [127, 0, 0, 1].into(),
                pbx: [127, 0, 0, 1].into(),
            },
            Vec::new(),
        ));
        let state = StateConfig {
            dir: dir.to_owned(),
        };
        let (resumed, writer) = start(&state, inbox, &media, &sessions);
        Rig {
            engine,
            media,
            handle,
            sessions,
            resumed,
            writer: writer.unwrap(),
        }
    }

    /// Polls `ok` until it holds, failing with `what` after 5 s (a file on disk has no event
    /// to await).
    fn wait_until(what: &str, ok: &dyn Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !ok() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// An empty directory for one test's store.
    fn fresh_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xcc-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// The SIP hook end to end with a real media plane: a blob set for a call is written with it,
    /// comes back in `Resumed::signalling` after a restart (with the call forwarding again), and a
    /// finished drain deletes the record. Ports 22900-22915 (ops range).
    #[test]
    fn the_signalling_blob_survives_a_restart_with_its_call() {
        let dir = fresh_dir("sip");
        let ports = (22900, 22915);

        let Rig {
            engine,
            media,
            handle,
            resumed,
            writer,
            ..
        } = boot(&dir, ports);
        assert!(resumed.calls.is_empty());
        let call = media.allocate().unwrap().call;
        handle.set_signalling(call, Some(b"dialog state".to_vec()));
        handle.poke();
        let file = dir.join("calls").join(format!("{}.call", call.0));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while read_call(&file)
            .map(|r| r.signalling)
            .ok()
            .flatten()
            .as_deref()
            != Some(b"dialog state".as_slice())
        {
            assert!(std::time::Instant::now() < deadline, "blob not written");
            std::thread::sleep(Duration::from_millis(10));
        }
        // A crash-like stop: records kept.
        stop(&handle, false);
        writer.join().unwrap();
        engine.shutdown();

        let Rig {
            engine,
            media,
            handle,
            resumed,
            writer,
            ..
        } = boot(&dir, ports);
        assert_eq!(resumed.calls, vec![call]);
        assert_eq!(
            resumed.signalling.get(&call).map(Vec::as_slice),
            Some(b"dialog state".as_slice())
        );
        assert_eq!(media.calls().len(), 1, "the call runs again");
        // A drain's end: the engine ends the call and the final sync deletes its record.
        engine.shutdown();
        stop(&handle, true);
        writer.join().unwrap();
        assert!(!file.exists(), "record deleted after the call ended");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A release is durable when `Persisting::release` returns, while the writer is also
    /// rewriting other records (batched directory fsync), and the released call is never
    /// written again; the other call's rewrite still lands.
    #[test]
    fn a_release_deletes_the_record_before_returning_and_it_stays_deleted() {
        let dir = fresh_dir("rel");
        // Ports 21452-21459: the sipfix range, unused by the SIP burst e2e tests.
        let Rig {
            engine,
            media,
            handle,
            writer,
            ..
        } = boot(&dir, (21452, 21459));
        let persisting = Persisting {
            inner: media.clone(),
            store: handle.clone(),
        };
        let a = persisting.allocate().unwrap().call;
        let b = persisting.allocate().unwrap().call;
        let file = |c: CallId| dir.join("calls").join(format!("{}.call", c.0));
        wait_until("both records written", &|| {
            file(a).exists() && file(b).exists()
        });
        // A rewrite of `a` in flight while `b` is released.
        handle.set_signalling(a, Some(b"a's dialog".to_vec()));
        handle.set_signalling(b, Some(b"b's dialog".to_vec()));
        handle.poke();
        persisting.release(b).unwrap();
        assert!(!file(b).exists(), "deleted before release returned");
        let blob = |c: CallId| read_call(&file(c)).ok().and_then(|r| r.signalling);
        wait_until("a's rewrite landed", &|| {
            blob(a).as_deref() == Some(b"a's dialog".as_slice())
        });
        // Another sync after the release (it lands a's next rewrite): b stays deleted.
        handle.set_signalling(a, Some(b"a's second dialog".to_vec()));
        handle.poke();
        wait_until("a's second rewrite landed", &|| {
            blob(a).as_deref() == Some(b"a's second dialog".as_slice())
        });
        assert!(!file(b).exists(), "a released call is never written again");
        stop(&handle, false);
        writer.join().unwrap();
        engine.shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A change only the media plane knows of (a leg configured without the session table
    /// moving) reaches the disk through the call's resume generation: rounds skip calls whose
    /// generation they wrote, so without the bump the record would keep the old configuration.
    /// Ports 22924-22931.
    #[test]
    fn a_configuration_the_sessions_never_saw_is_written_by_its_generation() {
        let dir = fresh_dir("gen");
        let Rig {
            engine,
            media,
            handle,
            writer,
            ..
        } = boot(&dir, (22924, 22931));
        let call = media.allocate().unwrap().call;
        handle.poke();
        let file = dir.join("calls").join(format!("{}.call", call.0));
        let client_config = || read_call(&file).ok().map(|r| r.legs[0].config.clone());
        let wait_for_disk = |want: Option<Option<LegConfig>>| {
            wait_until("record never matched", &|| client_config() == want)
        };
        wait_for_disk(Some(None));
        let config = LegConfig {
            remote_rtp: Some("127.0.0.1:7000".parse().unwrap()),
            ..LegConfig::default()
        };
        media
            .configure_leg(call, LegSide::Client, config.clone())
            .unwrap();
        // No poke and no session change: only the timer round and the generation.
        wait_for_disk(Some(Some(config)));
        stop(&handle, false);
        writer.join().unwrap();
        engine.shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The writer exports sessions only when the session table changed: a session mutation that
    /// pokes nobody (an abandoned re-offer touches no media) still reaches the disk on a timer
    /// round, and the record then matches the table again. Ports 22916-22923 (ops range).
    #[test]
    fn a_session_change_without_a_poke_is_written_on_the_next_round() {
        let dir = fresh_dir("sess");
        let Rig {
            engine,
            handle,
            sessions,
            writer,
            ..
        } = boot(&dir, (22916, 22923));
        let sdp = |port: u16, proto: &str, extra: &str| {
            format!(
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{extra}"
            )
        };
        let client = |direction: &str| {
            sdp(
                5004,
                "RTP/SAVP",
                &format!(
                    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 \
                     inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\na={direction}\r\n"
                ),
            )
        };
        let (v, _) = sessions
            .create("k", LegSide::Client, &client("sendrecv"))
            .unwrap();
        sessions
            .answer(v.call, &sdp(6000, "RTP/AVP", "a=sendrecv\r\n"))
            .unwrap();
        sessions
            .update(v.call, LegSide::Client, &client("sendonly"))
            .unwrap();
        let file = dir.join("calls").join(format!("{}.call", v.call.0));
        let on_disk = || read_call(&file).ok().and_then(|r| r.session);
        let wait_for_disk = |want: &Option<StoredSession>| {
            wait_until("record never matched", &|| on_disk() == *want)
        };
        let pending = sessions.export(v.call);
        wait_for_disk(&pending);
        assert!(sessions.abandon_offer(v.call));
        let abandoned = sessions.export(v.call);
        assert_ne!(pending, abandoned, "abandoning changed the session");
        wait_for_disk(&abandoned);
        stop(&handle, false);
        writer.join().unwrap();
        engine.shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
