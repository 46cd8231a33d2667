//! `entente manifest sign|show`: sign and inspect firmware campaign manifests.
//!
//! `sign` builds a manifest from a description (TOML, or JSON if the file ends in `.json`; see
//! `entente_stage::spec`), hashing every image, and writes the canonical manifest to `--out`
//! and its detached signature to `--out` + `.sig`. `show` prints a manifest's fields, and with
//! `--pubkey` verifies its signature (a bad or foreign signature is an error, exit code 2).
//! `--json` output is the stable contract; the text is for people.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use entente_stage::{
    unix_now, verify_signature, Manifest, ManifestSpec, PublicKey, SecretKey, Signature,
    TrustedKeys,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Subcommands of `entente manifest`.
#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// Build a manifest from a description, canonicalise it and sign it.
    Sign(SignArgs),
    /// Print a manifest's fields; with --pubkey, verify its signature.
    Show(ShowArgs),
}

/// Options of `entente manifest sign`.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// The secret key file (from `entente keygen`; must not be readable by group or others).
    #[arg(long)]
    key: PathBuf,
    /// The manifest description (TOML, or JSON if it ends in .json).
    #[arg(long = "in")]
    input: PathBuf,
    /// Where to write the canonical manifest; the signature goes to the same path + ".sig".
    #[arg(long)]
    out: PathBuf,
}

/// Options of `entente manifest show`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The manifest file.
    file: PathBuf,
    /// Print as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Verify the signature with this public key.
    #[arg(long)]
    pubkey: Option<PathBuf>,
    /// The signature file (default: FILE.sig).
    #[arg(long)]
    sig: Option<PathBuf>,
}

/// Runs `entente manifest ...`.
pub fn run(cmd: ManifestCommand) -> Result<ExitCode> {
    match cmd {
        ManifestCommand::Sign(args) => sign(args),
        ManifestCommand::Show(args) => show(args),
    }
}

fn sig_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

fn sign(args: SignArgs) -> Result<ExitCode> {
    let key = SecretKey::load(&args.key)?;
    let spec = ManifestSpec::load(&args.input)?;
    let base = args.input.parent().unwrap_or(Path::new("."));
    let manifest = spec.build(base, unix_now())?;
    let bytes = manifest.to_canonical_bytes();
    let sig = key.sign(&bytes);
    std::fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
    let sig_file = sig_path(&args.out);
    std::fs::write(&sig_file, sig.to_file_text())
        .with_context(|| format!("writing {}", sig_file.display()))?;
    outln!(
        "signed epoch {} version {} ({} profiles) with key {}",
        manifest.epoch,
        manifest.manifest_version,
        manifest.profiles.len(),
        sig.key_id
    );
    outln!(
        "manifest:  {} (digest {})",
        args.out.display(),
        manifest.digest()
    );
    outln!("signature: {}", sig_file.display());
    Ok(ExitCode::SUCCESS)
}

fn show(args: ShowArgs) -> Result<ExitCode> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let sig_file = args.sig.clone().unwrap_or_else(|| sig_path(&args.file));
    let (signature, verified) = match &args.pubkey {
        Some(p) => {
            let sig = Signature::load(&sig_file)?;
            let mut keys = TrustedKeys::new();
            keys.add(PublicKey::load(p)?);
            verify_signature(&keys, &bytes, &sig)
                .with_context(|| format!("verifying {}", args.file.display()))?;
            (Some(sig), true)
        }
        None => (Signature::load(&sig_file).ok(), false),
    };
    let manifest = Manifest::from_canonical_bytes(&bytes)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let now = unix_now();
    let expired = now >= manifest.expires_at;
    if args.json {
        let out = json!({
            "file": args.file,
            "digest": manifest.digest().to_hex(),
            "expired": expired,
            "signature": signature.as_ref().map(|s| json!({
                "key_id": s.key_id.to_string(),
                "verified": verified,
            })),
            "manifest": manifest,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("manifest {}", args.file.display());
    outln!("  digest            {}", manifest.digest());
    outln!("  epoch             {}", manifest.epoch);
    outln!("  manifest version  {}", manifest.manifest_version);
    outln!(
        "  expires at        {} ({}){}",
        manifest.expires_at,
        utc(manifest.expires_at),
        if expired { ", EXPIRED" } else { "" }
    );
    outln!("  semantics         {}", manifest.semantics);
    match (&signature, verified) {
        (Some(s), true) => outln!("  signature         verified, key {}", s.key_id),
        (Some(s), false) => outln!(
            "  signature         key {} (not verified: give --pubkey)",
            s.key_id
        ),
        (None, _) => outln!("  signature         none found at {}", sig_file.display()),
    }
    for (name, p) in &manifest.profiles {
        outln!("profile {name}");
        outln!("  version           {}", p.version);
        outln!("  image sha256      {}", p.sha256);
        outln!("  size              {} bytes", p.size);
        outln!(
            "  chunks            {} of {} bytes",
            p.chunk_count(),
            p.chunk_size
        );
        outln!(
            "  compat            epochs {}..={}",
            p.compat.min_epoch,
            p.compat.max_epoch
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `secs` (Unix time) as `YYYY-MM-DD hh:mm:ss UTC`.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc(1_767_225_599), "2025-12-31 23:59:59 UTC");
    }
}
