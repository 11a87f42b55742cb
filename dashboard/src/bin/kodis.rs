//! `kodis`: the admin CLI of Kodis (see `kodis --help`).

use std::process::ExitCode;

use clap::Parser;
use kodis_dashboard::cli::{self, Cli, EXIT_ERROR};

fn main() -> ExitCode {
    let args = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kodis: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kodis: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
