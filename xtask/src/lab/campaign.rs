//! Scenario B, `campaign`: the product on RDMA. Four `entented` agents in the guest, each bound
//! to its own address on eth0, all sharing rxe0, with the verbs transport and simulated devices
//! (the cluster written by `entente demo --setup`). `entente campaign start` on agent 1; once
//! the campaign moves, agent 3 is killed (SIGKILL) and restarted; then every agent must converge.
//! The report holds the agents' final status (convergence, probe mismatches: the safety
//! violations) and the result of the offline history check done here over their histories.

use super::binaries::Binaries;
use super::scenarios::{step, GuestFile, Scenario};
use super::vm::Guest;
use anyhow::Result;
use entente_api::{HistoryEntry, HistoryEvent, HistoryKind};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Agents in the guest.
pub const NODES: u32 = 4;
/// The agent killed mid-campaign (not agent 1, where the campaign starts and is watched).
const VICTIM: u32 = 3;
/// Agent `i`'s address (1-based): 10.0.2.21, .22, ... on eth0 (scenario A uses .15).
fn addr(i: u32) -> String {
    format!("10.0.2.{}", 20 + i)
}

/// Shell functions of the campaign's steps (after `/lab/lib.sh`). `entente demo --setup` lays
/// out `$C/node<i>/{entented.toml,control.sock,entented.log}`; the setup step checks that.
const LIB: &str = r#"C=/tmp/campaign
E=/opt/lab/entente
sock() { echo $C/node$1/control.sock; }
# start_agent I: starts agent I in the background, its pid in $C/node$I/pid.
start_agent() {
    ENTENTE_LOG=info /opt/lab/entented --config $C/node$1/entented.toml \
        >>$C/node$1/entented.log 2>&1 </dev/null &
    echo $! >$C/node$1/pid
}
# st I: agent I's status as pretty JSON in /tmp/st.json.
st() { $E status --json --socket $(sock $1) >/tmp/st.json 2>/dev/null; }
# key KEY: a top-level scalar of /tmp/st.json.
key() { sed -n "s/^  \"$1\": \([^,]*\),\{0,1\}\$/\1/p" /tmp/st.json; }
# phases: "node:phase ..." of the nodes /tmp/st.json knows.
phases() {
    awk '/^      "node":/ { gsub(/[^0-9]/, ""); n = $0 }
         /^      "phase":/ { gsub(/^.*: "|",?$/, ""); printf "%s:%s ", n, $0 }' /tmp/st.json
}
now() { cut -d' ' -f1 /proc/uptime; }
# after SECONDS: the uptime SECONDS from now; past T: that time has come.
after() { awk "BEGIN { print $(now) + $1 }"; }
past() { awk "BEGIN { exit !($(now) > $1) }"; }
# answers I SECONDS: waits until agent I answers on its socket.
answers() {
    i=0
    until st $1; do
        i=$((i + 1))
        [ $i -gt $(($2 * 10)) ] && return 1
        sleep 0.1
    done
}
logs() {
    for n in $(seq 1 $N); do
        echo "--- agent $n log ($(wc -l <$C/node$n/entented.log) lines; first and last)"
        head -n 12 $C/node$n/entented.log; echo ...; tail -n 12 $C/node$n/entented.log
    done
}
"#;

fn lib() -> String {
    format!("N={NODES}\nL=$(cat /tmp/campaign.links 2>/dev/null)\n{LIB}")
}

/// The scenario.
pub fn scenario(bins: &Binaries) -> Scenario {
    let addrs: Vec<String> = (1..=NODES).map(addr).collect();
    let ip_adds: String = addrs
        .iter()
        .map(|a| format!("ip addr add {a}/24 dev eth0 || exit 1\n"))
        .collect();
    let lib = lib();
    let steps = vec![
        step(
            "campaign-setup",
            90,
            format!(
                "{lib}{ip_adds}\
                 $E demo --setup $C --nodes $N --transport verbs --addresses {} >/tmp/campaign.json || exit 1\n\
                 echo \"setup $(tr -d '\\n' </tmp/campaign.json)\"\n\
                 grep -c '\"config\"' /tmp/campaign.json | grep -qx $N || {{ echo 'not one config per agent'; exit 1; }}\n\
                 for n in $(seq 1 $N); do [ -f $C/node$n/entented.toml ] || {{ echo \"no $C/node$n/entented.toml\"; exit 1; }}; done\n\
                 awk '/\"links\"/ {{ on = 1; next }} on && /^  \\]/ {{ on = 0 }} on && /^    \\[/ {{ k++ }} END {{ print k + 0 }}' \
                 /tmp/campaign.json >/tmp/campaign.links\n\
                 echo \"links $(cat /tmp/campaign.links)\"\n\
                 once_more pair '/opt/lab/verbs_perf server {a2}:7471 pingpong' '/opt/lab/verbs_perf client {a2}:7471 pingpong 64 200' \
                 || {{ echo 'rdma_cm between two agent addresses failed'; exit 1; }}\n\
                 for n in $(seq 1 $N); do start_agent $n; done\n\
                 sleep 5; top -bn1 | head -n 12 # the agents' CPU before the campaign\n\
                 for n in $(seq 1 $N); do answers $n 60 || {{ echo \"agent $n does not answer\"; logs; exit 1; }}; done\n\
                 echo \"agents up at $(now)\"",
                addrs.join(","),
                a2 = addrs[1]
            ),
        ),
        step(
            "campaign-start",
            60,
            format!(
                "{lib}echo \"started at $(now)\" >/tmp/campaign.t0\n\
                 $E campaign start --socket $(sock 1) --manifest $C/campaign.manifest \
                 --sig $C/campaign.manifest.sig --image $C/sim-nic-2.0.bin || {{ logs; exit 1; }}\n\
                 now >/tmp/campaign.t0"
            ),
        ),
        // Kill the victim once the campaign reached it (agent 1 sees it announced or later, or
        // a link committed) and before it converged; restart it a second later.
        step(
            "campaign-kill",
            150,
            format!(
                "{lib}V={VICTIM}\n\
                 t0=$(cat /tmp/campaign.t0); end=$(after 120)\n\
                 top -bn1 | head -n 15\n\
                 while :; do\n\
                 \x20   past $end && {{ echo \"the campaign did not reach agent $V\"; top -bn1 | head -n 15; logs; exit 1; }}\n\
                 \x20   if st 1; then\n\
                 \x20       p=$(phases); c=$(key links_committed); conv=$(key converged)\n\
                 \x20       echo \"t=$(now) committed=$c/$(key links_total) converged=$conv nodes=$p\"\n\
                 \x20       [ \"$conv\" = true ] && {{ echo 'converged before the kill'; echo 'kill none'; exit 0; }}\n\
                 \x20       [ \"$c\" != 0 ] && break\n\
                 \x20       case \" $p\" in *\" $V:announced\"*|*\" $V:staged\"*|*\" $V:activated\"*) break ;; esac\n\
                 \x20   fi\n\
                 \x20   sleep 0.2\n\
                 done\n\
                 kill -9 $(cat $C/node$V/pid) || exit 1\n\
                 echo \"kill $V at=$(now) since_start=$(awk \"BEGIN {{ print $(now) - $t0 }}\") committed=$c phases=$p\"\n\
                 sleep 1\n\
                 start_agent $V\n\
                 answers $V 60 || {{ echo \"agent $V does not answer after its restart\"; logs; exit 1; }}\n\
                 echo \"restarted $V at $(now)\""
            ),
        ),
        step(
            "campaign-converge",
            300,
            format!(
                "{lib}t0=$(cat /tmp/campaign.t0); end=$(after 270)\n\
                 last=\n\
                 while :; do\n\
                 \x20   past $end && {{ echo 'no convergence'; top -bn1 | head -n 15; logs; exit 1; }}\n\
                 \x20   if st 1; then\n\
                 \x20       p=$(phases); c=$(key links_committed); tl=$(key links_total); conv=$(key converged)\n\
                 \x20       line=\"committed=$c/$tl converged=$conv nodes=$p\"\n\
                 \x20       [ \"$line\" != \"$last\" ] && echo \"t=$(now) $line\"; last=$line\n\
                 \x20       k=$(echo $p | wc -w)\n\
                 \x20       [ \"$conv\" = true ] && [ \"$tl\" = \"$L\" ] && [ \"$k\" = \"$N\" ] && break\n\
                 \x20   fi\n\
                 \x20   sleep 0.3\n\
                 done\n\
                 echo \"converged after $(awk \"BEGIN {{ print $(now) - $t0 }}\") s\"\n\
                 for n in $(seq 1 $N); do\n\
                 \x20   answers $n 20 || {{ echo \"agent $n does not answer\"; logs; exit 1; }}\n\
                 \x20   echo \"status $n $(tr -d '\\n' </tmp/st.json)\"\n\
                 done"
            ),
        ),
        step(
            "campaign-history",
            60,
            format!(
                "{lib}for n in $(seq 1 $N); do\n\
                 \x20   $E history --json --limit 100000 --socket $(sock $n) >/tmp/h.json || exit 1\n\
                 \x20   echo \"history $n $(tr -d '\\n' </tmp/h.json)\"\n\
                 done\n\
                 for n in $(seq 1 $N); do kill $(cat $C/node$n/pid) 2>/dev/null; done\n\
                 for n in $(seq 1 $N); do grep -ciE 'panic|ERROR' $C/node$n/entented.log | sed \"s/^/errors $n /\"; done\n\
                 true"
            ),
        ),
    ];
    Scenario {
        name: "campaign",
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
        data: Vec::new(),
        steps,
        summarize,
        check,
    }
}

/// The JSON after `prefix` on a line of `step`'s output, per agent: `<prefix> <agent> <json>`.
fn per_agent(guest: &Guest, step: &str, prefix: &str) -> BTreeMap<u32, Value> {
    let mut m = BTreeMap::new();
    if let Some(s) = guest.step(step) {
        for l in &s.out {
            let Some(rest) = l.strip_prefix(prefix) else {
                continue;
            };
            let Some((n, j)) = rest.trim_start().split_once(' ') else {
                continue;
            };
            if let (Ok(n), Ok(v)) = (n.parse(), serde_json::from_str(j)) {
                m.insert(n, v);
            }
        }
    }
    m
}

/// The entries of an `entente history --json` answer.
fn entries(h: &Value) -> Vec<HistoryEntry> {
    serde_json::from_value(h.clone()).unwrap_or_default()
}

/// `(peer, epoch)` of a history event that committed a link's epoch by a transaction.
fn committed(e: &HistoryEvent) -> Option<(u64, u64)> {
    (e.kind == HistoryKind::LinkCommitted).then_some((e.peer?, e.epoch?))
}

/// The offline history check over every agent's history (oldest entry first): on each agent the
/// committed epoch of each of its links never goes down, and every "link to X committed epoch
/// E" on agent A has its match "link to A committed epoch E" on agent X; and no agent wrote a
/// `SAFETY:` line (a probe read under another epoch than its sender's). Returns the problems.
pub fn history_problems(histories: &BTreeMap<u32, Vec<HistoryEvent>>) -> Vec<String> {
    let mut problems = Vec::new();
    // (agent, peer) -> epochs committed, in order
    let mut commits: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    for (&a, events) in histories {
        for e in events {
            if e.kind == HistoryKind::ProbeMismatch {
                problems.push(format!("agent {a}: {}", e.text));
            }
            if let Some((peer, epoch)) = committed(e) {
                commits.entry((a.into(), peer)).or_default().push(epoch);
            }
        }
    }
    for &a in histories.keys() {
        if !commits.keys().any(|&(x, _)| x == u64::from(a)) {
            problems.push(format!("agent {a} committed no link epoch"));
        }
    }
    for (&(a, peer), epochs) in &commits {
        if let Some(w) = epochs.windows(2).find(|w| w[1] < w[0]) {
            problems.push(format!(
                "agent {a}: link to {peer} went from epoch {} down to {}",
                w[0], w[1]
            ));
        }
        if !histories.contains_key(&(peer as u32)) {
            problems.push(format!(
                "agent {a} has a link to {peer}, which has no history"
            ));
            continue;
        }
        let theirs = commits.get(&(peer, a)).map(Vec::as_slice).unwrap_or(&[]);
        for e in epochs {
            if !theirs.contains(e) {
                problems.push(format!(
                    "agent {a} committed epoch {e} on its link to {peer}; {peer} never did"
                ));
            }
        }
    }
    problems
}

fn summarize(guest: &Guest) -> Result<Map<String, Value>> {
    let setup = guest
        .step("campaign-setup")
        .and_then(|s| s.out.iter().find_map(|l| l.strip_prefix("setup ")))
        .and_then(|j| serde_json::from_str::<Value>(j).ok());
    let links = setup
        .as_ref()
        .and_then(|s| s["links"].as_array().map(Vec::len));
    let statuses = per_agent(guest, "campaign-converge", "status ");
    let raw_histories = per_agent(guest, "campaign-history", "history ");
    let fanout = fanout_summary(&raw_histories);
    // A history that does not parse is missing, not empty: the check then fails.
    let histories: BTreeMap<u32, Vec<HistoryEvent>> = raw_histories
        .iter()
        .filter_map(|(&n, h)| {
            let parsed = serde_json::from_value::<Vec<HistoryEntry>>(h.clone()).ok()?;
            Some((n, parsed.into_iter().map(|e| e.event).collect()))
        })
        .collect();
    let ran = |name: &str| guest.step(name).is_some_and(|s| s.rc == Some(0));
    let all = statuses.len() == NODES as usize;
    let first = statuses.get(&1);
    let converged = ran("campaign-converge")
        && all
        && first.is_some_and(|s| {
            s["converged"] == json!(true)
                && s["links_total"].as_u64() == links.map(|l| l as u64)
                && s["nodes"].as_array().map(Vec::len) == Some(NODES as usize)
        });
    let sum = |key: &str| -> Value {
        if all {
            json!(statuses
                .values()
                .filter_map(|s| s[key].as_u64())
                .sum::<u64>())
        } else {
            Value::Null
        }
    };
    let problems = history_problems(&histories);
    let history_ok =
        ran("campaign-history") && histories.len() == NODES as usize && problems.is_empty();
    let kill = guest
        .step("campaign-kill")
        .and_then(|s| s.out.iter().find_map(|l| l.strip_prefix("kill ")))
        .map(str::to_owned);
    let num = |step: &str, marker: &str| {
        guest.step(step).and_then(|s| {
            s.out
                .iter()
                .find_map(|l| super::report::num_after(l, marker))
        })
    };
    let commits: usize = histories
        .values()
        .map(|h| h.iter().filter(|e| committed(e).is_some()).count())
        .sum();
    let mut m = Map::new();
    m.insert("fanout".into(), fanout);
    m.insert(
        "campaign".into(),
        json!({
            "nodes": NODES,
            "links": links,
            "transport": "verbs",
            "addresses": (1..=NODES).map(addr).collect::<Vec<_>>(),
            "converged": converged,
            "converge_seconds": num("campaign-converge", "converged after "),
            "killed_agent": kill.as_ref().map(|_| VICTIM),
            "killed_mid_campaign": kill.as_ref().is_some_and(|k| k != "none"),
            "kill": kill,
            "safety_violations": sum("probe_mismatches"),
            "protocol_errors": sum("protocol_errors"),
            "history_ok": history_ok,
            "history_problems": problems,
            "history_commits": commits,
            "statuses": statuses.values().map(|s| json!({
                "node": s["node"], "phase": s["phase"], "converged": s["converged"],
                "links_committed": s["links_committed"], "links_total": s["links_total"],
                "probe_mismatches": s["probe_mismatches"], "protocol_errors": s["protocol_errors"],
                "transport": s["transport"],
            })).collect::<Vec<_>>(),
        }),
    );
    Ok(m)
}

/// How the campaign's image travelled over verbs, from the agents' histories (one clock: the
/// guest's): from "campaign 1 started here" on agent 1 until each agent recorded the image
/// complete in its store, with the chunks it fetched and resumed (the killed agent resumes).
fn fanout_summary(histories: &BTreeMap<u32, Value>) -> Value {
    let start = histories.get(&1).and_then(|h| {
        entries(h)
            .into_iter()
            .find(|e| e.event.kind == HistoryKind::CampaignStarted)
            .map(|e| e.at_ms)
    });
    let mut agents = Vec::new();
    let mut last: Option<u64> = None;
    let mut complete = true;
    for (&n, h) in histories.iter().filter(|(n, _)| **n != 1) {
        let done = entries(h)
            .into_iter()
            .find(|e| e.event.kind == HistoryKind::ImageStored);
        let at = done
            .as_ref()
            .zip(start)
            .map(|(e, s)| e.at_ms.saturating_sub(s));
        match at {
            Some(t) => last = Some(last.map_or(t, |l| l.max(t))),
            None => complete = false,
        }
        let count = |name: &str| {
            done.as_ref()
                .and_then(|e| e.event.counts.get(name).copied())
        };
        agents.push(json!({
            "agent": n,
            "image_ms": at,
            "chunks_fetched": count("fetched"),
            // Written to the disk from the RDMA slot the chunk arrived in, without a copy.
            "chunks_in_place": count("in_place"),
            "chunks_resumed": count("resumed"),
        }));
    }
    json!({
        "strategy": "pipeline",
        "transport": "verbs",
        "image_all_hosts_ms": if complete { last } else { None },
        "agents": agents,
    })
}

/// Fails the lab unless the campaign converged, with the kill landing mid-campaign, no safety
/// violation, and a clean history.
fn check(report: &Map<String, Value>) -> Option<String> {
    let c = report.get("campaign")?;
    let mut why = Vec::new();
    if c["converged"] != json!(true) {
        why.push("did not converge".to_owned());
    }
    if c["killed_mid_campaign"] != json!(true) {
        why.push("the agent was not killed mid-campaign".to_owned());
    }
    if c["safety_violations"] != json!(0) {
        why.push(format!("safety violations: {}", c["safety_violations"]));
    }
    if c["history_ok"] != json!(true) {
        why.push(format!("history check: {}", c["history_problems"]));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Histories of link commits: (agent, [(peer, epoch)]).
    fn h(v: &[(u32, &[(u64, u64)])]) -> BTreeMap<u32, Vec<HistoryEvent>> {
        v.iter()
            .map(|(n, e)| {
                let events = e
                    .iter()
                    .map(|&(peer, epoch)| {
                        HistoryEvent::new(HistoryKind::LinkCommitted, "")
                            .peer(peer)
                            .epoch(epoch)
                    })
                    .collect();
                (*n, events)
            })
            .collect()
    }

    #[test]
    fn matching_monotonic_histories_pass() {
        let hs = h(&[(1, &[(2, 1)]), (2, &[(1, 1), (1, 1)])]);
        assert!(history_problems(&hs).is_empty());
    }

    #[test]
    fn a_commit_without_its_match_or_going_down_fails() {
        let hs = h(&[(1, &[(2, 2), (2, 1)]), (2, &[(1, 1)])]);
        let p = history_problems(&hs);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("down"), "{p:?}");
        assert!(p[1].contains("epoch 2"), "{p:?}");
        let missing = h(&[(1, &[(3, 1)])]);
        assert_eq!(history_problems(&missing).len(), 1);
    }
}
