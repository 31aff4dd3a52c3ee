//! A confirmed call's dialog state as a compact, versioned blob, so a call survives a crash or
//! restart of xccd: the daemon stores the blob with the call's media record and hands it back to
//! [`B2bua::restore`] after the restart.
//!
//! Format: JSON (serde_json, already used by the call store), `{"v":1, ...}`. A few hundred
//! bytes per call, written only when a dialog changes (answer, each in-dialog request, re-INVITE
//! outcome), readable in an operator's `cat` of a call file; the store around it adds the CRC.
//! Name-addrs are kept as their header text and parsed back with the crate's own parser.
//!
//! Only confirmed calls with no transaction in flight are restored: a call still being set up at
//! the crash is not stored (its caller's INVITE transaction times out; the media store releases
//! its ports), and a transaction in flight at the crash (a re-INVITE, an unACKed 2xx) is lost
//! with the process: its sender retransmits or gives up under its own timers.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use xcc_core::ids::CallId;

use super::call::{Call, Leg, Phase};
use super::{B2bua, Side};
use crate::dialog::{Dialog, DialogKey};
use crate::error::Error;
use crate::header::{CSeq, NameAddr};
use crate::message::{Headers, Method, Request};
use crate::transaction::{Role, TransactionKey};

/// Current blob version; a blob with any other is refused.
pub const DIALOG_STATE_VERSION: u32 = 1;

/// The serialised call.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredCall {
    /// Format version.
    v: u32,
    /// Call id (= media session id).
    call: u64,
    /// Side whose INVITE started the call.
    origin: StoredSide,
    /// Our To tag on the caller's dialog.
    local_tag: String,
    /// Server side's dialog, then the PBX side's.
    legs: [StoredLeg; 2],
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StoredSide {
    Server,
    Pbx,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredLeg {
    call_id: String,
    local_tag: String,
    remote_tag: String,
    /// Our From/To header text (with our tag).
    local: String,
    /// The peer's From/To header text (with its tag).
    remote: String,
    remote_target: String,
    /// Route header texts, in sending order.
    route_set: Vec<String>,
    local_seq: u32,
    remote_seq: Option<u32>,
    local_contact: String,
    /// The last SDP XCC sent this side (answers an offerless re-INVITE).
    last_sdp: Option<String>,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::DialogState {
        reason: reason.into(),
    }
}

fn name_addr(s: &str, which: &'static str) -> Result<NameAddr, Error> {
    NameAddr::parse(s, which).map_err(|_| bad(format!("{which} {s:?} is not a name-addr")))
}

impl StoredLeg {
    fn from_leg(leg: &Leg) -> Option<Self> {
        let d = leg.dialog.as_ref()?;
        Some(Self {
            call_id: d.key.call_id.clone(),
            local_tag: d.key.local_tag.clone(),
            remote_tag: d.key.remote_tag.clone(),
            local: d.local.to_string(),
            remote: d.remote.to_string(),
            remote_target: d.remote_target.clone(),
            route_set: d.route_set.iter().map(ToString::to_string).collect(),
            local_seq: d.local_seq,
            remote_seq: d.remote_seq,
            local_contact: d.local_contact.to_string(),
            last_sdp: leg.last_sdp.clone(),
        })
    }

    fn into_leg(self) -> Result<Leg, Error> {
        if self.call_id.is_empty() || self.local_tag.is_empty() || self.remote_tag.is_empty() {
            return Err(bad("empty Call-ID or tag"));
        }
        crate::uri::SipUri::parse(&self.remote_target).map_err(|_| {
            bad(format!(
                "remote target {:?} is not a SIP URI",
                self.remote_target
            ))
        })?;
        let route_set = self
            .route_set
            .iter()
            .map(|r| name_addr(r, "Route"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Leg {
            dialog: Some(Dialog {
                key: DialogKey {
                    call_id: self.call_id,
                    local_tag: self.local_tag,
                    remote_tag: self.remote_tag,
                },
                local: name_addr(&self.local, "From")?,
                remote: name_addr(&self.remote, "To")?,
                remote_target: self.remote_target,
                route_set,
                local_seq: self.local_seq,
                remote_seq: self.remote_seq,
                local_contact: name_addr(&self.local_contact, "Contact")?,
            }),
            last_sdp: self.last_sdp,
        })
    }
}

/// A stand-in for the caller's INVITE of a restored call: only set-up code reads `invite_in`
/// and `invite_out`, and a restored call is past set-up.
fn placeholder_request(d: &Dialog) -> Request {
    Request {
        method: Method::Invite,
        uri: d.remote_target.clone(),
        headers: Headers {
            via: Vec::new(),
            from: d.remote.clone(),
            to: d.local.clone(),
            call_id: d.key.call_id.clone(),
            cseq: CSeq {
                seq: 0,
                method: "INVITE".to_owned(),
            },
            max_forwards: None,
            contact: Vec::new(),
            route: Vec::new(),
            record_route: Vec::new(),
            content_type: None,
            other: Vec::new(),
        },
        body: bytes::Bytes::new(),
    }
}

fn placeholder_key(role: Role) -> TransactionKey {
    TransactionKey {
        role,
        branch: String::new(),
        sent_by: String::new(),
        method: Method::Invite,
    }
}

impl B2bua {
    /// The dialog state of a confirmed call (both dialogs established), for the call store;
    /// `None` for an unknown call or one still being set up or torn down. The daemon gets the
    /// same bytes from [`super::B2buaEvent::DialogState`] whenever they change.
    pub fn export_dialogs(&self, call: CallId) -> Option<Vec<u8>> {
        let c = self.calls.get(&call)?;
        if c.phase != Phase::Confirmed {
            return None;
        }
        let stored = StoredCall {
            v: DIALOG_STATE_VERSION,
            call: call.0,
            origin: match c.origin {
                Side::Server => StoredSide::Server,
                Side::Pbx => StoredSide::Pbx,
            },
            local_tag: c.local_tag.clone(),
            legs: [
                StoredLeg::from_leg(&c.legs[0])?,
                StoredLeg::from_leg(&c.legs[1])?,
            ],
        };
        // Serialising plain strings and integers into a Vec cannot fail; a failure would be
        // a serde_json bug, reported as "nothing to store" rather than a panic.
        serde_json::to_vec(&stored).ok()
    }

    /// Re-creates confirmed call `call` from [`B2bua::export_dialogs`]'s blob after a restart
    /// (its media must already be live under that id). No transaction is in flight afterwards.
    /// A blob that does not parse, has another version, was stored for another call, or names
    /// a call or dialog already present is refused with [`Error::DialogState`] and changes
    /// nothing. `now` is for symmetry with the other entry points: a restored call has no timer.
    pub fn restore_dialogs(
        &mut self,
        call: CallId,
        blob: &[u8],
        now: Instant,
    ) -> Result<(), Error> {
        let _ = now;
        let version: serde_json::Value =
            serde_json::from_slice(blob).map_err(|e| bad(format!("not JSON: {e}")))?;
        match version.get("v").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(DIALOG_STATE_VERSION) => {}
            Some(v) => return Err(bad(format!("unknown version {v}"))),
            None => return Err(bad("no version")),
        }
        let stored: StoredCall =
            serde_json::from_value(version).map_err(|e| bad(format!("bad field: {e}")))?;
        let id = CallId(stored.call);
        if id != call {
            return Err(bad(format!("stored for call {id}, not {call}")));
        }
        if self.calls.contains_key(&id) {
            return Err(bad(format!("call {id} already exists")));
        }
        let origin = match stored.origin {
            StoredSide::Server => Side::Server,
            StoredSide::Pbx => Side::Pbx,
        };
        let [server, pbx] = stored.legs;
        let legs = [server.into_leg()?, pbx.into_leg()?];
        let mut keys = Vec::new();
        for side in [Side::Server, Side::Pbx] {
            // Both legs were checked to hold a dialog by `into_leg`.
            let Some(d) = legs[side.index()].dialog.as_ref() else {
                return Err(bad("leg without a dialog"));
            };
            if self.dialogs.contains_key(&(side, d.key.clone())) {
                return Err(bad(format!("dialog {} already exists", d.key.call_id)));
            }
            keys.push((side, d.key.clone()));
        }
        let (invite_in, invite_out) = match (
            &legs[origin.index()].dialog,
            &legs[origin.other().index()].dialog,
        ) {
            (Some(near), Some(far)) => (placeholder_request(near), placeholder_request(far)),
            _ => return Err(bad("leg without a dialog")),
        };
        for k in keys {
            self.dialogs.insert(k, id);
        }
        self.calls.insert(
            id,
            Call {
                id,
                origin,
                origin_reliable: false,
                phase: Phase::Confirmed,
                legs,
                local_tag: stored.local_tag,
                invite_in,
                invite_in_key: placeholder_key(Role::Server),
                invite_out,
                invite_out_key: placeholder_key(Role::Client),
                auth_tried: false,
                early_answer: None,
                cancel_wanted: false,
                media_live: true,
                ok_retx: None,
                reinvite: None,
            },
        );
        tracing::info!(call = %id, from = %origin, "call restored");
        Ok(())
    }
}
