//! The drain before a disruptive activation: the operator's hook (a scheduler drain, say) run
//! on a thread of its own, with a deadline, so the protocol loop and the device worker go on
//! meanwhile. Its outcome and the tail of its output come back over the worker's channel.

use crate::worker::Done;
use crossbeam_channel::Sender;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Most bytes of the hook's output kept for the history (the tail).
const OUTPUT_TAIL: usize = 2048;

/// Starts the drain for campaign `epoch` of node `node`: runs `hook` (a shell command) with
/// `ENTENTE_NODE` and `ENTENTE_EPOCH` set, killing it past `deadline`; sends
/// [`Done::Drained`] when it ends. With no hook the node is drained at once.
pub fn start(hook: Option<String>, node: u64, epoch: u64, deadline: Duration, done: Sender<Done>) {
    let Some(hook) = hook else {
        let _ = done.send(Done::Drained {
            epoch,
            result: Ok("no drain hook configured".into()),
        });
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            let result = run(&hook, node, epoch, deadline);
            let _ = done.send(Done::Drained { epoch, result });
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the drain thread: {e}");
    }
}

/// Runs the health hook after the activation of `epoch` on a thread of its own; its outcome
/// comes back as `Done::HealthChecked`.
pub fn start_health(hook: String, node: u64, epoch: u64, deadline: Duration, done: Sender<Done>) {
    let spawned = std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            let result = run(&hook, node, epoch, deadline);
            let _ = done.send(Done::HealthChecked { epoch, result });
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the health thread: {e}");
    }
}

/// Runs the hook to its end or its deadline; the tail of its output, or why it failed.
fn run(hook: &str, node: u64, epoch: u64, deadline: Duration) -> Result<String, String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(hook)
        .env("ENTENTE_NODE", node.to_string())
        .env("ENTENTE_EPOCH", epoch.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own, so an overrun kills what the hook started too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("drain hook {hook:?}: {e}"))?;
    // Drain both pipes on threads of their own so a chatty hook never blocks on a full pipe.
    let readers: Vec<_> = [
        child.stdout.take().map(tail_reader),
        child.stderr.take().map(tail_reader),
    ]
    .into_iter()
    .flatten()
    .collect();
    let started = Instant::now();
    let kill_all = |child: &mut std::process::Child| {
        let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= deadline => {
                kill_all(&mut child);
                return Err(format!(
                    "drain hook {hook:?} still running after {} s: killed",
                    deadline.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                kill_all(&mut child);
                return Err(format!("drain hook {hook:?}: {e}"));
            }
        }
    };
    // The output is read within what is left of the deadline (and at least a moment): a job
    // the hook left in the background may hold the pipes open, and must not hold the drain.
    let mut text = String::new();
    for r in readers {
        let left = deadline
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(200));
        match r.recv_timeout(left) {
            Ok(part) => text.push_str(&part),
            Err(_) => text.push_str("[output still open: a background job of the hook holds it]"),
        }
    }
    let text = text.trim().to_owned();
    if status.success() {
        Ok(text)
    } else {
        Err(format!("drain hook {hook:?} failed with {status}: {text}"))
    }
}

/// Reads a pipe to its end on a thread, keeping the last [`OUTPUT_TAIL`] bytes as text, which
/// the returned channel delivers.
fn tail_reader(mut pipe: impl Read + Send + 'static) -> crossbeam_channel::Receiver<String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > OUTPUT_TAIL {
                kept.drain(..kept.len() - OUTPUT_TAIL);
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&kept).into_owned());
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_reports_its_output_failure_or_overrun() {
        let ok = run(
            "echo drained $ENTENTE_NODE $ENTENTE_EPOCH",
            7,
            3,
            Duration::from_secs(5),
        );
        assert_eq!(ok.unwrap(), "drained 7 3");
        let failed = run("echo busy >&2; exit 4", 7, 3, Duration::from_secs(5)).unwrap_err();
        assert!(failed.contains("busy") && failed.contains('4'), "{failed}");
        let slow = run("sleep 5", 7, 3, Duration::from_millis(200)).unwrap_err();
        assert!(slow.contains("killed"), "{slow}");
        // A job left in the background holds the pipes: the drain still ends on time.
        let started = Instant::now();
        let bg = run("sleep 5 & echo started", 7, 3, Duration::from_millis(500)).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(bg.contains("started") || bg.contains("background"), "{bg}");
    }
}
