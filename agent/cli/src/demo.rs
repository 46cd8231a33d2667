//! `entente demo`: a real campaign on this machine, no setup. It starts N `entented` processes on
//! loopback (TCP, simulated NICs) in a temporary directory, each linked to min(3, N−1) others (a
//! ring with chords), makes the keys, signs a manifest for an 8 MiB image, starts the campaign on
//! node 1, shows per-node progress and link convergence, and prints the report.

use crate::client::call;
use anyhow::{bail, Context, Result};
use clap::Args;
use entente_api::{Reply, Request, Status};
use entente_stage::{CompatWindow, Manifest, ProfileImage, SecretKey};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const SIM_NIC: &str = include_str!("../../../hw-profiles/sim-nic.toml");
const CHUNK: u32 = 1 << 20;

/// `entente demo` options.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Agents to start.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..=64))]
    nodes: u64,
    /// Kill an agent mid-campaign (and restart it), and another one later.
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

/// The cluster to write: where the agents listen, which transport they use, the image and
/// how it travels.
struct Net {
    transport: String,
    addresses: Vec<std::net::IpAddr>,
    image_mb: u64,
    fanout: String,
    rate_mib_s: f64,
    seed_links: bool,
}

impl Net {
    fn new(a: &DemoArgs, transport: &str, addresses: Vec<std::net::IpAddr>) -> Net {
        Net {
            transport: transport.to_owned(),
            addresses,
            image_mb: a.image_mb,
            fanout: a.fanout.clone(),
            rate_mib_s: a.rate_mib_s,
            seed_links: a.seed_links || a.fanout == "pull-one",
        }
    }

    /// The links: the demo's ring with chords, plus a link from agent 1 to every agent when
    /// asked (pull-one needs one).
    fn edges(&self, n: u64) -> Vec<(u64, u64)> {
        let mut e: std::collections::BTreeSet<(u64, u64)> = topology(n).into_iter().collect();
        if self.seed_links {
            e.extend((2..=n).map(|i| (1, i)));
        }
        e.into_iter().collect()
    }
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

/// The demo's edges: a ring plus chords to the opposite node.
pub fn topology(n: u64) -> Vec<(u64, u64)> {
    let mut edges = std::collections::BTreeSet::new();
    for i in 0..n {
        let j = (i + 1) % n;
        if i != j {
            edges.insert((i.min(j), i.max(j)));
        }
    }
    if n > 3 {
        // Every node gets a chord to the node opposite (odd rings give some nodes two).
        for i in 0..n {
            let j = (i + n / 2) % n;
            edges.insert((i.min(j), i.max(j)));
        }
    }
    edges.into_iter().map(|(a, b)| (a + 1, b + 1)).collect()
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

/// A port free now, below Linux's ephemeral range (32768+), so an outgoing connection of
/// another process cannot take it before the agent binds it.
fn free_port(taken: &mut std::collections::HashSet<u16>) -> Result<u16> {
    for _ in 0..1000 {
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random port: {e}"))?;
        let port = 20_000 + u16::from_le_bytes(b) % 12_000;
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return Ok(port);
        }
    }
    bail!("no free port found in 20000..32000")
}

struct Agent {
    id: u64,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Agent {
    fn start(&mut self, bin: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&self.config)
            .env(
                "ENTENTE_LOG",
                std::env::var("ENTENTE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn status(&self) -> Option<Status> {
        match call(&self.socket, Request::Status) {
            Ok(Reply::Status(s)) => Some(s),
            _ => None,
        }
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;

/// Prepares the directory: keys, profile, image, manifest, one config per agent.
fn prepare(dir: &Path, n: u64, net: &Net) -> Result<(Vec<Agent>, PathBuf, PathBuf, PathBuf)> {
    if !net.addresses.is_empty() && net.addresses.len() as u64 != n {
        bail!(
            "--addresses names {} addresses for {n} agents",
            net.addresses.len()
        );
    }
    let ip = |id: u64| -> std::net::IpAddr {
        net.addresses
            .get(id as usize - 1)
            .copied()
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))
    };
    std::fs::create_dir_all(dir.join("keys"))?;
    std::fs::create_dir_all(dir.join("profiles"))?;
    std::fs::write(dir.join("profiles/sim-nic.toml"), SIM_NIC)?;
    let mut cluster = [0u8; 32];
    getrandom::fill(&mut cluster).map_err(|e| anyhow::anyhow!("random cluster key: {e}"))?;
    let hex: String = cluster.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&dir.join("cluster.key"), hex.as_bytes())?;
    let sk = SecretKey::generate()?;
    sk.write_pair(&dir.join("keys"), "demo")?;
    std::fs::remove_file(dir.join("keys/demo.key"))?; // agents trust the public key only
                                                      // The image: 8 MiB of pseudo-random bytes.
    let mut image = vec![0u8; (net.image_mb << 20) as usize];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in image.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let image_path = dir.join("sim-nic-2.0.bin");
    std::fs::write(&image_path, &image)?;
    let img = ProfileImage::from_reader(
        &image[..],
        CHUNK,
        "sim-nic 2.0",
        CompatWindow {
            min_epoch: 0,
            max_epoch: 1,
        },
    )?;
    let manifest = Manifest {
        epoch: 1,
        expires_at: entente_stage::unix_now() + 86_400,
        format: entente_stage::manifest::MANIFEST_FORMAT,
        manifest_version: 1,
        profiles: BTreeMap::from([("sim-nic".to_owned(), img)]),
        semantics: "demo: RoCE congestion control v2".to_owned(),
    };
    let bytes = manifest.to_canonical_bytes();
    let manifest_path = dir.join("campaign.manifest");
    std::fs::write(&manifest_path, &bytes)?;
    let sig_path = dir.join("campaign.manifest.sig");
    std::fs::write(&sig_path, sk.sign(&bytes).to_file_text())?;

    let mut taken = std::collections::HashSet::new();
    let ports: Vec<u16> = (0..n)
        .map(|_| free_port(&mut taken))
        .collect::<Result<_>>()?;
    let edges = net.edges(n);
    let mut agents = Vec::new();
    for id in 1..=n {
        let home = dir.join(format!("node{id}"));
        std::fs::create_dir_all(&home)?;
        let mut cfg = format!(
            "node_id = {id}\nlisten = \"{}\"\ndata_dir = \"{}\"\ncluster_key = \"{}\"\n\
             trusted_keys = \"{}\"\nprofiles = \"{}\"\ncontrol_socket = \"{}\"\n\n[transport]\nkind = \"{}\"\nrtt_ms = 5\n\n\
             [device]\nbackend = \"sim\"\nprofile = \"sim-nic\"\n\n\
             [fanout]\nstrategy = \"{}\"\n{}max_mib_per_s = {:?}\n\n",
            std::net::SocketAddr::new(ip(id), ports[id as usize - 1]),
            home.join("data").display(),
            dir.join("cluster.key").display(),
            dir.join("keys").display(),
            dir.join("profiles").display(),
            home.join("control.sock").display(),
            net.transport,
            net.fanout,
            if net.fanout == "pull-one" {
                "source = 1\n"
            } else {
                ""
            },
            net.rate_mib_s,
        );
        for &(a, b) in &edges {
            let peer = if a == id {
                b
            } else if b == id {
                a
            } else {
                continue;
            };
            cfg.push_str(&format!(
                "[[peers]]\nid = {peer}\naddr = \"{}\"\n\n",
                std::net::SocketAddr::new(ip(peer), ports[peer as usize - 1])
            ));
        }
        let config = home.join("entented.toml");
        std::fs::write(&config, cfg)?;
        agents.push(Agent {
            id,
            config,
            socket: home.join("control.sock"),
            log: home.join("entented.log"),
            child: None,
        });
    }
    Ok((agents, manifest_path, sig_path, image_path))
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
            "links": net.edges(a.nodes),
            "agents": agents.iter().map(|ag| serde_json::json!({
                "id": ag.id, "config": ag.config, "socket": ag.socket, "log": ag.log,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
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
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} nodes, {} links: {} in {:.1} s; safety violations {}, agents killed {}",
            report.nodes,
            report.links,
            if report.converged {
                "converged"
            } else {
                "NOT converged"
            },
            report.wall_ms as f64 / 1000.0,
            report.safety_violations,
            report.agents_killed
        );
        if let Some(ms) = report.image_all_hosts_ms {
            println!(
                "image of {} MiB on every agent after {:.2} s ({})",
                report.image_mb,
                ms as f64 / 1000.0,
                report.fanout
            );
        }
        if let Some(d) = &report.dir {
            println!("state and logs kept in {d}");
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
    let reply = call(
        &agents[0].socket,
        Request::CampaignStart {
            manifest: std::fs::read_to_string(manifest)?,
            signature: std::fs::read_to_string(sig)?,
            images: vec![image.display().to_string()],
        },
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
        // Faults: kill an agent once a third of the links moved, another at two thirds.
        if restart.is_none() && (killed as usize) < victims.len() {
            let at = links * (killed as u64 + 1) / 3;
            if s.links_committed >= at.max(1) {
                let i = victims[killed as usize];
                agents[i].kill();
                killed += 1;
                restart = Some((i, Instant::now() + Duration::from_millis(700)));
            }
        }
        let all_reported = s.nodes.len() as u64 == a.nodes && s.links_total == links;
        if s.converged && all_reported && restart.is_none() {
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
                .filter(|e| e.at_ms >= since && e.event.contains("staged in the store"))
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

#[cfg(test)]
mod tests {
    use super::topology;

    #[test]
    fn ring_with_chords_gives_min_3_n_minus_1_links_each() {
        for n in 2..=12u64 {
            let e = topology(n);
            for v in 1..=n {
                let d = e.iter().filter(|(a, b)| *a == v || *b == v).count() as u64;
                assert!(d >= 3.min(n - 1), "n={n} v={v} degree {d}");
            }
        }
    }
}
