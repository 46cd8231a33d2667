//! `entente`: the operator CLI.

mod sim;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// entente: staged firmware updates for GPU/RDMA clusters, converged link by link.
#[derive(Parser, Debug)]
#[command(name = "entente", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Simulate a campaign on a virtual cluster and check its safety and convergence.
    Sim(sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => sim::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("entente: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
