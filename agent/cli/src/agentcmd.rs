//! Commands that talk to the local agent: `status`, `inventory`, `history`, `campaign start`,
//! `link retire`. Read commands take `--json` (the stable format: entente-api's types).

use crate::client::{call, call_with_files, AgentError, EXIT_NOTHING_TO_DO, EXIT_REFUSED};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use entente_api::{ErrorCode, Reply, Request, Status};
use entente_stage::statement::Action;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the agent listens.
#[derive(Args, Debug, Clone)]
pub struct SocketArg {
    /// The agent's control socket.
    #[arg(long, env = "ENTENTE_SOCKET", default_value = entente_api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// `entente status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Print the links as a Graphviz graph (committed epoch on each edge).
    #[arg(long)]
    dot: bool,
    /// Refresh every second until the campaign converged (or Ctrl-C).
    #[arg(long)]
    watch: bool,
}

/// `entente inventory` and `entente history`.
#[derive(Args, Debug)]
pub struct ReadArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Most entries (history).
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

/// `entente campaign ...`.
#[derive(Subcommand, Debug)]
pub enum CampaignCommand {
    /// Start a campaign on the local agent from a signed manifest.
    Start {
        #[command(flatten)]
        socket: SocketArg,
        /// The canonical manifest (from `entente manifest sign`).
        #[arg(long)]
        manifest: PathBuf,
        /// Its signature (default: the manifest path + ".sig").
        #[arg(long)]
        sig: Option<PathBuf>,
        /// Image files to seed the campaign with (readable by the agent).
        #[arg(long = "image")]
        images: Vec<PathBuf>,
    },
    /// The campaign's progress as the local agent sees it (`status` by another name).
    Status(StatusArgs),
    /// A dry run on the local agent: what would change, and whether it would refuse (exit 3).
    Plan {
        #[command(flatten)]
        socket: SocketArg,
        /// The canonical manifest.
        #[arg(long)]
        manifest: PathBuf,
        /// Its signature (default: the manifest path + ".sig").
        #[arg(long)]
        sig: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pause the campaign: no new staging or activation until a resume (a signed operator
    /// statement, carried to every agent).
    Pause(crate::controlcmd::ControlArgs),
    /// Resume a paused or aborted campaign: the same manifest runs on.
    Resume(crate::controlcmd::ControlArgs),
    /// Abort the campaign: open link transactions aborted, no new activation, committed links
    /// stay; every node ends halted.
    Abort(crate::controlcmd::ControlArgs),
    /// Roll the campaign back: every node that activated it and whose links have not moved
    /// runs its previous firmware again; the others halt. Refused (exit 3) once a link
    /// committed the campaign's epoch: going back then takes a downgrade campaign.
    Rollback(crate::controlcmd::ControlArgs),
}

/// `entente image ...`.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Stage image files in the local agent's store for a signed manifest's profiles.
    Add {
        #[command(flatten)]
        socket: SocketArg,
        /// The canonical manifest.
        #[arg(long)]
        manifest: PathBuf,
        /// Its signature (default: the manifest path + ".sig").
        #[arg(long)]
        sig: Option<PathBuf>,
        /// Image files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The images in the local agent's store.
    List {
        #[command(flatten)]
        socket: SocketArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-read an image from the store and check every chunk (exit 3 if damaged).
    Verify {
        #[command(flatten)]
        socket: SocketArg,
        /// The image's sha256.
        sha256: String,
    },
}

/// Runs `entente image ...`.
pub fn image(c: ImageCommand) -> Result<ExitCode> {
    let print = |images: &[entente_api::ImageEntry], json: bool| -> Result<()> {
        if json {
            outln!("{}", serde_json::to_string_pretty(images)?);
        } else {
            for i in images {
                outln!(
                    "{}  {:>12} bytes  {:>5} chunks  {}",
                    i.sha256,
                    i.size,
                    i.chunks,
                    i.version
                );
            }
        }
        Ok(())
    };
    match c {
        ImageCommand::Add {
            socket,
            manifest,
            sig,
            files,
        } => {
            let (m, s) = read_signed(&manifest, sig)?;
            let (images, open) = open_images(&files)?;
            match call_with_files(
                &socket.socket,
                Request::ImageAdd {
                    manifest: m,
                    signature: s,
                    images,
                },
                &open,
            ) {
                Ok(Reply::Images { images }) => {
                    print(&images, false)?;
                    Ok(ExitCode::SUCCESS)
                }
                Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
                Err(e) => exit_for(e),
            }
        }
        ImageCommand::List { socket, json } => match call(&socket.socket, Request::ImageList) {
            Ok(Reply::Images { images }) => {
                print(&images, json)?;
                Ok(ExitCode::SUCCESS)
            }
            Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
            Err(e) => exit_for(e),
        },
        ImageCommand::Verify { socket, sha256 } => {
            match call(
                &socket.socket,
                Request::ImageVerify {
                    sha256: sha256.clone(),
                },
            ) {
                Ok(_) => {
                    outln!("{sha256}: every chunk and the whole image verify");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => exit_for(e),
            }
        }
    }
}

/// `entente link ...`.
#[derive(Subcommand, Debug)]
pub enum LinkCommand {
    /// Retire the link to a dead neighbour, so convergence no longer waits for it.
    Retire {
        #[command(flatten)]
        socket: SocketArg,
        /// The neighbour's node id.
        peer: u64,
    },
    /// Restore a retired link, so it is live again: its transactions resume and convergence
    /// waits for it.
    Restore {
        #[command(flatten)]
        socket: SocketArg,
        /// The neighbour's node id.
        peer: u64,
    },
}

/// Reads a canonical manifest and its signature (default: the manifest path + ".sig").
fn read_signed(manifest: &Path, sig: Option<PathBuf>) -> Result<(String, String)> {
    let sig = sig.unwrap_or_else(|| PathBuf::from(format!("{}.sig", manifest.display())));
    let m = std::fs::read_to_string(manifest)
        .with_context(|| format!("read {}", manifest.display()))?;
    let s = std::fs::read_to_string(&sig).with_context(|| format!("read {}", sig.display()))?;
    Ok((m, s))
}

/// The image files, opened here (with this user's rights) to be passed to the agent, and their
/// absolute paths, which the agent uses in messages only.
fn open_images(files: &[PathBuf]) -> Result<(Vec<String>, Vec<std::fs::File>)> {
    files
        .iter()
        .map(|p| {
            let name = std::fs::canonicalize(p)
                .map(|p| p.display().to_string())
                .with_context(|| format!("image {}", p.display()))?;
            let f = std::fs::File::open(p).with_context(|| format!("image {}", p.display()))?;
            Ok((name, f))
        })
        .collect::<Result<Vec<_>>>()
        .map(|v| v.into_iter().unzip())
}

/// Maps an agent's refusal to the documented exit codes; other errors propagate.
pub fn exit_for(e: anyhow::Error) -> Result<ExitCode> {
    match e.downcast_ref::<AgentError>() {
        Some(a) => {
            eprintln!("entente: {}", a.message);
            Ok(ExitCode::from(match a.code {
                ErrorCode::Refused | ErrorCode::Unauthorized => EXIT_REFUSED,
                ErrorCode::NothingToDo => EXIT_NOTHING_TO_DO,
                ErrorCode::BadRequest | ErrorCode::Internal => 1,
            }))
        }
        None => Err(e),
    }
}

fn print_status(s: &Status, dot: bool) {
    if dot {
        outln!("graph entente {{");
        for l in &s.links {
            outln!(
                "  n{} -- n{} [label=\"{}{}\"];",
                s.node.min(l.peer),
                s.node.max(l.peer),
                l.committed,
                if l.connected { "" } else { " (down)" }
            );
        }
        outln!("}}");
        return;
    }
    outln!(
        "node {}  epoch {}  phase {}  {}",
        s.node,
        s.epoch,
        s.phase,
        if s.converged {
            "CONVERGED"
        } else {
            "converging"
        }
    );
    outln!(
        "links committed {}/{} (as far as this node knows)",
        s.links_committed,
        s.links_total
    );
    if let Some(i) = &s.image {
        outln!(
            "image {}: {}/{} chunks here{}",
            &i.sha256[..12],
            i.chunks_held,
            i.chunks,
            if i.dropped_sources.is_empty() {
                String::new()
            } else {
                format!(", dropped sources {:?}", i.dropped_sources)
            }
        );
    }
    if let Some(p) = s.flash_percent {
        outln!("flashing {p}%");
    }
    if s.paused {
        outln!("PAUSED by an operator");
    }
    if let Some(why) = &s.unhealthy {
        outln!("UNHEALTHY after its last activation ({why}): rolled back");
    }
    if let Some(c) = &s.control {
        outln!(
            "last operator statement: {} campaign {}{} (key {}, signed {}, expires {}): {}",
            c.action,
            c.epoch,
            if c.epoch > s.epoch {
                " (kept until that campaign arrives)"
            } else {
                ""
            },
            c.key,
            c.signed_at,
            c.expires_at,
            if c.reason.is_empty() {
                "no reason given"
            } else {
                &c.reason
            }
        );
    }
    if s.controls_refused > 0 {
        outln!(
            "{} operator statement(s) from neighbours refused (see entente history)",
            s.controls_refused
        );
    }
    if s.operator_keys == 0 {
        outln!("no trusted operator key: operator statements are refused here");
    }
    for l in &s.links {
        outln!(
            "  link to {:<6} epoch {:<4} {:<10} {}{}",
            l.peer,
            l.committed,
            l.state,
            if l.connected { "up" } else { "down" },
            if l.retired { " retired" } else { "" }
        );
    }
    if !s.nodes.is_empty() {
        let phases: Vec<String> = s
            .nodes
            .iter()
            .map(|n| format!("{}:{}", n.node, n.phase))
            .collect();
        outln!("nodes: {}", phases.join(" "));
    }
    if s.probe_mismatches > 0 {
        outln!("SAFETY: {} probe mismatches", s.probe_mismatches);
    }
}

/// Runs `entente status`.
pub fn status(a: StatusArgs) -> Result<ExitCode> {
    loop {
        let s = match call(&a.socket.socket, Request::Status) {
            Ok(Reply::Status(s)) => s,
            Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
            Err(e) => return exit_for(e),
        };
        if a.json {
            outln!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            print_status(&s, a.dot);
        }
        if !a.watch || s.converged {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        if !a.json {
            outln!();
        }
    }
}

/// Runs `entente inventory`.
pub fn inventory(a: ReadArgs) -> Result<ExitCode> {
    let inv = match call(&a.socket.socket, Request::Inventory) {
        Ok(Reply::Inventory(i)) => i,
        Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
        Err(e) => return exit_for(e),
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&inv)?);
    } else {
        for d in &inv.devices {
            outln!("{}  health {}", d.profile, d.health);
            for c in &d.components {
                outln!(
                    "  {:<12} running {:<20} stored {}",
                    c.name,
                    c.running.as_deref().unwrap_or("-"),
                    c.stored.as_deref().unwrap_or("-")
                );
            }
            if let Some(n) = &d.nvml {
                print_nvml(n);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The GPUs NVML reports on the host, or why it reports none.
fn print_nvml(n: &entente_api::NvmlEntry) {
    if let Some(e) = &n.error {
        outln!("  nvml: {e}");
        return;
    }
    outln!(
        "  nvml: driver {}, {} GPU(s)",
        n.driver_version.as_deref().unwrap_or("-"),
        n.gpus.len()
    );
    for g in &n.gpus {
        outln!(
            "    gpu {} {}  {}  vbios {}  inforom {}  {}",
            g.index,
            g.name,
            g.pci_bus_id,
            g.vbios_version,
            g.inforom_image_version.as_deref().unwrap_or("-"),
            g.uuid
        );
    }
}

/// Runs `entente history`.
pub fn history(a: ReadArgs) -> Result<ExitCode> {
    let entries = match call(&a.socket.socket, Request::History { limit: a.limit }) {
        Ok(Reply::History { entries }) => entries,
        Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
        Err(e) => return exit_for(e),
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        for e in entries {
            outln!("{}  {}", e.at, e.event.text);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `entente campaign ...`.
pub fn campaign(c: CampaignCommand) -> Result<ExitCode> {
    match c {
        CampaignCommand::Start {
            socket,
            manifest,
            sig,
            images,
        } => {
            let (m, s) = read_signed(&manifest, sig)?;
            let (images, open) = open_images(&images)?;
            match call_with_files(
                &socket.socket,
                Request::CampaignStart {
                    manifest: m,
                    signature: s,
                    images,
                },
                &open,
            ) {
                Ok(Reply::CampaignStarted { epoch, manifest }) => {
                    outln!("campaign {epoch} started (manifest {manifest})");
                    Ok(ExitCode::SUCCESS)
                }
                Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
                Err(e) => exit_for(e),
            }
        }
        CampaignCommand::Status(a) => status(a),
        CampaignCommand::Pause(a) => crate::controlcmd::run(Action::Pause, a),
        CampaignCommand::Resume(a) => crate::controlcmd::run(Action::Resume, a),
        CampaignCommand::Abort(a) => crate::controlcmd::run(Action::Abort, a),
        CampaignCommand::Rollback(a) => crate::controlcmd::run(Action::Rollback, a),
        CampaignCommand::Plan {
            socket,
            manifest,
            sig,
            json,
        } => {
            let (m, s) = read_signed(&manifest, sig)?;
            let plan = match call(
                &socket.socket,
                Request::CampaignPlan {
                    manifest: m,
                    signature: s,
                },
            ) {
                Ok(Reply::Plan(p)) => p,
                Ok(other) => anyhow::bail!("unexpected answer: {other:?}"),
                Err(e) => return exit_for(e),
            };
            if json {
                outln!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                outln!(
                    "node {} ({}): campaign {} — {}",
                    plan.node,
                    plan.profile,
                    plan.epoch,
                    plan.semantics
                );
                for c in &plan.changes {
                    outln!(
                        "  {}: {} -> {} ({} bytes), activation {}{}",
                        c.component,
                        c.from.as_deref().unwrap_or("?"),
                        c.to,
                        c.bytes,
                        c.activation,
                        if c.disruptive { ", disruptive" } else { "" }
                    );
                }
                for r in &plan.refusals {
                    outln!("  REFUSED: {r}");
                }
            }
            Ok(if plan.refusals.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_REFUSED)
            })
        }
    }
}

/// Runs `entente link ...`.
pub fn link(c: LinkCommand) -> Result<ExitCode> {
    match c {
        LinkCommand::Retire { socket, peer } => {
            match call(&socket.socket, Request::LinkRetire { peer }) {
                Ok(_) => {
                    outln!("link to {peer} retired");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => exit_for(e),
            }
        }
        LinkCommand::Restore { socket, peer } => {
            match call(&socket.socket, Request::LinkRestore { peer }) {
                Ok(_) => {
                    outln!("link to {peer} restored");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => exit_for(e),
            }
        }
    }
}
