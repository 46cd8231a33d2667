//! Host packages the lab needs: QEMU, a static busybox for the guest, kmod (depmod), cpio, and
//! what builds netdevsim out of tree (make, the kernel's compiler, patch, xz).

use super::bounded;
use anyhow::{bail, Result};
use std::process::Command;
use std::time::Duration;

/// Debian packages of the host side.
pub const HOST: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "cpio",
    "make",
    "gcc-12",
    "patch",
    "xz-utils",
];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Checks the host packages and installs the missing ones (as root; otherwise says how).
pub fn ensure() -> Result<()> {
    let missing: Vec<&str> = HOST.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing host packages: {}; run the lab as root, or install them first: \
             sudo apt-get install --no-install-recommends {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    eprintln!("installing {}", missing.join(" "));
    let limit = Duration::from_secs(600);
    bounded(Command::new("apt-get").args(["update", "-qq"]), limit, true)?;
    bounded(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        limit,
        true,
    )?;
    Ok(())
}
