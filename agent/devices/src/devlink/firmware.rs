//! Where an image waits while devlink flashes it: devlink takes a file name relative to
//! `/lib/firmware` (the kernel's firmware loader reads it), so the verified image is written to
//! `<dir>/<sha256>.bin` under that root, checked, and removed when the flash is over, whether it
//! succeeded or not.
//!
//! The directory is the agent's: created private (0700) if missing, refused if it is a symlink,
//! owned by another user or writable by others. The file is created afresh with `O_CREAT |
//! O_EXCL | O_NOFOLLOW` (a stale one, or a symlink planted at the predictable name, is unlinked
//! first, never followed), so nothing is ever written through a name someone else chose.

use crate::device::{hex, DeviceError, ImageInfo};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Bytes copied between reads.
const CHUNK: usize = 256 * 1024;

/// An image placed for the kernel's firmware loader; the file is removed on drop.
#[derive(Debug)]
pub struct PlacedImage {
    path: PathBuf,
    name: String,
}

impl PlacedImage {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name devlink is given: the path relative to the firmware root.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PlacedImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The name of `dir` relative to `root`, as the kernel's firmware loader wants it.
pub fn relative_name(root: &Path, dir: &Path) -> Result<PathBuf, String> {
    let rel = dir.strip_prefix(root).map_err(|_| {
        format!(
            "firmware directory {} is not under the firmware root {} (the kernel only loads \
             files under it)",
            dir.display(),
            root.display()
        )
    })?;
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!(
            "firmware directory {} must be a plain path under {}",
            dir.display(),
            root.display()
        ));
    }
    Ok(rel.to_path_buf())
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DeviceError {
    let path = path.to_path_buf();
    move |source| DeviceError::Io { what, path, source }
}

/// Creates `dir` private if missing (its parents as usual); refuses one that is a symlink, is
/// owned by another user, or others may write.
fn private_dir(dir: &Path) -> Result<(), DeviceError> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(io("creating", dir)(e));
        }
        _ => {}
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io("reading", dir))?;
    let bad = |reason: String| DeviceError::BadState {
        path: dir.to_path_buf(),
        reason,
    };
    if !meta.is_dir() {
        return Err(bad(
            "the firmware directory is not a directory (a symlink?)".into(),
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(bad(format!(
            "the firmware directory is owned by uid {}, not by the agent (uid {me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(bad(format!(
            "the firmware directory is writable by others (mode {:o}): make it 0700",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Copies exactly `info.len` bytes of `image` to `<root>/<dir>/<sha256>.bin`, checking its
/// length and digest; on any error nothing is left behind.
pub fn place(
    root: &Path,
    dir: &Path,
    component: &str,
    info: &ImageInfo,
    image: &mut dyn Read,
) -> Result<PlacedImage, DeviceError> {
    let rel = relative_name(root, dir).map_err(|reason| DeviceError::BadState {
        path: dir.to_path_buf(),
        reason,
    })?;
    private_dir(dir)?;
    let file_name = format!("{}.bin", hex(&info.sha256));
    let placed = PlacedImage {
        path: dir.join(&file_name),
        name: rel.join(&file_name).to_string_lossy().into_owned(),
    };
    let path = placed.path.clone();
    // A leftover of an earlier flash, or a name someone planted: unlinked, never followed.
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("removing the stale", &path)(e));
        }
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io("creating", &path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let n = match image.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("reading the image for", &path)(e)),
        };
        if n == 0 {
            break;
        }
        done += n as u64;
        if done > info.len {
            return Err(DeviceError::LongImage {
                component: component.into(),
                expected: info.len,
            });
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(io("writing", &path))?;
    }
    if done < info.len {
        return Err(DeviceError::ShortImage {
            component: component.into(),
            expected: info.len,
            got: done,
        });
    }
    let actual = hex(&hasher.finalize());
    let expected = hex(&info.sha256);
    if actual != expected {
        return Err(DeviceError::DigestMismatch {
            component: component.into(),
            expected,
            actual,
        });
    }
    file.sync_all().map_err(io("syncing", &path))?;
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(bytes: &[u8]) -> ImageInfo {
        ImageInfo {
            version: "1.0".into(),
            len: bytes.len() as u64,
            sha256: Sha256::digest(bytes).into(),
        }
    }

    #[test]
    fn a_verified_image_is_named_relative_to_the_root_and_removed_on_drop() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("entente");
        let bytes = b"netdevsim-fw 10.21.0\nimage body".to_vec();
        let placed = place(root.path(), &dir, "fw", &info(&bytes), &mut &bytes[..]).unwrap();
        let want = format!("entente/{}.bin", hex(&Sha256::digest(&bytes)));
        assert_eq!(placed.name(), want);
        assert_eq!(std::fs::read(placed.path()).unwrap(), bytes);
        let path = placed.path().to_path_buf();
        drop(placed);
        assert!(!path.exists());
    }

    #[test]
    fn a_wrong_image_leaves_no_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("entente");
        let bytes = b"the real image".to_vec();
        let i = info(&bytes);
        let e = place(root.path(), &dir, "fw", &i, &mut &b"another image!"[..]).unwrap_err();
        assert!(matches!(e, DeviceError::DigestMismatch { .. }), "{e}");
        let e = place(root.path(), &dir, "fw", &i, &mut &b"short"[..]).unwrap_err();
        assert!(matches!(e, DeviceError::ShortImage { got: 5, .. }), "{e}");
        let long = [bytes.clone(), b"+".to_vec()].concat();
        let e = place(root.path(), &dir, "fw", &i, &mut &long[..]).unwrap_err();
        assert!(matches!(e, DeviceError::LongImage { .. }), "{e}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn hostile_firmware_symlink() {
        // Another user plants a symlink at the predictable name: the image is not written
        // through it, the file it points to is untouched, and the error names the path.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("entente");
        std::fs::create_dir(&dir).unwrap();
        let victim = root.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let bytes = b"the real image".to_vec();
        let i = info(&bytes);
        let name = dir.join(format!("{}.bin", hex(&i.sha256)));
        std::os::unix::fs::symlink(&victim, &name).unwrap();
        let placed = place(root.path(), &dir, "fw", &i, &mut &bytes[..]);
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        if let Ok(p) = &placed {
            let meta = std::fs::symlink_metadata(p.path()).unwrap();
            assert!(meta.file_type().is_file(), "written through a symlink");
        }
    }

    #[test]
    fn a_firmware_directory_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("entente");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let bytes = b"the real image".to_vec();
        let e = place(root.path(), &dir, "fw", &info(&bytes), &mut &bytes[..]).unwrap_err();
        assert!(e.to_string().contains("writable by others"), "{e}");
        // A directory it creates itself is private.
        let fresh = root.path().join("fresh");
        let p = place(root.path(), &fresh, "fw", &info(&bytes), &mut &bytes[..]).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        drop(p);
    }

    #[test]
    fn the_directory_must_be_under_the_root() {
        let e = relative_name(Path::new("/lib/firmware"), Path::new("/tmp/fw")).unwrap_err();
        assert!(e.contains("not under the firmware root"), "{e}");
        let e =
            relative_name(Path::new("/lib/firmware"), Path::new("/lib/firmware/../x")).unwrap_err();
        assert!(e.contains("plain path"), "{e}");
        assert_eq!(
            relative_name(
                Path::new("/lib/firmware"),
                Path::new("/lib/firmware/entente")
            )
            .unwrap(),
            PathBuf::from("entente")
        );
    }
}
