//! xccctl: the operator's CLI over the `xcc.v1` control API. Tables for people, `--json` for scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use xcc_grpc::pb;
use xcc_grpc::record::{quality_json, record_json};

/// Operate a running xccd.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Control endpoint; https:// when xccd requires mutual TLS.
    #[arg(long, default_value = "http://127.0.0.1:3280", global = true)]
    addr: String,
    /// Print JSON (one object, or one object per line for `watch`).
    #[arg(long, global = true)]
    json: bool,
    /// CA that signed xccd's certificate (https only).
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Client certificate (https only).
    #[arg(long, global = true, requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (https only).
    #[arg(long, global = true, requires = "cert")]
    key: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Version, uptime, calls, port pool, workers, drain state.
    Status,
    /// Every call with its ports, latched peers and packet counts.
    Calls,
    /// One call in detail.
    Call {
        /// Call id.
        id: u64,
    },
    /// End a call; its ports go to quarantine.
    Hangup {
        /// Call id.
        id: u64,
    },
    /// Refuse new sessions; running calls continue.
    Drain {
        /// Print the calls left whenever the number changes, until none is left.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit 75); xccd keeps draining.
        #[arg(long, default_value_t = 600, requires = "wait")]
        timeout: u64,
        /// Also stop xccd once no call is left (or when its drain grace ends).
        #[arg(long)]
        exit: bool,
    },
    /// Re-read xccd's configuration file and apply what can change live (as SIGHUP does).
    Reload,
    /// Accept new sessions again.
    Resume,
    /// Print events as they happen until interrupted (quality alerts and call records included).
    Watch,
    /// Change xccd's log filter at run time ("info", "debug", "warn,xcc_sip=debug", ...); the
    /// next SIGHUP restores the configuration file's log.level.
    LogLevel {
        /// The new filter.
        level: String,
    },
    /// Print the firewall rules this satellite needs, from its configuration file (no connection).
    Firewall {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: xcc::firewall::Format,
        /// Configuration file; a missing file means the defaults, as for xccd.
        #[arg(long, default_value = "/etc/xcc/xcc.toml")]
        config: PathBuf,
    },
    /// Ask one STUN server for this satellite's public address, from the media bind address
    /// (no connection to xccd): mapped address, round-trip time, or why it failed.
    StunCheck {
        /// `HOST[:PORT]` or `IP[:PORT]` (port 3478 when omitted).
        server: String,
        /// Local address to send from; default: `media.bind_address` of the configuration.
        #[arg(long)]
        bind: Option<std::net::IpAddr>,
        /// Configuration file read for the bind address.
        #[arg(long, default_value = "/etc/xcc/xcc.toml")]
        config: PathBuf,
    },
    /// Classify the NAT in front of the media ports (RFC 5780 tests, or two servers compared)
    /// and say what to do about it (no connection to xccd).
    NatType {
        /// STUN servers: the first is asked for RFC 5780 support; a second one is used for the
        /// comparison when it has none. Default: `[stun] servers` of the configuration.
        servers: Vec<String>,
        /// Local address to send from; default: `media.bind_address` of the configuration.
        #[arg(long)]
        bind: Option<std::net::IpAddr>,
        /// Configuration file read for the servers and the bind address.
        #[arg(long, default_value = "/etc/xcc/xcc.toml")]
        config: PathBuf,
    },
    /// Allocate once on the TURN server xccd relays through (`[turn]`), then release it (no
    /// connection to xccd): relayed address, mapped address, lifetime, round-trip time, or why
    /// it failed. Flags override the configuration's `[turn]` keys.
    TurnCheck {
        /// `HOST[:PORT]` or `IP[:PORT]` (port 3478 when omitted); default: `turn.server`.
        server: Option<String>,
        /// Transport to the server; default: `turn.transport`.
        #[arg(long, value_parser = ["udp", "tcp"])]
        transport: Option<String>,
        /// Long-term credential user; default: `turn.username`.
        #[arg(long)]
        username: Option<String>,
        /// Password (visible in the process list: prefer --password-file); default:
        /// `turn.password` / `turn.password_file`.
        #[arg(long, conflicts_with = "password_file")]
        password: Option<String>,
        /// File holding the password (without its trailing newline).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Local address to send from over UDP; default: `media.bind_address` of the
        /// configuration. Over TCP the kernel chooses, as for xccd's own connections.
        #[arg(long)]
        bind: Option<std::net::IpAddr>,
        /// Configuration file read for `[turn]` and the bind address (not read when the
        /// server, username, password and bind address are all given).
        #[arg(long, default_value = "/etc/xcc/xcc.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
enum CtlError {
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("{calls} calls still running after {secs} s; xccd keeps draining")]
    DrainTimeout { calls: u64, secs: u64 },
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Cmd::Firewall { format, config } => return xcc::firewall::print(*format, config),
        Cmd::StunCheck {
            server,
            bind,
            config,
        } => return stun_check(cli.json, server, *bind, config),
        Cmd::NatType {
            servers,
            bind,
            config,
        } => return nat_type(cli.json, servers, *bind, config),
        Cmd::TurnCheck {
            server,
            transport,
            username,
            password,
            password_file,
            bind,
            config,
        } => {
            let flags = TurnFlags {
                server: server.clone(),
                transport: transport.clone(),
                username: username.clone(),
                password: password.clone(),
                password_file: password_file.clone(),
                bind: *bind,
            };
            return turn_check(cli.json, flags, config);
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xccctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ CtlError::DrainTimeout { .. }) => {
            eprintln!("xccctl: {e}");
            // EX_TEMPFAIL: try again later.
            ExitCode::from(75)
        }
        Err(e) => {
            eprintln!("xccctl: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(cli: &Cli) -> Result<Channel, CtlError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|source| CtlError::Read {
            path: p.clone(),
            source,
        })
    };
    let mut endpoint = Channel::from_shared(cli.addr.clone())
        .map_err(|e| tonic::Status::invalid_argument(format!("--addr: {e}")))?;
    if cli.addr.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &cli.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&cli.cert, &cli.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint.connect().await?)
}

async fn run(cli: Cli) -> Result<(), CtlError> {
    let channel = connect(&cli).await?;
    let mut calls = pb::calls_client::CallsClient::new(channel.clone());
    let mut satellite = pb::satellite_client::SatelliteClient::new(channel);
    match cli.command {
        Cmd::Status => {
            let s = satellite.status(pb::StatusRequest {}).await?.into_inner();
            let v = status_json(&s);
            if cli.json {
                println!("{v}");
            } else {
                let mut rows = object_rows(&v);
                // The TURN object reads better as one line than as JSON in a cell.
                if let (Some(row), Some(line)) =
                    (rows.iter_mut().find(|r| r[0] == "turn"), turn_line(&s))
                {
                    row[1] = line;
                }
                table(&["field", "value"], rows);
            }
        }
        Cmd::Calls => {
            let list = calls
                .list_calls(pb::ListCallsRequest {})
                .await?
                .into_inner()
                .calls;
            if cli.json {
                println!("{}", Value::Array(list.iter().map(call_json).collect()));
            } else {
                let rows = list
                    .iter()
                    .map(|c| {
                        let leg = |l: &Option<pb::Leg>| l.clone().unwrap_or_default();
                        let (cl, px) = (leg(&c.client), leg(&c.pbx));
                        let pkts =
                            |l: &pb::Leg| l.counters.map(|c| c.packets_in).unwrap_or(0).to_string();
                        let q = |l: &pb::Leg| l.quality.clone().unwrap_or_default();
                        let (qc, qp) = (q(&cl), q(&px));
                        let pair = |a: Option<f64>, b: Option<f64>, digits: usize| {
                            let f = |v: Option<f64>| {
                                v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
                            };
                            format!("{}/{}", f(a), f(b))
                        };
                        vec![
                            c.call_id.to_string(),
                            format!("{}/{}", cl.rtp_port, px.rtp_port),
                            or_dash(&cl.latched),
                            or_dash(&px.latched),
                            format!("{}/{}", pkts(&cl), pkts(&px)),
                            pair(Some(qc.loss_percent), Some(qp.loss_percent), 1),
                            pair(qc.jitter_ms, qp.jitter_ms, 1),
                            pair(qc.rtt_ms, qp.rtt_ms, 0),
                            pair(qc.mos, qp.mos, 2),
                            or_dash(&cl.srtp_suite),
                            format!("{}s", c.idle_ms / 1000),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "call",
                        "ports c/p",
                        "client latched",
                        "pbx latched",
                        "pkts in c/p",
                        "loss% c/p",
                        "jitter ms c/p",
                        "rtt ms c/p",
                        "mos c/p",
                        "suite",
                        "idle",
                    ],
                    rows,
                );
            }
        }
        Cmd::Call { id } => {
            let c = calls
                .get_call(pb::GetCallRequest { call_id: id })
                .await?
                .into_inner();
            let v = call_json(&c);
            if cli.json {
                println!("{v}");
            } else {
                println!("call {} (idle {} ms)", c.call_id, c.idle_ms);
                for (name, leg) in [("client", &v["client"]), ("pbx", &v["pbx"])] {
                    let mut leg = leg.clone();
                    let quality = leg
                        .as_object_mut()
                        .and_then(|o| o.remove("quality"))
                        .unwrap_or(Value::Null);
                    println!("\n{name} leg");
                    table(&["field", "value"], object_rows(&leg));
                    println!(
                        "\n{name} leg quality (of what its peer sends; null = not measurable)"
                    );
                    table(&["field", "value"], object_rows(&quality));
                }
            }
        }
        Cmd::Hangup { id } => {
            calls.hang_up(pb::HangUpRequest { call_id: id }).await?;
            print_done(
                cli.json,
                json!({"hung_up": id}),
                &format!("call {id} hung up"),
            );
        }
        Cmd::Drain {
            wait,
            timeout,
            exit,
        } => {
            let r = satellite
                .drain(pb::DrainRequest {
                    exit_when_idle: exit,
                })
                .await?
                .into_inner();
            let then = if exit { "; xccd exits when idle" } else { "" };
            print_done(
                cli.json,
                json!({"draining": true, "calls": r.calls, "exit_when_idle": exit}),
                &format!("draining; {} calls still running{then}", r.calls),
            );
            if wait {
                wait_drained(&mut satellite, cli.json, r.calls, timeout, exit).await?;
            }
        }
        Cmd::Reload => {
            let r = satellite.reload(pb::ReloadRequest {}).await?.into_inner();
            if cli.json {
                println!(
                    "{}",
                    json!({"path": r.path, "applied": r.applied, "restart_required": r.restart_required})
                );
            } else {
                println!("reloaded {}", or_dash(&r.path));
                if r.applied.is_empty() {
                    println!("  nothing changed live");
                }
                for line in &r.applied {
                    println!("  applied: {line}");
                }
                for key in &r.restart_required {
                    println!("  restart required: {key}");
                }
            }
        }
        Cmd::Resume => {
            satellite.resume(pb::ResumeRequest {}).await?;
            print_done(
                cli.json,
                json!({"draining": false}),
                "accepting new sessions",
            );
        }
        Cmd::LogLevel { level } => {
            let r = satellite
                .set_log_level(pb::SetLogLevelRequest { level })
                .await?
                .into_inner();
            print_done(
                cli.json,
                json!({"log_level": r.level}),
                &format!("log level set to {}", r.level),
            );
        }
        // Handled in `main` before any connection is made.
        Cmd::Firewall { .. }
        | Cmd::StunCheck { .. }
        | Cmd::NatType { .. }
        | Cmd::TurnCheck { .. } => {}
        Cmd::Watch => {
            let mut stream = calls
                .watch_events(pb::WatchEventsRequest {})
                .await?
                .into_inner();
            while let Some(event) = stream.message().await? {
                let v = event_json(&event);
                if cli.json {
                    println!("{v}");
                } else {
                    let kind = v["event"].as_str().unwrap_or("?").to_owned();
                    let mut detail = v.clone();
                    if let Some(o) = detail.as_object_mut() {
                        for k in ["event", "call_id", "unix_ms", "last"] {
                            o.remove(k);
                        }
                    }
                    println!("{} call {} {kind} {detail}", event.unix_ms, event.call_id);
                }
            }
        }
    }
    Ok(())
}

/// The configuration for the local diagnostics (defaults when the file is missing).
fn local_config(path: &std::path::Path) -> Result<xcc::config::Validated, ExitCode> {
    let loaded = xcc::config::Config::load(path).and_then(|(c, _)| c.validate());
    loaded.map_err(|e| {
        eprintln!("xccctl: {e}");
        ExitCode::from(64)
    })
}

fn stun_check(
    json_out: bool,
    server: &str,
    bind: Option<std::net::IpAddr>,
    config: &std::path::Path,
) -> ExitCode {
    let bind = match bind {
        Some(b) => b,
        None => match local_config(config) {
            Ok(v) => v.config.media.bind_address,
            Err(code) => return code,
        },
    };
    let report =
        match xcc::stun_check::stun_check(server, bind, xcc_core::nat::Retransmission::FAILOVER) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("xccctl: {e}");
                return ExitCode::from(2);
            }
        };
    if json_out {
        use xcc::stun_check::CheckOutcome as O;
        let mut v = json!({
            "server": report.server, "address": report.address.to_string(),
            "local": report.local.to_string(), "ok": report.is_ok(), "message": report.describe(),
        });
        let extra = match &report.outcome {
            O::Answered {
                mapped,
                rtt,
                transmissions,
            } => json!({
                "mapped": mapped.to_string(), "public_ip": mapped.ip().to_string(),
                "rtt_ms": rtt.as_secs_f64() * 1000.0, "transmissions": transmissions,
            }),
            O::ErrorResponse { code } => json!({"error": "error_response", "code": code}),
            O::Refused => json!({"error": "refused"}),
            O::Silent {
                transmissions,
                waited,
            } => json!({
                "error": "no_answer", "transmissions": transmissions,
                "waited_ms": waited.as_millis() as u64,
            }),
        };
        if let (Some(o), Value::Object(extra)) = (v.as_object_mut(), extra) {
            o.extend(extra);
        }
        println!("{v}");
    } else {
        println!("{}", report.describe());
    }
    check_exit(report.is_ok())
}

/// A diagnostic's exit status: 0 when the check passed, 1 when it found a problem.
fn check_exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn nat_type(
    json_out: bool,
    servers: &[String],
    bind: Option<std::net::IpAddr>,
    config: &std::path::Path,
) -> ExitCode {
    let (bind, servers) = if bind.is_some() && !servers.is_empty() {
        (bind, servers.to_vec())
    } else {
        match local_config(config) {
            Ok(v) => {
                let listed = if servers.is_empty() {
                    v.stun_servers.iter().map(|s| s.to_string()).collect()
                } else {
                    servers.to_vec()
                };
                (bind.or(Some(v.config.media.bind_address)), listed)
            }
            Err(code) => return code,
        }
    };
    let bind = bind.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let Some(first) = servers.first() else {
        eprintln!("xccctl: no STUN server given and none in [stun] servers");
        return ExitCode::from(64);
    };
    let resolve = |s: &String| xcc::stun_check::resolve(s, bind);
    let primary = match resolve(first) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xccctl: {e}");
            return ExitCode::from(2);
        }
    };
    let secondary = match servers.get(1).map(resolve).transpose() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xccctl: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match xcc::stun_check::nat_type(
        primary,
        secondary,
        bind,
        xcc_core::nat::Retransmission::FAILOVER,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xccctl: {e}");
            return ExitCode::from(2);
        }
    };
    if json_out {
        let v = json!({
            "public": report.public.map(|p| p.to_string()),
            "mapping": format!("{:?}", report.mapping),
            "filtering": report.filtering.map(|f| format!("{f:?}")),
            "port_preserved": report.port_preserved,
            "recommendation": format!("{:?}", report.recommendation()),
            "message": report.to_string(),
        });
        println!("{v}");
    } else {
        println!("{report}");
    }
    check_exit(!report.is_blocked())
}

/// `xccctl turn-check`'s flags, each overriding its `[turn]` key (or `media.bind_address`).
struct TurnFlags {
    server: Option<String>,
    transport: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    bind: Option<std::net::IpAddr>,
}

impl TurnFlags {
    /// `[turn]` of `config` with the flags laid over it, and the bind address; validated by the
    /// rules xccd applies (server resolved in the bind address's family, password file read).
    fn settings(
        self,
        config: &xcc::config::Config,
    ) -> Result<(Option<xcc::config::TurnSettings>, std::net::IpAddr), xcc::error::Error> {
        let mut turn = config.turn.clone();
        if let Some(server) = self.server {
            turn.server = Some(server);
        }
        if let Some(transport) = self.transport {
            turn.transport = transport;
        }
        if let Some(username) = self.username {
            turn.username = Some(username);
        }
        if let Some(password) = self.password {
            turn.password = Some(xcc::config::Secret(password));
            turn.password_file = None;
        }
        if let Some(file) = self.password_file {
            turn.password = None;
            turn.password_file = Some(file);
        }
        let bind = self.bind.unwrap_or(config.media.bind_address);
        Ok((turn.validate(bind)?, bind))
    }

    /// Whether the flags say everything, so the configuration file is not needed.
    fn complete(&self) -> bool {
        self.server.is_some()
            && self.username.is_some()
            && (self.password.is_some() || self.password_file.is_some())
            && self.bind.is_some()
    }
}

fn turn_check(json_out: bool, flags: TurnFlags, path: &std::path::Path) -> ExitCode {
    let config = if flags.complete() {
        xcc::config::Config::default()
    } else {
        match xcc::config::Config::load(path) {
            Ok((c, _)) => c,
            Err(e) => {
                eprintln!("xccctl: {e}");
                return ExitCode::from(64);
            }
        }
    };
    let (settings, bind) = match flags.settings(&config) {
        Ok((Some(s), bind)) => (s, bind),
        Ok((None, _)) => {
            eprintln!(
                "xccctl: no TURN server given and none in [turn] server of {}",
                path.display()
            );
            return ExitCode::from(64);
        }
        Err(e) => {
            eprintln!("xccctl: {e}");
            return ExitCode::from(64);
        }
    };
    let report =
        match xcc::turn_check::turn_check(&settings, bind, xcc_core::nat::Retransmission::FAILOVER)
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("xccctl: {e}");
                return ExitCode::from(2);
            }
        };
    if json_out {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.describe());
    }
    check_exit(report.is_ok())
}

/// Polls `Status` until no call is left, printing the count when it changes. xccd going away (an
/// exit-when-idle drain, or its grace ending) also ends the wait.
async fn wait_drained(
    satellite: &mut pb::satellite_client::SatelliteClient<Channel>,
    json_out: bool,
    mut last: u64,
    timeout_secs: u64,
    exit: bool,
) -> Result<(), CtlError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
    loop {
        let s = match satellite.status(pb::StatusRequest {}).await {
            Ok(s) => s.into_inner(),
            // After an exit-when-idle drain, losing the connection means xccd is gone.
            Err(e) if exit && e.code() != tonic::Code::FailedPrecondition => {
                print_done(
                    json_out,
                    json!({"exited": true, "calls_at_last_look": last}),
                    &format!("xccd exited ({last} calls at the last look)"),
                );
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if s.calls == 0 {
            print_done(json_out, json!({"calls": 0}), "drained: no calls left");
            return Ok(());
        }
        if s.calls != last {
            let grace = if s.drain_grace_left_secs > 0 {
                format!(" ({} s of grace left)", s.drain_grace_left_secs)
            } else {
                String::new()
            };
            print_done(
                json_out,
                json!({"calls": s.calls, "drain_grace_left_secs": s.drain_grace_left_secs}),
                &format!("{} calls still running{grace}", s.calls),
            );
            last = s.calls;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CtlError::DrainTimeout {
                calls: s.calls,
                secs: timeout_secs,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

fn print_done(json_out: bool, v: Value, text: &str) {
    if json_out {
        println!("{v}");
    } else {
        println!("{text}");
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

fn side_name(v: i32) -> &'static str {
    match pb::Side::try_from(v) {
        Ok(pb::Side::Client) => "client",
        Ok(pb::Side::Pbx) => "pbx",
        _ => "unspecified",
    }
}

fn status_json(s: &pb::StatusResponse) -> Value {
    let mut v = json!({
        "version": s.version, "uptime_secs": s.uptime_secs, "calls": s.calls,
        "ports_total": s.ports_total, "ports_free": s.ports_free, "ports_used": s.ports_used,
        "ports_quarantined": s.ports_quarantined, "workers": s.workers, "draining": s.draining,
        "public_address": s.public_address,
        "public_address_source": source_name(s.public_address_source),
        "stun_state": stun_state_name(s.stun_state), "stun_server": s.stun_server,
        "stun_last_success_unix_ms": s.stun_last_success_unix_ms,
        "stun_last_error": s.stun_last_error,
        "ports_retiring": s.ports_retiring, "exit_when_idle": s.exit_when_idle,
        "drain_grace_left_secs": s.drain_grace_left_secs,
    });
    // Only when [turn] is on: a satellite without a relay shows no TURN row.
    if !s.turn_server.is_empty() {
        v["turn"] = json!({
            "server": s.turn_server, "ready": s.turn_ready, "pending": s.turn_pending,
            "allocated_total": s.turn_allocated_total, "failed_total": s.turn_failed_total,
            "last_error": s.turn_last_error,
            "last_success_unix_ms": s.turn_last_success_unix_ms,
        });
    }
    v
}

/// `xccctl status`'s TURN row: server, ready/pending legs, totals, last error; `None` without
/// `[turn]`. Figures the media plane has not reported yet are shown as `-`.
fn turn_line(s: &pb::StatusResponse) -> Option<String> {
    if s.turn_server.is_empty() {
        return None;
    }
    let n = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let mut line = format!(
        "{} ready {} pending {} allocated {} failed {}",
        s.turn_server,
        n(s.turn_ready),
        n(s.turn_pending),
        n(s.turn_allocated_total),
        n(s.turn_failed_total)
    );
    if !s.turn_last_error.is_empty() {
        line.push_str(&format!(" (last error: {})", s.turn_last_error));
    }
    Some(line)
}

fn source_name(v: i32) -> &'static str {
    match pb::PublicAddressSource::try_from(v) {
        Ok(pb::PublicAddressSource::Static) => "static",
        Ok(pb::PublicAddressSource::Stun) => "stun",
        Ok(pb::PublicAddressSource::Fallback) => "fallback",
        _ => "unspecified",
    }
}

fn stun_state_name(v: i32) -> &'static str {
    match pb::StunState::try_from(v) {
        Ok(pb::StunState::Disabled) => "disabled",
        Ok(pb::StunState::Discovering) => "discovering",
        Ok(pb::StunState::Ok) => "ok",
        Ok(pb::StunState::Failing) => "failing",
        _ => "unspecified",
    }
}

fn leg_json(l: &pb::Leg) -> Value {
    let c = l.counters.unwrap_or_default();
    json!({
        "side": side_name(l.side), "advertised_address": l.advertised_address,
        "rtp_port": l.rtp_port, "rtcp_port": l.rtcp_port, "signalled": l.signalled,
        "latched": l.latched, "latched_rtcp": l.latched_rtcp, "srtp_suite": l.srtp_suite,
        "direction": l.direction, "packets_in": c.packets_in, "bytes_in": c.bytes_in,
        "packets_out": c.packets_out, "bytes_out": c.bytes_out, "rtcp_in": c.rtcp_in, "rtcp_out": c.rtcp_out,
        "drop_auth_failure": c.drop_auth_failure, "drop_replay": c.drop_replay,
        "drop_stranger": c.drop_stranger, "drop_malformed": c.drop_malformed,
        "drop_no_route": c.drop_no_route, "drop_stray": c.drop_stray,
        "punch_probes_sent": l.punch_probes_sent, "punch_answers": l.punch_answers,
        "drop_send_error": c.drop_send_error, "rtcp_malformed": c.rtcp_malformed,
        "quality": l.quality.as_ref().map(quality_json),
    })
}

fn call_json(c: &pb::Call) -> Value {
    json!({
        "call_id": c.call_id, "created_unix_ms": c.created_unix_ms, "idle_ms": c.idle_ms,
        "client": c.client.as_ref().map(leg_json), "pbx": c.pbx.as_ref().map(leg_json),
    })
}

fn event_json(e: &pb::Event) -> Value {
    use pb::event::Kind;
    let mut v = json!({"call_id": e.call_id, "unix_ms": e.unix_ms});
    let extra = match &e.kind {
        Some(Kind::Started(s)) => {
            json!({"event": "started", "offer_from": side_name(s.offer_from)})
        }
        Some(Kind::Answered(_)) => json!({"event": "answered"}),
        Some(Kind::Latched(l)) => {
            json!({"event": "latched", "side": side_name(l.side), "address": l.address})
        }
        Some(Kind::Ended(x)) => {
            let reason = match pb::call_ended::Reason::try_from(x.reason) {
                Ok(pb::call_ended::Reason::Released) => "released",
                Ok(pb::call_ended::Reason::MediaTimeout) => "media_timeout",
                Ok(pb::call_ended::Reason::Shutdown) => "shutdown",
                _ => "unspecified",
            };
            json!({"event": "ended", "reason": reason, "last": x.last.as_ref().map(call_json)})
        }
        Some(Kind::Lagged(l)) => json!({"event": "lagged", "missed": l.missed}),
        Some(Kind::PublicAddressChanged(p)) => json!({
            "event": "public_address_changed", "previous": p.previous, "current": p.current,
            "source": source_name(p.source), "stun_server": p.stun_server,
        }),
        Some(Kind::Quality(a)) => {
            let limit = match pb::VoipLimit::try_from(a.limit) {
                Ok(pb::VoipLimit::OneWayDelay) => "one_way_delay",
                Ok(pb::VoipLimit::RoundTrip) => "round_trip",
                Ok(pb::VoipLimit::Loss) => "loss",
                Ok(pb::VoipLimit::Jitter) => "jitter",
                _ => "unspecified",
            };
            let kind = match pb::quality_alert::Kind::try_from(a.kind) {
                Ok(pb::quality_alert::Kind::Crossed) => "crossed",
                Ok(pb::quality_alert::Kind::Recovered) => "recovered",
                _ => "unspecified",
            };
            json!({
                "event": "quality", "side": side_name(a.side), "limit": limit, "kind": kind,
                "value": a.value, "threshold": a.threshold, "broken_ms": a.broken_ms,
            })
        }
        Some(Kind::Record(r)) => json!({"event": "record", "record": record_json(r)}),
        None => json!({"event": "unknown"}),
    };
    if let (Some(o), Value::Object(extra)) = (v.as_object_mut(), extra) {
        o.extend(extra);
    }
    v
}

fn object_rows(v: &Value) -> Vec<Vec<String>> {
    let Some(o) = v.as_object() else {
        return Vec::new();
    };
    o.iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => or_dash(s),
                other => other.to_string(),
            };
            vec![k.clone(), text]
        })
        .collect()
}

/// Left-aligned columns sized to their widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_flags() -> TurnFlags {
        TurnFlags {
            server: None,
            transport: None,
            username: None,
            password: None,
            password_file: None,
            bind: None,
        }
    }

    #[test]
    fn turn_check_flags_override_the_configurations_turn_keys() {
        let config = xcc::config::Config::parse(
            "[media]\nbind_address = \"127.0.0.1\"\n\
             [turn]\nserver = \"127.0.0.1:3478\"\nusername = \"xcc\"\n\
             password_file = \"/nonexistent/turn.secret\"\n",
            std::path::Path::new("xcc.toml"),
        )
        .unwrap();
        // The file alone: its unreadable password file is named.
        let e = no_flags().settings(&config).unwrap_err();
        assert!(e.to_string().contains("turn.password_file"), "{e}");
        let flags = TurnFlags {
            server: Some("127.0.0.2:3479".into()),
            transport: Some("tcp".into()),
            password: Some("secret".into()),
            ..no_flags()
        };
        assert!(!flags.complete(), "no username or bind address given");
        let (s, bind) = flags.settings(&config).unwrap();
        let s = s.unwrap();
        assert_eq!(bind, "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(s.server, "127.0.0.2:3479".parse().unwrap());
        assert_eq!(s.transport, xcc_core::nat::turn::TurnTransport::Tcp);
        assert_eq!(s.username, "xcc", "kept from the file");
        assert_eq!(s.password.0, "secret");
        let (none, _) = no_flags()
            .settings(&xcc::config::Config::default())
            .unwrap();
        assert!(none.is_none(), "no server anywhere");
    }

    #[test]
    fn status_has_a_turn_row_only_when_turn_is_configured() {
        let mut s = pb::StatusResponse::default();
        assert_eq!(turn_line(&s), None);
        assert!(status_json(&s).get("turn").is_none());
        s.turn_server = "198.51.100.7:3478".into();
        assert_eq!(
            turn_line(&s).unwrap(),
            "198.51.100.7:3478 ready - pending - allocated - failed -"
        );
        s.turn_ready = Some(4);
        s.turn_pending = Some(0);
        s.turn_allocated_total = Some(12);
        s.turn_failed_total = Some(1);
        s.turn_last_error = "438 Stale Nonce".into();
        assert_eq!(
            turn_line(&s).unwrap(),
            "198.51.100.7:3478 ready 4 pending 0 allocated 12 failed 1 (last error: 438 Stale Nonce)"
        );
        let v = status_json(&s);
        assert_eq!(v["turn"]["ready"], 4);
        assert_eq!(v["turn"]["last_success_unix_ms"], Value::Null);
    }
}
