//! The guest's initramfs: a static busybox, the kernel modules for virtio and rxe (in
//! `modules.dep` order: there is no modprobe in the guest), rdma-core's tools and provider, the
//! project's binaries with their shared libraries (found with `ldd`), and the init script that
//! runs the plan's steps and reports over `/dev/ttyS1`.

use super::bounded;
use super::cache::Sysroot;
use super::scenarios::Plan;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Modules the guest loads (with their dependencies). `crc32_generic` is asked for by rxe
/// through the crypto API, which nothing else loads without modprobe.
const MODULES: &[&str] = &[
    "virtio_net",
    "virtio_pci",
    "crc32_generic",
    "rdma_rxe",
    "rdma_ucm",
    "psample", // netdevsim (scenario C) needs it
];

/// Tools from the downloaded packages: (path in the package, path in the guest).
const TOOLS: &[(&str, &str)] = &[
    ("usr/bin/rdma", "/usr/sbin/rdma"),
    ("usr/bin/ibv_devinfo", "/usr/bin/ibv_devinfo"),
    ("usr/bin/ibv_rc_pingpong", "/usr/bin/ibv_rc_pingpong"),
    ("usr/bin/ib_send_lat", "/usr/bin/ib_send_lat"),
    ("usr/bin/ib_write_bw", "/usr/bin/ib_write_bw"),
    ("sbin/devlink", "/usr/sbin/devlink"),
];

/// The init script (PID 1).
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
stty -F /dev/ttyS1 115200 raw -echo 2>/dev/null
exec 3>/dev/ttyS1
. /lab/lib.sh
info kernel "$(uname -r)"
while read -r name t kind; do
    if ! step "$name" "$t" && [ "$kind" = setup ]; then
        break
    fi
done < /lab/plan
say done
sync
poweroff -f
"#;

/// Functions for the steps (sourced by init and by every step).
const LIB: &str = r#"# The lab's guest functions. fd 3 is the result channel (/dev/ttyS1).
say() { echo "@@$*" >&3; }
info() { say "info $1 $2"; }

# step NAME TIMEOUT: runs /lab/steps/NAME.sh, ships its output and exit status.
step() {
    n=$1; t=$2
    say "step $n $t"
    echo "== step $n (timeout ${t}s)"
    timeout "$t" sh -c ". /lab/lib.sh; . /lab/steps/$n.sh" </dev/null >/tmp/step.out 2>&1
    rc=$?
    cat /tmp/step.out
    sed "s/^/@@out $n /" /tmp/step.out >&3
    say "end $n $rc"
    return $rc
}

# gid_index DEV: the index of DEV's RoCE v2 GID for its IPv4 address (into /tmp/gid).
gid_index() {
    p=/sys/class/infiniband/$1/ports/1
    for try in 1 2 3 4 5 6 7 8 9 10; do
        for g in $p/gids/*; do
            i=${g##*/}
            case "$(cat $g)" in
            0000:0000:0000:0000:0000:ffff:*)
                if [ "$(cat $p/gid_attrs/types/$i 2>/dev/null)" = "RoCE v2" ]; then
                    echo $i >/tmp/gid
                    info gid_index $i
                    return 0
                fi
                ;;
            esac
        done
        sleep 0.5
    done
    echo "no RoCE v2 IPv4 GID on $1"
    return 1
}

# listening PORT: a TCP socket listens on PORT (the rdma-core tools exchange QP numbers on one).
listening() {
    grep -qiE ":$(printf %04X $1) [0:]+ 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# once_more CMD...: runs CMD; if it fails, shows its output behind "| " and runs it once more
# (for measurements: TCG's timing swings can make one fail now and then).
once_more() {
    "$@" >/tmp/try1.out 2>&1 && { cat /tmp/try1.out; return 0; }
    echo "attempt 1 failed (exit $?); its output:"
    sed 's/^/| /' /tmp/try1.out
    echo "retrying"
    sleep 1
    "$@"
}

# pair SERVER CLIENT: starts the server (on vCPU 0), waits until it listens, runs the client (on
# vCPU 1; its output is the step's), waits for the server to exit; prints the server's output if
# either failed.
pair() {
    taskset -c 0 sh -c "exec $1" >/tmp/srv.log 2>&1 &
    pid=$!
    i=0
    until grep -q "listening on" /tmp/srv.log || listening 18515; do
        i=$((i + 1))
        if [ $i -gt 300 ] || ! kill -0 $pid 2>/dev/null; then
            echo "server did not start"
            cat /tmp/srv.log
            kill $pid 2>/dev/null
            return 1
        fi
        sleep 0.1
    done
    taskset -c 1 sh -c "exec $2"
    rc=$?
    i=0
    while kill -0 $pid 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 200 ]; then
            echo "server did not exit"
            kill $pid
            break
        fi
        sleep 0.1
    done
    wait $pid
    src=$?
    if [ $rc -ne 0 ] || [ $src -ne 0 ]; then
        echo "--- server (exit $src)"
        cat /tmp/srv.log
    fi
    [ $rc -eq 0 ] && [ $src -eq 0 ]
}
"#;

/// The built image.
pub struct Image {
    /// The kernel.
    pub kernel: PathBuf,
    /// The initramfs (newc cpio).
    pub initrd: PathBuf,
}

/// Module files (relative to `lib/modules/<release>`) to load, dependencies first.
fn module_order(modules_dir: &Path) -> Result<Vec<String>> {
    let dep =
        std::fs::read_to_string(modules_dir.join("modules.dep")).context("reading modules.dep")?;
    let deps: Vec<(String, Vec<String>)> = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| {
            (
                m.to_owned(),
                d.split_whitespace().map(str::to_owned).collect(),
            )
        })
        .collect();
    fn add(m: &str, deps: &[(String, Vec<String>)], out: &mut Vec<String>) -> Result<()> {
        if out.iter().any(|o| o == m) {
            return Ok(());
        }
        let (_, ds) = deps
            .iter()
            .find(|(x, _)| x == m)
            .with_context(|| format!("{m} missing from modules.dep"))?;
        // modules.dep lists a module's dependencies so that the last loads first.
        for d in ds.iter().rev() {
            add(d, deps, out)?;
        }
        out.push(m.to_owned());
        Ok(())
    }
    let mut out = Vec::new();
    for name in MODULES {
        let file = format!("/{name}.ko");
        let m = deps
            .iter()
            .map(|(m, _)| m)
            .find(|m| m.ends_with(&file))
            .with_context(|| format!("the kernel has no module {name}"))?;
        add(m, &deps, &mut out)?;
    }
    Ok(out)
}

/// Copies `src` to `root/dst`, making its directory.
fn put(root: &Path, src: &Path, dst: &str) -> Result<()> {
    let to = root.join(dst.trim_start_matches('/'));
    std::fs::create_dir_all(to.parent().expect("absolute guest path"))?;
    std::fs::copy(src, &to)
        .with_context(|| format!("copying {} to {}", src.display(), to.display()))?;
    Ok(())
}

fn write(root: &Path, dst: &str, text: &str, exec: bool) -> Result<()> {
    let to = root.join(dst.trim_start_matches('/'));
    std::fs::create_dir_all(to.parent().expect("absolute guest path"))?;
    std::fs::write(&to, text)?;
    if exec {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// The shared libraries `exe` loads, resolved in the packages first, then on the host:
/// (guest path, host file).
fn libraries(exe: &Path, sys: &Sysroot) -> Result<Vec<(String, PathBuf)>> {
    let path = std::env::join_paths(sys.lib_dirs())?;
    let out = bounded(
        Command::new("ldd").arg(exe).env("LD_LIBRARY_PATH", path),
        Duration::from_secs(30),
        false,
    )?;
    let mut libs = Vec::new();
    for l in out.lines().map(str::trim) {
        if l.contains("not found") {
            bail!("{}: {l}", exe.display());
        }
        if let Some((name, rest)) = l.split_once(" => ") {
            let file = rest.split_whitespace().next().unwrap_or("");
            if file.starts_with('/') {
                libs.push((format!("/lib/x86_64-linux-gnu/{name}"), PathBuf::from(file)));
            }
        } else if l.starts_with('/') {
            let file = l.split_whitespace().next().unwrap_or("");
            libs.push((file.to_owned(), PathBuf::from(file))); // the dynamic loader
        }
    }
    Ok(libs)
}

/// Builds the initramfs for `plan` under `run`.
pub fn build(run: &Path, sys: &Sysroot, plan: &Plan) -> Result<Image> {
    let root = run.join("root");
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    put(&root, Path::new("/bin/busybox"), "/bin/busybox")?;
    write(&root, "/init", INIT, true)?;
    write(&root, "/lab/lib.sh", LIB, false)?;

    let modules = module_order(&sys.modules())?;
    for m in &modules {
        put(&root, &sys.modules().join(m), &format!("/lib/modules/{m}"))?;
    }
    write(&root, "/lab/modules", &(modules.join("\n") + "\n"), false)?;

    // (host file, guest path, ours: built here, with debug info the guest does not need)
    let mut executables: Vec<(PathBuf, String, bool)> = Vec::new();
    for (src, dst) in TOOLS {
        executables.push((sys.find(src)?, (*dst).to_owned(), false));
    }
    for f in plan.scenarios.iter().flat_map(|s| s.files.iter()) {
        executables.push((f.src.clone(), f.dst.clone(), true));
    }
    let mut libs: BTreeSet<(String, PathBuf)> = BTreeSet::new();
    for (src, dst, ours) in &executables {
        put(&root, src, dst)?;
        if *ours {
            let _ = Command::new("strip")
                .arg("--strip-debug")
                .arg(root.join(dst.trim_start_matches('/')))
                .status();
        }
        libs.extend(libraries(src, sys)?);
    }
    // pthread_exit dlopens libgcc_s; the rxe provider is dlopened by libibverbs.
    libs.insert((
        "/lib/x86_64-linux-gnu/libgcc_s.so.1".into(),
        "/lib/x86_64-linux-gnu/libgcc_s.so.1".into(),
    ));
    let providers = sys.find("usr/lib/x86_64-linux-gnu/libibverbs")?;
    for e in std::fs::read_dir(&providers)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("librxe-") {
            let dst = format!("/usr/lib/x86_64-linux-gnu/libibverbs/{name}");
            libs.extend(libraries(&e.path(), sys)?);
            libs.insert((dst, e.path()));
        }
    }
    put(
        &root,
        &sys.find("etc/libibverbs.d/rxe.driver")?,
        "/etc/libibverbs.d/rxe.driver",
    )?;
    for (dst, src) in &libs {
        put(&root, src, dst)?;
    }
    for f in plan.scenarios.iter().flat_map(|s| s.data.iter()) {
        put(&root, &f.src, &f.dst)?;
    }

    let mut plan_file = String::new();
    for s in &plan.setup {
        let _ = writeln!(plan_file, "{} {} setup", s.name, s.timeout_s);
    }
    for sc in &plan.scenarios {
        for s in &sc.steps {
            let _ = writeln!(plan_file, "{} {} {}", s.name, s.timeout_s, sc.name);
        }
    }
    write(&root, "/lab/plan", &plan_file, false)?;
    for s in plan.steps() {
        write(
            &root,
            &format!("/lab/steps/{}.sh", s.name),
            &(s.script.clone() + "\n"),
            false,
        )?;
    }

    let initrd = run.join("initrd");
    bounded(
        Command::new("sh")
            .arg("-c")
            .arg("find . | cpio -o -H newc --quiet > \"$0\"")
            .arg(&initrd)
            .current_dir(&root),
        Duration::from_secs(120),
        false,
    )?;
    let kernel = sys
        .kernel_tree
        .join("boot")
        .join(format!("vmlinuz-{}", sys.kernel));
    anyhow::ensure!(kernel.exists(), "no {}", kernel.display());
    Ok(Image { kernel, initrd })
}
