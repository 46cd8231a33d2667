//! The Redfish test peers, started by the `redfish_*` tests on loopback: the BMC emulator
//! (`tests/bmc/emulator.py`, Python 3 standard library) and sushy-tools (from the virtualenv
//! that `.ci/redfish-peers` prepares). A missing peer fails the test with what to do; nothing is
//! skipped.

#![allow(dead_code)]

use entente_devices::device::ImageInfo;
use entente_devices::profile::{self, Profile};
use entente_devices::redfish::{AuthMode, RedfishConfig};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test user and password both peers accept.
pub const USER: &str = "admin";
/// See [`USER`].
pub const PASSWORD: &str = "bmc-test-password";
/// The GPU firmware version the emulator starts with.
pub const FACTORY_GPU_VERSION: &str = "96.00.61.00.01";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn bmc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bmc")
}

/// The test CA the peers' certificate chains to.
pub fn test_ca() -> PathBuf {
    bmc_dir().join("certs/ca.pem")
}

/// A CA unrelated to the peers' certificate.
pub fn other_ca() -> PathBuf {
    bmc_dir().join("certs/other-ca.pem")
}

pub fn shipped(name: &str) -> Profile {
    profile::load_file(&repo_root().join("hw-profiles").join(format!("{name}.toml")))
        .expect("shipped profile")
}

/// Writes `user:password` to a credentials file with `mode` in `dir`.
pub fn credentials(dir: &Path, password: &str, mode: u32) -> PathBuf {
    let path = dir.join(format!("bmc-{mode:o}.credentials"));
    std::fs::write(&path, format!("{USER}:{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A configuration for `url` trusting the test CA, polling fast.
pub fn config(url: &str, credentials: &Path, auth: AuthMode) -> RedfishConfig {
    let mut c = RedfishConfig::new(url, credentials);
    c.ca_file = Some(test_ca());
    c.auth = auth;
    c.connect_timeout_ms = 2_000;
    c.request_timeout_ms = 10_000;
    c.task_timeout_ms = 20_000;
    c.poll_interval_ms = 10;
    c.activation_timeout_ms = Some(5_000);
    c
}

/// An image the emulator accepts as a firmware package of `version`.
pub fn package(version: &str, len: usize) -> (Vec<u8>, ImageInfo) {
    let mut bytes = format!("ENTENTE-TEST-FWPKG\nversion={version}\n").into_bytes();
    bytes.extend((0..len).map(|i| (i as u8).wrapping_mul(31)));
    let info = ImageInfo {
        version: version.into(),
        len: bytes.len() as u64,
        sha256: Sha256::digest(&bytes).into(),
    };
    (bytes, info)
}

/// A peer process, ended when dropped.
pub struct Peer {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the BMC emulator with extra `args` (`--fail-updates MSG`, `--task-step-ms N`).
pub fn emulator(args: &[&str]) -> Peer {
    let dir = bmc_dir();
    let spawned = Command::new("python3")
        .arg(dir.join("emulator.py"))
        .args(["--port", "0", "--user", USER, "--password", PASSWORD])
        .arg("--cert")
        .arg(dir.join("certs/server.pem"))
        .arg("--key")
        .arg(dir.join("certs/server.key"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = spawned.unwrap_or_else(|e| {
        panic!(
            "the Redfish BMC emulator peer cannot start: python3 {}: {e} \
             (it needs python3 on PATH: apt-get install python3)",
            dir.join("emulator.py").display()
        )
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("emulator stdout");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the BMC emulator did not start: it printed {line:?}"))
        .to_string();
    Peer { child, url }
}

/// The sushy-emulator executable: `$ENTENTE_SUSHY_EMULATOR`, else `.venv/redfish`'s.
pub fn sushy_executable() -> PathBuf {
    let path = std::env::var_os("ENTENTE_SUSHY_EMULATOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/redfish/bin/sushy-emulator"));
    assert!(
        path.is_file(),
        "the sushy-tools peer is missing: {} does not exist. Prepare it with `.ci/redfish-peers` \
         (creates .venv/redfish with sushy-tools 2.x and bcrypt; `.ci/run` calls it), or point \
         ENTENTE_SUSHY_EMULATOR at a sushy-emulator executable",
        path.display()
    );
    path
}

/// Starts sushy-tools with its fake driver on loopback over TLS (the test certificate), with
/// basic auth from `tests/bmc/sushy.htpasswd`.
pub fn sushy(work: &Path) -> Peer {
    let exe = sushy_executable();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = bmc_dir();
    let conf = work.join("sushy.conf");
    std::fs::write(
        &conf,
        format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_SSL_CERT = '{}'\n\
             SUSHY_EMULATOR_SSL_KEY = '{}'\n\
             SUSHY_EMULATOR_AUTH_FILE = '{}'\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\n",
            dir.join("certs/server.pem").display(),
            dir.join("certs/server.key").display(),
            dir.join("sushy.htpasswd").display(),
        ),
    )
    .unwrap();
    let log = work.join("sushy.log");
    let mut child = Command::new(&exe)
        .arg("--config")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(work.join("sushy.err")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("the sushy-tools peer cannot start: {}: {e}", exe.display()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::fs::File::open(work.join("sushy.err"))
                .and_then(|mut f| f.read_to_string(&mut err));
            panic!("the sushy-tools peer exited ({status}) before listening:\n{err}");
        }
        assert!(
            Instant::now() < deadline,
            "the sushy-tools peer did not listen on 127.0.0.1:{port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Peer {
        child,
        url: format!("https://127.0.0.1:{port}"),
    }
}

/// A GET with basic auth, trusting the test CA: (status, JSON body), to look at a peer's state
/// without going through the client under test.
pub fn peek(url: &str) -> (u16, serde_json::Value) {
    let ca = std::fs::read(test_ca()).unwrap();
    let certs: Vec<_> = ureq::tls::parse_pem(&ca)
        .filter_map(|i| match i.unwrap() {
            ureq::tls::PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::from(certs))
                    .build(),
            )
            .build(),
    );
    let auth = format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()));
    let mut reply = agent.get(url).header("Authorization", auth).call().unwrap();
    let status = reply.status().as_u16();
    let body = reply.body_mut().read_to_vec().unwrap();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}
