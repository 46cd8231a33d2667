//! `entente keygen`: create an ed25519 signing key pair for manifests.

use clap::Args;
use std::process::ExitCode;

/// Arguments of `entente keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {}

/// Runs `entente keygen`.
pub fn run(_args: KeygenArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("entente keygen is not built yet")
}
