//! Media sessions driven over gRPC: offer/answer through XCC without SIP.
//!
//! XCC is a back-to-back media endpoint: each side sees XCC as its peer. An offer from one side is
//! rewritten to carry XCC's address and ports for the *other* side and emitted there; the other side's
//! answer is rewritten back for the offerer. The client leg always speaks SDES-SRTP with XCC's public
//! address; the PBX leg plain RTP with XCC's PBX-leg address. When the media plane relays the client
//! leg through XCC's own TURN allocations ([`RelayedPorts`]), clients are told the relayed addresses
//! and relay candidates only, since nothing reaches XCC's own address from outside then.
//!
//! The table is a plain mutex-guarded map: it is control-plane state touched once per request, never
//! by the packet path. The lock is held across `allocate` so two concurrent retries carrying the same
//! idempotency key cannot both allocate.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use xcc_core::ids::{CallId, LegSide};
use xcc_core::media::{IceSetup, LegConfig, LegPorts, RelayedPorts, SrtpKeys};
use xcc_core::nat::candidate::{RemoteIce, answer_lines, leg_candidates, relay_candidates};
use xcc_core::nat::ice::IceCredentials;
use xcc_core::sdes::{self, CryptoAttribute};
use xcc_core::sdp::{AudioMedia, AudioRewrite, MediaTransport, SessionDescription};
use xcc_core::srtp::{SrtpPolicy, SrtpSuite};

use crate::error::{Error, Result};
use crate::media::MediaPlane;

/// Longest idempotency key accepted, in bytes; keys are stored for the session's lifetime.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// Addresses XCC advertises, one per leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertised {
    /// Public address signalled to clients (`[nat] public_address` or its fallback).
    pub client: IpAddr,
    /// Address signalled to the PBX.
    pub pbx: IpAddr,
}

impl Advertised {
    /// The address for one leg.
    pub fn for_side(&self, side: LegSide) -> IpAddr {
        match side {
            LegSide::Client => self.client,
            LegSide::Pbx => self.pbx,
        }
    }
}

/// Where a session is in offer/answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum State {
    /// An offer from `offer_from` went out to the other side; its answer is awaited.
    AwaitingAnswer,
    /// Offer/answer done.
    Active,
}

/// What XCC must remember between an offer and its answer.
#[derive(Debug, Clone)]
enum Pending {
    /// The client offered; XCC already chose its answering key and remembers the client's transport.
    FromClient {
        /// XCC's answering `a=crypto` (same tag and suite as the client's chosen one).
        ours: CryptoAttribute,
        /// The client's transport (RTP/SAVP or RTP/SAVPF), echoed in XCC's answer.
        transport: MediaTransport,
        /// Whether the client offered rtcp-mux (XCC accepts it).
        rtcp_mux: bool,
        /// XCC's ICE-lite credentials when the client offered ICE; they go into the answer.
        ice: Option<IceCredentials>,
    },
    /// The PBX offered; XCC offered these to the client and waits for its pick.
    FromPbx {
        /// XCC's offered `a=crypto` lines.
        offered: Vec<CryptoAttribute>,
        /// XCC's ICE-lite credentials in that offer; the client's answer may bring its own.
        ice: IceCredentials,
    },
}

/// The outcome of a request, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionView {
    /// The session (= call) id.
    pub call: CallId,
    /// The key it was created with.
    pub idempotency_key: String,
    /// Offer/answer state.
    pub state: State,
    /// Side whose offer is pending or was last answered.
    pub offer_from: LegSide,
    /// The SDP XCC emitted for the last request.
    pub sdp: String,
    /// The side that SDP is for.
    pub sdp_for: LegSide,
    /// Bound ports, per [`LegSide::index`].
    pub ports: [LegPorts; 2],
}

/// One session's control-plane state.
#[derive(Debug)]
struct Session {
    /// The create request's side and SDP, to tell a retry from a conflicting reuse of the key.
    request: (LegSide, String),
    /// The create response, returned again to retries.
    created: SessionView,
    /// Current view.
    view: SessionView,
    /// Pending offer state, `Some` while awaiting an answer.
    pending: Option<Pending>,
    /// XCC's current answering/offered key on the client leg, kept across re-offers of the same
    /// suite so media continues while the re-offer is in flight.
    client_ours: Option<CryptoAttribute>,
    /// The client leg's ICE credentials (XCC's, the client's) once negotiated: XCC's are kept
    /// across re-offers so checks keep verifying, and replaced only on an ICE restart.
    client_ice: Option<IceSetup>,
    /// The client leg's configuration as last sent to the media plane: sent again when the PBX
    /// answers a client's offer, so the leg's hole punching restarts once XCC's answer (with its
    /// ICE credentials) goes to the client, however long the PBX rang.
    client_leg: Option<LegConfig>,
    /// Whether an answer ever completed offer/answer (the first one raises `CallAnswered`).
    answered: bool,
    /// o= session id XCC uses on both legs.
    origin_id: u64,
    /// o= version per emitted leg, bumped on every SDP XCC sends that way.
    origin_version: [u64; 2],
    /// The client leg's TURN-relayed addresses from allocation, when XCC relays through its own
    /// TURN server: every SDP for the client carries these instead of XCC's address and ports.
    relay: Option<RelayedPorts>,
}

#[derive(Debug, Default)]
struct Table {
    sessions: HashMap<CallId, Session>,
    by_key: HashMap<String, CallId>,
}

/// Every gRPC-created session, keyed by call id and by idempotency key.
pub struct SessionTable {
    /// The media plane the sessions drive.
    media: Arc<dyn MediaPlane>,
    /// What XCC signals on each leg now; the client address follows public address discovery
    /// ([`SessionTable::set_client_address`]). Read once per request, never on the packet path.
    advertised: RwLock<Advertised>,
    /// The client address the table was built with (bind or interface address): XCC's host
    /// candidate, beside the server-reflexive one once discovery learned a different public IP.
    client_host: IpAddr,
    /// Suites XCC offers to clients, best first.
    client_suites: Vec<SrtpSuite>,
    table: Mutex<Table>,
    /// Bumped under the lock by every mutation: the call store re-reads sessions only when it
    /// moved, instead of exporting every session every round ([`SessionTable::changes`]).
    changes: AtomicU64,
}

/// A session's state as the call store keeps it, so that Update, Answer and Delete keep working
/// after a restart. `a=crypto` attributes are kept in their SDP text form and parsed back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredSession {
    /// The create request's side and SDP.
    request: (LegSide, String),
    /// The create response.
    created: SessionView,
    /// Current view.
    view: SessionView,
    /// Pending offer state.
    pending: Option<StoredPending>,
    /// XCC's current key on the client leg (`a=crypto` value).
    client_ours: Option<String>,
    /// The client leg's ICE credentials.
    client_ice: Option<IceSetup>,
    /// Whether an answer ever completed offer/answer.
    answered: bool,
    /// o= session id.
    origin_id: u64,
    /// o= versions per leg.
    origin_version: [u64; 2],
    /// The client leg's TURN-relayed addresses; absent in records written before TURN.
    #[serde(default)]
    relay: Option<RelayedPorts>,
}

impl StoredSession {
    /// The session's call.
    pub fn call(&self) -> CallId {
        self.view.call
    }
}

/// [`Pending`] with `a=crypto` values as text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum StoredPending {
    FromClient {
        ours: String,
        transport: String,
        rtcp_mux: bool,
        ice: Option<IceCredentials>,
    },
    FromPbx {
        offered: Vec<String>,
        ice: IceCredentials,
    },
}

fn crypto_from_text(text: &str) -> Result<CryptoAttribute> {
    CryptoAttribute::parse(text).map_err(|e| Error::in_field("stored a=crypto", e))
}

impl Session {
    fn to_stored(&self) -> StoredSession {
        StoredSession {
            request: self.request.clone(),
            created: self.created.clone(),
            view: self.view.clone(),
            pending: self.pending.as_ref().map(|p| match p {
                Pending::FromClient {
                    ours,
                    transport,
                    rtcp_mux,
                    ice,
                } => StoredPending::FromClient {
                    ours: ours.to_string(),
                    transport: transport.as_str().to_owned(),
                    rtcp_mux: *rtcp_mux,
                    ice: ice.clone(),
                },
                Pending::FromPbx { offered, ice } => StoredPending::FromPbx {
                    offered: offered.iter().map(ToString::to_string).collect(),
                    ice: ice.clone(),
                },
            }),
            client_ours: self.client_ours.as_ref().map(ToString::to_string),
            client_ice: self.client_ice.clone(),
            answered: self.answered,
            origin_id: self.origin_id,
            origin_version: self.origin_version,
            relay: self.relay,
        }
    }

    fn from_stored(s: StoredSession) -> Result<Self> {
        let pending = match s.pending {
            None => None,
            Some(StoredPending::FromClient {
                ours,
                transport,
                rtcp_mux,
                ice,
            }) => Some(Pending::FromClient {
                ours: crypto_from_text(&ours)?,
                transport: MediaTransport::from_proto(&transport),
                rtcp_mux,
                ice,
            }),
            Some(StoredPending::FromPbx { offered, ice }) => Some(Pending::FromPbx {
                offered: offered
                    .iter()
                    .map(|t| crypto_from_text(t))
                    .collect::<Result<_>>()?,
                ice,
            }),
        };
        Ok(Session {
            request: s.request,
            created: s.created,
            view: s.view,
            pending,
            client_ours: s.client_ours.as_deref().map(crypto_from_text).transpose()?,
            client_ice: s.client_ice,
            // Not stored: the media plane restores the leg itself; a call restored while ringing
            // just does not restart hole punching when the PBX answers.
            client_leg: None,
            answered: s.answered,
            origin_id: s.origin_id,
            origin_version: s.origin_version,
            relay: s.relay,
        })
    }
}

/// Things the caller should announce after a successful request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new call was allocated.
    Started,
    /// A retry answered from the cache: nothing changed.
    Replayed,
    /// The first answer completed offer/answer.
    Answered,
    /// Anything else that changed state.
    Updated,
}

impl SessionTable {
    /// An empty table over `media`.
    pub fn new(
        media: Arc<dyn MediaPlane>,
        advertised: Advertised,
        client_suites: Vec<SrtpSuite>,
    ) -> Self {
        Self {
            media,
            client_host: advertised.client,
            advertised: RwLock::new(advertised),
            client_suites,
            table: Mutex::new(Table::default()),
            changes: AtomicU64::new(0),
        }
    }

    /// The media plane (for call queries that are not session-specific).
    pub fn media(&self) -> &Arc<dyn MediaPlane> {
        &self.media
    }

    /// The addresses XCC advertises now.
    pub fn advertised(&self) -> Advertised {
        // A poisoned lock still holds a valid Copy value: the writer cannot panic mid-store.
        *self.advertised.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the address signalled to clients from now on (public address discovery learned
    /// or lost one). Sessions already answered keep what they were told until their next offer.
    pub fn set_client_address(&self, client: IpAddr) {
        self.advertised
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .client = client;
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock is a bug already reported; the table itself stays
        // consistent (every mutation is a single insert/remove), so keep serving.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lock for a mutation: counts it in `changes` while holding the lock, so a reader that
    /// sees the new count and then locks sees the mutation too.
    fn lock_mut(&self) -> MutexGuard<'_, Table> {
        let table = self.lock();
        self.changes.fetch_add(1, Ordering::AcqRel);
        table
    }

    /// How many mutations the table has seen (a create, update, answer, delete, ... may not have
    /// changed anything, but nothing changes without moving this). The call store compares it
    /// with the value of its last round to skip exporting every session when none changed.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Creates a session from an initial offer by `from`, or returns the cached result of an earlier
    /// request carrying the same `key`.
    pub fn create(&self, key: &str, from: LegSide, sdp: &str) -> Result<(SessionView, Outcome)> {
        check_key(key)?;
        let mut table = self.lock_mut();
        if let Some(call) = table.by_key.get(key) {
            // by_key and sessions are updated together under this lock.
            let session = table.sessions.get(call).ok_or(Error::NotFound {
                field: "idempotency_key",
                call: *call,
            })?;
            if session.request.0 != from || session.request.1 != sdp {
                return Err(Error::InvalidArgument {
                    field: "idempotency_key",
                    reason: format!("already used by session {call} for a different offer"),
                });
            }
            return Ok((session.created.clone(), Outcome::Replayed));
        }
        let offer = parse(sdp)?;
        let audio = offer.audio().map_err(|e| Error::in_field("sdp", e))?;
        // Validate everything that depends only on the request before taking ports.
        let client_answer = match from {
            LegSide::Client => Some(choose_client_crypto(&audio, None)?),
            LegSide::Pbx => None,
        };
        let allocated = self.media.allocate()?;
        let call = allocated.call;
        let _span = crate::service::call_span(call).entered();
        let origin_id = call.0.wrapping_add(0x5843_4300_0000_0000);
        let mut session = Session {
            request: (from, sdp.to_owned()),
            created: placeholder_view(call, key, from, allocated.ports),
            view: placeholder_view(call, key, from, allocated.ports),
            pending: None,
            client_ours: None,
            client_ice: None,
            client_leg: None,
            answered: false,
            origin_id,
            origin_version: [0, 0],
            relay: allocated.relay,
        };
        let result = self.apply_offer(&mut session, from, offer, &audio, client_answer);
        match result {
            Ok(()) => {
                session.created = session.view.clone();
                let view = session.view.clone();
                table.by_key.insert(key.to_owned(), call);
                table.sessions.insert(call, session);
                tracing::info!(%call, %from, "session created");
                Ok((view, Outcome::Started))
            }
            Err(e) => {
                if let Err(release) = self.media.release(call) {
                    tracing::warn!(%call, error = %release, "releasing a half-created session failed");
                }
                Err(e)
            }
        }
    }

    /// A re-offer from `from` on an existing session.
    pub fn update(&self, call: CallId, from: LegSide, sdp: &str) -> Result<(SessionView, Outcome)> {
        let mut table = self.lock_mut();
        let session = table.sessions.get_mut(&call).ok_or(Error::NotFound {
            field: "session_id",
            call,
        })?;
        if session.pending.is_some() {
            return Err(Error::WrongState {
                call,
                reason: "an offer is already pending; answer it first",
            });
        }
        let offer = parse(sdp)?;
        let audio = offer.audio().map_err(|e| Error::in_field("sdp", e))?;
        let client_answer = match from {
            LegSide::Client => Some(choose_client_crypto(&audio, session.client_ours.as_ref())?),
            LegSide::Pbx => None,
        };
        self.apply_offer(session, from, offer, &audio, client_answer)?;
        Ok((session.view.clone(), Outcome::Updated))
    }

    /// The answer to the pending offer, from the side it was sent to.
    pub fn answer(&self, call: CallId, sdp: &str) -> Result<(SessionView, Outcome)> {
        let mut table = self.lock_mut();
        let session = table.sessions.get_mut(&call).ok_or(Error::NotFound {
            field: "session_id",
            call,
        })?;
        let Some(pending) = session.pending.clone() else {
            return Err(Error::WrongState {
                call,
                reason: "no offer is pending (state ACTIVE)",
            });
        };
        let answer = parse(sdp)?;
        let audio = answer.audio().map_err(|e| Error::in_field("sdp", e))?;
        let advertised = self.advertised();
        let (answerer, leg_config, rewrite, ice_to_offerer) = match &pending {
            Pending::FromClient {
                ours,
                transport,
                rtcp_mux,
                ice,
            } => {
                // The PBX answered XCC's plain-RTP offer; the client gets XCC's SRTP answer.
                let leg = plain_leg(&audio);
                let rw = client_rewrite(
                    session,
                    advertised.client,
                    transport.clone(),
                    *rtcp_mux,
                    vec![ours.clone()],
                );
                (LegSide::Pbx, leg, rw, ice.clone())
            }
            Pending::FromPbx { offered, ice } => {
                // The client answered XCC's SRTP offer; the PBX gets XCC's plain-RTP answer.
                let answered = audio
                    .cryptos
                    .first()
                    .ok_or_else(|| Error::InvalidArgument {
                        field: "sdp",
                        reason: "the client's answer carries no usable a=crypto".into(),
                    })?;
                sdes::accept_answer(offered, answered).map_err(|e| Error::in_field("sdp", e))?;
                let ours = offered
                    .iter()
                    .find(|o| o.tag == answered.tag)
                    .cloned()
                    // accept_answer checked the tag is one XCC offered.
                    .ok_or_else(|| Error::InvalidArgument {
                        field: "sdp",
                        reason: "answered tag was not offered".into(),
                    })?;
                let mut leg = plain_leg(&audio);
                leg.srtp = Some(SrtpKeys {
                    inbound: answered.key.clone(),
                    outbound: ours.key.clone(),
                });
                // The answer echoes the session parameters XCC offered (none): the client's say.
                leg.srtp_policy = answered.srtp_policy();
                // XCC offered ICE-lite; the leg answers checks only if the client does ICE.
                let remote_ice = RemoteIce::from_attributes(answer.audio_attribute_lines());
                let candidates = remote_ice.rtp_targets();
                leg.ice = remote_ice.credentials.map(|remote| IceSetup {
                    local: ice.clone(),
                    remote: Some(remote),
                    candidates,
                });
                session.client_ice = leg.ice.clone();
                session.client_ours = Some(ours);
                let rw = AudioRewrite {
                    address: advertised.pbx,
                    ports: session.view.ports[LegSide::Pbx.index()],
                    transport: MediaTransport::RtpAvp,
                    rtcp_mux: false,
                    crypto: Vec::new(),
                    direction: None,
                    rtcp_address: None,
                };
                (LegSide::Client, leg, rw, None)
            }
        };
        let offerer = answerer.other();
        let text = self.emit(session, answer, &rewrite, offerer, ice_to_offerer.as_ref())?;
        if answerer == LegSide::Client {
            session.client_leg = Some(leg_config.clone());
        }
        self.media.configure_leg(call, answerer, leg_config)?;
        if let (LegSide::Pbx, Some(client)) = (answerer, session.client_leg.clone()) {
            self.media.configure_leg(call, LegSide::Client, client)?;
        }
        session.pending = None;
        session.view.state = State::Active;
        session.view.sdp = text;
        session.view.sdp_for = offerer;
        let outcome = if session.answered {
            Outcome::Updated
        } else {
            Outcome::Answered
        };
        session.answered = true;
        Ok((session.view.clone(), outcome))
    }

    /// Forgets a pending re-offer the other side refused or never answered (SIP re-INVITE
    /// answered 4xx/5xx), so the next offer is not refused as "still pending". The offerer's leg
    /// keeps what the re-offer configured on it; the answering leg is untouched. An initial
    /// offer cannot be abandoned (the session is deleted instead): returns false then.
    pub fn abandon_offer(&self, call: CallId) -> bool {
        let mut table = self.lock_mut();
        let Some(session) = table.sessions.get_mut(&call) else {
            return false;
        };
        if !session.answered || session.pending.is_none() {
            return false;
        }
        session.pending = None;
        session.view.state = State::Active;
        true
    }

    /// Releases the session's media and forgets it.
    pub fn delete(&self, call: CallId) -> Result<()> {
        let mut table = self.lock_mut();
        let session = table.sessions.remove(&call).ok_or(Error::NotFound {
            field: "session_id",
            call,
        })?;
        table.by_key.remove(&session.view.idempotency_key);
        drop(table);
        self.media
            .release(call)
            .map_err(|e| Error::about_call("session_id", call, e))
    }

    /// Forgets a session whose media already ended (timeout, hang-up through Calls).
    pub fn forget(&self, call: CallId) {
        let mut table = self.lock_mut();
        if let Some(session) = table.sessions.remove(&call) {
            table.by_key.remove(&session.view.idempotency_key);
        }
    }

    /// A session's state for the call store (`None`: no gRPC session drives this call).
    pub fn export(&self, call: CallId) -> Option<StoredSession> {
        self.lock().sessions.get(&call).map(Session::to_stored)
    }

    /// Takes a stored session back after a restart, once its call was restored in the media
    /// plane; retries with its idempotency key are answered from it again.
    pub fn restore(&self, stored: StoredSession) -> Result<()> {
        let session = Session::from_stored(stored)?;
        let call = session.view.call;
        let mut table = self.lock_mut();
        table
            .by_key
            .insert(session.view.idempotency_key.clone(), call);
        table.sessions.insert(call, session);
        Ok(())
    }

    /// One session.
    pub fn get(&self, call: CallId) -> Result<SessionView> {
        self.lock()
            .sessions
            .get(&call)
            .map(|s| s.view.clone())
            .ok_or(Error::NotFound {
                field: "session_id",
                call,
            })
    }

    /// Every session, by id.
    pub fn list(&self) -> Vec<SessionView> {
        let mut all: Vec<_> = self
            .lock()
            .sessions
            .values()
            .map(|s| s.view.clone())
            .collect();
        all.sort_by_key(|v| v.call);
        all
    }

    /// Applies an offer from `from`: configures that leg and emits the offer for the other side.
    fn apply_offer(
        &self,
        session: &mut Session,
        from: LegSide,
        offer: SessionDescription,
        audio: &AudioMedia,
        client_answer: Option<(CryptoAttribute, CryptoAttribute)>,
    ) -> Result<()> {
        let call = session.view.call;
        let to = from.other();
        let advertised = self.advertised();
        let mut leg = plain_leg(audio);
        // Read before `offer` is consumed by the rewrite; only the client's ICE matters.
        let remote_ice = RemoteIce::from_attributes(offer.audio_attribute_lines());
        let (pending, rewrite, ice_to_client) = match (from, client_answer) {
            (LegSide::Client, Some((theirs, ours))) => {
                leg.srtp = Some(SrtpKeys {
                    inbound: theirs.key.clone(),
                    outbound: ours.key.clone(),
                });
                leg.srtp_policy = theirs.srtp_policy();
                leg.ice = client_offer_ice(session.client_ice.as_ref(), remote_ice);
                session.client_ice = leg.ice.clone();
                session.client_ours = Some(ours.clone());
                let pending = Pending::FromClient {
                    ours,
                    transport: audio.transport.clone(),
                    rtcp_mux: audio.rtcp_mux,
                    ice: leg.ice.as_ref().map(|setup| setup.local.clone()),
                };
                let rw = AudioRewrite {
                    address: advertised.pbx,
                    ports: session.view.ports[LegSide::Pbx.index()],
                    transport: MediaTransport::RtpAvp,
                    rtcp_mux: false,
                    crypto: Vec::new(),
                    direction: None,
                    rtcp_address: None,
                };
                (pending, rw, None)
            }
            _ => {
                let offered = sdes::offer(&self.client_suites);
                // XCC always offers ICE-lite to the client (a non-ICE client ignores the lines),
                // keeping the credentials the leg already answers checks with.
                let ice = session
                    .client_ice
                    .as_ref()
                    .map(|setup| setup.local.clone())
                    .unwrap_or_else(|| IceCredentials::generate(&mut rand::rng()));
                let rw = client_rewrite(
                    session,
                    advertised.client,
                    MediaTransport::RtpSavp,
                    false,
                    offered.clone(),
                );
                (
                    Pending::FromPbx {
                        offered,
                        ice: ice.clone(),
                    },
                    rw,
                    Some(ice),
                )
            }
        };
        let text = self.emit(session, offer, &rewrite, to, ice_to_client.as_ref())?;
        if from == LegSide::Client {
            session.client_leg = Some(leg.clone());
        }
        self.media.configure_leg(call, from, leg)?;
        session.pending = Some(pending);
        session.view.state = State::AwaitingAnswer;
        session.view.offer_from = from;
        session.view.sdp = text;
        session.view.sdp_for = to;
        Ok(())
    }

    /// Rewrites `sdp` for leg `to` with XCC as the session owner and a bumped origin version;
    /// `ice` (client leg only) adds XCC's ICE-lite lines: host candidates for the leg's bound
    /// ports (plus server-reflexive ones on a different advertised address), or relay candidates
    /// only when the session's client leg is relayed through TURN.
    fn emit(
        &self,
        session: &mut Session,
        mut sdp: SessionDescription,
        rw: &AudioRewrite,
        to: LegSide,
        ice: Option<&IceCredentials>,
    ) -> Result<String> {
        sdp.rewrite_audio(rw)
            .map_err(|e| Error::in_field("sdp", e))?;
        if let (LegSide::Client, Some(local)) = (to, ice) {
            // The bound ports: `rw.ports` are the relayed ones when the leg is relayed.
            let bound = session.view.ports[LegSide::Client.index()];
            let rtcp = (!rw.rtcp_mux).then_some(bound.rtcp);
            let host = SocketAddr::new(self.client_host, bound.rtp);
            let candidates = match &session.relay {
                // Relayed only: with TURN nothing reaches the host or reflexive address.
                Some(relay) => relay_candidates(relay, host, rtcp),
                // Host candidate on the local address, server-reflexive on the public one when
                // discovery learned a different one.
                None => {
                    let public = Some(rw.address).filter(|ip| *ip != self.client_host);
                    leg_candidates(host, rtcp, public)
                }
            };
            let lines = answer_lines(local, &candidates);
            sdp.add_ice_lines(&lines)
                .map_err(|e| Error::in_field("sdp", e))?;
        }
        let version = &mut session.origin_version[to.index()];
        *version += 1;
        sdp.set_origin(session.origin_id, *version, rw.address);
        Ok(sdp.to_string())
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument {
            field: "idempotency_key",
            reason: "required".into(),
        });
    }
    if key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(Error::InvalidArgument {
            field: "idempotency_key",
            reason: format!("{} bytes, at most {MAX_IDEMPOTENCY_KEY} allowed", key.len()),
        });
    }
    Ok(())
}

fn parse(sdp: &str) -> Result<SessionDescription> {
    if sdp.trim().is_empty() {
        return Err(Error::InvalidArgument {
            field: "sdp",
            reason: "required".into(),
        });
    }
    SessionDescription::parse(sdp).map_err(|e| Error::in_field("sdp", e))
}

/// The client's offer must carry a suite XCC supports. When XCC already has a key of the chosen
/// suite on this leg (a re-offer), it keeps it so media continues uninterrupted.
fn choose_client_crypto(
    audio: &AudioMedia,
    current: Option<&CryptoAttribute>,
) -> Result<(CryptoAttribute, CryptoAttribute)> {
    if audio.cryptos.is_empty() {
        return Err(Error::InvalidArgument {
            field: "sdp",
            reason:
                "the client's offer carries no supported a=crypto (the client leg is SDES-SRTP)"
                    .into(),
        });
    }
    let (theirs, mut ours) = sdes::answer(&audio.cryptos).map_err(|e| Error::in_field("sdp", e))?;
    if let Some(current) = current.filter(|c| c.suite == ours.suite) {
        ours = CryptoAttribute {
            tag: theirs.tag,
            ..current.clone()
        };
    }
    Ok((theirs, ours))
}

/// The client leg's ICE setup for a client offer: none unless the offer carries valid ICE
/// credentials; XCC's credentials are kept while the client's ufrag stays the same and are
/// fresh (CSPRNG) for a first offer or an ICE restart (RFC 8445 §9: a changed ufrag).
fn client_offer_ice(current: Option<&IceSetup>, offer: RemoteIce) -> Option<IceSetup> {
    let candidates = offer.rtp_targets();
    let remote = offer.credentials?;
    let same_ufrag = |setup: &&IceSetup| {
        setup
            .remote
            .as_ref()
            .is_some_and(|r| r.ufrag == remote.ufrag)
    };
    let local = current
        .filter(same_ufrag)
        .map(|setup| setup.local.clone())
        // ThreadRng is a ChaCha CSPRNG seeded and reseeded from the OS; the pwd is a key.
        .unwrap_or_else(|| IceCredentials::generate(&mut rand::rng()));
    Some(IceSetup {
        local,
        remote: Some(remote),
        candidates,
    })
}

/// What XCC writes into SDP for the client leg: the advertised address and bound ports, or, when
/// the leg is relayed through TURN, the RTP allocation's address and port with a=rtcp naming the
/// RTCP allocation (under rtcp-mux RTCP shares the RTP allocation, so a=rtcp, if the SDP has one,
/// names that).
fn client_rewrite(
    session: &Session,
    advertised: IpAddr,
    transport: MediaTransport,
    rtcp_mux: bool,
    crypto: Vec<CryptoAttribute>,
) -> AudioRewrite {
    let (address, ports, rtcp_address) = match session.relay {
        None => (
            advertised,
            session.view.ports[LegSide::Client.index()],
            None,
        ),
        Some(relay) => {
            let rtcp = if rtcp_mux { relay.rtp } else { relay.rtcp };
            let ports = LegPorts {
                rtp: relay.rtp.port(),
                rtcp: rtcp.port(),
            };
            (relay.rtp.ip(), ports, Some(relay.rtcp))
        }
    };
    AudioRewrite {
        address,
        ports,
        transport,
        rtcp_mux,
        crypto,
        direction: None,
        rtcp_address,
    }
}

/// Leg configuration from the peer's SDP, without keys.
fn plain_leg(audio: &AudioMedia) -> LegConfig {
    let remote_rtp = match (audio.connection, audio.port) {
        (Some(ip), port) if port != 0 => Some(SocketAddr::new(ip, port)),
        _ => None,
    };
    LegConfig {
        remote_rtp,
        remote_rtcp: audio.rtcp,
        rtcp_mux: audio.rtcp_mux,
        srtp: None,
        direction: audio.direction,
        srtp_policy: SrtpPolicy::default(),
        clock_rates: audio.clock_rates.clone(),
        // Set by the caller for the client leg when ICE was negotiated; never on the PBX leg.
        ice: None,
    }
}

fn placeholder_view(call: CallId, key: &str, from: LegSide, ports: [LegPorts; 2]) -> SessionView {
    SessionView {
        call,
        idempotency_key: key.to_owned(),
        state: State::AwaitingAnswer,
        offer_from: from,
        sdp: String::new(),
        sdp_for: from.other(),
        ports,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use base64::Engine;
    use xcc_core::media::{AllocatedCall, CallSnapshot, Direction, PoolStatus};
    use xcc_core::nat::candidate::CandidateType;
    use xcc_core::srtp::KeyingMaterial;

    use super::*;

    /// Records what the session layer asks of the media plane.
    #[derive(Default)]
    struct Recorder {
        next: Mutex<u64>,
        free_calls: Mutex<usize>,
        configured: Mutex<Vec<(CallId, LegSide, LegConfig)>>,
        released: Mutex<Vec<CallId>>,
        /// Handed out with every allocation, as a media plane with `[turn]` does.
        relay: Option<RelayedPorts>,
    }

    impl Recorder {
        fn with_capacity(calls: usize) -> Arc<Self> {
            let r = Arc::new(Self::default());
            *r.free_calls.lock().unwrap() = calls;
            r
        }
        fn with_relay(calls: usize, relay: RelayedPorts) -> Arc<Self> {
            let r = Arc::new(Self {
                relay: Some(relay),
                ..Self::default()
            });
            *r.free_calls.lock().unwrap() = calls;
            r
        }
        fn leg(&self, call: CallId, side: LegSide) -> LegConfig {
            let all = self.configured.lock().unwrap();
            let found = all.iter().rev().find(|(c, s, _)| *c == call && *s == side);
            found.map(|(_, _, l)| l.clone()).expect("leg configured")
        }
        fn allocations(&self) -> u64 {
            *self.next.lock().unwrap()
        }
    }

    impl MediaPlane for Recorder {
        fn allocate(&self) -> xcc_core::Result<AllocatedCall> {
            let mut free = self.free_calls.lock().unwrap();
            if *free == 0 {
                return Err(xcc_core::Error::PoolExhausted { free: 0, needed: 4 });
            }
            *free -= 1;
            let mut next = self.next.lock().unwrap();
            *next += 1;
            let base = 40000 + 4 * (*next as u16);
            let ports = [
                LegPorts {
                    rtp: base,
                    rtcp: base + 1,
                },
                LegPorts {
                    rtp: base + 2,
                    rtcp: base + 3,
                },
            ];
            Ok(AllocatedCall {
                call: CallId(*next),
                ports,
                relay: self.relay,
            })
        }
        fn configure_leg(
            &self,
            call: CallId,
            side: LegSide,
            config: LegConfig,
        ) -> xcc_core::Result<()> {
            self.configured.lock().unwrap().push((call, side, config));
            Ok(())
        }
        fn release(&self, call: CallId) -> xcc_core::Result<()> {
            self.released.lock().unwrap().push(call);
            Ok(())
        }
        fn snapshot(&self, call: CallId) -> xcc_core::Result<CallSnapshot> {
            Err(xcc_core::Error::UnknownCall(call))
        }
        fn calls(&self) -> Vec<CallSnapshot> {
            Vec::new()
        }
        fn pool_status(&self) -> PoolStatus {
            PoolStatus::default()
        }
        fn workers(&self) -> usize {
            1
        }
    }

    const PUBLIC: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
    const PBX_SIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

    fn table(media: Arc<Recorder>) -> SessionTable {
        SessionTable::new(
            media,
            Advertised {
                client: PUBLIC,
                pbx: PBX_SIDE,
            },
            vec![SrtpSuite::AesCm128HmacSha1_80],
        )
    }

    fn key_b64(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 30])
    }

    fn sdp(ip: &str, port: u16, transport: &str, extra: &str) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} {transport} 0 8\r\n\
             a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n{extra}"
        )
    }

    fn client_offer(port: u16, direction: &str) -> String {
        let crypto = format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
            key_b64(7)
        );
        sdp(
            "192.0.2.50",
            port,
            "RTP/SAVP",
            &format!("{crypto}a={direction}\r\n"),
        )
    }

    fn pbx_sdp(port: u16) -> String {
        sdp("198.51.100.9", port, "RTP/AVP", "a=sendrecv\r\n")
    }

    fn audio_of(text: &str) -> AudioMedia {
        SessionDescription::parse(text).unwrap().audio().unwrap()
    }

    fn crypto_in(text: &str) -> CryptoAttribute {
        audio_of(text)
            .cryptos
            .first()
            .cloned()
            .expect("a=crypto in XCC's SDP")
    }

    /// The client's answer to XCC's SRTP offer, whose crypto line was `offered`: RTP/SAVP from
    /// 192.0.2.50:5004, the offered tag, the client's key `key_b64(9)`.
    fn client_answer(offered: &CryptoAttribute) -> String {
        let crypto = format!(
            "a=crypto:{} AES_CM_128_HMAC_SHA1_80 inline:{}\r\na=sendrecv\r\n",
            offered.tag,
            key_b64(9)
        );
        sdp("192.0.2.50", 5004, "RTP/SAVP", &crypto)
    }

    fn material(byte: u8) -> KeyingMaterial {
        KeyingMaterial::new(SrtpSuite::AesCm128HmacSha1_80, &[byte; 16], &[byte; 14]).unwrap()
    }

    #[test]
    fn client_offer_keys_the_client_leg_and_offers_plain_rtp_to_the_pbx() {
        let media = Recorder::with_capacity(4);
        let t = table(media.clone());
        let (v, outcome) = t
            .create("k", LegSide::Client, &client_offer(5004, "sendrecv"))
            .unwrap();
        assert_eq!(outcome, Outcome::Started);
        assert_eq!((v.state, v.sdp_for), (State::AwaitingAnswer, LegSide::Pbx));
        let to_pbx = audio_of(&v.sdp);
        assert_eq!(to_pbx.transport, MediaTransport::RtpAvp);
        assert!(to_pbx.cryptos.is_empty());
        assert_eq!(to_pbx.connection, Some(PBX_SIDE));
        assert_eq!(to_pbx.port, v.ports[LegSide::Pbx.index()].rtp);
        let leg = media.leg(v.call, LegSide::Client);
        assert_eq!(leg.remote_rtp, Some("192.0.2.50:5004".parse().unwrap()));
        let keys = leg.srtp.expect("client leg is SRTP");
        assert_eq!(
            keys.inbound,
            material(7),
            "XCC decrypts with the client's key"
        );
        assert_ne!(keys.outbound, material(7), "XCC encrypts with its own key");
    }

    #[test]
    fn abandoned_reoffer_lets_the_next_one_through_but_not_an_initial_offer() {
        let media = Recorder::with_capacity(4);
        let t = table(media.clone());
        let (v, _) = t
            .create("k", LegSide::Client, &client_offer(5004, "sendrecv"))
            .unwrap();
        assert!(
            !t.abandon_offer(v.call),
            "an initial offer is not abandoned"
        );
        t.answer(v.call, &pbx_sdp(6000)).unwrap();
        t.update(v.call, LegSide::Client, &client_offer(5004, "sendonly"))
            .unwrap();
        assert!(matches!(
            t.update(v.call, LegSide::Client, &client_offer(5004, "sendonly")),
            Err(Error::WrongState { .. })
        ));
        assert!(t.abandon_offer(v.call));
        assert_eq!(t.get(v.call).unwrap().state, State::Active);
        assert!(!t.abandon_offer(v.call), "nothing pending any more");
        t.update(v.call, LegSide::Client, &client_offer(5004, "sendrecv"))
            .expect("the next re-offer is accepted");
    }

    /// The call store skips exporting sessions while `changes` stands still: every mutation
    /// must move it (a missed one would leave a stale record on disk), reads must not.
    #[test]
    fn every_mutation_moves_the_change_count_and_reads_do_not() {
        let media = Recorder::with_capacity(8);
        let t = table(media.clone());
        let mut last = t.changes();
        let mut moved = |t: &SessionTable, what: &str| {
            let now = t.changes();
            assert!(now > last, "{what} did not move the change count");
            last = now;
        };
        let (v, _) = t
            .create("k", LegSide::Client, &client_offer(5004, "sendrecv"))
            .unwrap();
        moved(&t, "create");
        t.answer(v.call, &pbx_sdp(6000)).unwrap();
        moved(&t, "answer");
        t.update(v.call, LegSide::Client, &client_offer(5004, "sendonly"))
            .unwrap();
        moved(&t, "update");
        assert!(t.abandon_offer(v.call));
        moved(&t, "abandon_offer");
        let before_reads = t.changes();
        let stored = t.export(v.call).unwrap();
        let _ = (t.get(v.call).unwrap(), t.list());
        assert_eq!(t.changes(), before_reads, "reads moved the change count");
        t.delete(v.call).unwrap();
        moved(&t, "delete");
        t.restore(stored).unwrap();
        moved(&t, "restore");
        t.forget(v.call);
        moved(&t, "forget");
    }

    #[test]
    fn pbx_answer_gives_the_client_xccs_srtp_answer() {
        let media = Recorder::with_capacity(4);
        let t = table(media.clone());
        let (v, _) = t
            .create("k", LegSide::Client, &client_offer(5004, "sendrecv"))
            .unwrap();
        let (a, outcome) = t.answer(v.call, &pbx_sdp(6000)).unwrap();
        assert_eq!(outcome, Outcome::Answered);
        assert_eq!((a.state, a.sdp_for), (State::Active, LegSide::Client));
        let pbx_leg = media.leg(v.call, LegSide::Pbx);
        assert_eq!(
            pbx_leg.remote_rtp,
            Some("198.51.100.9:6000".parse().unwrap())
        );
        assert!(pbx_leg.srtp.is_none());
        let to_client = audio_of(&a.sdp);
        assert_eq!(to_client.transport, MediaTransport::RtpSavp);
        assert_eq!(to_client.connection, Some(PUBLIC));
        assert_eq!(to_client.port, a.ports[LegSide::Client.index()].rtp);
        let ours = crypto_in(&a.sdp);
        assert_eq!(ours.tag, 1);
        let keys = media.leg(v.call, LegSide::Client).srtp.unwrap();
        assert_eq!(
            ours.key, keys.outbound,
            "the answer carries the key XCC encrypts with"
        );
        let err = t.answer(v.call, &pbx_sdp(6000)).unwrap_err();
        assert!(matches!(err, Error::WrongState { .. }), "{err}");
    }

    #[test]
    fn pbx_offer_gets_an_srtp_offer_and_the_client_answer_keys_the_leg() {
        let media = Recorder::with_capacity(4);
        let t = table(media.clone());
        let (v, _) = t.create("k", LegSide::Pbx, &pbx_sdp(6000)).unwrap();
        assert_eq!(v.sdp_for, LegSide::Client);
        let offered = crypto_in(&v.sdp);
        let (a, _) = t.answer(v.call, &client_answer(&offered)).unwrap();
        assert_eq!(a.sdp_for, LegSide::Pbx);
        let to_pbx = audio_of(&a.sdp);
        assert_eq!(to_pbx.transport, MediaTransport::RtpAvp);
        assert!(to_pbx.cryptos.is_empty());
        let keys = media.leg(v.call, LegSide::Client).srtp.unwrap();
        assert_eq!(keys.outbound, offered.key);
        assert_eq!(keys.inbound, material(9));
    }

    #[test]
    fn a_stored_pending_offer_is_answered_after_a_restore() {
        let media = Recorder::with_capacity(4);
        let before = table(media.clone());
        let (v, _) = before.create("k", LegSide::Pbx, &pbx_sdp(6000)).unwrap();
        let offered = crypto_in(&v.sdp);
        // Through the store's serialization, into a table of a restarted daemon.
        let json = serde_json::to_string(&before.export(v.call).unwrap()).unwrap();
        let stored: StoredSession = serde_json::from_str(&json).unwrap();
        assert_eq!(stored.call(), v.call);
        let after = table(media.clone());
        after.restore(stored).unwrap();
        assert_eq!(after.get(v.call).unwrap(), v);
        let (a, outcome) = after.answer(v.call, &client_answer(&offered)).unwrap();
        assert_eq!((a.state, outcome), (State::Active, Outcome::Answered));
        let keys = media.leg(v.call, LegSide::Client).srtp.unwrap();
        assert_eq!(
            keys.outbound, offered.key,
            "the key XCC offered before the restart"
        );
        let (replayed, outcome) = after.create("k", LegSide::Pbx, &pbx_sdp(6000)).unwrap();
        assert_eq!((replayed.call, outcome), (v.call, Outcome::Replayed));
    }

    #[test]
    fn retry_with_the_same_key_returns_the_first_result_without_allocating() {
        let media = Recorder::with_capacity(4);
        let t = table(media.clone());
        let offer = client_offer(5004, "sendrecv");
        let (first, _) = t.create("k", LegSide::Client, &offer).unwrap();
        let (again, outcome) = t.create("k", LegSide::Client, &offer).unwrap();
        assert_eq!(outcome, Outcome::Replayed);
        assert_eq!(first, again);
        assert_eq!(media.allocations(), 1);
        let err = t
            .create("k", LegSide::Client, &client_offer(5006, "sendrecv"))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidArgument {
                    field: "idempotency_key",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn invalid_offers_never_allocate() {
        let media = Recorder::with_capacity(4);
        let t = table(media.clone());
        for bad in [String::new(), "garbage".into(), pbx_sdp(6000)] {
            let err = t.create("k", LegSide::Client, &bad).unwrap_err();
            let names_sdp = matches!(
                err,
                Error::InvalidArgument { field: "sdp", .. }
                    | Error::Media {
                        field: Some("sdp"),
                        ..
                    }
            );
            assert!(names_sdp, "{err}");
        }
        assert_eq!(media.allocations(), 0);
    }

    #[test]
    fn exhausted_pool_is_reported_as_such() {
        let t = table(Recorder::with_capacity(0));
        let err = t.create("k", LegSide::Pbx, &pbx_sdp(6000)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Media {
                    source: xcc_core::Error::PoolExhausted { .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn client_hold_reoffer_keeps_xccs_key_and_passes_the_direction() {
        let media = Recorder::with_capacity(4);
        let t = table(media.clone());
        let (v, _) = t
            .create("k", LegSide::Client, &client_offer(5004, "sendrecv"))
            .unwrap();
        let (a, _) = t.answer(v.call, &pbx_sdp(6000)).unwrap();
        let before = crypto_in(&a.sdp);
        let (u, outcome) = t
            .update(v.call, LegSide::Client, &client_offer(5004, "sendonly"))
            .unwrap();
        assert_eq!(outcome, Outcome::Updated);
        assert_eq!(
            media.leg(v.call, LegSide::Client).direction,
            Direction::SendOnly
        );
        assert_eq!(
            audio_of(&u.sdp).direction,
            Direction::SendOnly,
            "hold is passed on to the PBX"
        );
        let err = t.update(v.call, LegSide::Pbx, &pbx_sdp(6000)).unwrap_err();
        assert!(matches!(err, Error::WrongState { .. }), "glare: {err}");
        let (a2, _) = t.answer(v.call, &pbx_sdp(6000)).unwrap();
        assert_eq!(
            crypto_in(&a2.sdp).key,
            before.key,
            "media continues on the same key"
        );
    }

    const CLIENT_ICE: &str = "a=ice-ufrag:Phn1\r\na=ice-pwd:phonepasswordphonepassword\r\n\
                              a=candidate:1 1 UDP 2130706431 192.0.2.50 5004 typ host\r\n";

    fn ice_client_offer(ufrag: &str) -> String {
        let crypto = format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
            key_b64(7)
        );
        let ice = CLIENT_ICE.replace("Phn1", ufrag);
        sdp(
            "192.0.2.50",
            5004,
            "RTP/SAVP",
            &format!("{crypto}{ice}a=sendrecv\r\n"),
        )
    }

    fn has_any_ice(text: &str) -> bool {
        ["a=ice-", "a=candidate"].iter().any(|p| text.contains(p))
    }

    /// XCC's ufrag/pwd and candidates as the client reads them from XCC's SDP.
    fn xcc_ice(text: &str) -> RemoteIce {
        let parsed = SessionDescription::parse(text).unwrap();
        RemoteIce::from_attributes(parsed.audio_attribute_lines())
    }

    #[test]
    fn ice_offer_sets_up_the_client_leg_and_the_answer_is_ice_lite() {
        let media = Recorder::with_capacity(4);
        let t = table(media.clone());
        let (v, _) = t
            .create("k", LegSide::Client, &ice_client_offer("Phn1"))
            .unwrap();
        assert!(!has_any_ice(&v.sdp), "the PBX never sees ICE: {}", v.sdp);
        let setup = media
            .leg(v.call, LegSide::Client)
            .ice
            .expect("client leg answers ICE checks");
        let remote = setup.remote.clone().expect("client's credentials");
        assert_eq!(
            (remote.ufrag.as_str(), remote.pwd.as_str()),
            ("Phn1", "phonepasswordphonepassword")
        );
        assert!(setup.local.is_valid());

        let (a, _) = t.answer(v.call, &pbx_sdp(6000)).unwrap();
        assert!(media.leg(v.call, LegSide::Pbx).ice.is_none());
        assert!(a.sdp.contains("a=ice-lite\r\n"), "{}", a.sdp);
        let ice_lite_at = a.sdp.find("a=ice-lite").unwrap();
        assert!(
            ice_lite_at < a.sdp.find("m=audio").unwrap(),
            "session level"
        );
        let ours = xcc_ice(&a.sdp);
        assert_eq!(ours.credentials, Some(setup.local.clone()));
        let ports = a.ports[LegSide::Client.index()];
        let mut got: Vec<(u16, SocketAddr)> = ours
            .candidates
            .iter()
            .map(|c| (c.component, c.address))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (1, SocketAddr::new(PUBLIC, ports.rtp)),
                (2, SocketAddr::new(PUBLIC, ports.rtcp)),
            ]
        );
        assert!(
            !a.sdp.contains("Phn1"),
            "the client's own ICE is not echoed"
        );
    }

    #[test]
    fn non_ice_offer_gets_no_ice_anywhere() {
        let media = Recorder::with_capacity(4);
        let t = table(media.clone());
        let (v, _) = t
            .create("k", LegSide::Client, &client_offer(5004, "sendrecv"))
            .unwrap();
        let (a, _) = t.answer(v.call, &pbx_sdp(6000)).unwrap();
        assert!(media.leg(v.call, LegSide::Client).ice.is_none());
        assert!(media.leg(v.call, LegSide::Pbx).ice.is_none());
        assert!(!has_any_ice(&v.sdp) && !has_any_ice(&a.sdp), "{}", a.sdp);
    }

    #[test]
    fn reoffer_keeps_xccs_credentials_and_an_ice_restart_renews_them() {
        let media = Recorder::with_capacity(4);
        let t = table(media.clone());
        let (v, _) = t
            .create("k", LegSide::Client, &ice_client_offer("Phn1"))
            .unwrap();
        let (a, _) = t.answer(v.call, &pbx_sdp(6000)).unwrap();
        let first = xcc_ice(&a.sdp).credentials.unwrap();
        t.update(v.call, LegSide::Client, &ice_client_offer("Phn1"))
            .unwrap();
        let (a2, _) = t.answer(v.call, &pbx_sdp(6000)).unwrap();
        assert_eq!(xcc_ice(&a2.sdp).credentials.as_ref(), Some(&first));
        assert_eq!(media.leg(v.call, LegSide::Client).ice.unwrap().local, first);
        t.update(v.call, LegSide::Client, &ice_client_offer("Phn2"))
            .unwrap();
        let (a3, _) = t.answer(v.call, &pbx_sdp(6000)).unwrap();
        let restarted = xcc_ice(&a3.sdp).credentials.unwrap();
        assert_ne!(restarted.ufrag, first.ufrag, "ICE restart: new ufrag");
        assert_ne!(restarted.pwd, first.pwd, "ICE restart: new pwd");
        let setup = media.leg(v.call, LegSide::Client).ice.unwrap();
        assert_eq!(setup.local, restarted);
        assert_eq!(setup.remote.unwrap().ufrag, "Phn2");
    }

    #[test]
    fn pbx_offer_offers_ice_lite_to_the_client_and_takes_its_answer_credentials() {
        let media = Recorder::with_capacity(4);
        let t = table(media.clone());
        let pbx_offer = format!(
            "{}a=ice-ufrag:Pbx1\r\na=ice-pwd:pbxpasswordpbxpasswordpbx\r\n",
            pbx_sdp(6000)
        );
        let (v, _) = t.create("k", LegSide::Pbx, &pbx_offer).unwrap();
        assert!(!v.sdp.contains("Pbx1"), "the PBX's ICE lines are stripped");
        assert!(v.sdp.contains("a=ice-lite\r\n"), "{}", v.sdp);
        let offered_ice = xcc_ice(&v.sdp);
        let local = offered_ice.credentials.clone().expect("XCC's credentials");
        let ports = v.ports[LegSide::Client.index()];
        assert!(
            offered_ice
                .candidates
                .iter()
                .any(|c| c.component == 1 && c.address == SocketAddr::new(PUBLIC, ports.rtp))
        );
        let offered = crypto_in(&v.sdp);
        let answer = sdp(
            "192.0.2.50",
            5004,
            "RTP/SAVP",
            &format!(
                "a=crypto:{} AES_CM_128_HMAC_SHA1_80 inline:{}\r\n{CLIENT_ICE}a=sendrecv\r\n",
                offered.tag,
                key_b64(9)
            ),
        );
        let (a, _) = t.answer(v.call, &answer).unwrap();
        assert!(!has_any_ice(&a.sdp), "the PBX never sees ICE: {}", a.sdp);
        let setup = media.leg(v.call, LegSide::Client).ice.expect("ICE leg");
        assert_eq!(setup.local, local);
        assert_eq!(setup.remote.unwrap().ufrag, "Phn1");
        assert!(media.leg(v.call, LegSide::Pbx).ice.is_none());
        // A PBX re-offer keeps XCC's credentials, which the leg already answers checks with.
        let (r, _) = t.update(v.call, LegSide::Pbx, &pbx_sdp(6000)).unwrap();
        assert_eq!(xcc_ice(&r.sdp).credentials, Some(local));
    }

    #[test]
    fn pbx_offer_answered_without_ice_leaves_the_leg_without_ice() {
        let media = Recorder::with_capacity(4);
        let t = table(media.clone());
        let (v, _) = t.create("k", LegSide::Pbx, &pbx_sdp(6000)).unwrap();
        let offered = crypto_in(&v.sdp);
        t.answer(v.call, &client_answer(&offered)).unwrap();
        assert!(media.leg(v.call, LegSide::Client).ice.is_none());
    }

    /// XCC's SDP for the client with the random parts (key, ICE credentials) put back into a
    /// literal, so a test can compare the whole text.
    fn with_random_parts(template: &str, sdp: &str) -> String {
        let mut out = template.replace("{crypto}", &crypto_in(sdp).to_string());
        if let Some(ice) = xcc_ice(sdp).credentials {
            out = out
                .replace("{ufrag}", &ice.ufrag)
                .replace("{pwd}", &ice.pwd);
        }
        out
    }

    #[test]
    fn without_relay_the_client_answer_is_the_pre_turn_text() {
        let media = Recorder::with_capacity(4);
        let t = table(media);
        let (v, _) = t
            .create("k", LegSide::Client, &ice_client_offer("Phn1"))
            .unwrap();
        let (a, _) = t.answer(v.call, &pbx_sdp(6000)).unwrap();
        let expected = "v=0\r\no=- 6360000766056333313 1 IN IP4 203.0.113.10\r\ns=-\r\n\
            c=IN IP4 203.0.113.10\r\nt=0 0\r\na=ice-lite\r\nm=audio 40004 RTP/SAVP 0 8\r\n\
            a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\na=crypto:{crypto}\r\n\
            a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n\
            a=candidate:1 1 UDP 2130706431 203.0.113.10 40004 typ host\r\n\
            a=candidate:1 2 UDP 2130706430 203.0.113.10 40005 typ host\r\n";
        assert_eq!(a.sdp, with_random_parts(expected, &a.sdp));
    }

    #[test]
    fn without_relay_the_offer_to_the_client_is_the_pre_turn_text() {
        let media = Recorder::with_capacity(4);
        let t = table(media);
        t.set_client_address("198.51.100.77".parse().unwrap());
        let (v, _) = t.create("k", LegSide::Pbx, &pbx_sdp(6000)).unwrap();
        let expected = "v=0\r\no=- 6360000766056333313 1 IN IP4 198.51.100.77\r\ns=-\r\n\
            c=IN IP4 198.51.100.77\r\nt=0 0\r\na=ice-lite\r\nm=audio 40004 RTP/SAVP 0 8\r\n\
            a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\na=crypto:{crypto}\r\n\
            a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n\
            a=candidate:1 1 UDP 2130706431 203.0.113.10 40004 typ host\r\n\
            a=candidate:1 2 UDP 2130706430 203.0.113.10 40005 typ host\r\n\
            a=candidate:2 1 UDP 1694498815 198.51.100.77 40004 typ srflx raddr 203.0.113.10 rport 40004\r\n\
            a=candidate:2 2 UDP 1694498814 198.51.100.77 40005 typ srflx raddr 203.0.113.10 rport 40005\r\n";
        assert_eq!(v.sdp, with_random_parts(expected, &v.sdp));
    }

    /// RTP and RTCP allocations on different relayed IPs, as a TURN server may hand out.
    const RELAY_RTP: &str = "192.0.2.80:49152";
    const RELAY_RTCP: &str = "192.0.2.81:50000";
    const RELAY_MAPPED: &str = "198.51.100.200:61000";

    fn relay(mapped: Option<&str>) -> RelayedPorts {
        RelayedPorts {
            rtp: RELAY_RTP.parse().unwrap(),
            rtcp: RELAY_RTCP.parse().unwrap(),
            mapped: mapped.map(|m| m.parse().unwrap()),
        }
    }

    fn ice_mux_client_offer() -> String {
        ice_client_offer("Phn1").replace("a=sendrecv\r\n", "a=rtcp-mux\r\na=sendrecv\r\n")
    }

    /// (component, kind, address, related) of XCC's candidates, sorted.
    fn candidates_in(text: &str) -> Vec<(u16, CandidateType, SocketAddr, Option<SocketAddr>)> {
        let mut all: Vec<_> = xcc_ice(text)
            .candidates
            .iter()
            .map(|c| (c.component, c.kind, c.address, c.related))
            .collect();
        all.sort_by_key(|c| c.0);
        all
    }

    /// The c=, o=, m= port and a=rtcp of XCC's SDP for the client name the TURN allocations.
    fn assert_names_the_relay(text: &str, relay: &RelayedPorts) {
        let parsed = SessionDescription::parse(text).unwrap();
        let audio = parsed.audio().unwrap();
        assert_eq!(audio.connection, Some(relay.rtp.ip()), "{text}");
        assert_eq!(audio.port, relay.rtp.port(), "{text}");
        assert_eq!(parsed.origin().unwrap().address, relay.rtp.ip().to_string());
        let connection = format!("c=IN IP4 {}", relay.rtp.ip());
        assert!(
            text.lines()
                .filter(|l| l.starts_with("c="))
                .all(|l| l == connection),
            "{text}"
        );
    }

    #[test]
    fn relayed_client_answer_carries_the_relay_and_only_relay_candidates() {
        let relay = relay(Some(RELAY_MAPPED));
        let media = Recorder::with_relay(4, relay);
        let t = table(media.clone());
        let (v, _) = t
            .create("k", LegSide::Client, &ice_client_offer("Phn1"))
            .unwrap();
        let to_pbx = audio_of(&v.sdp);
        assert_eq!(
            (to_pbx.connection, to_pbx.port),
            (Some(PBX_SIDE), v.ports[LegSide::Pbx.index()].rtp),
            "the PBX leg is never relayed"
        );
        assert!(!v.sdp.contains("192.0.2.8"), "{}", v.sdp);

        let (a, _) = t.answer(v.call, &pbx_sdp(6000)).unwrap();
        assert_names_the_relay(&a.sdp, &relay);
        assert!(!a.sdp.contains(&PUBLIC.to_string()), "{}", a.sdp);
        assert_eq!(audio_of(&a.sdp).rtcp, Some(relay.rtcp));
        assert_eq!(a.sdp.matches("a=rtcp:").count(), 1, "{}", a.sdp);
        let mapped = Some(RELAY_MAPPED.parse().unwrap());
        assert_eq!(
            candidates_in(&a.sdp),
            [
                (1, CandidateType::Relayed, relay.rtp, mapped),
                (2, CandidateType::Relayed, relay.rtcp, mapped),
            ],
            "no host or server-reflexive candidate: {}",
            a.sdp
        );
        let setup = media.leg(v.call, LegSide::Client).ice.unwrap();
        assert_eq!(xcc_ice(&a.sdp).credentials, Some(setup.local));
        assert_eq!(
            a.ports[LegSide::Client.index()],
            v.ports[LegSide::Client.index()],
            "the view still reports the bound ports"
        );
    }

    #[test]
    fn relayed_offer_to_the_client_carries_the_relay_and_only_relay_candidates() {
        let relay = relay(None);
        let media = Recorder::with_relay(4, relay);
        let t = table(media.clone());
        // A learned public address would add server-reflexive candidates without the relay.
        t.set_client_address("198.51.100.77".parse().unwrap());
        let (v, _) = t.create("k", LegSide::Pbx, &pbx_sdp(6000)).unwrap();
        assert_names_the_relay(&v.sdp, &relay);
        assert!(!v.sdp.contains("198.51.100.77"), "{}", v.sdp);
        assert_eq!(audio_of(&v.sdp).rtcp, Some(relay.rtcp));
        // Without a mapping from the TURN server, the related address is the bound host one.
        let bound = v.ports[LegSide::Client.index()];
        assert_eq!(
            candidates_in(&v.sdp),
            [
                (
                    1,
                    CandidateType::Relayed,
                    relay.rtp,
                    Some(SocketAddr::new(PUBLIC, bound.rtp))
                ),
                (
                    2,
                    CandidateType::Relayed,
                    relay.rtcp,
                    Some(SocketAddr::new(PUBLIC, bound.rtcp))
                ),
            ]
        );

        // The client's answer gives the PBX XCC's own PBX-leg address, as without a relay.
        let offered = crypto_in(&v.sdp);
        let (a, _) = t.answer(v.call, &client_answer(&offered)).unwrap();
        let to_pbx = audio_of(&a.sdp);
        assert_eq!(
            (to_pbx.connection, to_pbx.port),
            (Some(PBX_SIDE), a.ports[LegSide::Pbx.index()].rtp)
        );
        // A PBX re-offer is relayed to the client again.
        let (r, _) = t.update(v.call, LegSide::Pbx, &pbx_sdp(6000)).unwrap();
        assert_names_the_relay(&r.sdp, &relay);
        assert_eq!(audio_of(&r.sdp).rtcp, Some(relay.rtcp));
    }

    #[test]
    fn relayed_rtcp_mux_answer_has_no_a_rtcp_and_no_rtcp_candidate() {
        let relay = relay(Some(RELAY_MAPPED));
        let t = table(Recorder::with_relay(4, relay));
        let (v, _) = t
            .create("k", LegSide::Client, &ice_mux_client_offer())
            .unwrap();
        let (a, _) = t.answer(v.call, &pbx_sdp(6000)).unwrap();
        assert_names_the_relay(&a.sdp, &relay);
        let audio = audio_of(&a.sdp);
        assert!(audio.rtcp_mux, "{}", a.sdp);
        assert_eq!(audio.rtcp, None, "{}", a.sdp);
        assert!(!a.sdp.contains("a=rtcp:"), "{}", a.sdp);
        assert_eq!(
            candidates_in(&a.sdp),
            [(
                1,
                CandidateType::Relayed,
                relay.rtp,
                Some(RELAY_MAPPED.parse().unwrap())
            )]
        );
    }

    #[test]
    fn relayed_answer_to_a_non_ice_client_has_the_relay_and_no_ice() {
        let relay = relay(Some(RELAY_MAPPED));
        let t = table(Recorder::with_relay(4, relay));
        let (v, _) = t
            .create("k", LegSide::Client, &client_offer(5004, "sendrecv"))
            .unwrap();
        let (a, _) = t.answer(v.call, &pbx_sdp(6000)).unwrap();
        assert_names_the_relay(&a.sdp, &relay);
        assert_eq!(audio_of(&a.sdp).rtcp, Some(relay.rtcp));
        assert!(!has_any_ice(&a.sdp), "{}", a.sdp);
    }

    #[test]
    fn stored_session_keeps_the_relay_and_records_from_before_turn_still_load() {
        let relay = relay(Some(RELAY_MAPPED));
        let media = Recorder::with_relay(4, relay);
        let before = table(media.clone());
        let (v, _) = before
            .create("k", LegSide::Client, &client_offer(5004, "sendrecv"))
            .unwrap();
        let json = serde_json::to_value(before.export(v.call).unwrap()).unwrap();
        let after = table(media.clone());
        after
            .restore(serde_json::from_value(json.clone()).unwrap())
            .unwrap();
        let (a, _) = after.answer(v.call, &pbx_sdp(6000)).unwrap();
        assert_names_the_relay(&a.sdp, &relay);

        let mut old = json;
        old.as_object_mut()
            .unwrap()
            .remove("relay")
            .expect("stored");
        let stored: StoredSession = serde_json::from_value(old).unwrap();
        let restored = table(media);
        restored.restore(stored).unwrap();
        let (a, _) = restored.answer(v.call, &pbx_sdp(6000)).unwrap();
        assert_eq!(
            audio_of(&a.sdp).connection,
            Some(PUBLIC),
            "no relay: {}",
            a.sdp
        );
    }

    #[test]
    fn delete_releases_and_forgets() {
        let media = Recorder::with_capacity(4);
        let t = table(media.clone());
        let (v, _) = t.create("k", LegSide::Pbx, &pbx_sdp(6000)).unwrap();
        t.delete(v.call).unwrap();
        assert_eq!(*media.released.lock().unwrap(), vec![v.call]);
        assert!(matches!(t.get(v.call), Err(Error::NotFound { .. })));
        assert!(matches!(t.delete(v.call), Err(Error::NotFound { .. })));
        let (again, outcome) = t.create("k", LegSide::Pbx, &pbx_sdp(6000)).unwrap();
        assert_eq!(
            outcome,
            Outcome::Started,
            "a deleted session's key is free again"
        );
        assert_ne!(again.call, v.call);
    }
}
