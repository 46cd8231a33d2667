//! Hostile clients of the control socket, against a running agent: a slow client, an endless
//! request, and a refused request too large to log whole; and hostile clients of the peer port,
//! from another loopback address than the configured peers': bulk frames announced before any
//! handshake, and idle sockets that never start one.

use entente_tests::{connect_from, entente, run, tempdir, Cluster};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// How long `entente status` takes against node 0.
fn status_time(c: &Cluster) -> Duration {
    let started = Instant::now();
    let out = run(entente()
        .args(["status", "--json", "--socket"])
        .arg(c.socket(0)));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

#[test]
fn hostile_slow_control_client() {
    let dir = tempdir("hostile-slow");
    let mut c = Cluster::new(&dir, 2);
    c.start(0);
    // Twenty clients trickle a byte every 300 ms and never finish their line.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickles: Vec<_> = (0..20)
        .map(|_| {
            let (socket, stop) = (c.socket(0), stop.clone());
            std::thread::spawn(move || {
                let Ok(mut s) = UnixStream::connect(socket) else {
                    return;
                };
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if s.write_all(b" ").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        let t = status_time(&c);
        assert!(
            t < Duration::from_secs(1),
            "status took {t:?} beside slow clients"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in trickles {
        t.join().unwrap();
    }
}

#[test]
fn hostile_huge_control_request() {
    let dir = tempdir("hostile-huge");
    let mut c = Cluster::new(&dir, 2);
    c.start(0);
    let pid = c.pid(0).unwrap();
    // 100 MiB without a newline.
    let mut s = UnixStream::connect(c.socket(0)).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..100 {
        if s.write_all(&chunk).is_err() {
            break; // the agent stopped reading and closed: what it should do
        }
    }
    drop(s);
    assert!(status_time(&c) < Duration::from_secs(1));
    let peak = peak_rss_kib(pid);
    assert!(peak < 64 * 1024, "the agent's peak RSS is {peak} KiB");
    assert!(
        c.log(0).contains("request longer than"),
        "the oversized request was not reported:\n{}",
        c.log(0)
    );
}

#[test]
fn hostile_log_line_cap() {
    let dir = tempdir("hostile-log");
    let mut c = Cluster::new(&dir, 2);
    let gid = entente_tests::reader_group(&dir, &c);
    c.start(0);
    // A reader asks to start a campaign with a 700 KB manifest: refused, and logged short.
    let big = dir.join("big.manifest");
    std::fs::write(&big, "y".repeat(700_000)).unwrap();
    let sig = dir.join("big.manifest.sig");
    std::fs::write(&sig, "not a signature\n").unwrap();
    for f in [&big, &sig] {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    let out = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", &format!("--groups={gid}")])
        .arg(entente_tests::entente_path())
        .args(["campaign", "start", "--manifest"])
        .arg(&big)
        .arg("--socket")
        .arg(c.socket(0)));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = c.log(0);
    assert!(log.contains("control request refused"), "{log}");
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 1000, "a log line of {longest} bytes");
}

/// `entented --check-config` on node `i`'s configuration: (success, stderr).
fn check_config(c: &Cluster, i: usize) -> (bool, String) {
    let out = run(Command::new(entente_tests::entented())
        .arg("--config")
        .arg(c.agent(i, "config"))
        .arg("--check-config"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chmod(p: &std::path::Path, mode: u32) {
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

#[test]
fn hostile_world_writable_keys() {
    let dir = tempdir("hostile-keys-mode");
    let c = Cluster::new(&dir, 2);
    assert!(check_config(&c, 0).0);
    // Anyone could drop a key of their own into the trusted key directory.
    chmod(&dir.join("keys"), 0o777);
    let (ok, err) = check_config(&c, 0);
    assert!(!ok, "a world-writable key directory was accepted");
    assert!(err.contains("keys") && err.contains("writable"), "{err}");
    // The agent refuses to start on it too.
    let out = run(Command::new(entente_tests::entented())
        .arg("--config")
        .arg(c.agent(0, "config")));
    assert!(!out.status.success());
    chmod(&dir.join("keys"), 0o755);
    assert!(check_config(&c, 0).0);
}

#[test]
fn hostile_key_file_owner() {
    let dir = tempdir("hostile-keys-owner");
    let c = Cluster::new(&dir, 2);
    let pubs: Vec<_> = std::fs::read_dir(dir.join("keys"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    let planted = dir.join("keys/planted.pub");
    std::fs::copy(&pubs[0], &planted).unwrap();
    let given = Command::new("chown")
        .arg("65534")
        .arg(&planted)
        .status()
        .unwrap();
    assert!(
        given.success(),
        "this test needs root (it gives a file to another user); CI runs it as root"
    );
    let (ok, err) = check_config(&c, 0);
    assert!(!ok, "a key owned by another user was trusted");
    assert!(
        err.contains("planted.pub") && err.contains("65534"),
        "{err}"
    );
}

#[test]
fn hostile_umask_000() {
    let dir = tempdir("hostile-umask");
    let mut c = Cluster::new(&dir, 2);
    let child = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" --config \"$1\"")
        .arg(entente_tests::entented())
        .arg(c.agent(0, "config"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.status(0).is_none() {
        assert!(Instant::now() < deadline, "the agent did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    let data = c.data_dir(0);
    assert_eq!(mode(&data), 0o700, "data directory {}", data.display());
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    c.kill(0);
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    // A manifest of 4096 chunks shows as far more than a pipe holds; its reader stops after
    // one line (`entente manifest show M --json | head -1`).
    let dir = tempdir("closed-pipe");
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let key = entente_tests::trusted_signer(&dir, "ops");
    std::fs::write(dir.join("big.bin"), vec![3u8; 16 << 20]).unwrap();
    let (manifest, _) = entente_tests::sign_campaign(
        &dir,
        &key,
        "big",
        "epoch = 1\nmanifest_version = 1\nvalid_days = 1\nsemantics = \"big\"\n\n\
         [profiles.sim-nic]\nimage = \"big.bin\"\nversion = \"b\"\nchunk_size = 4096\ncompat = [0, 1]\n",
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg("\"$0\" manifest show \"$1\" --json | head -1; echo \"status ${PIPESTATUS[0]}\"")
        .arg(entente_tests::entente_path())
        .arg(&manifest)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!err.contains("panicked"), "{err}");
    assert!(text.ends_with("status 141\n"), "{text}{err}");
}

#[test]
fn hostile_admin_group_only() {
    let dir = tempdir("hostile-admin-only");
    let mut c = Cluster::new(&dir, 2);
    let _ = entente_tests::reader_group(&dir, &c);
    let admin = entente_tests::group("entente-e2e-admin");
    let config = c.agent(0, "config");
    std::fs::write(
        config.with_extension("d").join("11-admin.toml"),
        "admin_group = \"entente-e2e-admin\"\n",
    )
    .unwrap();
    let manifest = c.path("manifest");
    for f in [manifest.clone(), c.path("signature")] {
        chmod(&f, 0o644);
    }
    c.start(0);
    let as_user = |groups: &str| {
        run(Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                &format!("--groups={groups}"),
            ])
            .arg(entente_tests::entente_path())
            .args(["campaign", "plan", "--manifest"])
            .arg(&manifest)
            .arg("--socket")
            .arg(c.socket(0)))
    };
    // A member of the admin group only plans the campaign.
    let out = as_user(&admin);
    assert_eq!(
        out.status.code(),
        Some(0),
        "an admin-group member was refused: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A user in neither group is told it may not (exit 3), not that the agent is unreachable.
    let out = as_user("65534");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("may not"));
}

#[test]
fn cli_exit_codes() {
    // The table in README.md, "Exit codes": one command for each status.
    let dir = tempdir("exit-codes");
    let mut c = Cluster::new(&dir, 2);
    let code = |cmd: &mut Command| run(cmd).status.code();
    let status = |c: &Cluster| {
        let mut cmd = entente();
        cmd.args(["status", "--socket"]).arg(c.socket(0));
        cmd
    };
    // 4: the agent cannot be reached
    assert_eq!(code(&mut status(&c)), Some(4));
    // 64: usage
    assert_eq!(
        code(entente().args(["status", "--no-such-option"])),
        Some(64)
    );
    assert_eq!(code(entente().args(["sim", "--nodes", "0"])), Some(64));
    // 0: ok
    c.start(0);
    assert_eq!(code(&mut status(&c)), Some(0));
    // 0 for help
    assert_eq!(code(entente().arg("--help")), Some(0));
    // 3: refused (a manifest whose signature does not match it)
    let tampered = dir.join("tampered.manifest");
    let text = std::fs::read_to_string(c.path("manifest")).unwrap();
    std::fs::write(&tampered, text.replace("\"epoch\":1", "\"epoch\":2")).unwrap();
    let refused = c.start_campaign(0, &tampered, &c.path("signature"), None);
    assert_eq!(
        refused.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // 0, then 2: started, then nothing to do
    c.start_seeded_campaign();
    let again = c.start_campaign(0, &c.path("manifest"), &c.path("signature"), None);
    assert_eq!(
        again.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // 1: an error (a file that is not there)
    assert_eq!(
        code(
            entente()
                .args(["manifest", "show"])
                .arg(dir.join("absent.manifest"))
        ),
        Some(1)
    );
}

/// Where the strangers of the peer-port tests connect from: not a configured peer's address.
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 77);

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("the demo cluster listens on IPv4"),
    }
}

/// A `BulkData` frame of `len` bytes (into slot 1) as a stranger announces it: a valid header,
/// sent before any handshake.
fn bulk_frame(len: usize) -> (Vec<u8>, Vec<u8>) {
    use entente_fastpath::frame::{flags, Fields, FrameHeader, Kind};
    let payload = vec![0x5a; len];
    let h = FrameHeader::new(
        Fields {
            kind: Kind::BulkData,
            flags: flags::NO_PAYLOAD_SUM,
            src: 77,
            dst: 1,
            seq: 0,
            generation: 1,
            aux: 1,
            freed: 0,
        },
        &payload,
    );
    (h.bytes().to_vec(), payload)
}

#[test]
fn hostile_unauthenticated_bulk() {
    let dir = tempdir("hostile-bulk");
    let mut c = Cluster::new(&dir, 2);
    c.start(0);
    let pid = c.pid(0).unwrap();
    let to = v4(c.listen_addr(0));
    let (header, payload) = bulk_frame(16 << 20);
    let frame = std::sync::Arc::new((header, payload));
    // Three rounds of 64 connections, each announcing a 16 MiB bulk chunk and sending it.
    for _ in 0..3 {
        let senders: Vec<_> = (0..64)
            .map(|_| {
                let frame = frame.clone();
                std::thread::spawn(move || {
                    let Ok(mut s) = connect_from(STRANGER, to) else {
                        return 0;
                    };
                    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                    if s.write_all(&frame.0).is_err() {
                        return 0;
                    }
                    let mut sent = 0;
                    for part in frame.1.chunks(1 << 20) {
                        if s.write_all(part).is_err() {
                            break; // refused and closed: what the agent should do
                        }
                        sent += part.len();
                    }
                    // Hold the connection a moment, as an attacker would.
                    std::thread::sleep(Duration::from_millis(500));
                    sent
                })
            })
            .collect();
        let sent: usize = senders.into_iter().map(|t| t.join().unwrap()).sum();
        eprintln!("round: {} MiB of bulk payload written", sent >> 20);
    }
    assert!(status_time(&c) < Duration::from_secs(1));
    let peak = peak_rss_kib(pid);
    eprintln!("entented peak RSS: {peak} KiB");
    assert!(
        peak < 64 * 1024,
        "the agent's peak RSS is {peak} KiB after unauthenticated bulk frames"
    );
}

/// Keeps `n` idle connections from [`STRANGER`] open to `to`, reopening any the agent closes,
/// until `stop`; returns how many it opened in all.
fn idle_sockets(
    to: SocketAddrV4,
    n: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut open: Vec<TcpStream> = Vec::new();
        let mut opened = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // Drop the ones the agent closed (EOF or reset).
            open.retain_mut(|s| {
                let mut b = [0u8; 64];
                match s.read(&mut b) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                }
            });
            while open.len() < n {
                match connect_from(STRANGER, to) {
                    Ok(s) => {
                        s.set_nonblocking(true).unwrap();
                        open.push(s);
                        opened += 1;
                    }
                    Err(_) => break,
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        opened
    })
}

/// Whether node `i` reports its link to `peer` connected.
fn connected(c: &Cluster, i: usize, peer: u64) -> bool {
    c.status(i).is_some_and(|s| {
        s["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["peer"].as_u64() == Some(peer) && l["connected"] == true)
    })
}

#[test]
fn hostile_idle_sockets() {
    let dir = tempdir("hostile-idle");
    let mut c = Cluster::new(&dir, 2);
    c.start_all();
    // Node 1 (index 0) dials node 2 (index 1): the strangers crowd node 2's peer port.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !connected(&c, 1, 1) {
        assert!(Instant::now() < deadline, "the link never came up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let crowd = idle_sockets(v4(c.listen_addr(1)), 200, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    // The neighbour restarts.
    c.kill(0);
    std::thread::sleep(Duration::from_millis(300));
    c.start(0);
    let restarted = Instant::now();
    let back = loop {
        if connected(&c, 1, 1) && connected(&c, 0, 2) {
            break restarted.elapsed();
        }
        if restarted.elapsed() > Duration::from_secs(30) {
            break restarted.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = crowd.join().unwrap();
    eprintln!("link back {back:?} after the neighbour's restart; {opened} idle sockets opened");
    assert!(
        back < Duration::from_secs(2),
        "the neighbour's link took {back:?} to come back beside 200 idle sockets"
    );
    let log = c.log(1);
    let refusals = log.lines().filter(|l| l.contains("refused")).count();
    assert!(
        refusals < 20,
        "{refusals} log lines about refused connections:\n{log}"
    );
}

#[test]
fn hostile_image_add_probe() {
    // The agent reads images only from files the caller opened and passed: a request that names
    // a path it may read but the caller may not is refused unopened, and a user who cannot open
    // a file cannot make the agent read it.
    use std::io::BufRead;
    let dir = tempdir("hostile-image-probe");
    let mut c = Cluster::new(&dir, 2);
    let admin = entente_tests::group("entente-e2e-admin");
    let drop_ins = c.agent(0, "config").with_extension("d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::write(
        drop_ins.join("11-admin.toml"),
        "admin_group = \"entente-e2e-admin\"\n",
    )
    .unwrap();
    c.start(0);
    // A copy of the campaign's image only its owner may read: exactly what a prober would try.
    let secret = dir.join("secret.bin");
    std::fs::copy(c.path("image"), &secret).unwrap();
    chmod(&secret, 0o600);
    let (manifest, sig) = (c.path("manifest"), c.path("signature"));
    for f in [&manifest, &sig] {
        chmod(f, 0o644);
    }
    let request = serde_json::json!({"api": 2, "request": {"kind": "image_add",
        "manifest": std::fs::read_to_string(&manifest).unwrap(),
        "signature": std::fs::read_to_string(&sig).unwrap(),
        "images": [secret.display().to_string()]}});
    let mut s = std::os::unix::net::UnixStream::connect(c.socket(0)).unwrap();
    writeln!(s, "{request}").unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(&s).read_line(&mut answer).unwrap();
    assert!(
        answer.contains("files passed"),
        "a named path was opened: {answer}"
    );
    let list = run(entente()
        .args(["image", "list", "--json", "--socket"])
        .arg(c.socket(0)));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&list.stdout).unwrap(),
        serde_json::json!([]),
        "nothing was staged from the named path"
    );
    // An admin-group user who cannot open the file gets the CLI's refusal; the agent sees nothing.
    let out = run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            &format!("--groups={admin}"),
        ])
        .arg(entente_tests::entente_path())
        .args(["image", "add", "--manifest"])
        .arg(&manifest)
        .arg("--socket")
        .arg(c.socket(0))
        .arg(&secret));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    // Its owner passes it open, and it is staged.
    let out = run(entente()
        .args(["image", "add", "--manifest"])
        .arg(&manifest)
        .arg("--socket")
        .arg(c.socket(0))
        .arg(&secret));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
