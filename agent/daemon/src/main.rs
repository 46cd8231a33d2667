//! `entented`: the entente node agent (a systemd `Type=notify` service).

use anyhow::Result;
use clap::Parser;
use entente_agent::config::Config;
use entente_agent::runtime::Agent;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// entented: stages firmware and moves this node's links to new epochs with its neighbours.
#[derive(Parser, Debug)]
#[command(name = "entented", version, about)]
struct Args {
    /// Configuration file; its drop-ins are `<file without .toml>.d/*.toml`. Without it, the
    /// layers in /usr/lib/entente, /etc/entente and /run/entente are merged.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ENTENTE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // journald adds its own timestamps.
        .without_time()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("entented: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            let _ = sd_notify::notify(
                false,
                &[sd_notify::NotifyState::Status(&format!("failed: {e}"))],
            );
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let cfg = Config::load(args.config.as_deref())?;
    if let Err(problems) = entente_agent::files::check_trusted(&cfg) {
        anyhow::bail!(
            "refusing files others could change:\n  {}",
            problems.join("\n  ")
        );
    }
    if args.check_config {
        println!(
            "configuration OK: node {} with {} peers",
            cfg.node_id,
            cfg.peers.len()
        );
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook(&stop, &reload)?;
    let mut agent = Agent::open(cfg, stop.clone(), reload)?;
    let mut usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
        .then(|| std::time::Duration::from_micros(usec));
    let mut ready_sent = false;
    let mut last_ping = std::time::Instant::now();
    let result = agent.run(
        |status| {
            let mut states = vec![sd_notify::NotifyState::Status(status)];
            if !ready_sent {
                states.push(sd_notify::NotifyState::Ready);
                ready_sent = true;
            }
            let _ = sd_notify::notify(false, &states);
        },
        |healthy| {
            // Pinged from the main loop, after its health check, at half the watchdog period.
            if let Some(period) = watchdog {
                if healthy && last_ping.elapsed() >= period / 2 {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                    last_ping = std::time::Instant::now();
                }
            }
        },
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    if stop.load(Ordering::Relaxed) {
        tracing::info!("stopped by signal");
    }
    result
}

/// SIGTERM/SIGINT stop the loop; SIGHUP reloads the configuration.
fn signal_hook(stop: &Arc<AtomicBool>, reload: &Arc<AtomicBool>) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    signal_hook::flag::register(SIGTERM, stop.clone())?;
    signal_hook::flag::register(SIGINT, stop.clone())?;
    signal_hook::flag::register(SIGHUP, reload.clone())?;
    Ok(())
}
