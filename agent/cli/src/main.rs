//! `entente`: the operator CLI.

#[macro_use]
mod out;
mod agentcmd;
mod client;
mod controlcmd;
mod demo;
mod keygen;
mod manifest;
mod profiles;
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
    Sim(Box<sim::SimArgs>),
    /// Create an ed25519 key pair for signing manifests.
    Keygen(keygen::KeygenArgs),
    /// Sign or inspect a campaign manifest.
    #[command(subcommand)]
    Manifest(manifest::ManifestCommand),
    /// Check hw-profiles.
    #[command(subcommand)]
    Profiles(profiles::ProfilesCommand),
    /// Run a real campaign on this machine: N agents on loopback, no setup.
    Demo(demo::DemoArgs),
    /// The local agent's state and its view of the campaign.
    Status(agentcmd::StatusArgs),
    /// The local agent's devices and firmware versions.
    Inventory(agentcmd::ReadArgs),
    /// The local agent's history.
    History(agentcmd::ReadArgs),
    /// Start or follow a campaign.
    #[command(subcommand)]
    Campaign(agentcmd::CampaignCommand),
    /// Retire or restore a link.
    #[command(subcommand)]
    Link(agentcmd::LinkCommand),
    /// Images in the local agent's store: add, list, verify.
    #[command(subcommand)]
    Image(agentcmd::ImageCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                client::EXIT_USAGE
            } else {
                0 // --help, --version
            });
        }
    };
    let result = match cli.command {
        Command::Sim(args) => sim::run(*args),
        Command::Keygen(args) => keygen::run(args),
        Command::Manifest(cmd) => manifest::run(cmd),
        Command::Profiles(cmd) => profiles::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Status(args) => agentcmd::status(args),
        Command::Inventory(args) => agentcmd::inventory(args),
        Command::History(args) => agentcmd::history(args),
        Command::Campaign(cmd) => agentcmd::campaign(cmd),
        Command::Link(cmd) => agentcmd::link(cmd),
        Command::Image(cmd) => agentcmd::image(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("entente: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(client::exit_status(&e))
        }
    }
}
