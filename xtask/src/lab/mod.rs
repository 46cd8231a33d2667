//! `cargo xtask lab [--keep] [--json FILE] [--no-campaign] [--no-devlink] [--only STEP]`: the
//! lab. Boots the current Debian bookworm kernel under QEMU (TCG: no KVM, no RDMA on the host),
//! creates a soft-RoCE device (`rxe0`) and runs the scenarios against it with the project's
//! binaries built on the host.
//!
//! Steps, each bounded by a timeout; a failure names its step and keeps the console log:
//! 1. host packages (`packages.rs`), 2. downloads of the kernel, rdma-core and perftest into a
//!    cache (`cache.rs`), 3. the test binaries (`binaries.rs`), 4. netdevsim for scenario C,
//!    built out of tree and cached (`netdevsim.rs`), 5. the initramfs (`initramfs.rs`), 6. the
//!    VM: boot, rxe0, the scenarios' guest steps, power-off (`vm.rs`), 7. the report
//!    (`report.rs`), and each scenario's verdict on it.
//!
//! Scenarios: A `fastpath` (`scenarios.rs`), B `campaign` (`campaign.rs`), C `devlink`
//! (`devlink.rs`); `--no-campaign` and `--no-devlink` leave B and C out, `--only PREFIX` keeps the
//! steps whose name starts with PREFIX (a scenario left without steps is dropped).
//!
//! Results come back over a second serial port (guest `/dev/ttyS1`, QEMU's stdout): one line per
//! event (`@@step`, `@@out`, `@@end`, `@@info`, `@@done`), so the kernel's messages on the
//! console never mix with them. Scenarios (`scenarios.rs`) are guest steps plus a parser of
//! their output.

mod binaries;
mod cache;
mod campaign;
mod devlink;
mod initramfs;
mod netdevsim;
mod packages;
mod report;
mod scenarios;
mod vm;

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Command-line options.
struct Options {
    /// Keep the initramfs tree and image after a successful run.
    keep: bool,
    /// Where to write the JSON report.
    json: Option<PathBuf>,
    /// Rounds of each measurement.
    rounds: u32,
    /// Only the scenario steps whose name starts with this (debugging one step).
    only: String,
    /// Run scenario B, the agents on RDMA (on by default; `--no-campaign` skips it).
    campaign: bool,
    /// Run scenario C, the agents on netdevsim through devlink (on by default; `--no-devlink`
    /// skips it).
    devlink: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            keep: false,
            json: None,
            rounds: scenarios::ROUNDS,
            only: String::new(),
            campaign: true,
            devlink: true,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--keep" => o.keep = true,
                "--json" => o.json = Some(it.next().context("--json needs a file")?.into()),
                "--rounds" => o.rounds = it.next().context("--rounds needs a number")?.parse()?,
                "--only" => o.only = it.next().context("--only needs a step prefix")?.clone(),
                "--campaign" => o.campaign = true,
                "--no-campaign" => o.campaign = false,
                "--no-devlink" => o.devlink = false,
                _ => bail!(
                    "usage: cargo xtask lab [--keep] [--json FILE] [--rounds N] [--only STEP] [--no-campaign] \
                     [--no-devlink] (unknown {a:?})"
                ),
            }
        }
        Ok(o)
    }
}

/// Where the lab keeps its files: `<target>/lab/` (the cache survives runs).
pub struct Dirs {
    /// Downloaded packages and their unpacked trees.
    pub cache: PathBuf,
    /// This run's files: the initramfs tree, the image, the console log.
    pub run: PathBuf,
}

impl Dirs {
    fn new() -> Result<Dirs> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::root().join("target"));
        let target = if target.is_absolute() {
            target
        } else {
            crate::root().join(target)
        };
        let lab = target.join("lab");
        let d = Dirs {
            cache: lab.join("cache"),
            run: lab.join("run"),
        };
        std::fs::create_dir_all(&d.cache)?;
        if d.run.exists() {
            std::fs::remove_dir_all(&d.run).context("clearing the previous run")?;
        }
        std::fs::create_dir_all(&d.run)?;
        Ok(d)
    }

    /// The guest's console (kernel messages, the init script's progress).
    pub fn console(&self) -> PathBuf {
        self.run.join("console.log")
    }
}

/// The steps run so far with their durations (for the report).
#[derive(Default)]
pub struct Steps {
    /// (name, seconds).
    pub done: Vec<(String, f64)>,
}

impl Steps {
    /// Runs one step; its error names it.
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        eprintln!("== lab: {name}");
        let t = Instant::now();
        let out = f().with_context(|| format!("lab step `{name}` failed"))?;
        self.done.push((name.to_owned(), t.elapsed().as_secs_f64()));
        Ok(out)
    }
}

/// Runs `cmd` to completion within `limit` (killed after it), capturing stdout (stderr too
/// unless `show_stderr`, which passes it through); fails on a non-zero exit, with the output.
pub fn bounded(cmd: &mut Command, limit: Duration, show_stderr: bool) -> Result<String> {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    cmd.stderr(if show_stderr {
        Stdio::inherit()
    } else {
        Stdio::piped()
    });
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let mut out = child.stdout.take().expect("piped");
    let err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(mut e) = err {
            let _ = e.read_to_end(&mut s);
        }
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {}s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let err = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    if !status.success() {
        let tail: String = {
            let t = format!("{out}{err}");
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        bail!("{what} failed with {status}:\n{tail}");
    }
    Ok(out)
}

/// `cargo xtask lab`.
pub fn run(args: &[String]) -> Result<()> {
    let opts = Options::parse(args)?;
    let started = Instant::now();
    let dirs = Dirs::new()?;
    let mut steps = Steps::default();
    let result = lab(&dirs, &mut steps, &opts, started);
    if let Err(e) = &result {
        eprintln!("lab failed: {e:#}");
        eprintln!("console log kept: {}", dirs.console().display());
    } else if !opts.keep {
        let _ = std::fs::remove_dir_all(dirs.run.join("root"));
        let _ = std::fs::remove_file(dirs.run.join("initrd"));
    }
    result
}

fn lab(dirs: &Dirs, steps: &mut Steps, opts: &Options, started: Instant) -> Result<()> {
    steps.run("host packages", packages::ensure)?;
    let pkgs = steps.run("download", || cache::download(&dirs.cache))?;
    let sys = steps.run("unpack", || cache::unpack(&dirs.cache, &pkgs))?;
    let bins = steps.run("build", binaries::build)?;
    let campaign = opts.campaign || opts.only.starts_with("campaign");
    let netdevsim = if opts.devlink || opts.only.starts_with("devlink") {
        Some(steps.run("netdevsim", || netdevsim::build(&dirs.cache, &pkgs))?)
    } else {
        None
    };
    let plan = scenarios::plan(&bins, opts.rounds, &opts.only, campaign, netdevsim.as_ref());
    let image = steps.run("initramfs", || initramfs::build(&dirs.run, &sys, &plan))?;
    let guest = steps.run("vm", || vm::boot(dirs, &image, &plan))?;
    let failed = guest.first_failure();
    let report = report::build(&pkgs, &guest, &plan, steps, started)?;
    eprintln!("{}", report::summary(&report));
    if let Some(path) = &opts.json {
        write_json(path, &report)?;
    }
    if let Some((step, why)) = failed {
        bail!("lab step `vm: {step}` failed: {why}");
    }
    if let Some(fields) = report.as_object() {
        for sc in &plan.scenarios {
            if let Some(why) = (sc.check)(fields) {
                bail!("lab scenario `{}` failed: {why}", sc.name);
            }
        }
    }
    Ok(())
}

fn write_json(path: &Path, report: &serde_json::Value) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("report written to {}", path.display());
    Ok(())
}
