//! The call driver for `grpc` mode: each synthetic call is a media session created through
//! xccd's `xcc.v1.Sessions` API, offered by the client phone (SDES-SRTP) and answered by the PBX
//! phone (plain RTP), exactly as the XPhone server would drive it.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use xcc_core::sdes::CryptoAttribute;
use xcc_core::sdp::SessionDescription;
use xcc_core::srtp::{SrtpContext, SrtpSuite};
use xcc_grpc::pb;
use xcc_grpc::pb::sessions_client::SessionsClient;

use super::error::LoadError;
use super::phones::CallMedia;

/// The suite the client phone offers: what nearly every softphone offers first.
pub(crate) const SUITE: SrtpSuite = SrtpSuite::AesCm128HmacSha1_80;

/// One call that xccd accepted.
pub struct EstablishedCall {
    /// Call index within the run.
    pub index: u32,
    /// xccd's session id, for DeleteSession.
    pub session_id: u64,
    /// CreateSession + AnswerSession round trips.
    pub setup: Duration,
    /// The phones, keyed and aimed at XCC's legs.
    pub media: CallMedia,
}

/// Connects to xccd's control API.
pub async fn connect(addr: &str) -> Result<SessionsClient<Channel>, LoadError> {
    let endpoint = Channel::from_shared(addr.to_owned()).map_err(|_| LoadError::Usage {
        reason: format!("--addr {addr:?} is not a URI"),
    })?;
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|source| LoadError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    Ok(SessionsClient::new(channel))
}

/// Sets up one session per pair of `phones` (client, PBX), starting one every `1 / rate` seconds (setups overlap when xccd is
/// slower than the rate). Returns the calls set up, ordered by index, and the failures.
pub async fn establish(
    client: &SessionsClient<Channel>,
    phones: Vec<(UdpSocket, UdpSocket)>,
    rate: f64,
    run_tag: &str,
) -> (Vec<EstablishedCall>, Vec<LoadError>) {
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (client_phone, pbx_phone)) in (0u32..).zip(phones) {
        let at = start + Duration::from_secs_f64(f64::from(index) / rate);
        tokio::time::sleep_until(at).await;
        let client = client.clone();
        let key = format!("{run_tag}-{index}");
        tasks
            .spawn(async move { establish_one(client, index, key, client_phone, pbx_phone).await });
    }
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(call)) => ok.push(call),
            Ok(Err(e)) => failed.push(e),
            Err(e) => failed.push(LoadError::io("setup task")(std::io::Error::other(e))),
        }
    }
    ok.sort_by_key(|c: &EstablishedCall| c.index);
    (ok, failed)
}

async fn establish_one(
    mut client: SessionsClient<Channel>,
    index: u32,
    key: String,
    client_phone: UdpSocket,
    pbx_phone: UdpSocket,
) -> Result<EstablishedCall, LoadError> {
    let ours = CryptoAttribute::generate(1, SUITE);
    let offer = sdp(
        port_of(&client_phone)?,
        "RTP/SAVP",
        Some(&format!("a=crypto:{ours}")),
    );
    let began = Instant::now();
    let created = client
        .create_session(pb::CreateSessionRequest {
            idempotency_key: key,
            offer_from: pb::Side::Client as i32,
            sdp: offer,
        })
        .await
        .map_err(|status| LoadError::Rpc {
            rpc: "CreateSession",
            call: index,
            status: Box::new(status),
        })?
        .into_inner();
    let session_id = created.session_id;
    let pbx_target = media_target(index, &created.sdp)?.0;
    let answer = sdp(port_of(&pbx_phone)?, "RTP/AVP", None);
    let answered = client
        .answer_session(pb::AnswerSessionRequest {
            session_id,
            sdp: answer,
        })
        .await
        .map_err(|status| LoadError::Rpc {
            rpc: "AnswerSession",
            call: index,
            status: Box::new(status),
        })?
        .into_inner();
    let setup = began.elapsed();
    let (client_target, cryptos) = media_target(index, &answered.sdp)?;
    let theirs = cryptos
        .into_iter()
        .find(|c| c.tag == ours.tag && c.suite == ours.suite)
        .ok_or_else(|| LoadError::Sdp {
            call: index,
            reason: format!(
                "no a=crypto answering tag {} {}",
                ours.tag,
                SUITE.sdes_name()
            ),
        })?;
    Ok(EstablishedCall {
        index,
        session_id,
        setup,
        media: CallMedia {
            client: client_phone,
            pbx: pbx_phone,
            client_target,
            pbx_target,
            client_tx: Some(SrtpContext::new(&ours.key, ours.srtp_policy())),
            client_rx: Some(SrtpContext::new(&theirs.key, theirs.srtp_policy())),
        },
    })
}

/// Deletes every session; returns how many deletions failed.
pub async fn release(client: &SessionsClient<Channel>, session_ids: &[u64]) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for &session_id in session_ids {
        let mut client = client.clone();
        tasks.spawn(async move {
            client
                .delete_session(pb::DeleteSessionRequest { session_id })
                .await
        });
    }
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        if !matches!(joined, Ok(Ok(_))) {
            failed += 1;
        }
    }
    failed
}

/// xccd's own counters for one side, summed over the run's calls: with the phones' counts they
/// tell loss inside xccd from loss in the load generator.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct LegTotals {
    /// Packets xccd accepted on this leg.
    pub packets_in: u64,
    /// Packets xccd sent out of this leg.
    pub packets_out: u64,
    /// Drops by reason.
    pub drop_auth_failure: u64,
    /// SRTP replays dropped.
    pub drop_replay: u64,
    /// Packets from an address other than the latched peer.
    pub drop_stranger: u64,
    /// Not RTP/RTCP/STUN.
    pub drop_malformed: u64,
    /// Nowhere to send (peer unknown).
    pub drop_no_route: u64,
    /// Stray packets.
    pub drop_stray: u64,
}

impl LegTotals {
    fn add(&mut self, c: &pb::LegCounters) {
        self.packets_in += c.packets_in;
        self.packets_out += c.packets_out;
        self.drop_auth_failure += c.drop_auth_failure;
        self.drop_replay += c.drop_replay;
        self.drop_stranger += c.drop_stranger;
        self.drop_malformed += c.drop_malformed;
        self.drop_no_route += c.drop_no_route;
        self.drop_stray += c.drop_stray;
    }
}

/// xccd's counters for the run's sessions (as last published by its workers).
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct RelayCounters {
    /// Sessions found.
    pub sessions: usize,
    /// Client legs (SRTP).
    pub client: LegTotals,
    /// PBX legs (RTP).
    pub pbx: LegTotals,
}

/// Reads xccd's counters for `session_ids` with one ListSessions call.
pub async fn relay_counters(
    client: &SessionsClient<Channel>,
    session_ids: &[u64],
) -> Result<RelayCounters, LoadError> {
    let wanted: std::collections::HashSet<u64> = session_ids.iter().copied().collect();
    let list = client
        .clone()
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .map_err(|status| LoadError::Rpc {
            rpc: "ListSessions",
            call: 0,
            status: Box::new(status),
        })?
        .into_inner();
    let mut totals = RelayCounters::default();
    for s in list
        .sessions
        .iter()
        .filter(|s| wanted.contains(&s.session_id))
    {
        totals.sessions += 1;
        if let Some(c) = s.client.as_ref().and_then(|l| l.counters.as_ref()) {
            totals.client.add(c);
        }
        if let Some(c) = s.pbx.as_ref().and_then(|l| l.counters.as_ref()) {
            totals.pbx.add(c);
        }
    }
    Ok(totals)
}

fn port_of(socket: &UdpSocket) -> Result<u16, LoadError> {
    Ok(socket
        .local_addr()
        .map_err(LoadError::io("phone address"))?
        .port())
}

pub(crate) fn sdp(port: u16, transport: &str, crypto: Option<&str>) -> String {
    let mut text = format!(
        "v=0\r\no=xcc-load 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} {transport} 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    if let Some(line) = crypto {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("a=ptime:20\r\na=sendrecv\r\n");
    text
}

/// Where XCC's SDP says to send, refusing anything but loopback, and its `a=crypto` lines.
pub(crate) fn media_target(
    call: u32,
    text: &str,
) -> Result<(SocketAddr, Vec<CryptoAttribute>), LoadError> {
    let sdp_error = |e: xcc_core::Error| LoadError::Sdp {
        call,
        reason: e.to_string(),
    };
    let audio = SessionDescription::parse(text)
        .and_then(|d| d.audio())
        .map_err(sdp_error)?;
    let ip = audio.connection.ok_or_else(|| LoadError::Sdp {
        call,
        reason: "no connection address".into(),
    })?;
    if audio.port == 0 {
        return Err(LoadError::Sdp {
            call,
            reason: "audio stream rejected (port 0)".into(),
        });
    }
    let addr = SocketAddr::new(ip, audio.port);
    if !ip.is_loopback() {
        return Err(LoadError::NotLoopback { call, addr });
    }
    Ok((addr, audio.cryptos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_media_address_is_refused() {
        let text = sdp(4000, "RTP/AVP", None).replace("127.0.0.1", "192.0.2.1");
        assert!(matches!(
            media_target(0, &text),
            Err(LoadError::NotLoopback { .. })
        ));
        let ok = media_target(0, &sdp(4000, "RTP/AVP", None)).unwrap();
        assert_eq!(ok.0, "127.0.0.1:4000".parse().unwrap());
    }

    #[test]
    fn offered_crypto_reads_back() {
        let ours = CryptoAttribute::generate(1, SUITE);
        let text = sdp(4000, "RTP/SAVP", Some(&format!("a=crypto:{ours}")));
        let (_, cryptos) = media_target(0, &text).unwrap();
        assert_eq!(cryptos, vec![ours]);
    }
}
