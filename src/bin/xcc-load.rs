//! xcc-load: synthetic calls through a running xccd (see `xcc::load`). Parses arguments and
//! hands them to the library; usage errors exit 2.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    xcc::load::run(xcc::load::cli::Cli::parse())
}
