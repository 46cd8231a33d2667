//! `entente profiles check DIR` and `entente profiles show NAME`: load and validate hw-profiles.
//!
//! Exit codes: 0 when every profile passes, 1 when a profile has errors (each printed on stderr
//! as `<file>.toml:<line>: <what is wrong>`), 2 for bad usage such as a missing directory. With
//! `--json` the result goes to stdout as JSON, the stable contract.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use entente_devices::profile::{self, Profile, ProfileError};
use std::path::PathBuf;
use std::process::ExitCode;

/// Subcommands of `entente profiles`.
#[derive(Subcommand, Debug)]
pub enum ProfilesCommand {
    /// Validate every *.toml profile in a directory and the rules across them.
    Check(CheckArgs),
    /// Print one profile as the agent reads it.
    Show(ShowArgs),
}

/// Options of `entente profiles check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The directory of profiles (hw-profiles in the source tree).
    dir: PathBuf,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Options of `entente profiles show`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The profile's name (its file name without .toml).
    name: String,
    /// The directory of profiles.
    #[arg(long, default_value = "hw-profiles")]
    dir: PathBuf,
    /// Print the profile as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `entente profiles ...`.
pub fn run(cmd: ProfilesCommand) -> Result<ExitCode> {
    match cmd {
        ProfilesCommand::Check(args) => check(args),
        ProfilesCommand::Show(args) => show(args),
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_errors(errors: &[ProfileError]) {
    for e in errors {
        eprintln!("{e}");
    }
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    if !args.dir.is_dir() {
        return Err(
            crate::client::Usage(format!("{} is not a directory", args.dir.display())).into(),
        );
    }
    let report = profile::check_dir(&args.dir);
    if args.json {
        let names: Vec<&str> = report.profiles.iter().map(|p| p.name.as_str()).collect();
        let v = serde_json::json!({
            "ok": report.ok(),
            "dir": args.dir,
            "files": report.files,
            "profiles": names,
            "errors": report.errors,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else if report.ok() {
        let names: Vec<&str> = report.profiles.iter().map(|p| p.name.as_str()).collect();
        outln!(
            "{}: {} profiles OK ({})",
            args.dir.display(),
            names.len(),
            names.join(", ")
        );
    } else {
        print_errors(&report.errors);
        let mut files: Vec<&PathBuf> = report.errors.iter().map(|e| &e.file).collect();
        files.dedup();
        eprintln!(
            "{}: {} error{} in {} file{}",
            args.dir.display(),
            report.errors.len(),
            if report.errors.len() == 1 { "" } else { "s" },
            files.len(),
            if files.len() == 1 { "" } else { "s" },
        );
    }
    Ok(exit(report.ok()))
}

fn show(args: ShowArgs) -> Result<ExitCode> {
    let path = args.dir.join(format!("{}.toml", args.name));
    if !path.is_file() {
        bail!(
            "no profile {:?}: {} does not exist",
            args.name,
            path.display()
        );
    }
    match profile::load_file(&path) {
        Err(errors) => {
            print_errors(&errors);
            Ok(exit(false))
        }
        Ok(p) => {
            if args.json {
                outln!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                out!("{}", text(&p));
            }
            Ok(exit(true))
        }
    }
}

/// The human-readable form of a profile (not a stable format: scripts use `--json`).
fn text(p: &Profile) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "{}: {}", p.name, p.description);
    let lab = if p.lab { ", lab" } else { "" };
    let inventory = if p.inventory == p.backend {
        String::new()
    } else {
        format!(", inventory {}", p.inventory)
    };
    let class = format!("{:?}", p.class).to_lowercase();
    let _ = writeln!(s, "  class {class}{lab}, backend {}{inventory}", p.backend);
    let m = &p.matcher;
    let mut matcher = format!("{:?}", m.bus).to_lowercase();
    if let Some(v) = m.pci_vendor {
        let devices: Vec<String> = m.pci_devices.iter().map(|d| format!("{v}:{d}")).collect();
        let _ = write!(matcher, " {}", devices.join(" "));
    }
    if let Some(d) = &m.driver {
        let _ = write!(matcher, ", driver {d}");
    }
    let _ = writeln!(s, "  match {matcher}");
    for c in &p.components {
        let mut line = format!("  component {} (version {}", c.name, c.version_key);
        if !c.fixed_keys.is_empty() {
            let _ = write!(line, ", fixed {}", c.fixed_keys.join(" "));
        }
        if let Some(k) = &c.inventory_key {
            let _ = write!(line, ", inventory {k}");
        }
        line.push(')');
        match c.max_image_bytes {
            Some(max) if c.flashable => {
                let _ = write!(line, ": images up to {max} bytes");
                if c.dual_bank {
                    line.push_str(", dual bank");
                }
            }
            _ => line.push_str(": inventory only"),
        }
        let _ = writeln!(s, "{line}");
    }
    for a in &p.activations {
        let kind = if a.disruptive {
            "disruptive"
        } else {
            "non-disruptive"
        };
        let _ = write!(
            s,
            "  activation {}: {kind}, at most {} ms",
            a.method, a.max_ms
        );
        if let Some(n) = &a.note {
            let _ = write!(s, " ({n})");
        }
        s.push('\n');
    }
    s
}
