//! `xcc-load`'s command line. Every run is bounded: a call count and a duration are required and
//! capped, so a typo cannot start an endless flood.

use clap::{Args, Parser, Subcommand};

use super::forwarder::PortRange;

/// Most calls one run may place (four relay ports each).
pub const MAX_CALLS: u32 = 10_000;
/// Longest media phase, s.
pub const MAX_DURATION: u32 = 3_600;

/// Synthetic calls through a running xccd, with a bare UDP forwarder as the reference.
#[derive(Debug, Parser)]
#[command(name = "xcc-load", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub mode: Mode,
}

/// Run modes.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Media sessions through xccd's gRPC API (client SRTP offer, PBX RTP answer), then media.
    Grpc(GrpcArgs),
    /// Calls over SIP: xcc-load plays the controlling server (INVITE with an SDES-SRTP offer to
    /// XCC's server-side port) and the PBX (answers XCC's INVITE on a trunk port with RTP).
    Sip(SipArgs),
    /// The same media pattern through the bare forwarder only.
    Bare(BareArgs),
    /// Raise the call count step by step through xccd and report capacity.
    Sweep(SweepArgs),
    /// Run the bare forwarder itself (started by `bare` and `--bare-ports`; prints READY).
    Forwarder(ForwarderArgs),
}

/// Options every measuring mode shares.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Media phase length, seconds.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DURATION)))]
    pub duration: u32,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Pin the relay (xccd given by --xccd-pid, and the bare forwarder) to this CPU.
    #[arg(long)]
    pub relay_cpu: Option<usize>,
    /// Pin this load generator to this CPU.
    #[arg(long)]
    pub load_cpu: Option<usize>,
    /// Loopback ports the phones bind (two per call; ports in use are skipped). Keep it apart
    /// from the relay's media pool and the kernel's ephemeral range (32768-60999 on Linux).
    #[arg(long, default_value = "26000-29999", value_parser = PortRange::parse)]
    pub phone_ports: PortRange,
    /// Receiver threads for the phones (calls sharded by index); default: one per core the
    /// load generator may run on, minus one for the sender when it has more than two.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub rx_threads: Option<u32>,
    /// The sender sends every packet due within this many µs of now per wake-up (pacing
    /// granularity; 0 = sleep for every call slot).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(0..=20_000))]
    pub pace_quantum_us: u32,
}

/// Options for runs through xccd.
#[derive(Debug, Args, Clone)]
pub struct XccdArgs {
    /// Session setups per second.
    #[arg(long, default_value_t = 100.0, value_parser = parse_rate)]
    pub rate: f64,
    /// xccd's control endpoint (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:3280", value_parser = parse_loopback_uri)]
    pub addr: String,
    /// xccd's pid, to measure its CPU from /proc (and pin it with --relay-cpu).
    #[arg(long)]
    pub xccd_pid: Option<u32>,
    /// Also measure the bare forwarder on these loopback ports (even first port, whole pairs,
    /// at least one pair per call) in the same run, and report xccd's CPU as a ratio to it.
    /// Best below the kernel's ephemeral range (32768-60999 by default): a socket bound to port 0
    /// anywhere on the machine may take a port inside it.
    #[arg(long, value_parser = PortRange::parse)]
    pub bare_ports: Option<PortRange>,
}

/// `grpc` mode.
#[derive(Debug, Args, Clone)]
pub struct GrpcArgs {
    /// Concurrent calls.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CALLS)))]
    pub calls: u32,
    /// Repeat the run (xccd, then the bare reference when asked) this many times and report the
    /// spread of the CPU ratio: on a shared machine one pair of runs is not a verdict.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub repeat: u32,
    #[command(flatten)]
    pub xccd: XccdArgs,
    #[command(flatten)]
    pub common: Common,
}

/// `sip` mode.
#[derive(Debug, Args, Clone)]
pub struct SipArgs {
    /// Concurrent calls.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CALLS)))]
    pub calls: u32,
    /// INVITEs per second.
    #[arg(long, default_value_t = 100.0, value_parser = parse_rate)]
    pub rate: f64,
    /// XCC's server-side SIP address (its `sip.server_listen`), loopback only.
    #[arg(long, default_value = "127.0.0.1:4901", value_parser = parse_loopback_addr)]
    pub server: std::net::SocketAddr,
    /// Where the synthetic PBX listens (XCC's `sip.pbx_target` must point here), loopback only.
    #[arg(long, default_value = "127.0.0.1:5080", value_parser = parse_loopback_addr)]
    pub trunk: std::net::SocketAddr,
    /// The synthetic controlling server's own SIP address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_loopback_addr)]
    pub uac: std::net::SocketAddr,
    /// xccd's pid, to measure its CPU from /proc (and pin it with --relay-cpu).
    #[arg(long)]
    pub xccd_pid: Option<u32>,
    /// Also measure the bare forwarder on these loopback ports (as in `grpc`).
    #[arg(long, value_parser = PortRange::parse)]
    pub bare_ports: Option<PortRange>,
    #[command(flatten)]
    pub common: Common,
}

/// `bare` mode.
#[derive(Debug, Args, Clone)]
pub struct BareArgs {
    /// Forwarded calls (port pairs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CALLS)))]
    pub pairs: u32,
    /// Forwarder ports (even first port, whole pairs); default 22000 upwards.
    #[arg(long, value_parser = PortRange::parse)]
    pub ports: Option<PortRange>,
    #[command(flatten)]
    pub common: Common,
}

/// `sweep` mode.
#[derive(Debug, Args, Clone)]
pub struct SweepArgs {
    /// First call count.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CALLS)))]
    pub from: u32,
    /// Last call count (inclusive if a step lands on it).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CALLS)))]
    pub to: u32,
    /// Calls added per step.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CALLS)))]
    pub step: u32,
    /// Seconds between steps, so released ports leave quarantine.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=60))]
    pub pause: u32,
    #[command(flatten)]
    pub xccd: XccdArgs,
    #[command(flatten)]
    pub common: Common,
}

/// `forwarder` mode.
#[derive(Debug, Args, Clone)]
pub struct ForwarderArgs {
    /// Ports to forward between, pairwise.
    #[arg(long, value_parser = PortRange::parse)]
    pub ports: PortRange,
    /// Exit after this many seconds even if nobody stops it.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=7200))]
    pub max_secs: u32,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(0.1..=10_000.0).contains(&rate) {
        return Err("rate must be within 0.1..=10000 setups/s".into());
    }
    Ok(rate)
}

/// SIP addresses must be loopback: the run only talks to loopback.
fn parse_loopback_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?}: expected IP:PORT"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{text:?}: only loopback addresses are allowed"));
    }
    Ok(addr)
}

/// The control endpoint must be `http://` to a loopback address: the run only talks to loopback.
fn parse_loopback_uri(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| format!("{text:?}: expected http://127.0.0.1:PORT"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr: std::net::SocketAddr = authority
        .parse()
        .map_err(|_| format!("{text:?}: expected an IP:PORT authority"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{text:?}: only loopback addresses are allowed"));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn control_endpoint_must_be_loopback() {
        assert!(parse_loopback_uri("http://127.0.0.1:3280").is_ok());
        assert!(parse_loopback_uri("http://[::1]:3280").is_ok());
        assert!(parse_loopback_uri("http://192.0.2.1:3280").is_err());
        assert!(parse_loopback_uri("127.0.0.1:3280").is_err());
    }

    #[test]
    fn calls_and_duration_are_required_and_bounded() {
        assert!(
            Cli::try_parse_from(["xcc-load", "grpc", "--calls", "3", "--duration", "2"]).is_ok()
        );
        assert!(Cli::try_parse_from(["xcc-load", "grpc", "--duration", "2"]).is_err());
        assert!(
            Cli::try_parse_from(["xcc-load", "grpc", "--calls", "0", "--duration", "2"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["xcc-load", "grpc", "--calls", "3", "--duration", "99999"])
                .is_err()
        );
    }
}
