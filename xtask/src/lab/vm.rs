//! Boots the guest under QEMU (TCG) and follows its steps over the result channel.
//!
//! ttyS0 is the console (kernel messages, each step's output as it runs) and goes to
//! `console.log`; ttyS1 is the result channel, QEMU's stdout here, with one line per event:
//! `@@info KEY VALUE`, `@@step NAME TIMEOUT`, `@@out NAME LINE`, `@@end NAME STATUS`, `@@done`.
//! The guest bounds each step with `timeout`; here each step also has a deadline (its timeout
//! plus a margin), and so has the boot, so a hung guest cannot hang the lab.

use super::initramfs::Image;
use super::scenarios::Plan;
use super::Dirs;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// From QEMU's start to the guest's first report (the kernel reaches /init in ~5 s on TCG).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Added to a step's guest timeout before the host gives up on it (transfers, a slow host).
const MARGIN: Duration = Duration::from_secs(30);
/// From `@@done` to QEMU's exit.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);

/// One guest step's outcome.
#[derive(Debug, Clone)]
pub struct StepResult {
    /// The step.
    pub name: String,
    /// Its exit status (124 or 143: the guest's timeout killed it).
    pub rc: Option<i32>,
    /// Its output (stdout and stderr).
    pub out: Vec<String>,
    /// Wall time seen from the host.
    pub seconds: f64,
}

/// What the guest reported.
#[derive(Debug, Default)]
pub struct Guest {
    /// `@@info` values (kernel, rxe_device, gid_index).
    pub info: BTreeMap<String, String>,
    /// Steps in the order they ran.
    pub steps: Vec<StepResult>,
    /// Steps the plan has that did not run (a setup step failed).
    pub skipped: Vec<String>,
    /// From QEMU's start to the first report.
    pub boot_seconds: f64,
    /// From QEMU's start to its exit.
    pub seconds: f64,
}

impl Guest {
    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&StepResult> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The first step that failed or did not run, and why.
    pub fn first_failure(&self) -> Option<(String, String)> {
        if let Some(s) = self.steps.iter().find(|s| s.rc != Some(0)) {
            let why = match s.rc {
                Some(124 | 143) => "killed by its timeout in the guest".to_owned(),
                Some(rc) => format!("exit status {rc}"),
                None => "no exit status".to_owned(),
            };
            let tail = s.out[s.out.len().saturating_sub(15)..].join("\n");
            return Some((s.name.clone(), format!("{why}; its last output:\n{tail}")));
        }
        self.skipped
            .first()
            .map(|s| (s.clone(), "did not run".to_owned()))
    }
}

fn qemu(dirs: &Dirs, image: &Image) -> Result<Child> {
    let console = dirs.console();
    Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024"])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
        ])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .args(["-serial", "stdio"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")
}

/// The last lines of the console, for error messages.
fn console_tail(dirs: &Dirs) -> String {
    let text = std::fs::read_to_string(dirs.console()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Boots the image, follows the plan's steps, and returns what the guest reported.
pub fn boot(dirs: &Dirs, image: &Image, plan: &Plan) -> Result<Guest> {
    let start = Instant::now();
    let mut child = qemu(dirs, image)?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(|l| l.ok()) {
            let line = String::from_utf8_lossy(&line).trim_end().to_owned();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let result = follow(&rx, plan, start);
    let mut guest = match result {
        Ok(g) => g,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.context(format!(
                "console ({}), last lines:\n{}",
                dirs.console().display(),
                console_tail(dirs)
            )));
        }
    };
    let deadline = Instant::now() + POWEROFF_TIMEOUT;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("the guest did not power off; QEMU killed");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    guest.seconds = start.elapsed().as_secs_f64();
    let ran: Vec<&str> = guest.steps.iter().map(|s| s.name.as_str()).collect();
    guest.skipped = plan
        .steps()
        .map(|s| s.name.clone())
        .filter(|n| !ran.contains(&n.as_str()))
        .collect();
    Ok(guest)
}

/// Reads the result channel until `@@done`, enforcing the deadlines.
fn follow(rx: &mpsc::Receiver<String>, plan: &Plan, start: Instant) -> Result<Guest> {
    let mut guest = Guest::default();
    let mut current: Option<(StepResult, Instant)> = None;
    let mut waiting_for = "boot".to_owned();
    let mut deadline = start + BOOT_TIMEOUT;
    let mut booted = false;
    loop {
        let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                bail!("guest step `{waiting_for}` passed its deadline (the host gave up on it)")
            }
            Err(RecvTimeoutError::Disconnected) => {
                bail!("the VM stopped during `{waiting_for}` (kernel panic or init died)")
            }
        };
        let Some(at) = line.find("@@") else {
            continue;
        };
        let msg = &line[at + 2..];
        let (kind, rest) = msg.split_once(' ').unwrap_or((msg, ""));
        if !booted {
            booted = true;
            guest.boot_seconds = start.elapsed().as_secs_f64();
        }
        match kind {
            "info" => {
                let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
                guest.info.insert(k.to_owned(), v.to_owned());
            }
            "step" => {
                let (name, t) = rest.split_once(' ').unwrap_or((rest, "60"));
                let t: u64 = t.trim().parse().unwrap_or(60);
                anyhow::ensure!(
                    plan.steps().any(|s| s.name == name),
                    "the guest ran a step the plan does not have: {name}"
                );
                deadline = Instant::now() + Duration::from_secs(t) + MARGIN;
                waiting_for = name.to_owned();
                current = Some((
                    StepResult {
                        name: name.to_owned(),
                        rc: None,
                        out: Vec::new(),
                        seconds: 0.0,
                    },
                    Instant::now(),
                ));
            }
            "out" => {
                if let Some((s, _)) = current.as_mut() {
                    let text = rest.split_once(' ').map_or("", |(_, t)| t);
                    s.out.push(text.to_owned());
                }
            }
            "end" => {
                let (name, rc) = rest.split_once(' ').unwrap_or((rest, ""));
                if let Some((mut s, t)) = current.take() {
                    if s.name == name {
                        s.rc = rc.trim().parse().ok();
                        s.seconds = t.elapsed().as_secs_f64();
                        let verdict = if s.rc == Some(0) { "ok" } else { "FAILED" };
                        eprintln!("   {:<28} {verdict} ({:.1} s)", s.name, s.seconds);
                        guest.steps.push(s);
                    }
                }
                waiting_for = format!("after {name}");
                deadline = Instant::now() + MARGIN;
            }
            "done" => return Ok(guest),
            _ => {}
        }
    }
}
