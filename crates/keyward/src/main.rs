//! `keyward`: load the config, set up logging, build the parts, run, wait.

mod admin;
mod cli;
mod demo;
mod httpc;
mod serve;
mod state;
mod telemetry;
mod users;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keyward: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
