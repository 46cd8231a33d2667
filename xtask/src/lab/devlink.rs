//! Scenario C, `devlink`: NIC firmware through the kernel's devlink, on netdevsim.
//!
//! The lab's netdevsim (`netdevsim.rs`, patched to behave like a ConnectX) gets two devices,
//! `netdevsim/netdevsim1` and `netdevsim/netdevsim2`; two `entented` agents on loopback (TCP, one
//! link between them) each drive one with `[device] backend = "devlink"`. Then:
//!
//! 1. `inventory`: `entente inventory --json` lists both versions of `fw.mgmt`, running and
//!    stored, as devlink reports them (10.20.30);
//! 2. campaign epoch 1 (image version 10.21.0): each agent flashes through devlink while agent 1's
//!    status is polled for flash progress (`flash_progress`), activates with `fw_activate limit
//!    no_reset` (`activation`: the history says so and both agents converge), and the versions
//!    read back, by the agent and by iproute2's `devlink dev info`, are the manifest's
//!    (`versions`); each device's `entente_link_epoch` parameter, read back with
//!    `devlink dev param show`, equals the link epoch its agent committed (`link_epoch`);
//! 3. `flash_failure`: with debugfs `fw_update_fail_at = 50` on device 1, campaign epoch 2
//!    (10.22.0) fails to stage on agent 1 with the driver's message, and agent 1 does not
//!    activate; the device still runs and stores 10.21.0;
//! 4. `activation_failure`: with `fail_reload` set and the flash fault cleared, agent 1's retry
//!    stages 10.22.0 and its activation fails with the driver's message; agent 1 does not count
//!    as converged, and the device still runs 10.21.0.
//!
//! The report's `devlink` object has one boolean per part, `passed` (all of them), and details.

use super::binaries::Binaries;
use super::netdevsim::Netdevsim;
use super::scenarios::{step, GuestFile, Scenario};
use super::vm::Guest;
use anyhow::Result;
use entente_api::{HistoryEntry, HistoryEvent, HistoryKind};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The version netdevsim reports before any flash.
const FACTORY: &str = "10.20.30";
/// The image versions of campaigns 1 and 2.
const V1: &str = "10.21.0";
const V2: &str = "10.22.0";
/// The lab patch's devlink parameter that holds the node's lowest committed link epoch.
const LINK_EPOCH_PARAM: &str = "entente_link_epoch";
/// What the driver says when the flash fault fires, and when a reload is made to fail.
const FLASH_FAULT_MSG: &str = "Flash failed part way for testing purposes (fw_update_fail_at)";
const RELOAD_FAULT_MSG: &str = "User setup the reload to fail for testing purposes";

/// Shell functions of the steps (after `/lab/lib.sh`).
const LIB: &str = r#"D=/tmp/devlink
E=/opt/lab/entente
DL=/usr/sbin/devlink
sock() { echo $D/node$1/control.sock; }
dbg() { echo /sys/kernel/debug/netdevsim/netdevsim$1; }
start_agent() {
    ENTENTE_LOG=info /opt/lab/entented --config $D/node$1/entented.toml \
        >>$D/node$1/entented.log 2>&1 </dev/null &
    echo $! >$D/node$1/pid
}
st() { $E status --json --socket $(sock $1) >/tmp/dst.json 2>/dev/null; }
key() { sed -n "s/^  \"$1\": \([^,]*\),\{0,1\}\$/\1/p" /tmp/dst.json; }
now() { cut -d' ' -f1 /proc/uptime; }
after() { awk "BEGIN { print $(now) + $1 }"; }
past() { awk "BEGIN { exit !($(now) > $1) }"; }
answers() {
    i=0
    until st $1; do
        i=$((i + 1))
        [ $i -gt $(($2 * 10)) ] && return 1
        sleep 0.1
    done
}
logs() {
    for n in 1 2; do
        echo "--- agent $n log (last lines)"; tail -n 25 $D/node$n/entented.log
    done
}
# inv N: agent N's inventory as one line, asked again while the device has not answered yet.
inv() {
    i=0
    while :; do
        $E inventory --json --socket $(sock $1) | tr -d '\n' >/tmp/inv.json
        grep -q '"fw.mgmt"' /tmp/inv.json && break
        i=$((i + 1)); [ $i -gt 20 ] && break
        sleep 0.3
    done
    cat /tmp/inv.json
}
# report LABEL N: one line each of agent N's inventory, history and devlink's own view.
report() {
    echo "inventory_$1 $2 $(inv $2)"
    echo "history_$1 $2 $($E history --json --limit 1000 --socket $(sock $2) | tr -d '\n')"
    echo "devlink_$1 $2 $($DL -j dev info netdevsim/netdevsim$2)"
}
# committed N: the lowest committed epoch of agent N's links (its status).
committed() { st $1 && sed -n 's/^ *"committed": \([0-9]*\).*/\1/p' /tmp/dst.json | sort -n | head -n 1; }
# param N: the runtime value of device N's link-epoch parameter.
param() {
    $DL dev param show netdevsim/netdevsim$1 name entente_link_epoch 2>/dev/null |
        sed -n 's/.*cmode runtime value \([0-9]*\).*/\1/p'
}
# link_epoch LABEL N: waits (20 s at most) until device N's parameter holds agent N's committed
# link epoch, then prints the parameter as devlink shows it and the agent's status.
link_epoch() {
    end=$(after 20)
    until c=$(committed $2) && [ -n "$c" ] && [ "$c" = "$(param $2)" ]; do
        past $end && { echo "agent $2: committed ${c:-?}, parameter $(param $2)"; break; }
        sleep 0.3
    done
    echo "param_$1 $2 $($DL -j dev param show netdevsim/netdevsim$2 name entente_link_epoch)"
    st $2 && echo "linkstatus_$1 $2 $(tr -d '\n' </tmp/dst.json)"
}
# wait_history N TEXT SECONDS: waits until agent N's history has a line with TEXT.
wait_history() {
    end=$(after $3)
    until $E history --json --limit 1000 --socket $(sock $1) 2>/dev/null | grep -qF "$2"; do
        past $end && { echo "agent $1: no history line with \"$2\" after $3 s"; logs; return 1; }
        sleep 0.5
    done
}
"#;

/// A manifest description for epoch `epoch` with image version `version`.
fn manifest_spec(epoch: u32, version: &str) -> String {
    format!(
        "epoch = {epoch}\nmanifest_version = {epoch}\nvalid_days = 1\n\
         semantics = \"lab: devlink epoch {epoch}\"\n\n[profiles.netdevsim]\n\
         image = \"fw-{version}.bin\"\nversion = \"{version}\"\ncompat = [{}, {epoch}]\n",
        epoch - 1
    )
}

/// Agent `n`'s configuration: TCP on loopback, its own netdevsim device and firmware directory.
fn agent_config(n: u32) -> String {
    let peer = 3 - n;
    format!(
        "node_id = {n}\nlisten = \"127.0.0.1:760{n}\"\ndata_dir = \"$D/node{n}/data\"\n\
         cluster_key = \"$D/cluster.key\"\ntrusted_keys = \"$D/keys\"\nprofiles = \"$D/profiles\"\n\
         control_socket = \"$D/node{n}/control.sock\"\n\n[transport]\nkind = \"tcp\"\nrtt_ms = 5\n\n\
         [device]\nbackend = \"devlink\"\nprofile = \"netdevsim\"\n\n[device.devlink]\n\
         handle = \"netdevsim/netdevsim{n}\"\nfirmware_dir = \"/lib/firmware/entente/node{n}\"\nflash_timeout_s = 120\n\n\
         [[peers]]\nid = {peer}\naddr = \"127.0.0.1:760{peer}\"\n"
    )
}

fn setup_script(netdevsim: &Netdevsim) -> String {
    let mut s = String::from(LIB);
    s += &format!(
        "info netdevsim_build 'linux-source {}, {} {}'\n",
        netdevsim.source_version,
        super::netdevsim::PATCH,
        netdevsim.patch_digest
    );
    s += "mount -t debugfs none /sys/kernel/debug 2>/dev/null\n\
          insmod /lib/modules/extra/netdevsim.ko || exit 1\n\
          echo '1 1' >/sys/bus/netdevsim/new_device || exit 1\n\
          echo '2 1' >/sys/bus/netdevsim/new_device || exit 1\n\
          i=0; until $DL dev info netdevsim/netdevsim2 >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 100 ] && { echo 'no devlink instance'; exit 1; }; sleep 0.1; done\n\
          $DL dev; $DL dev info netdevsim/netdevsim1\n\
          mkdir -p $D/keys $D/signing $D/profiles $D/node1 $D/node2\n\
          cp /lab/netdevsim.toml $D/profiles/ || exit 1\n\
          head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' >$D/cluster.key; chmod 600 $D/cluster.key\n\
          $E keygen --out $D/signing --name lab >/dev/null || exit 1\n\
          cp $D/signing/lab.pub $D/keys/\n";
    for (epoch, v) in [(1, V1), (2, V2)] {
        s += &format!(
            "printf 'netdevsim-fw {v}\\n' >$D/fw-{v}.bin; head -c 200000 /dev/urandom >>$D/fw-{v}.bin\n\
             cat >$D/m{epoch}.toml <<'EOF'\n{}EOF\n\
             $E manifest sign --key $D/signing/lab.key --in $D/m{epoch}.toml --out $D/m{epoch}.manifest || exit 1\n",
            manifest_spec(epoch, v)
        );
    }
    for n in [1, 2] {
        s += &format!(
            "cat >$D/node{n}/entented.toml <<EOF\n{}EOF\n",
            agent_config(n)
        );
    }
    s += "for n in 1 2; do start_agent $n; done\n\
          for n in 1 2; do answers $n 60 || { echo \"agent $n does not answer\"; logs; exit 1; }; done\n\
          echo \"agents up at $(now)\"";
    s
}

fn inventory_script() -> String {
    format!("{LIB}for n in 1 2; do report before $n; done")
}

fn campaign_script() -> String {
    format!(
        "{LIB}$E campaign start --socket $(sock 1) --manifest $D/m1.manifest --sig $D/m1.manifest.sig \
         --image $D/fw-{V1}.bin || {{ logs; exit 1; }}\n\
         t0=$(now); end=$(after 200)\n\
         while :; do\n\
         \x20   past $end && {{ echo 'no convergence'; logs; exit 1; }}\n\
         \x20   c1=; c2=\n\
         \x20   if st 1; then p=$(key flash_percent); [ -n \"$p\" ] && [ \"$p\" != null ] && echo \"progress $p\"; c1=$(key converged); fi\n\
         \x20   if st 2; then c2=$(key converged); fi\n\
         \x20   [ \"$c1\" = true ] && [ \"$c2\" = true ] && break\n\
         \x20   sleep 0.4\n\
         done\n\
         echo \"converged after $(awk \"BEGIN {{ print $(now) - $t0 }}\") s\"\n\
         for n in 1 2; do report after $n; done\n\
         for n in 1 2; do link_epoch after $n; done"
    )
}

fn flash_failure_script() -> String {
    format!(
        "{LIB}echo 50 >$(dbg 1)/fw_update_fail_at || exit 1\n\
         $E campaign start --socket $(sock 1) --manifest $D/m2.manifest --sig $D/m2.manifest.sig \
         --image $D/fw-{V2}.bin || {{ logs; exit 1; }}\n\
         wait_history 1 'staging epoch 2 failed' 120 || exit 1\n\
         report flashfail 1"
    )
}

fn activation_failure_script() -> String {
    format!(
        "{LIB}echo 1 >$(dbg 1)/fail_reload || exit 1\n\
         echo 0 >$(dbg 1)/fw_update_fail_at || exit 1\n\
         wait_history 1 'activation of epoch 2 failed' 150 || exit 1\n\
         st 1 && echo \"status 1 $(tr -d '\\n' </tmp/dst.json)\"\n\
         report actfail 1\n\
         for n in 1 2; do link_epoch actfail $n; done\n\
         for n in 1 2; do kill $(cat $D/node$n/pid) 2>/dev/null; done\n\
         for n in 1 2; do grep -ciE 'panic' $D/node$n/entented.log | sed \"s/^/panics $n /\"; done\n\
         true"
    )
}

/// The scenario.
pub fn scenario(bins: &Binaries, netdevsim: &Netdevsim) -> Scenario {
    let steps = vec![
        step("devlink-setup", 120, setup_script(netdevsim)),
        step("devlink-inventory", 30, inventory_script()),
        step("devlink-campaign", 240, campaign_script()),
        step("devlink-flash-failure", 150, flash_failure_script()),
        step(
            "devlink-activation-failure",
            180,
            activation_failure_script(),
        ),
    ];
    Scenario {
        name: "devlink",
        files: vec![
            GuestFile {
                src: bins.entented.clone(),
                dst: "/opt/lab/entented".into(),
            },
            GuestFile {
                src: bins.entente.clone(),
                dst: "/opt/lab/entente".into(),
            },
        ],
        data: vec![
            GuestFile {
                src: netdevsim.module.clone(),
                dst: "/lib/modules/extra/netdevsim.ko".into(),
            },
            GuestFile {
                src: crate::root().join("hw-profiles/netdevsim.toml"),
                dst: "/lab/netdevsim.toml".into(),
            },
        ],
        steps,
        summarize,
        check,
    }
}

/// `<prefix> <agent> <json>` lines of a step, per agent.
fn lines(guest: &Guest, step: &str, prefix: &str) -> BTreeMap<u32, Value> {
    let mut m = BTreeMap::new();
    let Some(s) = guest.step(step) else {
        return m;
    };
    for l in &s.out {
        let Some(rest) = l.strip_prefix(prefix).and_then(|r| r.strip_prefix(' ')) else {
            continue;
        };
        if let Some((n, j)) = rest.split_once(' ') {
            if let (Ok(n), Ok(v)) = (n.parse(), serde_json::from_str(j)) {
                m.insert(n, v);
            }
        }
    }
    m
}

/// `(running, stored)` of `fw.mgmt` in an `entente inventory --json` answer.
fn agent_versions(inv: Option<&Value>) -> (Option<String>, Option<String>) {
    let c = inv
        .and_then(|i| i["devices"][0]["components"].as_array())
        .and_then(|cs| cs.iter().find(|c| c["name"] == "fw.mgmt"));
    let get = |k: &str| c.and_then(|c| c[k].as_str()).map(str::to_owned);
    (get("running"), get("stored"))
}

/// `(running, stored)` of `fw.mgmt` in `devlink -j dev info` output.
fn devlink_versions(info: Option<&Value>) -> (Option<String>, Option<String>) {
    let versions = info
        .and_then(|i| i["info"].as_object())
        .and_then(|o| o.values().next());
    let get = |k: &str| {
        versions
            .and_then(|v| v["versions"][k]["fw.mgmt"].as_str())
            .map(str::to_owned)
    };
    (get("running"), get("stored"))
}

/// The history events of an `entente history --json` answer.
fn events(h: Option<&Value>) -> Vec<HistoryEvent> {
    h.and_then(|h| serde_json::from_value::<Vec<HistoryEntry>>(h.clone()).ok())
        .map(|a| a.into_iter().map(|e| e.event).collect())
        .unwrap_or_default()
}

/// Whether an event is of `kind` for campaign `epoch`.
fn is(e: &HistoryEvent, kind: HistoryKind, epoch: u64) -> bool {
    e.kind == kind && e.epoch == Some(epoch)
}

/// The runtime value of the parameter in `devlink -j dev param show DEV name P` output: the
/// `value` of the entry whose `cmode` is `runtime`, wherever iproute2 nests it.
fn param_runtime(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Object(o) if o.get("cmode").and_then(Value::as_str) == Some("runtime") => {
            o.get("value").and_then(Value::as_u64)
        }
        Value::Object(o) => o.values().find_map(|v| param_runtime(Some(v))),
        Value::Array(a) => a.iter().find_map(|v| param_runtime(Some(v))),
        _ => None,
    }
}

/// The lowest committed epoch of the links in an `entente status --json` answer.
fn committed_link_epoch(status: Option<&Value>) -> Option<u64> {
    status?["links"]
        .as_array()?
        .iter()
        .filter_map(|l| l["committed"].as_u64())
        .min()
}

/// Per agent, `(committed link epoch, parameter)` after step `step` (label `label`).
fn link_epochs(guest: &Guest, step: &str, label: &str) -> Vec<(Option<u64>, Option<u64>)> {
    let params = lines(guest, step, &format!("param_{label}"));
    let status = lines(guest, step, &format!("linkstatus_{label}"));
    [1, 2]
        .iter()
        .map(|n| {
            (
                committed_link_epoch(status.get(n)),
                param_runtime(params.get(n)),
            )
        })
        .collect()
}

fn link_epoch_json(v: &[(Option<u64>, Option<u64>)]) -> Value {
    v.iter()
        .map(|(c, p)| json!({"committed": c, "param": p}))
        .collect()
}

fn pair(v: (Option<String>, Option<String>)) -> Value {
    json!({"running": v.0, "stored": v.1})
}

fn summarize(guest: &Guest) -> Result<Map<String, Value>> {
    let ran = |name: &str| guest.step(name).is_some_and(|s| s.rc == Some(0));
    let factory = (Some(FACTORY.to_owned()), Some(FACTORY.to_owned()));
    let v1 = (Some(V1.to_owned()), Some(V1.to_owned()));

    // 1. inventory
    let before = lines(guest, "devlink-inventory", "inventory_before");
    let inv_before: Vec<Value> = [1, 2]
        .iter()
        .map(|n| pair(agent_versions(before.get(n))))
        .collect();
    let inventory = ran("devlink-inventory")
        && [1, 2]
            .iter()
            .all(|n| agent_versions(before.get(n)) == factory);

    // 2. campaign: progress, activation, versions
    let progress: Vec<u64> = guest
        .step("devlink-campaign")
        .map(|s| {
            s.out
                .iter()
                .filter_map(|l| l.strip_prefix("progress ")?.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut distinct = progress.clone();
    distinct.dedup();
    let flash_progress =
        distinct.iter().any(|&p| p > 0 && p < 100) && distinct.windows(2).all(|w| w[0] <= w[1]);
    let after_inv = lines(guest, "devlink-campaign", "inventory_after");
    let after_dl = lines(guest, "devlink-campaign", "devlink_after");
    let after_hist = lines(guest, "devlink-campaign", "history_after");
    let live = |n: u32| {
        let h = events(after_hist.get(&n));
        h.iter()
            .any(|e| is(e, HistoryKind::Activating, 1) && e.method.as_deref() == Some("Live"))
            && h.iter().any(|e| is(e, HistoryKind::Activated, 1))
    };
    let activation = ran("devlink-campaign") && live(1) && live(2);
    let versions = [1, 2]
        .iter()
        .all(|n| agent_versions(after_inv.get(n)) == v1 && devlink_versions(after_dl.get(n)) == v1);
    let epochs_after = link_epochs(guest, "devlink-campaign", "after");
    let link_epoch = ran("devlink-campaign")
        && epochs_after
            .iter()
            .all(|&(c, p)| c.is_some_and(|c| c >= 1) && p == c);

    // 3. flash failure
    let ff_hist = events(lines(guest, "devlink-flash-failure", "history_flashfail").get(&1));
    let ff_dl = lines(guest, "devlink-flash-failure", "devlink_flashfail");
    let ff_error = ff_hist
        .iter()
        .find(|e| is(e, HistoryKind::StagingFailed, 2))
        .and_then(|e| e.reason.clone());
    let flash_failure = ran("devlink-flash-failure")
        && ff_error
            .as_deref()
            .is_some_and(|e| e.contains(FLASH_FAULT_MSG))
        && !ff_hist.iter().any(|e| is(e, HistoryKind::Activating, 2))
        && devlink_versions(ff_dl.get(&1)) == v1;

    // 4. activation failure
    let af_hist = events(lines(guest, "devlink-activation-failure", "history_actfail").get(&1));
    let af_dl = lines(guest, "devlink-activation-failure", "devlink_actfail");
    let af_status = lines(guest, "devlink-activation-failure", "status");
    let af_error = af_hist
        .iter()
        .find(|e| is(e, HistoryKind::ActivationFailed, 2))
        .and_then(|e| e.reason.clone());
    let af_versions = devlink_versions(af_dl.get(&1));
    let status1 = af_status.get(&1);
    let activation_failure = ran("devlink-activation-failure")
        && af_error.as_deref().is_some_and(|e| {
            e.contains(RELOAD_FAULT_MSG) && e.contains("fw_activate limit no_reset")
        })
        && status1.is_some_and(|s| s["converged"] == json!(false) && s["epoch"] == json!(2))
        && af_versions == (Some(V1.to_owned()), Some(V2.to_owned()));

    let passed = inventory
        && flash_progress
        && activation
        && versions
        && link_epoch
        && flash_failure
        && activation_failure;
    let after_agent: Vec<Value> = [1, 2]
        .iter()
        .map(|n| pair(agent_versions(after_inv.get(n))))
        .collect();
    let after_devlink: Vec<Value> = [1, 2]
        .iter()
        .map(|n| pair(devlink_versions(after_dl.get(n))))
        .collect();
    let converge_seconds = guest.step("devlink-campaign").and_then(|s| {
        s.out
            .iter()
            .find_map(|l| super::report::num_after(l, "converged after "))
    });
    let mut m = Map::new();
    m.insert(
        "devlink".into(),
        json!({
            "passed": passed,
            "inventory": inventory,
            "flash_progress": flash_progress,
            "activation": activation,
            "versions": versions,
            "link_epoch": link_epoch,
            "flash_failure": flash_failure,
            "activation_failure": activation_failure,
            "details": {
                "devices": ["netdevsim/netdevsim1", "netdevsim/netdevsim2"],
                "netdevsim_build": guest.info.get("netdevsim_build"),
                "agents": 2,
                "transport": "tcp",
                "inventory_before": inv_before,
                "progress_percent_seen": distinct,
                "converge_seconds": converge_seconds,
                "manifest_versions": [V1, V2],
                "after_campaign": {"agent": after_agent, "devlink": after_devlink},
                "link_epoch_param": LINK_EPOCH_PARAM,
                "link_epochs_after_campaign": link_epoch_json(&epochs_after),
                "link_epochs_after_activation_failure": link_epoch_json(
                    &link_epochs(guest, "devlink-activation-failure", "actfail")
                ),
                "flash_failure_error": ff_error,
                "after_flash_failure": pair(devlink_versions(ff_dl.get(&1))),
                "activation_failure_error": af_error,
                "after_activation_failure": pair(af_versions),
                "agent1_after_activation_failure": status1.map(|s| json!({
                    "epoch": s["epoch"], "phase": s["phase"], "converged": s["converged"],
                })),
            },
        }),
    );
    Ok(m)
}

/// Fails the lab unless every part of the scenario held.
fn check(report: &Map<String, Value>) -> Option<String> {
    let d = report.get("devlink")?;
    let parts = [
        "inventory",
        "flash_progress",
        "activation",
        "versions",
        "link_epoch",
        "flash_failure",
        "activation_failure",
    ];
    let failed: Vec<&str> = parts.into_iter().filter(|p| d[*p] != json!(true)).collect();
    (!failed.is_empty()).then(|| format!("parts that did not hold: {}", failed.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_both_views() {
        let inv: Value = serde_json::from_str(
            r#"{"devices":[{"profile":"netdevsim","health":"ok","components":[
                {"name":"fw.mgmt","running":"10.21.0","stored":"10.22.0"}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            agent_versions(Some(&inv)),
            (Some("10.21.0".into()), Some("10.22.0".into()))
        );
        let dl: Value = serde_json::from_str(
            r#"{"info":{"netdevsim/netdevsim1":{"driver":"netdevsim","versions":{
                "running":{"fw.mgmt":"10.21.0"},"stored":{"fw.mgmt":"10.21.0"}}}}}"#,
        )
        .unwrap();
        assert_eq!(
            devlink_versions(Some(&dl)),
            (Some("10.21.0".into()), Some("10.21.0".into()))
        );
        assert_eq!(devlink_versions(None), (None, None));
    }

    #[test]
    fn every_part_must_hold() {
        let mut r = Map::new();
        r.insert(
            "devlink".into(),
            json!({"inventory": true, "flash_progress": true, "activation": true,
                   "versions": true, "link_epoch": true, "flash_failure": false,
                   "activation_failure": true}),
        );
        assert_eq!(
            check(&r).as_deref(),
            Some("parts that did not hold: flash_failure")
        );
        r.insert(
            "devlink".into(),
            json!({"inventory": true, "flash_progress": true, "activation": true,
                   "versions": true, "link_epoch": false, "flash_failure": true,
                   "activation_failure": true}),
        );
        assert_eq!(
            check(&r).as_deref(),
            Some("parts that did not hold: link_epoch")
        );
        r.insert(
            "devlink".into(),
            json!({"inventory": true, "flash_progress": true, "activation": true,
                   "versions": true, "link_epoch": true, "flash_failure": true,
                   "activation_failure": true}),
        );
        assert_eq!(check(&r), None);
    }

    #[test]
    fn the_parameter_and_the_committed_link_epoch_are_read() {
        let dl: Value = serde_json::from_str(
            r#"{"param":{"netdevsim/netdevsim1":[{"name":"entente_link_epoch",
                "type":"driver-specific","values":[{"cmode":"runtime","value":1}]}]}}"#,
        )
        .unwrap();
        assert_eq!(param_runtime(Some(&dl)), Some(1));
        assert_eq!(param_runtime(Some(&json!({"param": {}}))), None);
        let st = json!({"node": 1, "links_committed": 1, "links": [
            {"peer": 2, "committed": 3}, {"peer": 3, "committed": 1}]});
        assert_eq!(committed_link_epoch(Some(&st)), Some(1));
        assert_eq!(committed_link_epoch(Some(&json!({"links": []}))), None);
    }

    #[test]
    fn the_lab_reads_the_parameter_the_profile_and_the_patch_name() {
        assert!(LIB.contains(&format!("name {LINK_EPOCH_PARAM}")));
        let root = crate::root();
        let profile = std::fs::read_to_string(root.join("hw-profiles/netdevsim.toml")).unwrap();
        assert!(
            profile.contains(&format!("link_epoch_param = \"{LINK_EPOCH_PARAM}\"")),
            "{profile}"
        );
        let patch = std::fs::read_to_string(root.join(super::super::netdevsim::PATCH)).unwrap();
        assert!(patch.contains(&format!("\"{LINK_EPOCH_PARAM}\", DEVLINK_PARAM_TYPE_U32")));
    }

    #[test]
    fn manifests_speak_the_previous_and_the_new_epoch() {
        let m = manifest_spec(2, V2);
        assert!(
            m.contains("compat = [1, 2]") && m.contains("version = \"10.22.0\""),
            "{m}"
        );
        let c = agent_config(1);
        assert!(
            c.contains("handle = \"netdevsim/netdevsim1\"") && c.contains("id = 2"),
            "{c}"
        );
    }
}
