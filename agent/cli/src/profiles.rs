//! `entente profiles check DIR`: load and validate hw-profiles.

use clap::Subcommand;
use std::process::ExitCode;

/// Subcommands of `entente profiles`.
#[derive(Subcommand, Debug)]
pub enum ProfilesCommand {}

/// Runs `entente profiles ...`.
pub fn run(cmd: ProfilesCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
