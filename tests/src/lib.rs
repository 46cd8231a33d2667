//! What the end-to-end tests share: the CLI and agent binaries, and a cluster of `entented`
//! processes on loopback written by `entente demo --setup`.
//!
//! The tests run the binaries a build step made before them (`cargo xtask ci` and `.ci/run`
//! run `cargo build --workspace --bins --all-features` first); no test builds anything. They are
//! looked for in `ENTENTE_BIN_DIR`, else in the target directory's profile folder beside this
//! test binary.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The folder holding `entente` and `entented`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ENTENTE_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test binary>: the binaries are in target/<profile>.
    let me = std::env::current_exe().expect("the test binary's path");
    let deps = me.parent().expect("deps");
    deps.parent().expect("the profile folder").to_path_buf()
}

/// The path of binary `name`, which must have been built before the tests.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the binaries before the end-to-end tests \
         (cargo build --workspace --bins --all-features, as cargo xtask ci does), \
         or point ENTENTE_BIN_DIR at them",
        p.display()
    );
    p
}

/// The CLI binary.
pub fn entente_path() -> PathBuf {
    binary("entente")
}

/// The CLI, ready to take arguments.
pub fn entente() -> Command {
    Command::new(entente_path())
}

/// The agent binary.
pub fn entented() -> PathBuf {
    binary("entented")
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run")
}

pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("entente-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A cluster written by `entente demo --setup`, agents started on demand.
pub struct Cluster {
    setup: Value,
    children: Vec<Option<Child>>,
}

impl Cluster {
    pub fn new(dir: &Path, nodes: u32) -> Cluster {
        Cluster::with_args(dir, nodes, &[])
    }

    /// A cluster with more `entente demo` options (`--image-mb`, `--fanout`, ...).
    pub fn with_args(dir: &Path, nodes: u32, args: &[&str]) -> Cluster {
        let out = run(entente()
            .args(["demo", "--setup"])
            .arg(dir)
            .arg("--entented")
            .arg(entented())
            .args(["--nodes", &nodes.to_string()])
            .args(args));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let setup: Value = serde_json::from_slice(&out.stdout).unwrap();
        let n = setup["agents"].as_array().unwrap().len();
        Cluster {
            setup,
            children: (0..n).map(|_| None).collect(),
        }
    }

    pub fn agent(&self, i: usize, key: &str) -> PathBuf {
        PathBuf::from(self.setup["agents"][i][key].as_str().unwrap())
    }

    pub fn socket(&self, i: usize) -> PathBuf {
        self.agent(i, "socket")
    }

    pub fn start(&mut self, i: usize) {
        let log = std::fs::File::create(self.agent(i, "log")).unwrap();
        let child = Command::new(entented())
            .arg("--config")
            .arg(self.agent(i, "config"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.status(i).is_none() {
            assert!(Instant::now() < deadline, "agent {i} did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn start_all(&mut self) {
        for i in 0..self.children.len() {
            self.start(i);
        }
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn status(&self, i: usize) -> Option<Value> {
        let out = run(entente()
            .args(["status", "--json", "--socket"])
            .arg(self.socket(i)));
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    pub fn start_campaign(
        &self,
        i: usize,
        manifest: &Path,
        sig: &Path,
        image: Option<&Path>,
    ) -> Output {
        let mut cmd = entente();
        cmd.args(["campaign", "start", "--socket"])
            .arg(self.socket(i))
            .arg("--manifest")
            .arg(manifest)
            .arg("--sig")
            .arg(sig);
        if let Some(img) = image {
            cmd.arg("--image").arg(img);
        }
        run(&mut cmd)
    }

    pub fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.setup[key].as_str().unwrap())
    }

    pub fn links(&self) -> u64 {
        self.setup["links"].as_array().unwrap().len() as u64
    }

    /// Waits until node `i` sees every link committed and every node reported.
    pub fn wait_converged(&self, i: usize, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.status(i) {
                if s["converged"] == true
                    && s["links_total"].as_u64() == Some(self.links())
                    && s["nodes"].as_array().unwrap().len() == self.children.len()
                {
                    return s;
                }
                assert!(Instant::now() < deadline, "no convergence: {s:#}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Cluster {
    /// Starts the setup's campaign on agent 1 with its image, and checks that it started.
    pub fn start_seeded_campaign(&self) {
        let out = self.start_campaign(
            0,
            &self.path("manifest"),
            &self.path("signature"),
            Some(&self.path("image")),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The events of node `i`'s history, oldest first.
    pub fn history(&self, i: usize) -> Vec<String> {
        let out = run(entente()
            .args(["history", "--json", "--socket"])
            .arg(self.socket(i)));
        let h: Value = serde_json::from_slice(&out.stdout).unwrap();
        h.as_array()
            .unwrap()
            .iter()
            .map(|e| e["text"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    /// Node `i`'s data directory (state store, image store, sim device).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.agent(i, "config").with_file_name("data")
    }

    /// Process id of node `i`'s agent, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    /// Deletes node `i`'s state store (`state.db` and its WAL files), as a lost disk would.
    pub fn wipe_state(&self, i: usize) {
        for f in ["state.db", "state.db-wal", "state.db-shm"] {
            let _ = std::fs::remove_file(self.data_dir(i).join(f));
        }
    }

    /// Node `i`'s log, as written so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.agent(i, "log")).unwrap_or_default()
    }

    /// Polls node `i`'s status until `ready` holds (or panics after `limit`, showing the last
    /// status).
    pub fn wait_status(&self, i: usize, limit: Duration, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.status(i);
            if let Some(s) = &s {
                if ready(s) {
                    return s.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {i} never reached the expected state: {s:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A signing key the agents of `dir` trust (its public half copied into the setup's `keys`).
pub fn trusted_signer(dir: &Path, name: &str) -> PathBuf {
    let keys = dir.join(format!("signer-{name}"));
    let out = run(entente()
        .args(["keygen", "--out"])
        .arg(&keys)
        .args(["--name", name]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(
        keys.join(format!("{name}.pub")),
        dir.join(format!("keys/{name}.pub")),
    )
    .unwrap();
    keys.join(format!("{name}.key"))
}

/// Signs the TOML campaign description `desc` (image paths relative to `dir`) with `key`;
/// returns the manifest and its signature.
pub fn sign_campaign(dir: &Path, key: &Path, name: &str, desc: &str) -> (PathBuf, PathBuf) {
    let toml = dir.join(format!("{name}.toml"));
    std::fs::write(&toml, desc).unwrap();
    let manifest = dir.join(format!("{name}.manifest"));
    let out = run(entente()
        .args(["manifest", "sign", "--key"])
        .arg(key)
        .arg("--in")
        .arg(&toml)
        .arg("--out")
        .arg(&manifest));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sig = PathBuf::from(format!("{}.sig", manifest.display()));
    (manifest, sig)
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
}

/// The id of group `name`, created if missing (needs root).
pub fn group(name: &str) -> String {
    let _ = Command::new("groupadd").arg("-f").arg(name).status();
    String::from_utf8(run(Command::new("getent").args(["group", name])).stdout)
        .unwrap()
        .split(':')
        .nth(2)
        .unwrap_or_else(|| panic!("no group {name}"))
        .to_owned()
}

/// Makes group `entente-e2e` node 0's read group (created if missing) and lets other users
/// reach its socket through the directories; returns the group's id. Needs root and setpriv.
pub fn reader_group(dir: &Path, c: &Cluster) -> String {
    assert!(
        is_root(),
        "this test needs root (it runs the CLI as another user); CI runs it as root"
    );
    assert!(
        Command::new("setpriv").arg("--version").output().is_ok(),
        "this test needs setpriv (util-linux)"
    );
    let gid = group("entente-e2e");
    let config = c.agent(0, "config");
    std::fs::create_dir_all(config.with_extension("d")).unwrap();
    std::fs::write(
        config.with_extension("d").join("10-groups.toml"),
        "read_group = \"entente-e2e\"\n",
    )
    .unwrap();
    for p in [dir.to_path_buf(), dir.join("node1")] {
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    gid
}

impl Cluster {
    /// The running version of node `i`'s device (`entente inventory --json`).
    pub fn running_version(&self, i: usize) -> Value {
        let out = run(entente()
            .args(["inventory", "--json", "--socket"])
            .arg(self.socket(i)));
        let inv: Value = serde_json::from_slice(&out.stdout).unwrap();
        inv["devices"][0]["components"][0]["running"].clone()
    }

    /// The address node `i` accepts peer connections on (`listen` in its configuration).
    pub fn listen_addr(&self, i: usize) -> std::net::SocketAddr {
        let text = std::fs::read_to_string(self.agent(i, "config")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("listen = "))
            .map(|v| v.trim().trim_matches('"').parse().unwrap())
            .expect("a listen address in the configuration")
    }
}

/// A TCP connection to `to` from address `from` (another loopback address than the agents',
/// e.g. 127.0.0.77: a stranger to them), port chosen by the system.
pub fn connect_from(
    from: std::net::Ipv4Addr,
    to: std::net::SocketAddrV4,
) -> std::io::Result<std::net::TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(from, 0)),
    )?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    Ok(std::net::TcpStream::from(fd))
}
