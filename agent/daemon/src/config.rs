//! Configuration: TOML layers merged in order (system defaults, then site, then runtime
//! drop-ins), then validated into typed settings. Unknown keys and bad values are refused naming
//! the file and the key.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The layers read when no `--config` is given, lowest priority first.
pub const SYSTEM_DIRS: [&str; 3] = ["/usr/lib/entente", "/etc/entente", "/run/entente"];

/// A peer: a node this one shares a link with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Its node id.
    pub id: u64,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Which transport carries the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// TCP (everywhere).
    Tcp,
    /// RDMA verbs (needs a build with the `rdma` feature and an RDMA device).
    Verbs,
}

/// Transport settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    /// tcp or verbs.
    #[serde(default = "default_kind")]
    pub kind: TransportKind,
    /// Round-trip time the protocol's timers derive from, in milliseconds.
    #[serde(default = "default_rtt")]
    pub rtt_ms: u64,
    /// Whether frames between agents carry MAC tags (SECURITY.md): `prefer` (the default) tags
    /// them with every peer that offers it and still connects older agents, during a rolling
    /// upgrade of entente; `require` refuses peers that do not, once every agent has them;
    /// `off` neither offers nor accepts them.
    #[serde(default)]
    pub frame_macs: FrameMacsSetting,
}

/// `[transport] frame_macs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameMacsSetting {
    /// Neither offered nor accepted.
    Off,
    /// Offered; peers without them still connect, untagged.
    #[default]
    Prefer,
    /// Offered and required.
    Require,
}

impl FrameMacsSetting {
    /// The transport's setting.
    pub fn to_transport(self) -> entente_fastpath::FrameMacs {
        match self {
            FrameMacsSetting::Off => entente_fastpath::FrameMacs::Off,
            FrameMacsSetting::Prefer => entente_fastpath::FrameMacs::Prefer,
            FrameMacsSetting::Require => entente_fastpath::FrameMacs::Require,
        }
    }
}

fn default_kind() -> TransportKind {
    TransportKind::Tcp
}
fn default_rtt() -> u64 {
    5
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            kind: default_kind(),
            rtt_ms: default_rtt(),
            frame_macs: FrameMacsSetting::default(),
        }
    }
}

/// The device this agent updates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Backend: `sim` or `devlink` (redfish and nvml come later).
    pub backend: String,
    /// Its hw-profile name.
    pub profile: String,
    /// Fault injection for the sim backend (the `Faults` fields of entente-devices).
    #[serde(default)]
    pub faults: Option<toml::Table>,
    /// `[device.devlink]`: the devlink instance (backend devlink only).
    #[serde(default)]
    pub devlink: Option<DevlinkConfig>,
    /// `[device.redfish]`: the BMC and how to reach it (backend redfish only).
    #[serde(default)]
    pub redfish: Option<entente_devices::redfish::RedfishConfig>,
}

/// `[device.devlink]`: which devlink instance, and how it is flashed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevlinkConfig {
    /// The instance, `bus/device` as `devlink dev` prints it (`pci/0000:03:00.0`).
    pub handle: String,
    /// Where images wait while they are flashed; under /lib/firmware, where the kernel's
    /// firmware loader reads (default /lib/firmware/entente).
    #[serde(default)]
    pub firmware_dir: Option<PathBuf>,
    /// What a flash may overwrite besides the firmware: `settings`, `identifiers` (default:
    /// nothing; mlx5 accepts no overwrite).
    #[serde(default)]
    pub overwrite: Vec<String>,
    /// Longest a flash may take, in seconds (default 1800).
    #[serde(default)]
    pub flash_timeout_s: Option<u64>,
}

impl DevlinkConfig {
    /// The backend's options these settings ask for; an error names the key and what is wrong.
    /// The configuration check and the agent both take them from here, so they agree.
    pub fn options(
        &self,
    ) -> Result<entente_devices::devlink::DevlinkOptions, (&'static str, String)> {
        use entente_devices::devlink::{DevlinkOptions, Handle, Overwrite};
        let mut opts = DevlinkOptions::default();
        self.handle
            .parse::<Handle>()
            .map_err(|e| ("device.devlink.handle", e))?;
        if let Some(dir) = &self.firmware_dir {
            entente_devices::devlink::relative_name(&opts.firmware_root, dir)
                .map_err(|e| ("device.devlink.firmware_dir", e))?;
            opts.firmware_dir = dir.clone();
        }
        opts.overwrite = Overwrite::from_names(self.overwrite.iter().map(String::as_str))
            .map_err(|e| ("device.devlink.overwrite", e))?;
        if let Some(s) = self.flash_timeout_s {
            if s == 0 {
                return Err((
                    "device.devlink.flash_timeout_s",
                    "must be at least 1".into(),
                ));
            }
            opts.flash_timeout = std::time::Duration::from_secs(s);
        }
        Ok(opts)
    }
}

/// How this agent fetches and serves images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FanoutStrategy {
    /// Fetch chunks from any neighbour that holds them; serve chunks while still receiving.
    Pipeline,
    /// Fetch only from `fanout.source` (the baseline every other tool uses).
    PullOne,
}

/// Image distribution settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanoutConfig {
    /// pipeline (default) or pull-one.
    #[serde(default = "default_strategy")]
    pub strategy: FanoutStrategy,
    /// pull-one: the peer every agent fetches from.
    #[serde(default)]
    pub source: Option<u64>,
    /// Most MiB per second this agent sends, and most it receives, for images (0: no cap).
    #[serde(default)]
    pub max_mib_per_s: f64,
    /// Fault injection for tests: flip a byte of every chunk this agent serves (its
    /// neighbours must refuse them and drop it as a source).
    #[serde(default)]
    pub corrupt_served_chunks: bool,
}

fn default_strategy() -> FanoutStrategy {
    FanoutStrategy::Pipeline
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            strategy: default_strategy(),
            source: None,
            max_mib_per_s: 0.0,
            corrupt_served_chunks: false,
        }
    }
}

/// Operator policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Most neighbours that may be disrupted at once because of this node's lease.
    #[serde(default = "one")]
    pub max_unavailable_neighbors: usize,
    /// Command run before a disruptive activation (drain traffic), before any neighbour lease
    /// is asked for; a non-zero exit, or running past `drain_timeout_s`, fails the drain, which
    /// is tried again later. It gets `ENTENTE_NODE` and `ENTENTE_EPOCH` in its environment.
    #[serde(default)]
    pub drain_hook: Option<String>,
    /// Longest the drain hook may run, in seconds (a scheduler drain waits for jobs).
    #[serde(default = "drain_timeout")]
    pub drain_timeout_s: u64,
    /// Command run after an activation, before the node tells its neighbours it activated
    /// (the last part of its health gate: a GPU burn-in, a fabric check); a non-zero exit, or
    /// running past `health_timeout_s`, marks the node unhealthy and rolls it back. It gets
    /// `ENTENTE_NODE` and `ENTENTE_EPOCH` in its environment.
    #[serde(default)]
    pub health_hook: Option<String>,
    /// Longest the health hook may run, in seconds.
    #[serde(default = "health_timeout")]
    pub health_timeout_s: u64,
}

fn health_timeout() -> u64 {
    300
}

fn one() -> usize {
    1
}

fn drain_timeout() -> u64 {
    4 * 3600
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_unavailable_neighbors: 1,
            drain_hook: None,
            drain_timeout_s: drain_timeout(),
            health_hook: None,
            health_timeout_s: health_timeout(),
        }
    }
}

/// What `entente status` counts on (`[status]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// A node not heard of for longer than this many seconds is stale, and a view with a stale
    /// node (one with a live link) is not converged. This node beats its own heartbeat three
    /// times in that span, so configure the same value on every node.
    #[serde(default = "default_stale_after")]
    pub stale_after_s: u64,
    /// Nodes the cluster has: `converged` also waits until that many nodes have reported. The
    /// signed manifest does not carry it; unset, only the gossiped graph counts.
    #[serde(default)]
    pub expected_nodes: Option<u64>,
}

fn default_stale_after() -> u64 {
    30
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            stale_after_s: default_stale_after(),
            expected_nodes: None,
        }
    }
}

/// Validated settings of `entented`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id (non-zero, unique in the cluster).
    pub node_id: u64,
    /// Where to accept connections from peers.
    pub listen: SocketAddr,
    /// Durable state, history, images and the sim device live here.
    pub data_dir: PathBuf,
    /// The cluster key file (mode 0600).
    pub cluster_key: PathBuf,
    /// Directory of trusted manifest signing keys (`*.pub`).
    pub trusted_keys: PathBuf,
    /// Directory of trusted operator keys (`*.pub`), whose signed statements pause, resume or
    /// abort a campaign; apart from the manifest keys. Without it, every statement is refused.
    #[serde(default)]
    pub trusted_operator_keys: Option<PathBuf>,
    /// Directory of hw-profiles.
    pub profiles: PathBuf,
    /// The control socket.
    #[serde(default = "default_socket")]
    pub control_socket: PathBuf,
    /// Group whose members may run read commands (root always may).
    #[serde(default)]
    pub read_group: Option<String>,
    /// Group whose members may run mutating commands (root always may).
    #[serde(default)]
    pub admin_group: Option<String>,
    /// Transport settings.
    #[serde(default)]
    pub transport: TransportConfig,
    /// Peers (one link each).
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// The device.
    pub device: DeviceConfig,
    /// Policy.
    #[serde(default)]
    pub policy: Policy,
    /// Image distribution.
    #[serde(default)]
    pub fanout: FanoutConfig,
    /// Status reporting.
    #[serde(default)]
    pub status: StatusConfig,
    /// The file this configuration was loaded from (`None`: the system layers).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn default_socket() -> PathBuf {
    PathBuf::from(entente_api::DEFAULT_SOCKET)
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not valid TOML.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The merged settings do not fit the schema (unknown key, wrong type, missing key).
    #[error("{}: {message}", path.as_ref().map_or("configuration".to_owned(), |p| p.display().to_string()))]
    Schema {
        /// The file that set the offending key, when known.
        path: Option<PathBuf>,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        /// The file that set it.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// No configuration file was found.
    #[error("no configuration found (looked for entented.toml in {0})")]
    Missing(String),
}

/// The files of one layer: `dir/entented.toml`, then `dir/entented.d/*.toml` sorted.
fn layer_files(main: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if main.is_file() {
        files.push(main.to_owned());
    }
    let dropins = PathBuf::from(format!("{}.d", main.with_extension("").display()));
    if let Ok(rd) = std::fs::read_dir(&dropins) {
        let mut more: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        more.sort();
        files.extend(more);
    }
    files
}

/// Merges `src` into `dst` (tables merge key by key; other values replace), recording which file
/// set each key.
fn merge(
    dst: &mut toml::Table,
    src: toml::Table,
    file: &Path,
    prefix: &str,
    origin: &mut BTreeMap<String, PathBuf>,
) {
    for (k, v) in src {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (dst.get_mut(&k), v) {
            (Some(toml::Value::Table(d)), toml::Value::Table(s)) => {
                merge(d, s, file, &path, origin)
            }
            (_, v) => {
                origin.insert(path, file.to_owned());
                dst.insert(k, v);
            }
        }
    }
}

impl Config {
    /// Loads `path` and its drop-ins (`<path without .toml>.d/*.toml`), or, without a path, the
    /// system layers.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let files: Vec<PathBuf> = match path {
            Some(p) => {
                if !p.is_file() {
                    return Err(ConfigError::Read {
                        path: p.to_owned(),
                        source: std::io::ErrorKind::NotFound.into(),
                    });
                }
                layer_files(p)
            }
            None => SYSTEM_DIRS
                .iter()
                .flat_map(|d| layer_files(&Path::new(d).join("entented.toml")))
                .collect(),
        };
        if files.is_empty() {
            return Err(ConfigError::Missing(SYSTEM_DIRS.join(", ")));
        }
        let mut layers = Vec::with_capacity(files.len());
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|source| ConfigError::Read {
                path: f.clone(),
                source,
            })?;
            layers.push((f, text));
        }
        let mut cfg = Config::from_layers(&layers)?;
        cfg.source = path.map(Path::to_owned);
        Ok(cfg)
    }

    /// Merges TOML texts, lowest priority first, each named by the file it came from, and
    /// validates the result; what [`load`](Self::load) does once it has read the files, without
    /// touching the file system. `source` is left `None`.
    pub fn from_layers(layers: &[(PathBuf, String)]) -> Result<Config, ConfigError> {
        let mut merged = toml::Table::new();
        let mut origin = BTreeMap::new();
        for (f, text) in layers {
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Syntax {
                        path: f.clone(),
                        message: e.to_string().trim().replace('\n', " "),
                    })?;
            merge(&mut merged, table, f, "", &mut origin);
        }
        let cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
                // The key path the error is about ("fanout.strategy"), or, for an unknown or
                // missing key, the one the message names.
                let at = e.path().to_string();
                let message = e.inner().message().trim().to_owned();
                let named = message.split('`').nth(1).unwrap_or("");
                let key = if at == "." {
                    named.to_owned()
                } else {
                    at.clone()
                };
                let path = origin
                    .iter()
                    .find(|(k, _)| {
                        !key.is_empty()
                            && (k.as_str() == key
                                || k.ends_with(&format!(".{key}"))
                                || k.starts_with(&format!("{key}.")))
                    })
                    .map(|(_, f)| f.clone())
                    .or_else(|| layers.last().map(|(f, _)| f.clone()));
                let message = if at == "." {
                    message
                } else {
                    format!("key `{at}`: {message}")
                };
                ConfigError::Schema { path, message }
            })?;
        let last = layers
            .last()
            .map_or(Path::new("configuration"), |(f, _)| f.as_path());
        cfg.validate(&origin, last)?;
        Ok(cfg)
    }

    fn validate(&self, origin: &BTreeMap<String, PathBuf>, last: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            path: origin.get(key).cloned().unwrap_or_else(|| last.to_owned()),
            key: key.to_owned(),
            message,
        };
        if self.node_id == 0 {
            return Err(bad("node_id", "must not be 0".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.peers {
            if p.id == 0 || p.id == self.node_id {
                return Err(bad(
                    "peers",
                    format!("peer id {} is 0 or this node's own id", p.id),
                ));
            }
            if !seen.insert(p.id) {
                return Err(bad("peers", format!("peer {} listed twice", p.id)));
            }
        }
        if self.transport.rtt_ms == 0 || self.transport.rtt_ms > 60_000 {
            return Err(bad("transport.rtt_ms", "must be within 1..=60000".into()));
        }
        self.validate_device(&bad)?;
        let f = &self.fanout;
        if !f.max_mib_per_s.is_finite() || f.max_mib_per_s < 0.0 {
            return Err(bad(
                "fanout.max_mib_per_s",
                format!("{} is not a rate (0 means no cap)", f.max_mib_per_s),
            ));
        }
        match (f.strategy, f.source) {
            (FanoutStrategy::PullOne, None) => {
                return Err(bad(
                    "fanout.source",
                    "pull-one needs the node to fetch from".into(),
                ))
            }
            (FanoutStrategy::PullOne, Some(s))
                if s != self.node_id && !self.peers.iter().any(|p| p.id == s) =>
            {
                return Err(bad(
                    "fanout.source",
                    format!("node {s} is not a peer of this node"),
                ))
            }
            _ => {}
        }
        if self.policy.max_unavailable_neighbors == 0 {
            return Err(bad(
                "policy.max_unavailable_neighbors",
                "must be at least 1, or no node could ever activate".into(),
            ));
        }
        if self.policy.drain_timeout_s == 0 {
            return Err(bad(
                "policy.drain_timeout_s",
                "must be at least 1 second".into(),
            ));
        }
        if self.status.stale_after_s == 0 {
            return Err(bad(
                "status.stale_after_s",
                "must be at least 1, or every other node would be stale".into(),
            ));
        }
        Ok(())
    }

    /// The `[device]` section: a known backend, with the settings that backend needs and none
    /// of another's.
    fn validate_device(
        &self,
        bad: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let d = &self.device;
        match d.backend.as_str() {
            "sim" => {
                if d.devlink.is_some() {
                    return Err(bad("device.devlink", "only for backend \"devlink\"".into()));
                }
                if d.redfish.is_some() {
                    return Err(bad("device.redfish", "only for backend \"redfish\"".into()));
                }
            }
            "redfish" => {
                if d.faults.is_some() || d.devlink.is_some() {
                    let key = if d.faults.is_some() {
                        "device.faults"
                    } else {
                        "device.devlink"
                    };
                    return Err(bad(key, "not for backend \"redfish\"".into()));
                }
                let Some(rf) = &d.redfish else {
                    return Err(bad(
                        "device.redfish",
                        "backend \"redfish\" needs [device.redfish] with url and credentials_file"
                            .into(),
                    ));
                };
                rf.base_url()
                    .map_err(|e| bad("device.redfish.url", e.to_string()))?;
            }
            "devlink" => {
                if d.faults.is_some() {
                    return Err(bad("device.faults", "only for backend \"sim\"".into()));
                }
                let Some(dl) = &d.devlink else {
                    return Err(bad(
                        "device.devlink",
                        "backend \"devlink\" needs [device.devlink] with handle = \"BUS/DEVICE\""
                            .into(),
                    ));
                };
                dl.options().map_err(|(key, m)| bad(key, m))?;
            }
            other => {
                return Err(bad(
                    "device.backend",
                    format!("unknown backend {other:?} (this build has: sim, devlink, redfish)"),
                ))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("entente-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes BASE as the main configuration in a fresh directory; the loader returned writes
    /// its argument as the drop-in `entented.d/<file>` and loads the whole.
    fn drop_in_loader(name: &str, file: &str) -> impl Fn(&str) -> Result<Config, ConfigError> {
        let d = dir(name);
        let main = d.join("entented.toml");
        std::fs::write(&main, BASE).unwrap();
        std::fs::create_dir_all(d.join("entented.d")).unwrap();
        let drop = d.join("entented.d").join(file);
        move |text: &str| {
            std::fs::write(&drop, text).unwrap();
            Config::load(Some(&main))
        }
    }

    const BASE: &str = r#"
node_id = 1
listen = "127.0.0.1:7001"
data_dir = "/tmp/x"
cluster_key = "/tmp/k"
trusted_keys = "/tmp/keys"
profiles = "/tmp/p"
[device]
backend = "sim"
profile = "sim-nic"
[[peers]]
id = 2
addr = "127.0.0.1:7002"
"#;

    #[test]
    fn drop_ins_override_in_order() {
        let d = dir("dropins");
        let main = d.join("entented.toml");
        std::fs::write(&main, BASE).unwrap();
        std::fs::create_dir_all(d.join("entented.d")).unwrap();
        std::fs::write(
            d.join("entented.d/10-policy.toml"),
            "[policy]\nmax_unavailable_neighbors = 3\n",
        )
        .unwrap();
        std::fs::write(
            d.join("entented.d/20-rtt.toml"),
            "[transport]\nrtt_ms = 9\n",
        )
        .unwrap();
        let c = Config::load(Some(&main)).unwrap();
        assert_eq!(c.policy.max_unavailable_neighbors, 3);
        assert_eq!(c.transport.rtt_ms, 9);
        assert_eq!(c.peers.len(), 1);
    }

    #[test]
    fn layers_of_text_load_like_files() {
        let layer = |name: &str, text: &str| (PathBuf::from(name), text.to_owned());
        let c = Config::from_layers(&[
            layer("main.toml", BASE),
            layer("10-rtt.toml", "[transport]\nrtt_ms = 9\n"),
        ])
        .unwrap();
        assert_eq!((c.transport.rtt_ms, c.source), (9, None));
        let e = Config::from_layers(&[layer("main.toml", BASE), layer("20.toml", "node_id = 0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("20.toml") && e.contains("node_id"), "{e}");
        assert!(Config::from_layers(&[]).is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_file_and_key() {
        let d = dir("bad");
        let main = d.join("entented.toml");
        std::fs::write(&main, BASE).unwrap();
        std::fs::create_dir_all(d.join("entented.d")).unwrap();
        let drop = d.join("entented.d/50-typo.toml");
        std::fs::write(&drop, "[policy]\nmax_unavailable_neighbours = 3\n").unwrap();
        let e = Config::load(Some(&main)).unwrap_err().to_string();
        assert!(
            e.contains("50-typo.toml") && e.contains("max_unavailable_neighbours"),
            "{e}"
        );
        std::fs::write(&drop, "[transport]\nrtt_ms = 0\n").unwrap();
        let e = Config::load(Some(&main)).unwrap_err().to_string();
        assert!(
            e.contains("50-typo.toml") && e.contains("transport.rtt_ms"),
            "{e}"
        );
        std::fs::write(&drop, "[transport]\nframe_macs = \"maybe\"\n").unwrap();
        let e = Config::load(Some(&main)).unwrap_err().to_string();
        assert!(
            e.contains("50-typo.toml") && e.contains("maybe") && e.contains("require"),
            "{e}"
        );
        std::fs::write(&drop, "[transport]\nframe_macs = \"require\"\n").unwrap();
        let c = Config::load(Some(&main)).unwrap();
        assert_eq!(c.transport.frame_macs, FrameMacsSetting::Require);
        std::fs::write(&drop, "node_id = 0\n").unwrap();
        let e = Config::load(Some(&main)).unwrap_err().to_string();
        assert!(e.contains("50-typo.toml") && e.contains("node_id"), "{e}");
        std::fs::write(&drop, "node_id = \n").unwrap();
        let e = Config::load(Some(&main)).unwrap_err().to_string();
        assert!(e.contains("50-typo.toml"), "{e}");
        std::fs::write(&drop, "[[peers]]\nid = 1\naddr = \"127.0.0.1:1\"\n").unwrap();
        let e = Config::load(Some(&main)).unwrap_err().to_string();
        assert!(e.contains("peers"), "{e}");
    }

    #[test]
    fn fanout_settings_are_checked() {
        let load = drop_in_loader("fanout", "30-fanout.toml");
        let c = load("").unwrap();
        assert_eq!(c.fanout.strategy, FanoutStrategy::Pipeline);
        for (text, key) in [
            ("[fanout]\nstrategy = \"pull-one\"\n", "fanout.source"),
            (
                "[fanout]\nstrategy = \"pull-one\"\nsource = 9\n",
                "fanout.source",
            ),
            ("[fanout]\nmax_mib_per_s = -1.0\n", "fanout.max_mib_per_s"),
            ("[fanout]\nstrategy = \"tree\"\n", "strategy"),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(
                e.contains("30-fanout.toml") && e.contains(key),
                "{text}: {e}"
            );
        }
        let c =
            load("[fanout]\nstrategy = \"pull-one\"\nsource = 2\nmax_mib_per_s = 50\n").unwrap();
        assert_eq!(c.fanout.strategy, FanoutStrategy::PullOne);
        assert_eq!((c.fanout.source, c.fanout.max_mib_per_s), (Some(2), 50.0));
    }

    #[test]
    fn a_devlink_device_needs_a_valid_handle_and_firmware_dir() {
        let load = drop_in_loader("devlink", "60-device.toml");
        let e = load("[device]\nbackend = \"devlink\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("60-device.toml") && e.contains("device.devlink"),
            "{e}"
        );
        let e =
            load("[device]\nbackend = \"devlink\"\n[device.devlink]\nhandle = \"netdevsim1\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("device.devlink.handle") && e.contains("BUS/DEVICE"),
            "{e}"
        );
        let e = load(
            "[device]\nbackend = \"devlink\"\n[device.devlink]\nhandle = \"pci/0000:03:00.0\"\n\
             firmware_dir = \"/tmp/fw\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("device.devlink.firmware_dir") && e.contains("/lib/firmware"),
            "{e}"
        );
        let e = load(
            "[device]\nbackend = \"devlink\"\n[device.devlink]\nhandle = \"pci/0000:03:00.0\"\n\
             overwrite = [\"all\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("device.devlink.overwrite"), "{e}");
        let e = load("[device.devlink]\nhandle = \"pci/0000:03:00.0\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("device.devlink") && e.contains("only for backend"),
            "{e}"
        );
        let e = load("[device]\nbackend = \"ipmi\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("device.backend") && e.contains("sim, devlink, redfish"),
            "{e}"
        );
        let c = load(
            "[device]\nbackend = \"devlink\"\nprofile = \"netdevsim\"\n[device.devlink]\n\
             handle = \"netdevsim/netdevsim1\"\nfirmware_dir = \"/lib/firmware/entente/n1\"\n\
             overwrite = [\"settings\"]\n",
        )
        .unwrap();
        let opts = c.device.devlink.as_ref().unwrap().options().unwrap();
        assert!(opts.overwrite.settings && !opts.overwrite.identifiers);
        assert_eq!(opts.firmware_dir, PathBuf::from("/lib/firmware/entente/n1"));
    }

    #[test]
    fn a_redfish_device_needs_an_https_bmc() {
        let load = drop_in_loader("redfish", "60-device.toml");
        let e = load("[device]\nbackend = \"redfish\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("60-device.toml") && e.contains("device.redfish"),
            "{e}"
        );
        let e = load(
            "[device]\nbackend = \"redfish\"\n[device.redfish]\nurl = \"http://bmc\"\n\
             credentials_file = \"/etc/entente/bmc.credentials\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("device.redfish.url") && e.contains("https://"),
            "{e}"
        );
        let e = load(
            "[device]\nbackend = \"redfish\"\n[device.redfish]\nurl = \"https://bmc\"\n\
             credentials_file = \"/c\"\nslots = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("60-device.toml") && e.contains("slots"), "{e}");
        let c = load(
            "[device]\nbackend = \"redfish\"\nprofile = \"h100-sxm5\"\n[device.redfish]\n\
             url = \"https://bmc.rack12:443\"\ncredentials_file = \"/etc/entente/bmc.credentials\"\nslot = 3\n",
        )
        .unwrap();
        assert_eq!(c.device.redfish.unwrap().slot, 3);
    }
}
