//! `xcc-load`: synthetic calls through a running xccd, measured against a bare UDP forwarder.
//!
//! A run sets calls up through the control API ([`sessions`]), plays 20 ms packets both ways on
//! every call from two threads ([`phones`]: one paced sender, one mio receiver), measures loss,
//! order, latency and jitter from stamps inside the payload ([`stats`], [`payload`]) and the
//! relay's CPU from `/proc` ([`cpu`]), then releases the calls. The same media pattern through
//! [`forwarder`] (a child process with no crypto and no call state) is the reference every
//! CPU figure is divided by. Sockets are bound to 127.0.0.1 and the run only sends to loopback.

pub mod cli;
pub mod cpu;
pub mod error;
pub mod forwarder;
pub mod netstat;
pub mod payload;
pub mod phones;
pub mod report;
pub mod sessions;
pub mod sip;
pub mod sip_ua;
pub mod stats;

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use cli::{BareArgs, Cli, Common, GrpcArgs, Mode, SipArgs, SweepArgs, XccdArgs};
use cpu::Pid;
use error::LoadError;
use forwarder::{ForwarderChild, PortRange};
use phones::CallMedia;
use report::{AddedLatency, CpuSummary, Quantiles, RunReport};

/// Send lag p99 above which the load generator, not the relay, is suspected, µs.
const LAG_LIMIT_US: f64 = 5_000.0;
/// Share of the media phase a load thread may wait for a CPU before it is suspected, %.
const CPU_WAIT_LIMIT_PCT: f64 = 10.0;
/// Share of the cores the load generator may run on above which it is the bottleneck.
const LOAD_CORES_LIMIT: f64 = 0.9;
/// Capacity criteria (issue 7): loss below 0.1 % and p99 latency below 5 ms. The latency is send
/// stamp to kernel arrival at the phone (`media.latency_us`), so the load generator's own
/// queueing (`receive_delay_us`) does not count against the relay; it is not the difference to
/// the bare forwarder, which a sweep without `--bare-ports` does not measure, and it bounds it.
const CAPACITY_LOSS_PCT: f64 = 0.1;
const CAPACITY_P99_US: f64 = 5_000.0;
/// Default first port of `bare` mode: below the kernel's ephemeral range, apart from the phones.
const BARE_FIRST_PORT: u16 = 22_000;

/// Runs a parsed command line; exit status 0 on success, 1 when the run failed, 2 for usage
/// errors (as clap uses).
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.mode {
        Mode::Grpc(args) if args.repeat > 1 => run_repeated(&args).map(|r| {
            emit(&r, args.common.json, repeated_table(&r));
            r.runs
                .into_iter()
                .find(|run| run.calls_established < run.calls_requested)
        }),
        Mode::Grpc(args) => {
            run_grpc(&args).map(|r| emit(&r, args.common.json, report::table(&r)).then_some(r))
        }
        Mode::Bare(args) => {
            run_bare_mode(&args).map(|r| emit(&r, args.common.json, report::table(&r)).then_some(r))
        }
        Mode::Sweep(args) => run_sweep(&args).map(|s| {
            emit(&s, args.common.json, sweep_table(&s));
            None
        }),
        Mode::Forwarder(args) => {
            forwarder::serve(args.ports, Duration::from_secs(u64::from(args.max_secs)))
                .map(|()| None)
        }
        Mode::Sip(args) => {
            run_sip(&args).map(|r| emit(&r, args.common.json, report::table(&r)).then_some(r))
        }
    };
    match result {
        Ok(Some(r)) if r.calls_established < r.calls_requested => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xcc-load: {e}");
            match e {
                LoadError::Usage { .. } => ExitCode::from(2),
                _ => ExitCode::from(1),
            }
        }
    }
}

/// Prints a report; returns true (so it chains in `then_some`).
fn emit<T: Serialize>(value: &T, json: bool, table: String) -> bool {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("xcc-load: cannot encode report: {e}"),
        }
    } else {
        print!("{table}");
    }
    true
}

/// Receiver threads: as asked, else one per core this process may run on (after `--load-cpu`),
/// leaving one for the sender when there are several.
fn rx_threads(common: &Common) -> usize {
    common.rx_threads.map_or_else(
        || {
            let cores = cpu::allowed_cpus().unwrap_or(1);
            if cores > 2 { cores - 1 } else { 1 }
        },
        |n| n as usize,
    )
}

/// Pins this process (before any thread is spawned) and the relay, as asked.
fn pin(common: &Common, relay: Option<Pid>) -> Result<(), LoadError> {
    if let Some(cpu) = common.load_cpu {
        cpu::pin_current_thread(cpu)?;
    }
    if let (Some(cpu), Some(pid)) = (common.relay_cpu, relay) {
        pid.pin(cpu)?;
    }
    Ok(())
}

/// CPU time of (relay, this process) at one instant; `None` where /proc could not be read.
type CpuSample = (Option<Duration>, Option<Duration>);

/// CPU of the relay and of this process over the media phase.
struct CpuProbe {
    relay: Option<Pid>,
    at_start: Option<CpuSample>,
    at_end: Option<CpuSample>,
}

impl CpuProbe {
    fn new(relay: Option<Pid>) -> Self {
        Self {
            relay,
            at_start: None,
            at_end: None,
        }
    }

    fn sample(&self) -> CpuSample {
        (
            self.relay.and_then(|p| p.cpu_time().ok()),
            Pid::current().cpu_time().ok(),
        )
    }

    /// (relay, load) summaries for `calls` calls over `wall`.
    fn summaries(&self, wall: Duration, calls: u32) -> (Option<CpuSummary>, Option<CpuSummary>) {
        let delta = |pick: fn(&CpuSample) -> Option<Duration>| {
            Some(pick(self.at_end.as_ref()?)?.saturating_sub(pick(self.at_start.as_ref()?)?))
        };
        let relay = delta(|s| s.0)
            .zip(self.relay)
            .map(|(d, p)| CpuSummary::new(p.0, d, wall, calls));
        let load = delta(|s| s.1).map(|d| CpuSummary::new(Pid::current().0, d, wall, calls));
        (relay, load)
    }
}

/// Plays the media and fills the media, CPU and load-limit parts of a report.
fn measure(
    mode: &'static str,
    requested: u32,
    media: Vec<CallMedia>,
    calls: &[(u32, u64, Duration)],
    common: &Common,
    relay: Option<Pid>,
) -> Result<RunReport, LoadError> {
    let duration = Duration::from_secs(u64::from(common.duration));
    let mut probe = CpuProbe::new(relay);
    let mut start = None;
    let mut end = None;
    let options = phones::PlayOptions {
        rx_threads: rx_threads(common),
        quantum: Duration::from_micros(u64::from(common.pace_quantum_us)),
    };
    let outcome = phones::play(
        media,
        duration,
        options,
        || start = Some(probe.sample()),
        || end = Some(probe.sample()),
    )?;
    probe.at_start = start;
    probe.at_end = end;
    let (media_summary, per_call) = report::summarize(&outcome, calls);
    let (relay_cpu, load_cpu) = probe.summaries(outcome.elapsed, calls.len() as u32);
    let mut load_limited = Vec::new();
    if media_summary.send_lag_us.p99 > LAG_LIMIT_US {
        load_limited.push(format!(
            "send lag p99 {:.0} µs > {LAG_LIMIT_US:.0} µs",
            media_summary.send_lag_us.p99
        ));
    }
    for (who, w) in [
        ("sender", media_summary.sender_cpu_wait_pct),
        ("busiest receiver", media_summary.receiver_cpu_wait_pct),
    ] {
        if let Some(w) = w.filter(|&w| w > CPU_WAIT_LIMIT_PCT) {
            load_limited.push(format!(
                "the {who} waited {w:.1} % of the media phase for a CPU (runnable, not running)"
            ));
        }
    }
    let allowed = cpu::allowed_cpus().unwrap_or(1);
    if let Some(l) = load_cpu.filter(|l| l.cores > LOAD_CORES_LIMIT * allowed as f64) {
        load_limited.push(format!(
            "load generator used {:.2} of the {allowed} cores it may run on",
            l.cores
        ));
    }
    if let Some(d) = media_summary.phone_socket_drops.filter(|&d| d > 0) {
        load_limited.push(format!(
            "{d} packets dropped at the phones' full receive buffers"
        ));
    }
    if media_summary.send_errors > 0 {
        load_limited.push(format!(
            "{} sends refused by the kernel",
            media_summary.send_errors
        ));
    }
    Ok(RunReport {
        mode,
        calls_requested: requested,
        calls_established: calls.len() as u32,
        setup_failures: Vec::new(),
        release_failures: 0,
        setup_ms: None,
        media: media_summary,
        relay_cpu,
        load_cpu,
        load_limited,
        reference: None,
        cpu_ratio_to_reference: None,
        added_latency_us: None,
        relay_counters: None,
        sip: None,
        calls: per_call,
    })
}

/// `--relay-cpu` must have something to pin: xccd's pid or the bare forwarder.
fn check_relay_cpu(common: &Common, x: &XccdArgs) -> Result<(), LoadError> {
    if common.relay_cpu.is_some() && x.xccd_pid.is_none() && x.bare_ports.is_none() {
        return Err(LoadError::Usage {
            reason: "--relay-cpu needs --xccd-pid (and pins the forwarder of --bare-ports)".into(),
        });
    }
    Ok(())
}

/// One run through xccd, plus the bare reference when `--bare-ports` is given.
fn run_grpc(args: &GrpcArgs) -> Result<RunReport, LoadError> {
    check_relay_cpu(&args.common, &args.xccd)?;
    let xccd = args.xccd.xccd_pid.map(Pid);
    pin(&args.common, xccd)?;
    grpc_once(args.calls, &args.xccd, &args.common)
}

/// Several runs of the same size and the spread of their CPU ratios.
#[derive(Debug, Serialize)]
struct Repeated {
    /// Every run, in order.
    runs: Vec<RunReport>,
    /// xccd CPU per 1000 calls / the forwarder's, over the runs that measured both.
    cpu_ratio: Option<Spread>,
    /// xccd's p99 latency minus the forwarder's, µs, over the runs that measured both.
    added_latency_p99_us: Option<Spread>,
    /// Worst loss of any run, percent.
    loss_pct_max: f64,
}

/// Median and range.
#[derive(Debug, Serialize)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    samples: usize,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Option<Self> {
        v.sort_by(f64::total_cmp);
        let (&min, &max) = (v.first()?, v.last()?);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Self {
            median,
            min,
            max,
            samples: v.len(),
        })
    }
}

/// Pause between repeated runs, so released ports leave quarantine.
const REPEAT_PAUSE: Duration = Duration::from_secs(2);

fn run_repeated(args: &GrpcArgs) -> Result<Repeated, LoadError> {
    check_relay_cpu(&args.common, &args.xccd)?;
    pin(&args.common, args.xccd.xccd_pid.map(Pid))?;
    let mut runs = Vec::with_capacity(args.repeat as usize);
    for i in 0..args.repeat {
        if i > 0 {
            std::thread::sleep(REPEAT_PAUSE);
        }
        runs.push(grpc_once(args.calls, &args.xccd, &args.common)?);
    }
    let cpu_ratio = Spread::of(
        runs.iter()
            .filter_map(|r| r.cpu_ratio_to_reference)
            .collect(),
    );
    let added_latency_p99_us = Spread::of(
        runs.iter()
            .filter_map(|r| r.added_latency_us.map(|a| a.p99))
            .collect(),
    );
    let loss_pct_max = runs.iter().map(|r| r.media.loss_pct).fold(0.0, f64::max);
    Ok(Repeated {
        runs,
        cpu_ratio,
        added_latency_p99_us,
        loss_pct_max,
    })
}

fn repeated_table(r: &Repeated) -> String {
    let mut out = String::new();
    for (i, run) in r.runs.iter().enumerate() {
        out.push_str(&format!("--- run {} of {}\n", i + 1, r.runs.len()));
        out.push_str(&report::table(run));
    }
    match &r.cpu_ratio {
        Some(s) => out.push_str(&format!(
            "relay CPU / bare forwarder over {} runs: median {:.2}x (min {:.2}, max {:.2})\n",
            s.samples, s.median, s.min, s.max
        )),
        None => out.push_str("relay CPU ratio: not measured (give --xccd-pid and --bare-ports)\n"),
    }
    if let Some(s) = &r.added_latency_p99_us {
        out.push_str(&format!(
            "added p99 latency over the bare forwarder over {} runs: median {:+.1} µs (min {:+.1}, max {:+.1})\n",
            s.samples, s.median, s.min, s.max
        ));
    }
    out.push_str(&format!("worst loss: {:.3} %\n", r.loss_pct_max));
    out
}

fn grpc_once(calls: u32, x: &XccdArgs, common: &Common) -> Result<RunReport, LoadError> {
    if let Some(ports) = x.bare_ports.filter(|p| p.pairs() < calls) {
        return Err(LoadError::Usage {
            reason: format!(
                "--bare-ports {ports} has {} pairs for {calls} calls",
                ports.pairs()
            ),
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LoadError::io("start tokio runtime"))?;
    let client = runtime.block_on(sessions::connect(&x.addr))?;
    let run_tag = format!(
        "xcc-load-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let phone_pairs = phones::PhoneBinder::new(common.phone_ports).bind_pairs(calls)?;
    let (established, failures) =
        runtime.block_on(sessions::establish(&client, phone_pairs, x.rate, &run_tag));
    let mut setup = stats::Histogram::new();
    let mut ids = Vec::with_capacity(established.len());
    let mut media = Vec::with_capacity(established.len());
    for c in established {
        setup.record(c.setup.as_nanos() as u64);
        ids.push((c.index, c.session_id, c.setup));
        media.push(c.media);
    }
    let measured = if media.is_empty() {
        None
    } else {
        Some(measure(
            "grpc",
            calls,
            media,
            &ids,
            common,
            x.xccd_pid.map(Pid),
        ))
    };
    let session_ids: Vec<u64> = ids.iter().map(|c| c.1).collect();
    // Best effort: a missing ListSessions leaves the field empty, it does not fail the run.
    let relay_counters = runtime
        .block_on(sessions::relay_counters(&client, &session_ids))
        .ok();
    let release_failures = runtime.block_on(sessions::release(&client, &session_ids));
    let mut report = match measured {
        Some(r) => r?,
        None => {
            return Err(failures.into_iter().next().unwrap_or(LoadError::Usage {
                reason: "no calls".into(),
            }));
        }
    };
    report.setup_ms = Some(Quantiles::of(&setup, 1e6));
    report.setup_failures = failures.iter().map(ToString::to_string).collect();
    report.release_failures = release_failures;
    report.relay_counters = relay_counters;
    if let Some(ports) = x.bare_ports {
        attach_reference(&mut report, ports, common)?;
    }
    Ok(report)
}

/// Runs the bare forwarder with the report's established calls and states xccd against it: the
/// CPU ratio and the added latency.
fn attach_reference(
    report: &mut RunReport,
    ports: PortRange,
    common: &Common,
) -> Result<(), LoadError> {
    let reference = run_bare(report.calls_established, ports, common)?;
    report.cpu_ratio_to_reference = report
        .relay_cpu
        .zip(reference.relay_cpu)
        .map(|(a, b)| a.cores_per_1000_calls / b.cores_per_1000_calls.max(1e-12));
    // Only when the forwarder carried packets: empty quantiles read 0 and would pass for a
    // perfect reference.
    report.added_latency_us = (reference.media.packets_received > 0)
        .then(|| AddedLatency::between(&report.media.latency_us, &reference.media.latency_us));
    report.reference = Some(Box::new(reference));
    Ok(())
}

/// One run over SIP through xccd, plus the bare reference when `--bare-ports` is given.
fn run_sip(args: &SipArgs) -> Result<RunReport, LoadError> {
    let x = XccdArgs {
        rate: args.rate,
        addr: String::new(),
        xccd_pid: args.xccd_pid,
        bare_ports: args.bare_ports,
    };
    check_relay_cpu(&args.common, &x)?;
    if let Some(ports) = args.bare_ports.filter(|p| p.pairs() < args.calls) {
        return Err(LoadError::Usage {
            reason: format!(
                "--bare-ports {ports} has {} pairs for {} calls",
                ports.pairs(),
                args.calls
            ),
        });
    }
    let xccd = args.xccd_pid.map(Pid);
    pin(&args.common, xccd)?;
    let phone_pairs = phones::PhoneBinder::new(args.common.phone_ports).bind_pairs(args.calls)?;
    let mut driver = sip::Driver::bind(args.uac, args.trunk, args.server, phone_pairs)?;
    let setup = driver.set_up(args.rate)?;
    let mut setup_hist = stats::Histogram::new();
    let mut ids = Vec::with_capacity(setup.calls.len());
    let mut media = Vec::with_capacity(setup.calls.len());
    for c in setup.calls {
        setup_hist.record(c.setup.as_nanos() as u64);
        ids.push((c.index, 0, c.setup));
        media.push(c.media);
    }
    // SIP keeps being answered during the media phase, on a thread of its own.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let serving = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::Builder::new()
            .name("load-sip".into())
            .spawn(move || driver.serve(&stop).map(|()| driver))
            .map_err(LoadError::io("spawn SIP thread"))?
    };
    let measured = if media.is_empty() {
        None
    } else {
        Some(measure("sip", args.calls, media, &ids, &args.common, xccd))
    };
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut driver = serving
        .join()
        .map_err(|_| LoadError::io("SIP thread")(std::io::Error::other("panicked")))??;
    let release_failures = driver.tear_down()?;
    let mut report = match measured {
        Some(r) => r?,
        None => {
            return Err(LoadError::Sip {
                call: 0,
                reason: format!(
                    "no call set up; first failure: {}",
                    setup
                        .failures
                        .first()
                        .map_or("none reported", String::as_str)
                ),
            });
        }
    };
    report.setup_ms = Some(Quantiles::of(&setup_hist, 1e6));
    report.setup_failures = setup.failures;
    report.release_failures = release_failures;
    report.sip = Some(report::SipSummary {
        trunk_byes: driver.trunk_byes(),
        strays: driver.strays,
    });
    if let Some(ports) = args.bare_ports {
        attach_reference(&mut report, ports, &args.common)?;
    }
    Ok(report)
}

fn run_bare_mode(args: &BareArgs) -> Result<RunReport, LoadError> {
    pin(&args.common, None)?;
    let ports = match args.ports {
        Some(p) if p.pairs() < args.pairs => {
            return Err(LoadError::Usage {
                reason: format!(
                    "--ports {p} has {} pairs for --pairs {}",
                    p.pairs(),
                    args.pairs
                ),
            });
        }
        Some(p) => p,
        None => {
            let last = u32::from(BARE_FIRST_PORT) + 2 * args.pairs - 1;
            let last = u16::try_from(last).map_err(|_| LoadError::Usage {
                reason: "too many pairs for the default ports".into(),
            })?;
            PortRange {
                first: BARE_FIRST_PORT,
                last,
            }
        }
    };
    run_bare(args.pairs, ports, &args.common)
}

/// The bare forwarder with `calls` pairs, pinned like the relay, same media pattern (plain RTP).
fn run_bare(calls: u32, ports: PortRange, common: &Common) -> Result<RunReport, LoadError> {
    let duration = Duration::from_secs(u64::from(common.duration));
    let child = ForwarderChild::spawn(ports, duration * 2 + Duration::from_secs(30))?;
    if let Some(cpu) = common.relay_cpu {
        child.pid().pin(cpu)?;
    }
    let mut media = Vec::with_capacity(calls as usize);
    let mut ids = Vec::with_capacity(calls as usize);
    let pairs = phones::PhoneBinder::new(common.phone_ports).bind_pairs(calls)?;
    for (i, (client, pbx)) in (0u32..).zip(pairs) {
        let (client_target, pbx_target) = ports.pair(i);
        media.push(CallMedia {
            client,
            pbx,
            client_target,
            pbx_target,
            client_tx: None,
            client_rx: None,
        });
        ids.push((i, 0, Duration::ZERO));
    }
    // The forwarder learns both peers from traffic: latch them before media is measured.
    phones::send_probes(&media)?;
    std::thread::sleep(Duration::from_millis(100));
    let report = measure("bare", calls, media, &ids, common, Some(child.pid()));
    drop(child);
    report
}

/// One step of a sweep.
#[derive(Debug, Serialize)]
struct SweepStep {
    calls: u32,
    established: u32,
    loss_pct: f64,
    /// Send stamp to kernel arrival (the capacity verdict's latency).
    latency_p99_us: f64,
    /// Kernel arrival to the load generator's read: its own queueing, not judged.
    receive_delay_p99_us: Option<f64>,
    /// xccd's p99 minus the bare forwarder's (with `--bare-ports`).
    added_latency_p99_us: Option<f64>,
    relay_cores_per_1000_calls: Option<f64>,
    bare_cores_per_1000_calls: Option<f64>,
    cpu_ratio_to_reference: Option<f64>,
    load_cores: Option<f64>,
    send_lag_p99_us: f64,
    load_limited: Vec<String>,
    within_capacity: bool,
    /// The same verdict for the bare forwarder's run of this step (with `--bare-ports`).
    bare_within_capacity: Option<bool>,
}

/// A sweep's outcome.
#[derive(Debug, Serialize)]
struct Sweep {
    steps: Vec<SweepStep>,
    /// Largest count (from the first step on, without a failing step before it) with loss below
    /// 0.1 % and p99 latency below 5 ms.
    capacity: Option<u32>,
    /// The bare forwarder's capacity by the same rule, measured in the same steps (with
    /// `--bare-ports`): the reference for issue 7's "capacity >= 90 % of the bare forwarder's".
    bare_capacity: Option<u32>,
    /// `capacity / bare_capacity` when both are known.
    capacity_ratio_to_reference: Option<f64>,
    /// Whether any step at or below capacity was flagged as load-generator limited.
    load_limited: bool,
}

fn run_sweep(args: &SweepArgs) -> Result<Sweep, LoadError> {
    if args.to < args.from {
        return Err(LoadError::Usage {
            reason: format!("--to {} is below --from {}", args.to, args.from),
        });
    }
    check_relay_cpu(&args.common, &args.xccd)?;
    pin(&args.common, args.xccd.xccd_pid.map(Pid))?;
    let mut steps = Vec::new();
    let (mut xccd, mut bare) = (Capacity::default(), Capacity::default());
    let mut calls = args.from;
    while calls <= args.to {
        let r = grpc_once(calls, &args.xccd, &args.common)?;
        let ok = xccd.judge(calls, &r);
        let bare_ok = r.reference.as_deref().map(|b| bare.judge(calls, b));
        let step = SweepStep {
            calls,
            established: r.calls_established,
            loss_pct: r.media.loss_pct,
            latency_p99_us: r.media.latency_us.p99,
            receive_delay_p99_us: r.media.receive_delay_us.map(|d| d.p99),
            added_latency_p99_us: r.added_latency_us.map(|a| a.p99),
            relay_cores_per_1000_calls: r.relay_cpu.map(|c| c.cores_per_1000_calls),
            bare_cores_per_1000_calls: r
                .reference
                .as_ref()
                .and_then(|b| b.relay_cpu)
                .map(|c| c.cores_per_1000_calls),
            cpu_ratio_to_reference: r.cpu_ratio_to_reference,
            load_cores: r.load_cpu.map(|c| c.cores),
            send_lag_p99_us: r.media.send_lag_us.p99,
            load_limited: r.load_limited.clone(),
            within_capacity: ok,
            bare_within_capacity: bare_ok,
        };
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!("{}", sweep_row(&step));
        }
        steps.push(step);
        calls = match calls.checked_add(args.step) {
            Some(c) => c,
            None => break,
        };
        if calls <= args.to {
            std::thread::sleep(Duration::from_secs(u64::from(args.pause)));
        }
    }
    let capacity = xccd.largest;
    let load_limited = steps
        .iter()
        .any(|s| !s.load_limited.is_empty() && capacity.is_none_or(|c| s.calls <= c + args.step));
    Ok(Sweep {
        steps,
        capacity,
        bare_capacity: bare.largest,
        capacity_ratio_to_reference: capacity
            .zip(bare.largest)
            .map(|(x, b)| f64::from(x) / f64::from(b)),
        load_limited,
    })
}

/// A sweep's capacity verdict for one relay, step by step.
#[derive(Debug, Default)]
struct Capacity {
    /// Largest count that passed with no failing step before it.
    largest: Option<u32>,
    /// A step failed: later passes do not count (capacity is where it first breaks).
    failed: bool,
}

impl Capacity {
    /// Judges one step's run: every call up, loss < 0.1 %, p99 latency < 5 ms.
    fn judge(&mut self, calls: u32, r: &RunReport) -> bool {
        let ok = r.calls_established == calls
            && r.media.loss_pct < CAPACITY_LOSS_PCT
            && r.media.latency_us.p99 < CAPACITY_P99_US;
        if ok && !self.failed {
            self.largest = Some(calls);
        }
        self.failed |= !ok;
        ok
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

fn sweep_row(s: &SweepStep) -> String {
    let verdict = |ok: bool| if ok { "ok" } else { "over" };
    format!(
        "{:>6} {:>6} {:>8.3} {:>10.1} {:>10} {:>10} {:>10} {:>7} {:>6} {:>6} {}",
        s.calls,
        s.established,
        s.loss_pct,
        s.latency_p99_us,
        s.added_latency_p99_us
            .map_or_else(|| "-".into(), |a| format!("{a:+.1}")),
        opt(s.relay_cores_per_1000_calls),
        opt(s.bare_cores_per_1000_calls),
        opt(s.cpu_ratio_to_reference),
        verdict(s.within_capacity),
        s.bare_within_capacity.map_or("-", verdict),
        s.load_limited.join("; ")
    )
}

fn sweep_table(s: &Sweep) -> String {
    let mut out = format!(
        "{:>6} {:>6} {:>8} {:>10} {:>10} {:>10} {:>10} {:>7} {:>6} {:>6}\n",
        "calls", "up", "loss %", "p99 µs", "+p99 µs", "xccd/1k", "bare/1k", "ratio", "xccd", "bare"
    );
    for step in &s.steps {
        out.push_str(&sweep_row(step));
        out.push('\n');
    }
    out.push_str(&match s.capacity {
        Some(c) => format!(
            "capacity: {c} calls (loss < 0.1 %, p99 send-to-kernel-arrival latency < 5 ms)\n"
        ),
        None => "capacity: below the first step\n".into(),
    });
    if s.steps.iter().any(|st| st.bare_within_capacity.is_some()) {
        out.push_str(&match (s.bare_capacity, s.capacity_ratio_to_reference) {
            (Some(b), Some(r)) => format!(
                "bare forwarder capacity: {b} calls (same rule, same steps); xccd / bare: {:.0} %\n",
                r * 100.0
            ),
            (Some(b), None) => format!("bare forwarder capacity: {b} calls (same rule, same steps)\n"),
            (None, _) => "bare forwarder capacity: below the first step\n".into(),
        });
    }
    if s.load_limited {
        out.push_str(
            "WARNING: the load generator itself was near its limit; capacity may be understated\n",
        );
    }
    out
}
