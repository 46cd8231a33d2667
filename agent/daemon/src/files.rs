//! Files the agent trusts are checked before it uses them: a key directory or key file that
//! someone else may write would let that someone sign campaigns or join the cluster, and a
//! control-socket directory someone else may write would let them put a socket of their own
//! where operators send requests. The data directory is made private whatever the umask.

use crate::config::Config;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The users trusted to own what the agent trusts: root and the agent's own user.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// Problems with one path: not owned by root or the agent's user, or writable by group or
/// others (`writable_mask` 0o022), or by others only (0o002, for a directory a group shares).
fn check(path: &Path, what: &str, writable_mask: u32, problems: &mut Vec<String>) {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return problems.push(format!("{what} {}: {e}", path.display())),
    };
    if meta.file_type().is_symlink() {
        // Followed once for its target's checks; a link is only as safe as what it names.
        if let Ok(target) = std::fs::canonicalize(path) {
            check(&target, what, writable_mask, problems);
        }
        return;
    }
    if !trusted_owner(meta.uid()) {
        problems.push(format!(
            "{what} {} is owned by uid {}, not by root or the agent's user: chown it",
            path.display(),
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & writable_mask != 0 {
        problems.push(format!(
            "{what} {} is writable by {} (mode {mode:04o}): chmod {} it",
            path.display(),
            if writable_mask & 0o020 != 0 && mode & 0o020 != 0 {
                "its group"
            } else {
                "other users"
            },
            if writable_mask & 0o020 != 0 {
                "go-w"
            } else {
                "o-w"
            }
        ));
    }
}

/// Checks what the configuration points at that the agent trusts: the cluster key, the trusted
/// key directory and every `*.pub` in it, the hw-profile directory, and the control socket's
/// directory. Returns every problem found, each naming the path and what to do.
pub fn check_trusted(cfg: &Config) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    check(&cfg.cluster_key, "cluster key", 0o022, &mut problems);
    check(
        &cfg.trusted_keys,
        "trusted key directory",
        0o022,
        &mut problems,
    );
    if let Ok(dir) = std::fs::read_dir(&cfg.trusted_keys) {
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pub") {
                check(&p, "trusted key", 0o022, &mut problems);
            }
        }
    }
    if let Some(dir) = &cfg.trusted_operator_keys {
        check(dir, "trusted operator key directory", 0o022, &mut problems);
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "pub") {
                    check(&p, "trusted operator key", 0o022, &mut problems);
                }
            }
        }
    }
    check(&cfg.profiles, "hw-profile directory", 0o022, &mut problems);
    if let Some(dir) = cfg.control_socket.parent() {
        if dir.exists() {
            // The read or admin group may share it; nobody else may write there.
            check(dir, "control socket directory", 0o002, &mut problems);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Makes the data directory private to the agent (0700), whatever the umask it was created
/// under: state, history, manifests and images are nobody else's to read.
pub fn make_private(dir: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_others_may_write_is_named_with_what_to_do() {
        let dir = std::env::temp_dir().join(format!("entente-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut problems = Vec::new();
        check(&dir, "trusted key directory", 0o022, &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("writable") && problems[0].contains("go-w"));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        problems.clear();
        check(&dir, "trusted key directory", 0o022, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
