//! The systemd unit passes `systemd-analyze verify` (with ExecStart pointed at the built agent).

use std::process::Command;

#[test]
fn the_unit_verifies_clean() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../dist/entented.service"
    ))
    .expect("dist/entented.service");
    assert!(unit.contains("Type=notify") && unit.contains("ProtectSystem=strict"));
    let dir = std::env::temp_dir().join(format!("entente-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("entented.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/entented", env!("CARGO_BIN_EXE_entented")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd) is needed for this test");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It prints one line per problem (and exits 0 either way).
    assert!(
        said.trim().is_empty(),
        "systemd-analyze found problems:\n{said}"
    );
    // A broken unit is caught (the check can fail).
    std::fs::write(&path, unit.replace("Type=notify", "Type=sometimes")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sd_notify_ready_reaches_the_notify_socket() {
    use std::os::unix::net::UnixDatagram;
    let dir = std::env::temp_dir().join(format!("entente-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A one-node cluster written by hand: no peers.
    let cli = std::path::Path::new(env!("CARGO_BIN_EXE_entented")).with_file_name("entente");
    if !cli.is_file() {
        panic!("needs the entente CLI built beside entented (cargo test --workspace builds it)");
    }
    let setup = Command::new(&cli)
        .args(["demo", "--setup"])
        .arg(&dir)
        .args(["--nodes", "2"])
        .output()
        .unwrap();
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&setup.stdout).unwrap();
    let config = v["agents"][0]["config"].as_str().unwrap().to_owned();
    let sock = dir.join("notify.sock");
    let listener = UnixDatagram::bind(&sock).unwrap();
    listener
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_entented"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = listener.recv(&mut buf).expect("a notification");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let mut stopping = false;
    while let Ok(n) = listener.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(msg.contains("READY=1") && msg.contains("STATUS="), "{msg}");
    assert!(stopping, "no STOPPING=1 on SIGTERM");
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    std::fs::remove_dir_all(&dir).unwrap();
}
