//! The guest's Debian packages: the current bookworm kernel, rdma-core userspace, iproute2's
//! `rdma` and perftest. Versions are what apt offers today (`apt-cache`), never written down
//! here; each `.deb` is downloaded once into the cache and unpacked once beside it.

use super::bounded;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Userspace packages of the guest (with the kernel image found at run time).
pub const GUEST: &[&str] = &[
    "libibverbs1",
    "ibverbs-providers",
    "ibverbs-utils",
    "librdmacm1",
    "libnl-3-200",
    "libnl-route-3-200",
    "iproute2",
    "perftest",
    "libibumad3",
    "libpci3",
];

/// A downloaded package.
pub struct Deb {
    /// Package name.
    pub name: String,
    /// Version (as apt spells it).
    pub version: String,
    /// The `.deb` in the cache.
    pub path: PathBuf,
}

/// What was downloaded.
pub struct Packages {
    /// Kernel release, e.g. `6.1.0-56-amd64`.
    pub kernel: String,
    /// Every package, the kernel image first.
    pub debs: Vec<Deb>,
}

impl Packages {
    /// The version of package `name`.
    pub fn version(&self, name: &str) -> Option<&str> {
        self.debs
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.version.as_str())
    }
}

/// The unpacked packages.
pub struct Sysroot {
    /// Kernel release.
    pub kernel: String,
    /// The kernel package's tree (`boot/vmlinuz-*`, `lib/modules/*` with `modules.dep`).
    pub kernel_tree: PathBuf,
    /// Every package's tree.
    pub trees: Vec<PathBuf>,
}

impl Sysroot {
    /// The first tree holding `rel` (a path such as `usr/bin/rdma`).
    pub fn find(&self, rel: &str) -> Result<PathBuf> {
        self.trees
            .iter()
            .map(|t| t.join(rel))
            .find(|p| p.exists())
            .with_context(|| format!("{rel} is in none of the downloaded packages"))
    }

    /// Library directories of the unpacked packages (searched before the host's).
    pub fn lib_dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for t in &self.trees {
            for d in ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"] {
                if t.join(d).is_dir() {
                    out.push(t.join(d));
                }
            }
        }
        out
    }

    /// `lib/modules/<release>` of the kernel.
    pub fn modules(&self) -> PathBuf {
        self.kernel_tree.join("lib/modules").join(&self.kernel)
    }
}

fn apt(args: &[&str]) -> Result<String> {
    bounded(
        Command::new("apt-cache").args(args),
        Duration::from_secs(60),
        false,
    )
}

/// The kernel image package `linux-image-amd64` points at today.
fn kernel_package() -> Result<String> {
    let deps = apt(&["depends", "linux-image-amd64"])?;
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .map(str::to_owned)
        .context("apt-cache depends linux-image-amd64 names no kernel image")
}

/// Version and architecture apt would download for `pkg`.
fn candidate(pkg: &str) -> Result<(String, String)> {
    let show = apt(&["show", "--no-all-versions", pkg])?;
    let field = |f: &str| {
        show.lines()
            .find_map(|l| l.strip_prefix(f))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("apt-cache show {pkg}: no {f}"))
    };
    Ok((field("Version:")?, field("Architecture:")?))
}

/// Downloads (once) the kernel image and the guest packages into `cache`.
pub fn download(cache: &Path) -> Result<Packages> {
    let kernel_pkg = match kernel_package() {
        Ok(k) => k,
        Err(_) => {
            // A fresh machine may have no package lists yet.
            bounded(
                Command::new("apt-get").args(["update", "-qq"]),
                Duration::from_secs(300),
                true,
            )
            .context("apt-get update (the package lists are missing; run as root)")?;
            kernel_package()?
        }
    };
    let kernel = kernel_pkg
        .strip_prefix("linux-image-")
        .expect("checked")
        .to_owned();
    let names: Vec<&str> = std::iter::once(kernel_pkg.as_str())
        .chain(GUEST.iter().copied())
        .collect();
    let debs = fetch(cache, &names)?;
    Ok(Packages { kernel, debs })
}

/// Downloads (once) the packages `names` into `cache`, at the versions apt offers today.
pub fn fetch(cache: &Path, names: &[&str]) -> Result<Vec<Deb>> {
    let mut debs = Vec::new();
    let mut missing = Vec::new();
    for &name in names {
        let (version, arch) = candidate(name)?;
        let file = format!("{name}_{}_{arch}.deb", version.replace(':', "%3a"));
        let path = cache.join(file);
        if !path.exists() {
            missing.push(name);
        }
        debs.push(Deb {
            name: name.to_owned(),
            version,
            path,
        });
    }
    if !missing.is_empty() {
        eprintln!("downloading {}", missing.join(" "));
        bounded(
            Command::new("apt-get")
                .arg("download")
                .args(&missing)
                .current_dir(cache),
            Duration::from_secs(600),
            false,
        )?;
    }
    for d in &debs {
        if !d.path.exists() {
            bail!(
                "apt-get download did not leave {} (is the cache writable?)",
                d.path.display()
            );
        }
    }
    Ok(debs)
}

/// Unpacks every package (once) next to the cache; generates the kernel's `modules.dep`.
pub fn unpack(cache: &Path, pkgs: &Packages) -> Result<Sysroot> {
    let mut trees = Vec::new();
    for (i, d) in pkgs.debs.iter().enumerate() {
        let stem = d.path.file_stem().expect("a .deb file").to_owned();
        let tree = cache.join("unpacked").join(stem);
        if !tree.join(".done").exists() {
            if tree.exists() {
                std::fs::remove_dir_all(&tree)?;
            }
            std::fs::create_dir_all(&tree)?;
            bounded(
                Command::new("dpkg-deb").arg("-x").arg(&d.path).arg(&tree),
                Duration::from_secs(300),
                false,
            )?;
            if i == 0 {
                // The kernel package ships no modules.dep.
                bounded(
                    Command::new("depmod")
                        .arg("-b")
                        .arg(&tree)
                        .arg(&pkgs.kernel),
                    Duration::from_secs(120),
                    false,
                )?;
            }
            std::fs::write(tree.join(".done"), "")?;
        }
        trees.push(tree);
    }
    Ok(Sysroot {
        kernel: pkgs.kernel.clone(),
        kernel_tree: trees[0].clone(),
        trees,
    })
}
