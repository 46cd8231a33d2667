//! What `entente demo` writes before anything starts: keys, the hw-profile, the image and its
//! signed manifest, and one configuration per agent, linked as a ring with chords.

use super::agents::Agent;
use super::DemoArgs;
use anyhow::{bail, Context, Result};
use entente_stage::{CompatWindow, Manifest, ProfileImage, SecretKey};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const SIM_NIC: &str = include_str!("../../../../hw-profiles/sim-nic.toml");
const CHUNK: u32 = 1 << 20;

/// The cluster to write: where the agents listen, which transport they use, the image and
/// how it travels.
pub struct Net {
    transport: String,
    addresses: Vec<std::net::IpAddr>,
    image_mb: u64,
    fanout: String,
    rate_mib_s: f64,
    seed_links: bool,
}

impl Net {
    pub fn new(a: &DemoArgs, transport: &str, addresses: Vec<std::net::IpAddr>) -> Net {
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
    pub fn edges(&self, n: u64) -> Vec<(u64, u64)> {
        let mut e: std::collections::BTreeSet<(u64, u64)> = topology(n).into_iter().collect();
        if self.seed_links {
            e.extend((2..=n).map(|i| (1, i)));
        }
        e.into_iter().collect()
    }
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

/// Prepares the directory: keys, profile, image, manifest, one config per agent.
pub fn prepare(dir: &Path, n: u64, net: &Net) -> Result<(Vec<Agent>, PathBuf, PathBuf, PathBuf)> {
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
                                                      // The operator's key: statements (pause, resume, abort) are signed with operator.key;
                                                      // agents trust operator-keys/operator.pub, a keyring apart from the manifest keys.
    std::fs::create_dir_all(dir.join("operator-keys"))?;
    SecretKey::generate()?.write_pair(dir, "operator")?;
    std::fs::rename(
        dir.join("operator.pub"),
        dir.join("operator-keys/operator.pub"),
    )?;
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
             trusted_keys = \"{}\"\ntrusted_operator_keys = \"{}\"\nprofiles = \"{}\"\ncontrol_socket = \"{}\"\n\n[transport]\nkind = \"{}\"\nrtt_ms = 5\n\n\
             [device]\nbackend = \"sim\"\nprofile = \"sim-nic\"\n\n\
             [fanout]\nstrategy = \"{}\"\n{}max_mib_per_s = {:?}\n\n",
            std::net::SocketAddr::new(ip(id), ports[id as usize - 1]),
            home.join("data").display(),
            dir.join("cluster.key").display(),
            dir.join("keys").display(),
            dir.join("operator-keys").display(),
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
