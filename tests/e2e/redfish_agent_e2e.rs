//! End to end with the Redfish backend: a real `entented` whose device is a GPU behind the BMC
//! emulator of entente-devices (`agent/devices/tests/bmc/emulator.py`, TLS with its test CA),
//! driven through the `entente` CLI: the inventory (Redfish FirmwareInventory and NVML), and a
//! campaign staged through the UpdateService with apply time OnReset and activated by a reset.
//!
//! The emulator is started here, on a free loopback port; a test fails, never skips, when it
//! cannot start.

use entente_tests::{entente, entented, run, tempdir};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The BMC account the emulator is started with.
const USER: &str = "admin";
const PASSWORD: &str = "bmc-test-password";
/// The version every GPU of the emulated baseboard runs when it starts (not its default, so
/// that a version seen in the inventory can only have come from this BMC).
const FACTORY: &str = "96.00.61.00.07";
/// The version the campaign brings.
const NEW: &str = "97.00.12.00.05";
/// The GPU slot the agent's device is.
const SLOT: u32 = 2;
/// What NVML says where the NVIDIA driver is not installed.
const NO_NVML: &str = "unavailable: libnvidia-ml not found";

fn repo() -> PathBuf {
    entente_tests::repo_root()
}

fn bmc_dir() -> PathBuf {
    repo().join("agent/devices/tests/bmc")
}

/// The BMC emulator, ended when dropped (it also exits when its standard input closes).
struct Bmc {
    child: Child,
    url: String,
}

impl Bmc {
    fn start(log: &Path) -> Bmc {
        let dir = bmc_dir();
        let spawned = Command::new("python3")
            .arg(dir.join("emulator.py"))
            .args(["--port", "0", "--user", USER, "--password", PASSWORD])
            .args(["--gpu-version", FACTORY, "--verbose"])
            .arg("--cert")
            .arg(dir.join("certs/server.pem"))
            .arg("--key")
            .arg(dir.join("certs/server.key"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn();
        let mut child = spawned.unwrap_or_else(|e| {
            panic!(
                "the Redfish BMC emulator cannot start: python3 {}: {e} (it needs python3 on \
                 PATH: apt-get install python3)",
                dir.join("emulator.py").display()
            )
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the BMC emulator did not start: it printed {line:?}; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        };
        Bmc {
            url: url.to_owned(),
            child,
        }
    }

    /// A GET with basic auth trusting the test CA, outside the agent: the BMC's own view.
    fn get(&self, path: &str) -> Value {
        let script = "import base64,json,ssl,sys,urllib.request as u\n\
            ctx=ssl.create_default_context(cafile=sys.argv[2])\n\
            r=u.Request(sys.argv[1],headers={'Authorization':'Basic '+base64.b64encode(sys.argv[3].encode()).decode()})\n\
            sys.stdout.write(u.urlopen(r,context=ctx).read().decode())\n";
        let out = run(Command::new("python3")
            .args(["-c", script])
            .arg(format!("{}{path}", self.url))
            .arg(bmc_dir().join("certs/ca.pem"))
            .arg(format!("{USER}:{PASSWORD}")));
        assert!(
            out.status.success(),
            "GET {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn gpu_version(&self, slot: u32) -> String {
        let v = self.get(&format!(
            "/redfish/v1/UpdateService/FirmwareInventory/HGX_FW_GPU_SXM_{slot}"
        ));
        v["Version"].as_str().unwrap().to_owned()
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One agent with `backend = "redfish"` and profile h100-sxm5, no peers.
struct Agent {
    dir: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
}

fn write_private(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where an agent sits in a cluster of agents on loopback.
struct Place {
    /// Its node id.
    id: u64,
    /// The GPU slot its device is.
    slot: u32,
    /// Its port, and its peers' ids and ports.
    port: u16,
    peers: Vec<(u64, u16)>,
    /// The directory whose `signer/ops.pub` it trusts (its own when `None`).
    signer: Option<PathBuf>,
}

impl Agent {
    /// Writes the keys, the BMC credentials (0600) and the configuration of a lone agent.
    fn setup(dir: &Path, bmc: &Bmc) -> Agent {
        let place = Place {
            id: 1,
            slot: SLOT,
            port: free_port(),
            peers: Vec::new(),
            signer: None,
        };
        Agent::setup_at(dir, bmc, &place)
    }

    /// The same for an agent at `place` in a cluster.
    fn setup_at(dir: &Path, bmc: &Bmc, place: &Place) -> Agent {
        std::fs::create_dir_all(dir).unwrap();
        let out = run(entente()
            .args(["keygen", "--out"])
            .arg(dir.join("signer"))
            .args(["--name", "ops"]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::create_dir_all(dir.join("trusted")).unwrap();
        let signer = place.signer.clone().unwrap_or_else(|| dir.to_owned());
        std::fs::copy(signer.join("signer/ops.pub"), dir.join("trusted/ops.pub")).unwrap();
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(97) ^ (std::process::id() as u8);
        }
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&dir.join("cluster.key"), &hex);
        let creds = dir.join("bmc.credentials");
        write_private(&creds, &format!("{USER}:{PASSWORD}\n"));
        assert_eq!(
            std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let socket = dir.join("control.sock");
        let config = dir.join("entented.toml");
        let peers: String = place
            .peers
            .iter()
            .map(|(id, port)| format!("[[peers]]\nid = {id}\naddr = \"127.0.0.1:{port}\"\n\n"))
            .collect();
        std::fs::write(
            &config,
            format!(
                "node_id = {id}\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{data}\"\n\
                 cluster_key = \"{cluster}\"\ntrusted_keys = \"{trusted}\"\n\
                 profiles = \"{profiles}\"\ncontrol_socket = \"{socket}\"\n\n\
                 [transport]\nkind = \"tcp\"\nrtt_ms = 5\n\n\
                 [device]\nbackend = \"redfish\"\nprofile = \"h100-sxm5\"\n\n\
                 [device.redfish]\nurl = \"{url}\"\nca_file = \"{ca}\"\n\
                 credentials_file = \"{creds}\"\nauth = \"session\"\nslot = {slot}\n\
                 poll_interval_ms = 20\ntask_timeout_ms = 60000\nactivation_timeout_ms = 30000\n\n{peers}",
                id = place.id,
                slot = place.slot,
                port = place.port,
                data = dir.join("data").display(),
                cluster = dir.join("cluster.key").display(),
                trusted = dir.join("trusted").display(),
                profiles = repo().join("hw-profiles").display(),
                socket = socket.display(),
                url = bmc.url,
                ca = bmc_dir().join("certs/ca.pem").display(),
                creds = creds.display(),
            ),
        )
        .unwrap();
        Agent {
            dir: dir.to_owned(),
            config,
            socket,
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("entented.log")).unwrap();
        self.child = Some(
            Command::new(entented())
                .arg("--config")
                .arg(&self.config)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.status().is_none() {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("entented exited ({s}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "entented did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("entented.log")).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        run(entente().args(args).arg("--socket").arg(&self.socket))
    }

    fn status(&self) -> Option<Value> {
        let out = self.cli(&["status", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// `entente inventory --json`, once the device has answered (the first report may still be
    /// on its way from the BMC).
    fn inventory(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.cli(&["inventory", "--json"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let inv: Value = serde_json::from_slice(&out.stdout).unwrap();
            if inv["devices"][0]["health"] != "unknown" {
                return inv;
            }
            assert!(Instant::now() < deadline, "no inventory: {inv:#}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn history(&self) -> Vec<String> {
        let out = self.cli(&["history", "--json", "--limit", "500"]);
        let h: Value = serde_json::from_slice(&out.stdout).unwrap();
        h.as_array()
            .unwrap()
            .iter()
            .map(|e| e["text"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether this host has NVIDIA's management library (then NVML answers, or fails otherwise).
fn host_has_nvml() -> bool {
    let out = Command::new("ldconfig").arg("-p").output();
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libnvidia-ml.so.1"))
}

/// The device's `gpu-fw` component in an inventory reply.
fn gpu_fw(inv: &Value) -> &Value {
    let comps = inv["devices"][0]["components"].as_array().unwrap();
    comps
        .iter()
        .find(|c| c["name"] == "gpu-fw")
        .unwrap_or_else(|| panic!("no gpu-fw component: {inv:#}"))
}

/// An image the emulator takes as an HGX firmware package of `version`.
fn package(version: &str, len: usize) -> Vec<u8> {
    let mut bytes = format!("ENTENTE-TEST-FWPKG\nversion={version}\n").into_bytes();
    bytes.extend((0..len).map(|i| (i as u8).wrapping_mul(31) ^ (i >> 8) as u8));
    bytes
}

#[test]
fn redfish_inventory_lists_the_bmc_gpu_version_and_the_nvml_report() {
    let dir = tempdir("redfish-inventory");
    let bmc = Bmc::start(&dir.join("bmc.log"));
    let mut agent = Agent::setup(&dir, &bmc);
    agent.start();

    let inv = agent.inventory();
    let dev = &inv["devices"][0];
    assert_eq!(dev["profile"], "h100-sxm5", "{inv:#}");
    assert_eq!(dev["health"], "ok", "{inv:#}");
    let gpu = gpu_fw(&inv);
    assert_eq!(gpu["running"], FACTORY, "{inv:#}");
    // Nothing staged: what is stored is what runs.
    assert_eq!(gpu["stored"], FACTORY, "{inv:#}");
    assert_eq!(bmc.gpu_version(SLOT), FACTORY);

    // h100-sxm5 reads its inventory through NVML: the reply carries NVML's answer or its error.
    let nvml = &dev["nvml"];
    assert!(nvml.is_object(), "no nvml report: {inv:#}");
    if host_has_nvml() {
        assert!(
            nvml["error"].is_null() || nvml["error"].is_string(),
            "{inv:#}"
        );
    } else {
        assert_eq!(nvml["error"], NO_NVML, "{inv:#}");
        assert_eq!(nvml["gpus"], serde_json::json!([]), "{inv:#}");
        assert_eq!(nvml["driver_version"], Value::Null, "{inv:#}");
    }

    // The text output says the same.
    let out = agent.cli(&["inventory"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("h100-sxm5  health ok"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("gpu-fw") && l.contains(FACTORY)),
        "{text}"
    );
    assert!(text.contains("  nvml: "), "{text}");
    if !host_has_nvml() {
        assert!(text.contains(&format!("  nvml: {NO_NVML}")), "{text}");
    }
    // The agent is still there after answering (NVML's absence is no crash).
    assert!(agent.status().is_some(), "{}", agent.log());
}

#[test]
fn redfish_campaign_stages_on_reset_activates_by_reboot_and_reads_the_version_back() {
    let dir = tempdir("redfish-campaign");
    let bmc = Bmc::start(&dir.join("bmc.log"));
    let mut agent = Agent::setup(&dir, &bmc);
    agent.start();
    assert_eq!(gpu_fw(&agent.inventory())["running"], FACTORY);

    // A signed manifest for profile h100-sxm5, written and signed with the CLI.
    let (manifest, image) = signed_campaign(&dir, &dir);

    // The plan: from the BMC's version to the manifest's, by a disruptive reboot.
    let out = run(entente()
        .args(["campaign", "plan", "--json", "--socket"])
        .arg(&agent.socket)
        .arg("--manifest")
        .arg(&manifest));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{plan:#}");
    assert_eq!(plan["refusals"], serde_json::json!([]), "{plan:#}");
    let change = &plan["changes"][0];
    assert_eq!(change["component"], "gpu-fw");
    assert_eq!(change["from"], FACTORY, "{plan:#}");
    assert_eq!(change["to"], NEW);
    assert_eq!(change["activation"], "reboot");
    assert_eq!(change["disruptive"], true);

    let out = run(entente()
        .args(["campaign", "start", "--socket"])
        .arg(&agent.socket)
        .arg("--manifest")
        .arg(&manifest)
        .arg("--image")
        .arg(&image));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );

    // One agent, no links: the campaign ends in `converged` once the device runs the image.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = agent.status().expect("the agent answers");
        if s["phase"] == "converged" {
            assert_eq!(s["epoch"], 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the campaign did not finish: {s:#}\nhistory: {:#?}\n{}",
            agent.history(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The version read back through the agent is the manifest's; the BMC agrees, and only the
    // agent's slot changed.
    let inv = agent.inventory();
    assert_eq!(gpu_fw(&inv)["running"], NEW, "{inv:#}");
    assert_eq!(inv["devices"][0]["health"], "ok", "{inv:#}");
    assert_eq!(bmc.gpu_version(SLOT), NEW);
    assert_eq!(bmc.gpu_version(1), FACTORY, "another GPU changed");

    // Staged with apply time OnReset: the BMC's update task ended awaiting activation, and the
    // image ran only after the reset the agent asked for.
    let tasks = bmc.get("/redfish/v1/TaskService/Tasks");
    let members = tasks["Members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{tasks:#}");
    let task = bmc.get(members[0]["@odata.id"].as_str().unwrap());
    assert_eq!(task["TaskState"], "Completed", "{task:#}");
    let ids: Vec<&str> = task["Messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["MessageId"].as_str())
        .collect();
    assert!(
        ids.contains(&"Update.1.0.AwaitToActivate"),
        "the update was not staged for a reset: {task:#}"
    );
    let requests = std::fs::read_to_string(dir.join("bmc.log")).unwrap();
    let push = requests
        .find("POST /redfish/v1/UpdateService/update-multipart")
        .unwrap_or_else(|| panic!("no multipart push:\n{requests}"));
    let reset = requests
        .find(".Reset HTTP")
        .unwrap_or_else(|| panic!("no reset:\n{requests}"));
    assert!(push < reset, "{requests}");

    // The agent's history tells the same story in order: staged, then the reboot, then done.
    let h = agent.history();
    let at = |needle: &str| {
        h.iter()
            .position(|e| e.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {h:#?}"))
    };
    assert!(at("epoch 1 staged in the device") < at("activating epoch 1 (Reboot)"));
    assert!(at("activating epoch 1 (Reboot)") < at("epoch 1 activated"));
    assert!(at("epoch 1 activated") < at("-> Converged"));

    // Text inventory after the campaign.
    let out = agent.cli(&["inventory"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("gpu-fw") && l.contains(NEW)),
        "{text}"
    );
}

/// Writes a campaign for profile h100-sxm5 bringing `NEW`, signed with the key under `signer`.
fn signed_campaign(dir: &Path, signer: &Path) -> (PathBuf, PathBuf) {
    let image = dir.join("h100-fw.fwpkg");
    std::fs::write(&image, package(NEW, 300_000)).unwrap();
    std::fs::write(
        dir.join("campaign.toml"),
        format!(
            "epoch = 1\nmanifest_version = 1\nvalid_days = 1\nsemantics = \"GPU VBIOS {NEW}\"\n\n\
             [profiles.h100-sxm5]\nimage = \"h100-fw.fwpkg\"\nversion = \"{NEW}\"\n\
             chunk_size = 65536\ncompat = [0, 1]\n"
        ),
    )
    .unwrap();
    let manifest = dir.join("campaign.manifest");
    let out = run(entente()
        .args(["manifest", "sign", "--key"])
        .arg(signer.join("signer/ops.key"))
        .arg("--in")
        .arg(dir.join("campaign.toml"))
        .arg("--out")
        .arg(&manifest));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (manifest, image)
}

/// (time, event) of an agent's history, oldest first.
fn timed_history(agent: &Agent) -> Vec<(u64, String)> {
    let out = agent.cli(&["history", "--json", "--limit", "500"]);
    let h: Value = serde_json::from_slice(&out.stdout).unwrap();
    h.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["at_ms"].as_u64().unwrap(),
                e["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn redfish_two_neighbours_reboot_under_leases() {
    // Two GPUs of one baseboard, each driven by its own agent, linked to each other. A reboot
    // may take 30 minutes (the profile's max_ms), far beyond the configured 120 s lease: each
    // agent must still get its neighbour's lease, drained first, and reboot under it. (Two
    // neighbours that ask each other at the same instant take turns: a node's own lease is a
    // step of the acquisition order; docs/protocol.md, "Neighbour leases".)
    let dir = tempdir("redfish-pair");
    let bmc = Bmc::start(&dir.join("bmc.log"));
    let (p1, p2) = (free_port(), free_port());
    let a1 = dir.join("node1");
    let mut one = Agent::setup_at(
        &a1,
        &bmc,
        &Place {
            id: 1,
            slot: 1,
            port: p1,
            peers: vec![(2, p2)],
            signer: None,
        },
    );
    let mut two = Agent::setup_at(
        &dir.join("node2"),
        &bmc,
        &Place {
            id: 2,
            slot: 2,
            port: p2,
            peers: vec![(1, p1)],
            signer: Some(a1.clone()),
        },
    );
    one.start();
    two.start();
    let (manifest, image) = signed_campaign(&a1, &a1);
    let out = run(entente()
        .args(["campaign", "start", "--socket"])
        .arg(&one.socket)
        .arg("--manifest")
        .arg(&manifest)
        .arg("--image")
        .arg(&image));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        one.log()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (s1, s2) = (one.status().unwrap(), two.status().unwrap());
        if s1["phase"] == "converged" && s2["phase"] == "converged" && s1["converged"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence:\n{s1:#}\n{s2:#}\n{:#?}\n{:#?}",
            one.history(),
            two.history()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(bmc.gpu_version(1), NEW);
    assert_eq!(bmc.gpu_version(2), NEW);
    // Each reboot ran under its neighbour's lease, asked for once the agent was drained.
    for agent in [&one, &two] {
        let h = timed_history(agent);
        let at = |needle: &str| {
            h.iter()
                .position(|(_, e)| e.contains(needle))
                .unwrap_or_else(|| panic!("no {needle:?} in {h:#?}"))
        };
        let (drained, leases, reboot, done) = (
            at("drained for epoch 1"),
            at("asking the neighbours for leases"),
            at("activating epoch 1 (Reboot)"),
            at("epoch 1 activated"),
        );
        assert!(
            drained < leases && leases < reboot && reboot < done,
            "{h:#?}"
        );
    }
}
