//! The `ckpt` command line: argument parsing here, one thin file per
//! subcommand under `commands/`, all real work in the library crates.

#![forbid(unsafe_code)]

mod commands;
mod job;
mod logging;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ckpt",
    version,
    about = "Checkpoint and restore Linux processes"
)]
struct Cli {
    /// Log each step with its duration (-v), debug details (-vv), everything
    /// (-vvv), on stderr; RUST_LOG takes per-module directives too.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Freeze a process and save it into an image file.
    Dump(commands::dump::Args),
    /// Bring a saved process back to life.
    Restore(commands::restore::Args),
    /// Print what an image holds.
    Show(commands::show::Args),
    /// Rewrite an image keeping only its live generation (drops the dead
    /// space earlier edits left).
    Compact(commands::compact::Args),
    /// Mount a store of images as a filesystem (ckptfs).
    Mount(commands::mount::Args),
}

/// Entry point of the `ckpt` binary; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    let result = match cli.command {
        Command::Dump(a) => commands::dump::run(a),
        Command::Restore(a) => commands::restore::run(a),
        Command::Show(a) => commands::show::run(a),
        Command::Compact(a) => commands::compact::run(a),
        Command::Mount(a) => commands::mount::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ckpt: error: {}", chain(&e));
            1
        }
    }
}

/// "outer: inner: innermost", each message once.
fn chain(e: &anyhow::Error) -> String {
    ckpt_image::chain(e.chain())
}
