//! netdevsim for the guest's kernel, built out of tree: Debian's kernel is built without it.
//!
//! `drivers/net/netdevsim` comes from Debian's `linux-source-<major.minor>` and is built against
//! the guest kernel's `linux-headers-<release>` (with its `-common` part and `linux-kbuild`), all
//! downloaded into the lab cache. Before the build, `lab/netdevsim/connectx-like.patch` is
//! applied with `patch`: it makes netdevsim behave like a ConnectX (`fw_activate` with and
//! without `limit no_reset`, the flashed version stored, `fw_update_fail_at` in debugfs) and adds
//! the runtime u32 devlink parameter `entente_link_epoch` that holds the link epoch. The
//! module is cached under a name that holds the kernel release and the patch's digest, so a run
//! builds it only when one of them changed.

use super::bounded;
use super::cache::{fetch, Packages};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The project's patch to the module, relative to the repository root.
pub const PATCH: &str = "lab/netdevsim/connectx-like.patch";

/// The built module.
pub struct Netdevsim {
    /// `netdevsim.ko`.
    pub module: PathBuf,
    /// The `linux-source` package version it was built from.
    pub source_version: String,
    /// The first 12 hex digits of the patch's sha256.
    pub patch_digest: String,
}

fn sha256_hex(path: &Path) -> Result<String> {
    let out = bounded(
        Command::new("sha256sum").arg(path),
        Duration::from_secs(30),
        false,
    )?;
    Ok(out.split_whitespace().next().unwrap_or("").to_owned())
}

/// Unpacks `deb` into `root` (once per package file).
fn unpack_into(deb: &Path, root: &Path) -> Result<()> {
    let stamp = root.join(format!(
        ".unpacked-{}",
        deb.file_name().expect("a .deb").to_string_lossy()
    ));
    if stamp.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(root)?;
    bounded(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(root),
        Duration::from_secs(300),
        false,
    )?;
    std::fs::write(stamp, "")?;
    Ok(())
}

/// Builds (or finds in the cache) netdevsim for the kernel of `pkgs`.
pub fn build(cache: &Path, pkgs: &Packages) -> Result<Netdevsim> {
    let release = &pkgs.kernel; // 6.1.0-56-amd64
    let abi = release
        .strip_suffix("-amd64")
        .context("the guest kernel is not an amd64 flavour")?; // 6.1.0-56
    let series: String = abi.split('.').take(2).collect::<Vec<_>>().join("."); // 6.1
    let source_pkg = format!("linux-source-{series}");
    let names = [
        source_pkg.clone(),
        format!("linux-headers-{release}"),
        format!("linux-headers-{abi}-common"),
        format!("linux-kbuild-{series}"),
    ];
    let debs = fetch(cache, &names.iter().map(String::as_str).collect::<Vec<_>>())?;
    let source_version = debs[0].version.clone();
    let patch = crate::root().join(PATCH);
    let patch_digest: String = sha256_hex(&patch)?.chars().take(12).collect();
    let dir = cache
        .join("netdevsim")
        .join(format!("{release}-{source_version}-{patch_digest}"));
    let module = dir.join("src/netdevsim.ko");
    if module.exists() {
        return Ok(Netdevsim {
            module,
            source_version,
            patch_digest,
        });
    }
    let root = cache.join("netdevsim").join(format!("headers-{release}"));
    for d in &debs[1..] {
        unpack_into(&d.path, &root)?;
    }
    // The flavour's Makefile includes the common one by its installed path: point it at ours.
    let headers = root.join(format!("usr/src/linux-headers-{release}"));
    let common = root.join(format!("usr/src/linux-headers-{abi}-common/Makefile"));
    let makefile = headers.join("Makefile");
    let text = std::fs::read_to_string(&makefile)
        .with_context(|| format!("reading {}", makefile.display()))?;
    let rewritten: String = text
        .lines()
        .map(|l| match l.strip_prefix("include ") {
            Some(p) if p.ends_with("-common/Makefile") => format!("include {}", common.display()),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    std::fs::write(&makefile, rewritten)?;

    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let tarball = format!("usr/src/linux-source-{series}.tar.xz");
    bounded(
        Command::new("sh")
            .arg("-c")
            .arg("dpkg-deb --fsys-tarfile \"$0\" | tar -x -C \"$1\" \"./$2\"")
            .arg(&debs[0].path)
            .arg(&dir)
            .arg(&tarball),
        Duration::from_secs(300),
        false,
    )
    .context("unpacking the kernel source tarball")?;
    let inner = format!("linux-source-{series}/drivers/net/netdevsim");
    bounded(
        Command::new("tar")
            .arg("-xJf")
            .arg(dir.join(&tarball))
            .arg("-C")
            .arg(&dir)
            .arg(&inner),
        Duration::from_secs(600),
        false,
    )
    .context("extracting drivers/net/netdevsim")?;
    let src = dir.join("src");
    std::fs::rename(dir.join(&inner), &src)?;
    let _ = std::fs::remove_dir_all(dir.join(format!("linux-source-{series}")));
    let _ = std::fs::remove_dir_all(dir.join("usr"));
    bounded(
        Command::new("patch")
            .args(["-p1", "--forward", "-i"])
            .arg(&patch)
            .arg("-d")
            .arg(&src),
        Duration::from_secs(60),
        false,
    )
    .with_context(|| format!("applying {PATCH}"))?;
    bounded(
        Command::new("make")
            .arg("-C")
            .arg(&headers)
            .arg(format!("M={}", src.display()))
            .arg("CONFIG_NETDEVSIM=m")
            .arg("modules"),
        Duration::from_secs(600),
        false,
    )
    .context("building netdevsim")?;
    anyhow::ensure!(module.exists(), "the build left no {}", module.display());
    Ok(Netdevsim {
        module,
        source_version,
        patch_digest,
    })
}
