//! TURN client (RFC 8656) over UDP, sans-IO: for sites where XCC itself sits behind a firewall
//! that lets no inbound media through, XCC allocates a relayed address on a configured TURN server
//! and advertises that (as a relay candidate) instead of its own.
//!
//! The client authenticates with long-term credentials (401 then MESSAGE-INTEGRITY keyed with
//! MD5(username:realm:password), 438 handled by taking the new nonce), refreshes the allocation
//! before its lifetime ends, installs and refreshes permissions for peers, and wraps and unwraps
//! media as Send/Data indications without allocating. Control operations run one at a time (they
//! are rare); media passes straight through [`TurnClient::handle_datagram`] and
//! [`TurnClient::wrap_send`].
//!
//! Peers bound to a channel ([`TurnClient::bind_channel`]) exchange media as ChannelData (a 4-byte
//! header instead of a 36-byte indication). Over TCP ([`TurnTransport::Tcp`], for firewalls that
//! let only TCP out) requests are sent once and the driver feeds the byte stream through
//! [`TcpFramer`], which cuts it into the messages [`TurnClient::handle_datagram`] takes. Not done:
//! TLS.

use md5::Digest;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::stun::{self, Message, StunError, TransactionId, Writer, attr};
use super::transaction::{Retransmission, Transaction, TxStep};

/// Allocate request / success / error.
const ALLOCATE: u16 = 0x0003;
/// Refresh request.
const REFRESH: u16 = 0x0004;
/// CreatePermission request.
const CREATE_PERMISSION: u16 = 0x0008;
/// ChannelBind request.
const CHANNEL_BIND: u16 = 0x0009;
/// CHANNEL-NUMBER attribute.
const ATTR_CHANNEL_NUMBER: u16 = 0x000C;
/// First channel number (RFC 8656 §12: 0x4000-0x4FFF).
const FIRST_CHANNEL: u16 = 0x4000;
/// Channels last 10 minutes; refreshed a minute early.
const CHANNEL_REFRESH: Duration = Duration::from_secs(540);
/// Send indication (client to server).
const SEND_INDICATION: u16 = 0x0016;
/// Data indication (server to client).
const DATA_INDICATION: u16 = 0x0017;
/// Success class bit pattern added to a request type.
const SUCCESS: u16 = 0x0100;
/// Error class bit pattern added to a request type.
const ERROR: u16 = 0x0110;

/// After releasing a stale allocation (437), the next Allocate waits this long: coturn answers
/// the release at once but deletes the allocation on its next one-second timer, so an Allocate
/// 200 ms later still met the old one; 1 s passed 3/3 against coturn 4.6.1, 1.5 s leaves margin
/// (`media_turn::a_client_on_a_5_tuple_with_a_stale_allocation_releases_it_and_allocates`).
const STALE_RELEASE_WAIT: Duration = Duration::from_millis(1500);
/// Permissions last 300 s (RFC 8656 §9); refreshed a minute early.
const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// Peers with permissions at most; more are refused so a caller bug cannot grow the table.
pub const MAX_PERMISSIONS: usize = 64;
/// Longest realm or nonce kept (RFC 8489: fewer than 128 characters, up to 763 bytes).
const MAX_REALM_NONCE: usize = 763;
/// Size of the request buffer: header, credentials, a few attributes.
const REQUEST_CAPACITY: usize = 2048;
/// Extra bytes a Send indication adds to the payload: header, XOR-PEER-ADDRESS (IPv6), DATA
/// header and padding.
pub const SEND_OVERHEAD: usize = 20 + 24 + 4 + 3;

/// Where and how to allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// The TURN server.
    pub server: SocketAddr,
    /// How XCC reaches it.
    pub transport: TurnTransport,
    /// Long-term credential username.
    pub username: String,
    /// Long-term credential password.
    pub password: String,
    /// Requested allocation lifetime (the server may shorten it).
    pub lifetime: Duration,
    /// Retransmissions of each request over UDP; over TCP a request is sent once and fails after
    /// this schedule's total time.
    pub retransmission: Retransmission,
}

/// Transport between XCC and the TURN server (the relay towards peers is always UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TurnTransport {
    /// Datagrams; requests are retransmitted.
    #[default]
    Udp,
    /// One TCP connection (RFC 8656 §3.1); the driver connects it and frames the stream with
    /// [`TcpFramer`]. No retransmissions; ChannelData is padded to 4 bytes.
    Tcp,
}

/// A control operation of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnOperation {
    /// Creating the allocation.
    Allocate,
    /// Extending it.
    Refresh,
    /// Letting a peer's packets through.
    CreatePermission(IpAddr),
    /// Releasing it (Refresh with lifetime 0).
    Deallocate,
    /// Binding a channel number to a peer.
    ChannelBind(SocketAddr, u16),
}

/// What the client reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEvent {
    /// The allocation exists: advertise `relayed` as a relay candidate.
    Allocated {
        /// The relayed transport address on the server.
        relayed: SocketAddr,
        /// XCC's own public address as the server saw it.
        mapped: Option<SocketAddr>,
        /// Granted lifetime.
        lifetime: Duration,
    },
    /// A peer's packets are now relayed to XCC.
    PermissionGranted {
        /// The peer's IP.
        peer: IpAddr,
    },
    /// Media with this peer now travels as ChannelData.
    ChannelBound {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        number: u16,
    },
    /// An operation failed (timeout, or an error response after authentication).
    Failed {
        /// Which.
        operation: TurnOperation,
        /// The STUN error code; `None` on timeout.
        code: Option<u16>,
    },
}

/// What a datagram from the server was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnInput<'a> {
    /// Media from `peer`, relayed; `payload` borrows the datagram.
    Data {
        /// The peer that sent it to the relayed address.
        peer: SocketAddr,
        /// The peer's datagram.
        payload: &'a [u8],
    },
    /// A response the client consumed.
    Consumed,
    /// Not from the server, or not for this client.
    Ignored,
}

/// The allocation's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No allocation yet (or being made).
    Idle,
    /// Allocated until `expires`.
    Allocated {
        /// Relayed address.
        relayed: SocketAddr,
    },
    /// Allocation failed or was released; nothing more happens.
    Closed,
}

/// The request in flight.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// Which operation.
    op: TurnOperation,
    /// Its transaction.
    tx: Transaction,
    /// Whether this attempt carried credentials.
    authenticated: bool,
    /// Authentication retries so far (401 with a new realm, 438).
    retries: u8,
}

/// A TURN client for one allocation; driven by the control plane on the socket that the media
/// worker will then use (the allocation is tied to that socket's 5-tuple).
#[derive(Debug)]
pub struct TurnClient {
    /// Settings.
    config: TurnConfig,
    /// Allocation state.
    state: State,
    /// REALM from the server.
    realm: Option<Vec<u8>>,
    /// NONCE from the server.
    nonce: Option<Vec<u8>>,
    /// MD5(username:realm:password), once the realm is known.
    key: Option<[u8; 16]>,
    /// Operations waiting for the one in flight.
    queue: VecDeque<TurnOperation>,
    /// The one in flight.
    in_flight: Option<InFlight>,
    /// Encoded request in flight.
    request: Vec<u8>,
    /// Its length.
    request_len: usize,
    /// A (re)transmission waits for `poll_transmit`.
    send_pending: bool,
    /// When to refresh the allocation.
    refresh_at: Option<Instant>,
    /// Peers with a permission (granted or requested) and when to refresh each.
    permissions: Vec<(IpAddr, Option<Instant>)>,
    /// Channels: peer, number, whether the server confirmed it, when to refresh.
    channels: Vec<(SocketAddr, u16, bool, Option<Instant>)>,
    /// Events not yet polled.
    events: VecDeque<TurnEvent>,
    /// Counter for indication transaction ids (indications need no unpredictable id).
    indication_counter: u64,
    /// The latest `now` a caller passed: queued work is due then.
    now: Instant,
    /// A stale allocation on this 5-tuple was released once already (437 handling).
    released_stale: bool,
    /// No Allocate before this (after releasing a stale allocation).
    allocate_at: Option<Instant>,
}

impl TurnClient {
    /// A client whose allocation is due at `now`.
    pub fn new(config: TurnConfig, now: Instant) -> Self {
        TurnClient {
            config,
            state: State::Idle,
            realm: None,
            nonce: None,
            key: None,
            queue: VecDeque::from([TurnOperation::Allocate]),
            in_flight: None,
            request: vec![0; REQUEST_CAPACITY],
            request_len: 0,
            send_pending: false,
            refresh_at: None,
            permissions: Vec::new(),
            channels: Vec::new(),
            events: VecDeque::new(),
            indication_counter: 0,
            now,
            released_stale: false,
            allocate_at: None,
        }
    }

    /// A client for an allocation that already exists on the server: a restarted XCC rebinds
    /// the same port, so the 5-tuple (and with it the allocation and its relayed address) is
    /// still the server's until its lifetime ends. A Refresh goes out at once (the 401 round
    /// supplies a fresh nonce); a failure means the allocation is gone.
    pub fn resume(config: TurnConfig, relayed: SocketAddr, now: Instant) -> Self {
        let mut client = Self::new(config, now);
        client.state = State::Allocated { relayed };
        client.queue = VecDeque::from([TurnOperation::Refresh]);
        client
    }

    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed } => Some(relayed),
            _ => None,
        }
    }

    /// Asks the server to relay packets from `peer` (kept and refreshed until the client is
    /// closed). Returns false when the table of [`MAX_PERMISSIONS`] peers is full.
    pub fn create_permission(&mut self, now: Instant, peer: IpAddr) -> bool {
        self.now = self.now.max(now);
        if self.permissions.iter().any(|(p, _)| *p == peer) {
            return true;
        }
        if self.permissions.len() >= MAX_PERMISSIONS {
            return false;
        }
        self.permissions.push((peer, None));
        self.queue.push_back(TurnOperation::CreatePermission(peer));
        true
    }

    /// Binds a channel to `peer` (which also permits it) so media uses 4-byte ChannelData framing;
    /// returns the channel number, or `None` when [`MAX_PERMISSIONS`] channels exist. Until the
    /// server confirms, [`TurnClient::wrap_send`] keeps using Send indications.
    pub fn bind_channel(&mut self, now: Instant, peer: SocketAddr) -> Option<u16> {
        self.now = self.now.max(now);
        if let Some(&(_, number, _, _)) = self.channels.iter().find(|c| c.0 == peer) {
            return Some(number);
        }
        if self.channels.len() >= MAX_PERMISSIONS {
            return None;
        }
        // At most MAX_PERMISSIONS (64) channels: the number stays within 0x4000-0x4FFF.
        let number = FIRST_CHANNEL + self.channels.len() as u16;
        self.channels.push((peer, number, false, None));
        self.queue
            .push_back(TurnOperation::ChannelBind(peer, number));
        Some(number)
    }

    /// Releases the allocation (Refresh with lifetime 0).
    pub fn close(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.queue.clear();
        self.refresh_at = None;
        if matches!(self.state, State::Allocated { .. }) {
            self.queue.push_back(TurnOperation::Deallocate);
        }
    }

    /// Advances timers: retransmissions, refreshes, queued operations.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl rand::RngCore) {
        self.now = self.now.max(now);
        if let Some(f) = self.in_flight.as_mut() {
            match f.tx.on_timeout(now) {
                TxStep::Wait => {}
                TxStep::Retransmit => self.send_pending = true,
                TxStep::TimedOut => {
                    let op = f.op;
                    self.fail(op, None);
                }
            }
        }
        if matches!(self.state, State::Allocated { .. }) {
            if self.refresh_at.is_some_and(|at| at <= now) {
                self.refresh_at = None;
                self.queue.push_back(TurnOperation::Refresh);
            }
            for (peer, at) in &mut self.permissions {
                if at.is_some_and(|at| at <= now) {
                    *at = None;
                    self.queue.push_back(TurnOperation::CreatePermission(*peer));
                }
            }
            for (peer, number, _, at) in &mut self.channels {
                if at.is_some_and(|at| at <= now) {
                    *at = None;
                    self.queue
                        .push_back(TurnOperation::ChannelBind(*peer, *number));
                }
            }
        }
        if self.in_flight.is_none()
            && let Some(op) = self.queue.front().copied()
        {
            // Permissions wait for the allocation; everything waits while it is being made.
            let ready = match (op, self.state) {
                (TurnOperation::Allocate, State::Idle) => {
                    self.allocate_at.is_none_or(|at| now >= at)
                }
                (TurnOperation::Deallocate, State::Idle) => self.released_stale,
                (_, State::Allocated { .. }) => op != TurnOperation::Allocate,
                _ => false,
            };
            if ready {
                self.queue.pop_front();
                self.start(now, op, 0, rng);
            } else if self.state == State::Closed {
                self.queue.clear();
            }
        }
    }

    /// The retransmission schedule for the configured transport.
    fn schedule(&self) -> Retransmission {
        match self.config.transport {
            TurnTransport::Udp => self.config.retransmission,
            // Reliable transport: one send, then wait the whole UDP schedule's time (RFC 8489
            // §6.2.2 uses the same Ti).
            TurnTransport::Tcp => Retransmission {
                rto: self.config.retransmission.timeout(),
                max_transmits: 1,
                last_wait_factor: 1,
            },
        }
    }

    /// Encodes and sends `op`.
    fn start(
        &mut self,
        now: Instant,
        op: TurnOperation,
        retries: u8,
        rng: &mut impl rand::RngCore,
    ) {
        let id = TransactionId::random(rng);
        let authenticated = self.key.is_some();
        match self.encode(op, id) {
            Ok(len) => self.request_len = len,
            Err(_) => {
                // Only an over-long realm/nonce/username could overflow 2 KiB; they are bounded.
                self.fail(op, None);
                return;
            }
        }
        self.in_flight = Some(InFlight {
            op,
            tx: Transaction::start(now, id, self.config.server, self.schedule()),
            authenticated,
            retries,
        });
        self.send_pending = true;
    }

    /// Writes the request for `op` into `self.request`.
    fn encode(&mut self, op: TurnOperation, id: TransactionId) -> Result<usize, StunError> {
        let msg_type = match op {
            TurnOperation::Allocate => ALLOCATE,
            TurnOperation::Refresh | TurnOperation::Deallocate => REFRESH,
            TurnOperation::CreatePermission(_) => CREATE_PERMISSION,
            TurnOperation::ChannelBind(..) => CHANNEL_BIND,
        };
        let lifetime = self.config.lifetime.as_secs().min(u64::from(u32::MAX)) as u32;
        let mut w = Writer::new(&mut self.request, msg_type, id)?;
        match op {
            TurnOperation::Allocate => {
                // UDP (17), three reserved bytes.
                w.attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])?;
                w.attribute(attr::LIFETIME, &lifetime.to_be_bytes())?;
            }
            TurnOperation::Refresh => w.attribute(attr::LIFETIME, &lifetime.to_be_bytes())?,
            TurnOperation::Deallocate => w.attribute(attr::LIFETIME, &0u32.to_be_bytes())?,
            TurnOperation::CreatePermission(peer) => {
                w.xor_address(attr::XOR_PEER_ADDRESS, SocketAddr::new(peer, 0))?;
            }
            TurnOperation::ChannelBind(peer, number) => {
                let n = number.to_be_bytes();
                w.attribute(ATTR_CHANNEL_NUMBER, &[n[0], n[1], 0, 0])?;
                w.xor_address(attr::XOR_PEER_ADDRESS, peer)?;
            }
        }
        if let (Some(key), Some(realm), Some(nonce)) = (&self.key, &self.realm, &self.nonce) {
            w.attribute(attr::USERNAME, self.config.username.as_bytes())?;
            w.attribute(attr::REALM, realm)?;
            w.attribute(attr::NONCE, nonce)?;
            w.integrity(key)?;
        }
        w.fingerprint()?;
        Ok(w.finish())
    }

    /// Reports a failed operation; a failed allocation closes the client.
    fn fail(&mut self, op: TurnOperation, code: Option<u16>) {
        self.in_flight = None;
        self.send_pending = false;
        tracing::warn!(?op, ?code, server = %self.config.server, "TURN operation failed");
        self.events.push_back(TurnEvent::Failed {
            operation: op,
            code,
        });
        if matches!(op, TurnOperation::Allocate | TurnOperation::Refresh) {
            self.state = State::Closed;
            self.refresh_at = None;
        }
    }

    /// Offers a datagram received on the allocation's socket.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &'a [u8],
        rng: &mut impl rand::RngCore,
    ) -> TurnInput<'a> {
        self.now = self.now.max(now);
        if from != self.config.server {
            return TurnInput::Ignored;
        }
        if let Some(input) = self.channel_data(bytes) {
            return input;
        }
        let Ok(msg) = Message::parse(bytes) else {
            return TurnInput::Ignored;
        };
        if msg.msg_type() == DATA_INDICATION {
            return match (msg.xor_peer_address(), msg.data()) {
                (Some(peer), Some(payload)) if matches!(self.state, State::Allocated { .. }) => {
                    TurnInput::Data { peer, payload }
                }
                _ => TurnInput::Ignored,
            };
        }
        let Some(f) = self.in_flight else {
            return TurnInput::Ignored;
        };
        if msg.transaction_id() != f.tx.id {
            return TurnInput::Ignored;
        }
        if msg.has_fingerprint() && !msg.verify_fingerprint() {
            return TurnInput::Ignored;
        }
        let request_type = match f.op {
            TurnOperation::Allocate => ALLOCATE,
            TurnOperation::Refresh | TurnOperation::Deallocate => REFRESH,
            TurnOperation::CreatePermission(_) => CREATE_PERMISSION,
            TurnOperation::ChannelBind(..) => CHANNEL_BIND,
        };
        // An answer to an authenticated request must itself verify (else it could be forged).
        if f.authenticated
            && msg.has_integrity()
            && !self.key.is_some_and(|k| msg.verify_integrity(&k))
        {
            return TurnInput::Ignored;
        }
        if msg.msg_type() == request_type | SUCCESS {
            if f.authenticated && !msg.has_integrity() {
                return TurnInput::Ignored;
            }
            self.in_flight = None;
            self.send_pending = false;
            self.succeed(now, f.op, &msg);
            TurnInput::Consumed
        } else if msg.msg_type() == request_type | ERROR {
            let code = msg.error_code();
            let retry = match code {
                Some(401) if !f.authenticated || self.realm.as_deref() != msg.realm() => true,
                Some(438) => true,
                _ => false,
            };
            // 437: this 5-tuple already has an allocation, most likely XCC's own left by a
            // process that died (a restart rebinds the same ports; coturn says so before asking
            // for credentials). Release it once (Refresh with lifetime 0, through the 401 round
            // when no nonce is known yet), then allocate: a spare on that port would fail
            // otherwise. Someone else's allocation refuses the release, and the second 437 fails.
            if code == Some(437) && f.op == TurnOperation::Allocate && !self.released_stale {
                self.released_stale = true;
                self.in_flight = None;
                self.queue.push_front(TurnOperation::Allocate);
                self.start(now, TurnOperation::Deallocate, 0, rng);
                return TurnInput::Consumed;
            }
            if retry && f.retries < 2 && self.learn_credentials(&msg) {
                self.in_flight = None;
                self.start(now, f.op, f.retries + 1, rng);
            } else {
                self.fail(f.op, code);
            }
            TurnInput::Consumed
        } else {
            TurnInput::Ignored
        }
    }

    /// Takes REALM and NONCE from a 401/438 and derives the key; false when they are missing or
    /// too long.
    fn learn_credentials(&mut self, msg: &Message<'_>) -> bool {
        let Some(nonce) = msg.nonce().filter(|n| n.len() <= MAX_REALM_NONCE) else {
            return false;
        };
        if let Some(realm) = msg.realm() {
            if realm.len() > MAX_REALM_NONCE {
                return false;
            }
            if self.realm.as_deref() != Some(realm) {
                // RFC 5389 §15.4: key = MD5(username ":" realm ":" password).
                let key = md5::Md5::new()
                    .chain_update(self.config.username.as_bytes())
                    .chain_update(b":")
                    .chain_update(realm)
                    .chain_update(b":")
                    .chain_update(self.config.password.as_bytes())
                    .finalize();
                self.key = Some(key.into());
                self.realm = Some(realm.to_vec());
            }
        }
        if self.realm.is_none() {
            return false;
        }
        self.nonce = Some(nonce.to_vec());
        true
    }

    /// Applies a success response.
    fn succeed(&mut self, now: Instant, op: TurnOperation, msg: &Message<'_>) {
        let lifetime = Duration::from_secs(u64::from(msg.lifetime().unwrap_or(600)));
        match op {
            TurnOperation::Allocate => {
                let Some(relayed) = msg.xor_relayed_address() else {
                    self.fail(op, None);
                    return;
                };
                self.state = State::Allocated { relayed };
                self.schedule_refresh(now, lifetime);
                tracing::info!(%relayed, ?lifetime, "TURN allocation");
                self.events.push_back(TurnEvent::Allocated {
                    relayed,
                    mapped: msg.xor_mapped_address(),
                    lifetime,
                });
            }
            TurnOperation::Refresh => self.schedule_refresh(now, lifetime),
            // Releasing a stale allocation before allocating (437) leaves the client idle, its
            // Allocate next in the queue once the server has let the old one go.
            TurnOperation::Deallocate if self.state == State::Idle => {
                self.allocate_at = Some(now + STALE_RELEASE_WAIT);
            }
            TurnOperation::Deallocate => {
                self.state = State::Closed;
                self.refresh_at = None;
            }
            TurnOperation::CreatePermission(peer) => {
                let mut first = false;
                for (p, at) in &mut self.permissions {
                    if *p == peer {
                        first = at.is_none();
                        *at = Some(now + PERMISSION_REFRESH);
                    }
                }
                if first {
                    self.events.push_back(TurnEvent::PermissionGranted { peer });
                }
            }
            TurnOperation::ChannelBind(peer, number) => {
                for (p, _, bound, at) in &mut self.channels {
                    if *p == peer {
                        if !*bound {
                            self.events
                                .push_back(TurnEvent::ChannelBound { peer, number });
                        }
                        *bound = true;
                        *at = Some(now + CHANNEL_REFRESH);
                    }
                }
            }
        }
    }

    /// Refreshes a minute before expiry (half-way for short lifetimes).
    fn schedule_refresh(&mut self, now: Instant, lifetime: Duration) {
        let margin = Duration::from_secs(60).min(lifetime / 2);
        self.refresh_at = Some(now + lifetime - margin);
    }

    /// Wraps `payload` for `peer` as a Send indication into `out`; send the result to the server.
    /// Fails when `out` is shorter than the payload plus [`SEND_OVERHEAD`].
    pub fn wrap_send(
        &mut self,
        peer: SocketAddr,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, StunError> {
        if let Some(&(_, number, ..)) = self.channels.iter().find(|c| c.0 == peer && c.2) {
            // ChannelData: number, length, data; padded to 4 bytes over TCP only (RFC 8656 §12.5).
            let too_small = StunError::BufferTooSmall {
                capacity: out.len(),
            };
            let Ok(len) = u16::try_from(payload.len()) else {
                return Err(too_small);
            };
            let end = match self.config.transport {
                TurnTransport::Udp => 4 + payload.len(),
                TurnTransport::Tcp => 4 + payload.len().div_ceil(4) * 4,
            };
            let Some(frame) = out.get_mut(..end) else {
                return Err(too_small);
            };
            frame[..2].copy_from_slice(&number.to_be_bytes());
            frame[2..4].copy_from_slice(&len.to_be_bytes());
            frame[4..4 + payload.len()].copy_from_slice(payload);
            frame[4 + payload.len()..].fill(0);
            return Ok(end);
        }
        self.indication_counter = self.indication_counter.wrapping_add(1);
        let mut id = [0u8; 12];
        id[4..].copy_from_slice(&self.indication_counter.to_be_bytes());
        let mut w = Writer::new(out, SEND_INDICATION, TransactionId(id))?;
        w.xor_address(attr::XOR_PEER_ADDRESS, peer)?;
        w.attribute(attr::DATA, payload)?;
        Ok(w.finish())
    }

    /// Unwraps a ChannelData message (first byte 0x40-0x4F, RFC 7983) on a channel this client
    /// asked for. Inbound data is accepted before the bind's success answer arrives: a server that
    /// uses the number has accepted the bind, and coturn's relay threads can send ChannelData
    /// ahead of that answer (a phone's packet dropped there would be a lost packet).
    /// Outbound media waits for the confirmation ([`TurnClient::wrap_send`]).
    fn channel_data<'a>(&self, bytes: &'a [u8]) -> Option<TurnInput<'a>> {
        if bytes.len() < 4 || !(0x40..=0x4F).contains(&bytes[0]) {
            return None;
        }
        let number = u16::from_be_bytes([bytes[0], bytes[1]]);
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        let Some(payload) = bytes.get(4..4 + len) else {
            return Some(TurnInput::Ignored);
        };
        let peer = self
            .channels
            .iter()
            .find(|c| c.1 == number)
            .filter(|_| matches!(self.state, State::Allocated { .. }))
            .map(|c| c.0);
        Some(match peer {
            Some(peer) => TurnInput::Data { peer, payload },
            None => TurnInput::Ignored,
        })
    }

    /// The server's address: where wrapped media and requests go.
    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    /// The next request to send: destination and bytes.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, &[u8])> {
        if !self.send_pending {
            return None;
        }
        self.send_pending = false;
        let f = self.in_flight?;
        Some((f.tx.dest, &self.request[..self.request_len]))
    }

    /// When [`TurnClient::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(f) = self.in_flight {
            return Some(f.tx.deadline());
        }
        if self.state == State::Closed {
            return None;
        }
        let ready_at = match self.queue.front() {
            Some(TurnOperation::Allocate) if self.state == State::Idle => {
                Some(self.allocate_at.unwrap_or(self.now))
            }
            Some(TurnOperation::Allocate) | None => None,
            Some(_) => matches!(self.state, State::Allocated { .. }).then_some(self.now),
        };
        ready_at.or_else(|| self.earliest_timer())
    }

    /// The earliest refresh timer.
    fn earliest_timer(&self) -> Option<Instant> {
        self.permissions
            .iter()
            .filter_map(|(_, at)| *at)
            .chain(self.channels.iter().filter_map(|c| c.3))
            .chain(self.refresh_at)
            .min()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }
}

/// Whether `bytes` is a TURN message type this client reads (used by workers demultiplexing the
/// allocation socket: Data indications carry media).
pub fn is_data_indication(bytes: &[u8]) -> bool {
    stun::is_stun(bytes) && u16::from_be_bytes([bytes[0], bytes[1]]) == DATA_INDICATION
}

/// Cuts a TCP byte stream from a TURN server into STUN messages and ChannelData frames (RFC 8656
/// §12.5: both carry their length; ChannelData is padded to 4 bytes on streams). A fixed buffer,
/// allocated once; a frame that cannot be a STUN message or ChannelData is a desynchronised
/// stream, after which the driver must close the connection.
#[derive(Debug)]
pub struct TcpFramer {
    /// Received bytes not yet returned as frames.
    buf: Vec<u8>,
    /// Start of unconsumed data.
    start: usize,
    /// End of received data.
    end: usize,
}

/// Why the stream cannot be framed any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("turn tcp: stream desynchronised at first byte {first_byte:#04x}")]
pub struct FramingError {
    /// The byte where a frame should have started.
    pub first_byte: u8,
}

impl Default for TcpFramer {
    fn default() -> Self {
        TcpFramer::new()
    }
}

impl TcpFramer {
    /// Room for the largest frame (64 KiB body plus header) and the start of the next one.
    const CAPACITY: usize = 2 * (u16::MAX as usize + 24);

    /// An empty framer.
    pub fn new() -> Self {
        Self::with_capacity(Self::CAPACITY)
    }

    /// An empty framer for frames of at most about `capacity / 2` bytes: XCC's own allocations
    /// carry media of at most ~2 KiB per frame, and the default 128 KiB per connection would
    /// cost 256 KiB per relayed call. A larger frame fails framing (the driver closes).
    pub fn with_capacity(capacity: usize) -> Self {
        TcpFramer {
            buf: vec![0; capacity],
            start: 0,
            end: 0,
        }
    }

    /// Free space to read the stream into; then report the count with [`TcpFramer::filled`].
    pub fn space(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records `n` bytes written into [`TcpFramer::space`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copies `bytes` in (for callers that already hold the data).
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FramingError> {
        let space = self.space();
        let Some(dst) = space.get_mut(..bytes.len()) else {
            return Err(FramingError {
                first_byte: bytes.first().copied().unwrap_or(0),
            });
        };
        dst.copy_from_slice(bytes);
        self.filled(bytes.len());
        Ok(())
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FramingError> {
        let data = &self.buf[self.start..self.end];
        let Some(&first) = data.first() else {
            return Ok(None);
        };
        let (header, body) = match first {
            0..=3 => (stun::HEADER_LEN, data.get(2..4)),
            0x40..=0x4F => (4, data.get(2..4)),
            _ => return Err(FramingError { first_byte: first }),
        };
        let Some(len) = body.map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
            return Ok(None);
        };
        let total = header + len.div_ceil(4) * 4;
        if data.len() < total {
            return Ok(None);
        }
        let frame = &self.buf[self.start..self.start + total];
        self.start += total;
        Ok(Some(frame))
    }
}

/// A scripted long-term-credential TURN server and helpers, shared by the TURN tests of this
/// crate (the client relay in the worker uses it too).
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    pub(crate) const SERVER: &str = "203.0.113.10:3478";
    pub(crate) const RELAYED: &str = "203.0.113.10:49200";
    pub(crate) const MAPPED: &str = "203.0.113.1:30000";
    pub(crate) const PEER: &str = "198.51.100.20:40000";

    pub(crate) fn config(password: &str) -> TurnConfig {
        TurnConfig {
            server: SERVER.parse().unwrap(),
            username: "xcc".into(),
            password: password.into(),
            transport: TurnTransport::Udp,
            lifetime: Duration::from_secs(600),
            retransmission: Retransmission::FAILOVER,
        }
    }

    /// A long-term-credential TURN server: realm `xcc.test`, user `xcc`, password `secret`.
    pub(crate) struct Server {
        pub(crate) nonce: &'static str,
        /// Answer the next authenticated request with 438 and switch to this nonce.
        pub(crate) stale_next: Option<&'static str>,
        pub(crate) requests: Vec<Vec<u8>>,
        /// The 5-tuple already has an allocation: Allocate gets 437 until a Refresh with
        /// lifetime 0 releases it.
        pub(crate) allocation_exists: bool,
    }

    impl Server {
        pub(crate) fn key() -> [u8; 16] {
            md5::Md5::digest(b"xcc:xcc.test:secret").into()
        }

        pub(crate) fn answer(&mut self, request: &[u8]) -> Vec<u8> {
            self.requests.push(request.to_vec());
            let msg = Message::parse(request).unwrap();
            let id = msg.transaction_id();
            let mut buf = [0u8; 512];
            let mut error = |code: u16, nonce: &str| {
                let mut w = Writer::new(&mut buf, msg.msg_type() | ERROR, id).unwrap();
                w.error_code(code, "Unauthorized").unwrap();
                w.attribute(attr::REALM, b"xcc.test").unwrap();
                w.attribute(attr::NONCE, nonce.as_bytes()).unwrap();
                w.fingerprint().unwrap();
                let len = w.finish();
                buf[..len].to_vec()
            };
            // Like coturn: an existing allocation is reported before credentials are asked for.
            if msg.msg_type() == ALLOCATE && self.allocation_exists {
                let mut w = Writer::new(&mut buf, msg.msg_type() | ERROR, id).unwrap();
                w.error_code(437, "Allocation Mismatch").unwrap();
                w.fingerprint().unwrap();
                let len = w.finish();
                return buf[..len].to_vec();
            }
            if !msg.has_integrity() || !msg.verify_integrity(&Server::key()) {
                return error(401, self.nonce);
            }
            if let Some(next) = self.stale_next.take() {
                self.nonce = next;
                return error(438, next);
            }
            assert_eq!(msg.nonce(), Some(self.nonce.as_bytes()));
            assert_eq!(msg.username(), Some(&b"xcc"[..]));
            if msg.msg_type() == REFRESH && msg.lifetime() == Some(0) {
                self.allocation_exists = false;
            }
            let mut w = Writer::new(&mut buf, msg.msg_type() | SUCCESS, id).unwrap();
            match msg.msg_type() {
                ALLOCATE => {
                    w.xor_address(attr::XOR_RELAYED_ADDRESS, RELAYED.parse().unwrap())
                        .unwrap();
                    w.xor_mapped_address(MAPPED.parse().unwrap()).unwrap();
                    w.attribute(attr::LIFETIME, &600u32.to_be_bytes()).unwrap();
                }
                REFRESH => w
                    .attribute(attr::LIFETIME, &msg.lifetime().unwrap().to_be_bytes())
                    .unwrap(),
                _ => {}
            }
            w.integrity(&Server::key()).unwrap();
            w.fingerprint().unwrap();
            let len = w.finish();
            buf[..len].to_vec()
        }
    }

    pub(crate) fn server() -> Server {
        Server {
            nonce: "n1",
            stale_next: None,
            requests: Vec::new(),
            allocation_exists: false,
        }
    }

    /// Exchanges every pending request with `server` at `now`.
    pub(crate) fn pump(
        c: &mut TurnClient,
        server: &mut Server,
        now: Instant,
        rng: &mut ChaCha8Rng,
    ) {
        for _ in 0..10 {
            c.handle_timeout(now, rng);
            let Some((_, req)) = c.poll_transmit() else {
                return;
            };
            let req = req.to_vec();
            let answer = server.answer(&req);
            assert_eq!(
                c.handle_datagram(now, SERVER.parse().unwrap(), &answer, rng),
                TurnInput::Consumed
            );
        }
    }

    pub(crate) fn allocated(t0: Instant) -> (TurnClient, Server, ChaCha8Rng) {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut c = TurnClient::new(config("secret"), t0);
        let mut s = server();
        pump(&mut c, &mut s, t0, &mut rng);
        (c, s, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn a_resumed_allocation_refreshes_after_the_401_round_and_relays_at_once() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let relayed: SocketAddr = RELAYED.parse().unwrap();
        let mut c = TurnClient::resume(config("secret"), relayed, t0);
        assert_eq!(c.relayed(), Some(relayed));
        // Data from the peer is accepted before the refresh completes (the server kept relaying).
        let peer: SocketAddr = PEER.parse().unwrap();
        let mut buf = [0u8; 256];
        let mut w = Writer::new(&mut buf, DATA_INDICATION, TransactionId([5; 12])).unwrap();
        w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        w.attribute(attr::DATA, b"media").unwrap();
        let n = w.finish();
        assert_eq!(
            c.handle_datagram(t0, SERVER.parse().unwrap(), &buf[..n], &mut rng),
            TurnInput::Data {
                peer,
                payload: b"media"
            }
        );
        let mut s = server();
        pump(&mut c, &mut s, t0, &mut rng);
        let types: Vec<u16> = s
            .requests
            .iter()
            .map(|r| Message::parse(r).unwrap().msg_type())
            .collect();
        assert_eq!(
            types,
            [REFRESH, REFRESH],
            "unauthenticated, then with the nonce"
        );
        assert_eq!(c.relayed(), Some(relayed));
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(540)));
    }

    #[test]
    fn a_stale_allocation_on_the_5_tuple_is_released_once_then_allocated() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut c = TurnClient::new(config("secret"), t0);
        let mut s = server();
        s.allocation_exists = true;
        pump(&mut c, &mut s, t0, &mut rng);
        assert_eq!(
            s.requests.len(),
            3,
            "437, then the release through its 401 round"
        );
        // The Allocate waits until the server has let the old allocation go.
        let due = t0 + STALE_RELEASE_WAIT;
        assert_eq!(c.poll_timeout(), Some(due));
        pump(&mut c, &mut s, due, &mut rng);
        let sent: Vec<(u16, Option<u32>)> = s
            .requests
            .iter()
            .map(|r| {
                let m = Message::parse(r).unwrap();
                (m.msg_type(), m.lifetime())
            })
            .collect();
        assert_eq!(
            sent,
            [
                (ALLOCATE, Some(600)),
                (REFRESH, Some(0)),
                (REFRESH, Some(0)),
                (ALLOCATE, Some(600))
            ],
            "437, release (401 round), allocate with the learned nonce"
        );
        assert_eq!(c.relayed(), Some(RELAYED.parse().unwrap()));
        assert!(matches!(c.poll_event(), Some(TurnEvent::Allocated { .. })));
    }

    #[test]
    fn a_second_437_fails_the_allocation() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut c = TurnClient::new(config("secret"), t0);
        let mut s = server();
        s.allocation_exists = true;
        // The release "succeeds" but the server keeps answering 437 (another user's allocation
        // would look like this): one release only, then the allocation fails.
        for _ in 0..10 {
            let now = c.poll_timeout().unwrap_or(t0);
            c.handle_timeout(now, &mut rng);
            let Some((_, req)) = c.poll_transmit() else {
                break;
            };
            let req = req.to_vec();
            let answer = s.answer(&req);
            s.allocation_exists = true;
            c.handle_datagram(now, SERVER.parse().unwrap(), &answer, &mut rng);
        }
        assert_eq!(c.relayed(), None);
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Failed {
                operation: TurnOperation::Allocate,
                code: Some(437)
            })
        );
        assert_eq!(c.poll_timeout(), None, "closed: nothing more happens");
    }

    #[test]
    fn allocates_after_401_with_the_long_term_key() {
        let t0 = Instant::now();
        let (mut c, s, _) = allocated(t0);
        assert_eq!(s.requests.len(), 2);
        let first = Message::parse(&s.requests[0]).unwrap();
        assert!(!first.has_integrity() && first.username().is_none());
        assert!(
            Message::parse(&s.requests[1])
                .unwrap()
                .verify_integrity(&Server::key())
        );
        assert_eq!(c.relayed(), Some(RELAYED.parse().unwrap()));
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Allocated {
                relayed: RELAYED.parse().unwrap(),
                mapped: Some(MAPPED.parse().unwrap()),
                lifetime: Duration::from_secs(600)
            })
        );
    }

    #[test]
    fn refreshes_a_minute_before_expiry_and_follows_a_stale_nonce() {
        let t0 = Instant::now();
        let (mut c, mut s, mut rng) = allocated(t0);
        let due = t0 + Duration::from_secs(540);
        assert_eq!(c.poll_timeout(), Some(due));
        s.stale_next = Some("n2");
        pump(&mut c, &mut s, due, &mut rng);
        let refreshes: Vec<Message<'_>> = s.requests[2..]
            .iter()
            .map(|r| Message::parse(r).unwrap())
            .collect();
        assert_eq!(refreshes.len(), 2, "438, then the retry with the new nonce");
        assert!(refreshes.iter().all(|m| m.msg_type() == REFRESH));
        assert_eq!(refreshes[1].nonce(), Some(&b"n2"[..]));
        assert_eq!(c.poll_timeout(), Some(due + Duration::from_secs(540)));
        assert!(c.relayed().is_some());
    }

    #[test]
    fn permission_then_data_both_ways() {
        let t0 = Instant::now();
        let (mut c, mut s, mut rng) = allocated(t0);
        c.poll_event();
        let peer: SocketAddr = PEER.parse().unwrap();
        assert!(c.create_permission(t0, peer.ip()));
        assert_eq!(c.poll_timeout(), Some(t0));
        pump(&mut c, &mut s, t0, &mut rng);
        let req = Message::parse(s.requests.last().unwrap()).unwrap();
        assert_eq!(req.msg_type(), CREATE_PERMISSION);
        assert_eq!(req.xor_peer_address().map(|a| a.ip()), Some(peer.ip()));
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::PermissionGranted { peer: peer.ip() })
        );
        // Permission refresh is scheduled before the allocation's.
        assert_eq!(c.poll_timeout(), Some(t0 + PERMISSION_REFRESH));

        // Server -> XCC: a Data indication unwraps to the peer's payload, borrowed.
        let mut buf = [0u8; 256];
        let mut w = Writer::new(&mut buf, DATA_INDICATION, TransactionId([5; 12])).unwrap();
        w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        w.attribute(attr::DATA, b"\x80\x00rtp").unwrap();
        let len = w.finish();
        assert!(is_data_indication(&buf[..len]));
        assert_eq!(
            c.handle_datagram(t0, SERVER.parse().unwrap(), &buf[..len], &mut rng),
            TurnInput::Data {
                peer,
                payload: b"\x80\x00rtp"
            }
        );
        // From anywhere else: ignored.
        assert_eq!(
            c.handle_datagram(t0, peer, &buf[..len], &mut rng),
            TurnInput::Ignored
        );

        // XCC -> peer: a Send indication the server can unwrap.
        let mut out = [0u8; 256];
        let payload = [0x80u8; 172];
        let n = c.wrap_send(peer, &payload, &mut out).unwrap();
        assert!(n <= payload.len() + SEND_OVERHEAD);
        let msg = Message::parse(&out[..n]).unwrap();
        assert_eq!(msg.msg_type(), SEND_INDICATION);
        assert_eq!(msg.xor_peer_address(), Some(peer));
        assert_eq!(msg.data(), Some(&payload[..]));
        let mut small = [0u8; 100];
        assert!(c.wrap_send(peer, &payload, &mut small).is_err());
    }

    #[test]
    fn bound_channel_switches_media_to_channel_data() {
        let t0 = Instant::now();
        let (mut c, mut s, mut rng) = allocated(t0);
        c.poll_event();
        let peer: SocketAddr = PEER.parse().unwrap();
        let mut out = [0u8; 256];
        assert_eq!(c.bind_channel(t0, peer), Some(FIRST_CHANNEL));
        assert_eq!(c.bind_channel(t0, peer), Some(FIRST_CHANNEL), "idempotent");
        // Before the server confirms: still an indication out, but the server may already use
        // the channel towards XCC.
        let n = c.wrap_send(peer, b"rtp", &mut out).unwrap();
        assert!(stun::is_stun(&out[..n]));
        let server: SocketAddr = SERVER.parse().unwrap();
        assert_eq!(
            c.handle_datagram(t0, server, b"\x40\x00\x00\x02hi\x00\x00", &mut rng),
            TurnInput::Data {
                peer,
                payload: b"hi"
            }
        );
        pump(&mut c, &mut s, t0, &mut rng);
        let req = Message::parse(s.requests.last().unwrap()).unwrap();
        assert_eq!(req.msg_type(), CHANNEL_BIND);
        assert_eq!(req.xor_peer_address(), Some(peer));
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::ChannelBound {
                peer,
                number: FIRST_CHANNEL
            })
        );
        let n = c.wrap_send(peer, b"rtp", &mut out).unwrap();
        assert_eq!(&out[..n], b"\x40\x00\x00\x03rtp");
        // Incoming ChannelData on the bound channel unwraps; unknown channels and bad lengths
        // are ignored.
        assert_eq!(
            c.handle_datagram(t0, server, b"\x40\x00\x00\x02hi\x00\x00", &mut rng),
            TurnInput::Data {
                peer,
                payload: b"hi"
            }
        );
        assert_eq!(
            c.handle_datagram(t0, server, b"\x40\x01\x00\x02hi", &mut rng),
            TurnInput::Ignored
        );
        assert_eq!(
            c.handle_datagram(t0, server, b"\x40\x00\x00\x09hi", &mut rng),
            TurnInput::Ignored
        );
        // Refreshed before the 10-minute channel lifetime ends (before the allocation refresh).
        assert_eq!(c.poll_timeout(), Some(t0 + CHANNEL_REFRESH));
    }

    #[test]
    fn tcp_sends_once_and_pads_channel_data() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut cfg = config("secret");
        cfg.transport = TurnTransport::Tcp;
        let mut c = TurnClient::new(cfg, t0);
        c.handle_timeout(t0, &mut rng);
        assert!(c.poll_transmit().is_some());
        let timeout = Retransmission::FAILOVER.timeout();
        assert_eq!(
            c.poll_timeout(),
            Some(t0 + timeout),
            "no retransmission over TCP"
        );
        c.handle_timeout(t0 + timeout, &mut rng);
        assert!(c.poll_transmit().is_none());
        assert!(matches!(
            c.poll_event(),
            Some(TurnEvent::Failed { code: None, .. })
        ));

        let mut c = TurnClient::new(
            TurnConfig {
                transport: TurnTransport::Tcp,
                ..config("secret")
            },
            t0,
        );
        let mut s = server();
        pump(&mut c, &mut s, t0, &mut rng);
        let peer: SocketAddr = PEER.parse().unwrap();
        c.bind_channel(t0, peer);
        pump(&mut c, &mut s, t0, &mut rng);
        let mut out = [0xAAu8; 64];
        let n = c.wrap_send(peer, b"rtp", &mut out).unwrap();
        assert_eq!(&out[..n], b"\x40\x00\x00\x03rtp\x00");
    }

    #[test]
    fn tcp_framer_cuts_any_split_of_the_stream() {
        let mut stream = Vec::new();
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf, DATA_INDICATION, TransactionId([1; 12])).unwrap();
        w.attribute(attr::DATA, b"abc").unwrap();
        let n = w.finish();
        stream.extend_from_slice(&buf[..n]);
        stream.extend_from_slice(b"\x40\x00\x00\x05hello\x00\x00\x00");
        stream.extend_from_slice(b"\x40\x01\x00\x00");
        let expected: Vec<Vec<u8>> = vec![
            buf[..n].to_vec(),
            b"\x40\x00\x00\x05hello\x00\x00\x00".to_vec(),
            b"\x40\x01\x00\x00".to_vec(),
        ];
        for chunk in 1..=stream.len() {
            let mut f = TcpFramer::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                f.push(piece).unwrap();
                while let Some(frame) = f.next_frame().unwrap() {
                    got.push(frame.to_vec());
                }
            }
            assert_eq!(got, expected, "chunk size {chunk}");
        }
        let mut f = TcpFramer::new();
        f.push(b"\x80\x00\x00\x00").unwrap();
        assert_eq!(f.next_frame(), Err(FramingError { first_byte: 0x80 }));
    }

    #[test]
    fn forged_success_is_ignored() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut c = TurnClient::new(config("secret"), t0);
        let mut s = server();
        // First exchange: the 401.
        c.handle_timeout(t0, &mut rng);
        let req = c.poll_transmit().unwrap().1.to_vec();
        let answer = s.answer(&req);
        c.handle_datagram(t0, SERVER.parse().unwrap(), &answer, &mut rng);
        // The authenticated retry, answered by a forger who does not know the key.
        c.handle_timeout(t0, &mut rng);
        let req = c.poll_transmit().unwrap().1.to_vec();
        let id = Message::parse(&req).unwrap().transaction_id();
        let mut buf = [0u8; 256];
        let mut w = Writer::new(&mut buf, ALLOCATE | SUCCESS, id).unwrap();
        w.xor_address(attr::XOR_RELAYED_ADDRESS, "192.0.2.66:1".parse().unwrap())
            .unwrap();
        w.integrity(b"not the key").unwrap();
        w.fingerprint().unwrap();
        let len = w.finish();
        assert_eq!(
            c.handle_datagram(t0, SERVER.parse().unwrap(), &buf[..len], &mut rng),
            TurnInput::Ignored
        );
        // Without MESSAGE-INTEGRITY at all: ignored too.
        let mut w = Writer::new(&mut buf, ALLOCATE | SUCCESS, id).unwrap();
        w.xor_address(attr::XOR_RELAYED_ADDRESS, "192.0.2.66:1".parse().unwrap())
            .unwrap();
        let len = w.finish();
        assert_eq!(
            c.handle_datagram(t0, SERVER.parse().unwrap(), &buf[..len], &mut rng),
            TurnInput::Ignored
        );
        assert_eq!(c.relayed(), None);
    }

    #[test]
    fn wrong_password_fails_with_401() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut c = TurnClient::new(config("wrong"), t0);
        let mut s = server();
        pump(&mut c, &mut s, t0, &mut rng);
        assert_eq!(s.requests.len(), 2);
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Failed {
                operation: TurnOperation::Allocate,
                code: Some(401)
            })
        );
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn silent_server_times_out() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut c = TurnClient::new(config("secret"), t0);
        let mut now = t0;
        for _ in 0..20 {
            c.handle_timeout(now, &mut rng);
            while c.poll_transmit().is_some() {}
            match c.poll_timeout() {
                Some(at) => now = now.max(at),
                None => break,
            }
        }
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Failed {
                operation: TurnOperation::Allocate,
                code: None
            })
        );
        assert_eq!(now - t0, Retransmission::FAILOVER.timeout());
    }

    #[test]
    fn close_deallocates() {
        let t0 = Instant::now();
        let (mut c, mut s, mut rng) = allocated(t0);
        c.close(t0);
        pump(&mut c, &mut s, t0, &mut rng);
        let last = Message::parse(s.requests.last().unwrap()).unwrap();
        assert_eq!(last.msg_type(), REFRESH);
        assert_eq!(last.lifetime(), Some(0));
        assert_eq!(c.relayed(), None);
        assert_eq!(c.poll_timeout(), None);
    }
}
