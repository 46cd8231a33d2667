//! `entente demo`: a real campaign on this machine, no setup. It starts N `entented` processes on
//! loopback (TCP, simulated NICs) in a temporary directory, each linked to min(3, N−1) others (a
//! ring with chords), makes the keys, signs a manifest for an 8 MiB image, starts the campaign on
//! node 1, shows per-node progress and link convergence, and prints the report.

use crate::client::call;
use anyhow::{bail, Context, Result};
use clap::Args;
use entente_api::{Reply, Request, Status};
use entente_stage::statement::Action;
use entente_stage::SecretKey;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

mod agents;
mod setup;

use agents::Agent;
use setup::{prepare, Net};

/// `entente demo` options.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Agents to start.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..=64))]
    nodes: u64,
    /// Kill an agent mid-campaign (and restart it), and another one later (deleting its state
    /// store); abort the campaign in between, and resume it.
    #[arg(long)]
    faults: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Keep the temporary directory (configs, logs, state) afterwards.
    #[arg(long)]
    keep: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// The `entented` binary (default: next to this one, built if missing).
    #[arg(long)]
    entented: Option<PathBuf>,
    /// Only write the cluster (keys, profile, image, signed manifest, one config per agent)
    /// into this directory and print what is where as JSON; start nothing.
    #[arg(long)]
    setup: Option<PathBuf>,
    /// With --setup: the transport the agents use (tcp or verbs).
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "verbs"])]
    transport: String,
    /// With --setup: the agents' IP addresses, one per agent, comma-separated (default: all on
    /// 127.0.0.1, each on its own port).
    #[arg(long, value_delimiter = ',')]
    addresses: Vec<std::net::IpAddr>,
    /// Size of the campaign's image, MiB (chunks of 1 MiB).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    image_mb: u64,
    /// How the image travels: pipeline (from any neighbour, forwarded while it arrives) or
    /// pull-one (every agent fetches from agent 1, which then links to every agent).
    #[arg(long, default_value = "pipeline", value_parser = ["pipeline", "pull-one"])]
    fanout: String,
    /// Every agent's cap on image traffic, MiB/s each way (0: none).
    #[arg(long, default_value_t = 0.0)]
    rate_mib_s: f64,
    /// Link every agent to agent 1 as well (pull-one always does; give it to pipeline to
    /// compare the two over the same links).
    #[arg(long)]
    seed_links: bool,
}

/// The report `--json` prints.
#[derive(serde::Serialize)]
struct Report {
    converged: bool,
    nodes: u64,
    links: u64,
    wall_ms: u64,
    safety_violations: u64,
    protocol_errors: u64,
    agents_killed: u32,
    /// Agents whose state store (`state.db`) was deleted before their restart (`--faults`).
    wipes: u32,
    /// Operator statements given mid-campaign (`--faults`: an abort, then a resume).
    controls: Vec<String>,
    /// Contradictions the offline history checker found (counted in `safety_violations`).
    history_violations: Vec<String>,
    /// Largest resident set of an agent, idle after convergence (KiB).
    idle_rss_max_kib: u64,
    /// Largest CPU share of an agent over 4 s idle after convergence (percent of one core).
    idle_cpu_max_percent: f64,
    /// How the image travelled.
    fanout: String,
    /// Its size, MiB.
    image_mb: u64,
    /// From the campaign's start until the last agent held the image in its store.
    image_all_hosts_ms: Option<u64>,
    dir: Option<String>,
}

/// Signs `action` for the campaign of `status` with the operator key and gives it to the agent
/// at `socket`.
fn give(socket: &Path, status: &Status, key: &Path, action: Action) -> Result<()> {
    let key = SecretKey::load(key).with_context(|| format!("operator key {}", key.display()))?;
    let reason = format!("entente demo --faults: {action}");
    let statement = crate::controlcmd::sign(status, &key, action, None, reason, 3600)?;
    match call(
        socket,
        Request::Control {
            statement: statement.to_line(),
        },
    ) {
        Ok(_) => Ok(()),
        Err(e) => Err(e.context(format!("{action} the campaign"))),
    }
}

/// Resident set (KiB) and CPU time (clock ticks) of a process, from /proc.
fn proc_usage(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((rss, ticks))
}

/// Samples every agent over `window` while idle: (max RSS KiB, max CPU percent).
fn idle_usage(agents: &[Agent], window: Duration) -> (u64, f64) {
    let pids: Vec<u32> = agents
        .iter()
        .filter_map(|a| a.child.as_ref().map(|c| c.id()))
        .collect();
    let before: Vec<Option<(u64, u64)>> = pids.iter().map(|&p| proc_usage(p)).collect();
    std::thread::sleep(window);
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let mut rss_max = 0;
    let mut cpu_max: f64 = 0.0;
    for (p, b) in pids.iter().zip(before) {
        if let (Some((_, t0)), Some((rss, t1))) = (b, proc_usage(*p)) {
            rss_max = rss_max.max(rss);
            cpu_max = cpu_max.max((t1 - t0) as f64 / tick / window.as_secs_f64() * 100.0);
        }
    }
    (rss_max, cpu_max)
}

fn entented_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let me = std::env::current_exe()?;
    let beside = me.with_file_name("entented");
    // In a source tree, build the agent with this binary's profile (a no-op when it is fresh):
    // it is another package, so `cargo run -p entente-cli` does not rebuild it.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let in_tree =
        root.join("Cargo.toml").is_file() && me.starts_with(root.canonicalize()?.join("target"));
    if in_tree {
        let release = me.parent().is_some_and(|p| p.ends_with("release"));
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-q", "-p", "entente-agent"])
            .current_dir(&root);
        if release {
            cmd.arg("--release");
        }
        if !cmd.status()?.success() {
            bail!("building entented failed");
        }
    }
    if beside.is_file() {
        return Ok(beside);
    }
    bail!(
        "entented not found next to {} (build it: cargo build --release -p entente-agent)",
        me.display()
    )
}

/// Runs `entente demo`.
pub fn run(a: DemoArgs) -> Result<ExitCode> {
    if let Some(dir) = &a.setup {
        std::fs::create_dir_all(dir)?;
        let net = Net::new(&a, &a.transport, a.addresses.clone());
        let (agents, manifest, sig, image) = prepare(dir, a.nodes, &net)?;
        let out = serde_json::json!({
            "manifest": manifest,
            "signature": sig,
            "image": image,
            "operator_key": dir.join("operator.key"),
            "links": net.edges(a.nodes),
            "agents": agents.iter().map(|ag| serde_json::json!({
                "id": ag.id, "config": ag.config, "socket": ag.socket, "log": ag.log,
            })).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let bin = entented_binary(a.entented.clone())?;
    let dir = std::env::temp_dir().join(format!("entente-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let n = a.nodes;
    anyhow::ensure!(
        a.rate_mib_s.is_finite() && a.rate_mib_s >= 0.0,
        "--rate-mib-s must be 0 (no cap) or a positive rate"
    );
    let net = Net::new(&a, "tcp", Vec::new());
    let (mut agents, manifest, sig, image) = prepare(&dir, n, &net)?;
    let links = net.edges(n).len() as u64;
    let started = Instant::now();
    let result = drive(
        &a,
        &bin,
        &mut agents,
        &manifest,
        &sig,
        &image,
        links,
        started,
    );
    for ag in agents.iter_mut() {
        ag.stop();
    }
    let (report, ok) = match result {
        Ok(r) => {
            let ok = r.converged && r.safety_violations == 0;
            (r, ok)
        }
        Err(e) => {
            eprintln!("entente demo: {e:#} (logs in {})", dir.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let keep = a.keep || !ok;
    let report = Report {
        dir: keep.then(|| dir.display().to_string()),
        ..report
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            "{} nodes, {} links: {} in {:.1} s; safety violations {}, agents killed {} (state stores deleted {})",
            report.nodes,
            report.links,
            if report.converged {
                "converged"
            } else {
                "NOT converged"
            },
            report.wall_ms as f64 / 1000.0,
            report.safety_violations,
            report.agents_killed,
            report.wipes
        );
        if let Some(ms) = report.image_all_hosts_ms {
            outln!(
                "image of {} MiB on every agent after {:.2} s ({})",
                report.image_mb,
                ms as f64 / 1000.0,
                report.fanout
            );
        }
        if let Some(d) = &report.dir {
            outln!("state and logs kept in {d}");
        }
    }
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[allow(clippy::too_many_arguments)]
fn drive(
    a: &DemoArgs,
    bin: &Path,
    agents: &mut [Agent],
    manifest: &Path,
    sig: &Path,
    image: &Path,
    links: u64,
    started: Instant,
) -> Result<Report> {
    for ag in agents.iter_mut() {
        ag.start(bin)?;
    }
    let deadline = started + Duration::from_secs(a.timeout_s);
    for ag in agents.iter() {
        while ag.status().is_none() {
            if Instant::now() > deadline {
                bail!("agent {} did not come up (see {})", ag.id, ag.log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let campaign_at_ms = unix_ms();
    let image_file = std::fs::File::open(image)
        .with_context(|| format!("open the image {}", image.display()))?;
    let reply = crate::client::call_with_files(
        &agents[0].socket,
        Request::CampaignStart {
            manifest: std::fs::read_to_string(manifest)?,
            signature: std::fs::read_to_string(sig)?,
            images: vec![image.display().to_string()],
        },
        &[image_file],
    )
    .context("start the campaign on node 1")?;
    if !a.json {
        eprintln!("{reply:?}");
    }
    let bar = (!a.json).then(|| {
        let b = indicatif::ProgressBar::new(links);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed:>4} [{bar:30}] {pos}/{len} links committed  {msg}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        b
    });
    let mut killed = 0u32;
    let mut wipes = 0u32;
    let mut controls: Vec<String> = Vec::new();
    let mut aborted_at: Option<Instant> = None;
    let operator_key = manifest.with_file_name("operator.key");
    let mut restart: Option<(usize, Instant)> = None;
    let victims: Vec<usize> = if a.faults {
        vec![agents.len() / 2, agents.len() - 1]
    } else {
        vec![]
    };
    loop {
        if Instant::now() > deadline {
            bail!("no convergence within {} s", a.timeout_s);
        }
        std::thread::sleep(Duration::from_millis(100));
        if let Some((i, at)) = restart {
            if Instant::now() >= at {
                agents[i].start(bin)?;
                restart = None;
            }
        }
        let Some(s) = agents[0].status() else {
            continue;
        };
        let phases: Vec<String> = s
            .nodes
            .iter()
            .map(|n| format!("{}:{}", n.node, short(&n.phase)))
            .collect();
        if let Some(b) = &bar {
            b.set_position(s.links_committed.min(links));
            b.set_length(links);
            b.set_message(phases.join(" "));
        }
        // Faults: kill an agent once a third of the links moved, another at two thirds, and
        // delete that one's state store before it restarts (a lost disk).
        if restart.is_none() && (killed as usize) < victims.len() {
            let at = links * (killed as u64 + 1) / 3;
            if s.links_committed >= at.max(1) {
                let i = victims[killed as usize];
                agents[i].kill();
                if killed == 1 {
                    agents[i].wipe_state()?;
                    wipes += 1;
                }
                killed += 1;
                restart = Some((i, Instant::now() + Duration::from_millis(700)));
            }
        }
        // Faults: once the first agent was killed, an operator aborts the campaign; once node 1
        // halted (or after 3 s), resumes it.
        if a.faults && killed >= 1 && controls.is_empty() {
            give(&agents[0].socket, &s, &operator_key, Action::Abort)?;
            controls.push("abort".into());
            aborted_at = Some(Instant::now());
        } else if controls.len() == 1
            && (s.phase == "halted" || aborted_at.is_some_and(|t| t.elapsed().as_secs() >= 3))
        {
            give(&agents[0].socket, &s, &operator_key, Action::Resume)?;
            controls.push("resume".into());
        }
        let all_reported = s.nodes.len() as u64 == a.nodes && s.links_total == links;
        let controls_done = !a.faults || controls.len() == 2;
        if s.converged && all_reported && restart.is_none() && controls_done {
            break;
        }
    }
    if let Some(b) = &bar {
        b.finish();
    }
    let wall_ms = started.elapsed().as_millis() as u64;
    let (idle_rss_max_kib, idle_cpu_max_percent) = idle_usage(agents, Duration::from_secs(4));
    // Every agent's own counters: probes read under the wrong epoch are safety violations.
    let mut violations = 0;
    let mut protocol_errors = 0;
    for ag in agents.iter() {
        // A restarted agent may still be opening its socket.
        let until = Instant::now() + Duration::from_secs(10);
        let s = loop {
            match ag.status() {
                Some(s) => break s,
                None if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
                None => bail!("agent {} does not answer (see {})", ag.id, ag.log.display()),
            }
        };
        violations += s.probe_mismatches;
        protocol_errors += s.protocol_errors;
    }
    // The offline checker replays every agent's history.
    let mut histories = Vec::new();
    for ag in agents.iter() {
        match call(&ag.socket, Request::History { limit: 100_000 }) {
            Ok(Reply::History { entries }) => histories.push((ag.id, entries)),
            _ => bail!("history of agent {}", ag.id),
        }
    }
    let history_violations = entente_api::check_histories(&histories, false);
    let image_all_hosts_ms = image_all_hosts_ms(&histories, campaign_at_ms);
    violations += history_violations.len() as u64;
    Ok(Report {
        history_violations,
        converged: true,
        nodes: a.nodes,
        links,
        wall_ms,
        safety_violations: violations,
        protocol_errors,
        agents_killed: killed,
        wipes,
        controls,
        idle_rss_max_kib,
        idle_cpu_max_percent,
        fanout: a.fanout.clone(),
        image_mb: a.image_mb,
        image_all_hosts_ms,
        dir: None,
    })
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// From `since` until the last agent but the seed (agent 1) recorded the image complete in its
/// store; `None` if one never did.
fn image_all_hosts_ms(
    histories: &[(u64, Vec<entente_api::HistoryEntry>)],
    since: u64,
) -> Option<u64> {
    histories
        .iter()
        .filter(|(id, _)| *id != 1)
        .map(|(_, entries)| {
            entries
                .iter()
                .filter(|e| {
                    e.at_ms >= since && e.event.kind == entente_api::HistoryKind::ImageStored
                })
                .map(|e| e.at_ms - since)
                .min()
        })
        .try_fold(0, |worst, t| t.map(|t| worst.max(t)))
}

fn short(phase: &str) -> &str {
    match phase {
        "announced" => "ann",
        "staged" => "stg",
        "activated" => "act",
        "converged" => "conv",
        other => other,
    }
}
