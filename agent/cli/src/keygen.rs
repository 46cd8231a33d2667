//! `entente keygen`: create an ed25519 signing key pair for manifests.
//!
//! Writes `DIR/NAME.key` (the secret key, mode 0600) and `DIR/NAME.pub`, and prints the key id.
//! An existing key file is never overwritten.

use anyhow::{Context, Result};
use clap::Args;
use entente_stage::SecretKey;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `entente keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Directory for the key files (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Base name of the key files: NAME.key and NAME.pub.
    #[arg(long, default_value = "manifest-signing")]
    name: String,
}

/// Runs `entente keygen`.
pub fn run(args: KeygenArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let key = SecretKey::generate()?;
    let (secret, public) = key.write_pair(&args.out, &args.name)?;
    outln!("secret key: {} (mode 0600)", secret.display());
    outln!("public key: {}", public.display());
    outln!("key id:     {}", key.public().id());
    Ok(ExitCode::SUCCESS)
}
