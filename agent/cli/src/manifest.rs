//! `entente manifest sign|show`: sign and inspect firmware campaign manifests.

use clap::Subcommand;
use std::process::ExitCode;

/// Subcommands of `entente manifest`.
#[derive(Subcommand, Debug)]
pub enum ManifestCommand {}

/// Runs `entente manifest ...`.
pub fn run(cmd: ManifestCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
