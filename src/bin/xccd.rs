//! xccd: the XCC daemon. Wiring only: config -> tracing -> bind -> build -> ready -> signal -> drain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use xcc::config::{Config, Validated, default_toml};
use xcc::daemon::{self, Command};
use xcc::error::{EXIT_RUNTIME, Error};
use xcc::logging::{self, LogControl};
use xcc::notify::Notifier;

/// XCC call controller daemon.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Without it, or if it does not exist, every key takes its default.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate the configuration and exit (0 valid, 64 invalid).
    CheckConfig,
    /// Print the defaults as a commented TOML file.
    PrintDefaultConfig,
}

fn load(path: Option<&PathBuf>) -> Result<(Validated, Option<PathBuf>), Error> {
    match path {
        None => Ok((Config::default().validate()?, None)),
        Some(p) => {
            let (config, found) = Config::load(p)?;
            Ok((config.validate()?, found.then(|| p.clone())))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::PrintDefaultConfig) = cli.command {
        print!("{}", default_toml());
        return ExitCode::SUCCESS;
    }
    let (validated, file) = match load(cli.config.as_ref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("xccd: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    if let Some(Cmd::CheckConfig) = cli.command {
        match (&file, &cli.config) {
            (Some(p), _) => println!("{}: configuration valid", p.display()),
            (None, Some(p)) => println!(
                "{} does not exist: xccd would run on the defaults, which are valid",
                p.display()
            ),
            (None, None) => println!("no --config given: the defaults are valid"),
        }
        return ExitCode::SUCCESS;
    }
    let log = logging::init(&validated.config.log);
    match (&file, &cli.config) {
        (Some(p), _) => tracing::info!(config = %p.display(), "configuration loaded"),
        (None, Some(p)) => {
            tracing::info!(config = %p.display(), "configuration file absent; running on defaults")
        }
        (None, None) => tracing::info!("no --config given; running on defaults"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(serve(validated, cli.config, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "xccd failed");
            eprintln!("xccd: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn serve(v: Validated, config_path: Option<PathBuf>, log: LogControl) -> Result<(), Error> {
    let addr = v.config.control.listen;
    let control = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind {
            what: "control (gRPC)",
            addr,
            source,
        })?;
    let (tx, rx) = mpsc::channel(8);
    spawn_signal_handlers(tx)?;
    let source = xcc::reload::Source {
        path: config_path,
        log,
    };
    daemon::run(v, control, Notifier::from_env(), rx, source).await
}

/// SIGTERM -> drain, SIGINT -> stop, SIGHUP -> reload. Registered before readiness so no signal is
/// lost to the default action.
fn spawn_signal_handlers(tx: mpsc::Sender<Command>) -> Result<(), Error> {
    let sig = |kind, what| signal(kind).map_err(|source| Error::Runtime { what, source });
    let mut term = sig(SignalKind::terminate(), "SIGTERM handler")?;
    let mut int = sig(SignalKind::interrupt(), "SIGINT handler")?;
    let mut hup = sig(SignalKind::hangup(), "SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            let cmd = tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); Command::Drain }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); Command::Stop }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading the configuration"); Command::Reload }
            };
            if tx.send(cmd).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}
