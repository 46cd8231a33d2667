//! The link transaction table (`entente_proto::link::table`) and one link end (`LinkEnd`):
//!
//! * every (role × state × stimulus × ready) cell is enumerated and checked against the
//!   table-level safety properties and against the rows of docs/protocol.md, written out below;
//! * `docs/link-table.md` is exactly what `render()` produces (`UPDATE_GOLDEN=1` rewrites it);
//! * every transition and abort edge of a `LinkEnd`, with the exact messages it sends.

use entente_proto::link::table::{cell, render, Cell, Class, Next, Note, Rel, Reply, Stimulus};
use entente_proto::link::{HelloError, LinkCtx, LinkEnd, LinkState, LinkTimers};
use entente_proto::msg::{AbortReason, Hello, LinkSnapshot};
use entente_proto::{Epoch, Nanos, NodeId, Nonce, Pending, Role, Txn, TxnKind, Window};

use Class::{Acked, Committed, Idle, Reflecting, Tentative};
use Role::{Initiator as I, Responder as R};

const ROLES: [Role; 2] = [I, R];

/// Every cell of the table, with the inputs that select it.
fn every_cell() -> Vec<(Role, Class, Stimulus, bool, Cell)> {
    let mut v = Vec::new();
    for role in ROLES {
        for class in Class::ALL {
            for s in Stimulus::all() {
                for ready in [false, true] {
                    v.push((role, class, s, ready, cell(role, class, s, ready)));
                }
            }
        }
    }
    v
}

fn is_impossible_state(role: Role, class: Class) -> bool {
    matches!((role, class), (I, Reflecting) | (R, Tentative) | (R, Acked))
}

/// Kinds a correct peer sends to an end of this role.
fn sent_to(role: Role) -> &'static [TxnKind] {
    match role {
        I => &[
            TxnKind::Reflect,
            TxnKind::Query,
            TxnKind::Abort,
            TxnKind::CommitAck,
        ],
        R => &[TxnKind::Propose, TxnKind::Commit, TxnKind::Abort],
    }
}

// ---------------------------------------------------------------------------------------------
// Table enumeration
// ---------------------------------------------------------------------------------------------

#[test]
fn stimuli_and_cell_count() {
    let stimuli = Stimulus::all();
    // 6 kinds × 3 nonce relations + 6 local events
    assert_eq!(stimuli.len(), 24);
    let mut dedup = stimuli.clone();
    dedup.sort_by_key(|s| format!("{s:?}"));
    dedup.dedup();
    assert_eq!(dedup.len(), 24, "Stimulus::all() lists each stimulus once");
    // roles × classes × stimuli × ready
    assert_eq!(every_cell().len(), 2 * 5 * 24 * 2);
    let possible = every_cell()
        .iter()
        .filter(|c| c.4.note != Note::Impossible)
        .count();
    // 4 of the 5 initiator classes and 3 of the 5 responder classes are reachable
    assert_eq!(possible, (4 + 3) * 24 * 2);
}

#[test]
fn impossible_cells_are_exactly_the_unreachable_states() {
    for (role, class, s, ready, c) in every_cell() {
        let expect = is_impossible_state(role, class);
        assert_eq!(
            c.note == Note::Impossible,
            expect,
            "{role:?} {class:?} {s:?} ready={ready}: {c:?}"
        );
        if expect {
            assert_eq!((c.next, c.reply), (Next::Same, Reply::None));
        }
    }
}

#[test]
fn cells_of_a_role_use_only_their_own_moves() {
    for (role, class, s, ready, c) in every_cell() {
        let what = format!("{role:?} {class:?} {s:?} ready={ready}: {c:?}");
        match role {
            I => {
                assert!(!matches!(c.next, Next::Reflecting), "{what}");
                assert!(
                    !matches!(c.reply, Reply::Reflect | Reply::CommitAck | Reply::Query),
                    "{what}"
                );
            }
            R => {
                assert!(!matches!(c.next, Next::Tentative | Next::Acked), "{what}");
                assert!(
                    !matches!(
                        c.reply,
                        Reply::ProposeNew | Reply::ProposeAgain | Reply::Commit | Reply::AbortOwn
                    ),
                    "{what}"
                );
            }
        }
        // the initiator's decision is made by the table, never by `ready` (the guard is checked
        // before the Guard stimulus is given); `ready` matters only to a responder's PROPOSE
        if role == I || !matches!(s, Stimulus::Recv(TxnKind::Propose, _)) {
            assert_eq!(c, cell(role, class, s, !ready), "{what}");
        }
    }
}

#[test]
fn responder_leaves_reflecting_to_idle_only_on_its_abort() {
    for (role, class, s, ready, c) in every_cell() {
        if role == R && class == Reflecting && c.next == Next::Idle {
            assert_eq!(
                s,
                Stimulus::Recv(TxnKind::Abort, Rel::Same),
                "ready={ready}: {c:?}"
            );
        }
    }
    // and it does on that one
    for ready in [false, true] {
        let c = cell(
            R,
            Reflecting,
            Stimulus::Recv(TxnKind::Abort, Rel::Same),
            ready,
        );
        assert_eq!((c.next, c.reply), (Next::Idle, Reply::None));
    }
    // no local event makes a reflecting responder decide alone
    for s in [
        Stimulus::Timeout,
        Stimulus::GiveUp,
        Stimulus::LocalFailure,
        Stimulus::Restart,
        Stimulus::Reconnect,
        Stimulus::Guard,
    ] {
        let c = cell(R, Reflecting, s, false);
        assert_eq!(c.next, Next::Same, "{s:?}");
        assert_ne!(c.reply, Reply::AbortOwn, "{s:?}");
    }
}

#[test]
fn committed_never_moves_back() {
    for (role, class, s, ready, c) in every_cell() {
        if matches!(class, Committed | Acked) {
            assert!(
                matches!(c.next, Next::Same | Next::Acked),
                "{role:?} {class:?} {s:?} ready={ready}: {c:?}"
            );
            // and nothing committed is ever aborted by its own end
            assert_ne!(c.reply, Reply::AbortOwn);
        }
        if class == Acked {
            assert_eq!(c.next, Next::Same, "{role:?} {s:?}: acked is final");
        }
        if c.next == Next::Acked {
            assert_eq!(
                (role, class, s),
                (I, Committed, Stimulus::Recv(TxnKind::CommitAck, Rel::Same))
            );
        }
    }
}

#[test]
fn initiator_commits_only_on_its_own_reflection() {
    for (role, class, s, ready, c) in every_cell() {
        if role == I && c.next == Next::Committed {
            assert_eq!(class, Tentative, "{s:?} ready={ready}");
            assert!(
                matches!(
                    s,
                    Stimulus::Recv(TxnKind::Reflect | TxnKind::Query, Rel::Same)
                ),
                "{s:?}"
            );
            assert_eq!(c.reply, Reply::Commit, "COMMIT goes out with the switch");
        }
    }
    for k in [TxnKind::Reflect, TxnKind::Query] {
        let c = cell(I, Tentative, Stimulus::Recv(k, Rel::Same), false);
        assert_eq!(c.next, Next::Committed);
        // another nonce is refused, never committed on
        for r in [Rel::Stale, Rel::Newer] {
            let c = cell(I, Tentative, Stimulus::Recv(k, r), false);
            assert_eq!((c.next, c.reply), (Next::Same, Reply::AbortTheirs));
        }
    }
}

#[test]
fn responder_commits_only_on_commit_of_its_nonce() {
    for (role, class, s, ready, c) in every_cell() {
        if role == R && c.next == Next::Committed {
            assert_eq!(class, Reflecting, "{s:?} ready={ready}");
            assert_eq!(s, Stimulus::Recv(TxnKind::Commit, Rel::Same));
            assert_eq!(c.reply, Reply::CommitAck);
        }
    }
}

#[test]
fn responder_votes_only_when_ready() {
    for (role, class, s, ready, c) in every_cell() {
        let what = format!("{role:?} {class:?} {s:?} ready={ready}: {c:?}");
        if role != R || is_impossible_state(role, class) {
            continue;
        }
        // entering Reflecting (from Idle, or moving to a newer nonce) is a new vote
        if c.next == Next::Reflecting {
            assert!(ready, "{what}");
            assert_eq!(s, Stimulus::Recv(TxnKind::Propose, Rel::Newer), "{what}");
        }
        // a REFLECT that is not a new vote only repeats the standing vote for the same nonce
        if c.reply == Reply::Reflect && c.next != Next::Reflecting {
            assert_eq!(class, Reflecting, "{what}");
            assert_eq!(s, Stimulus::Recv(TxnKind::Propose, Rel::Same), "{what}");
        }
        // a responder that is not ready refuses a new proposal
        if !ready && s == Stimulus::Recv(TxnKind::Propose, Rel::Newer) && class != Committed {
            assert_eq!(
                (c.next, c.reply),
                (Next::Same, Reply::AbortTheirs),
                "{what}"
            );
        }
    }
}

#[test]
fn messages_a_role_is_never_sent_are_protocol_errors() {
    for (role, class, s, ready, c) in every_cell() {
        if is_impossible_state(role, class) {
            continue;
        }
        if let Stimulus::Recv(k, _) = s {
            if !sent_to(role).contains(&k) {
                assert_eq!(
                    c,
                    Cell {
                        next: Next::Same,
                        reply: Reply::None,
                        note: Note::ProtocolError
                    },
                    "{role:?} {class:?} {s:?} ready={ready}"
                );
            }
        }
    }
}

#[test]
fn notes_are_consistent_with_moves() {
    for (role, class, s, ready, c) in every_cell() {
        let what = format!("{role:?} {class:?} {s:?} ready={ready}: {c:?}");
        // stale and erroneous messages never change anything or answer
        if matches!(c.note, Note::Stale | Note::ProtocolError | Note::Impossible) {
            assert_eq!((c.next, c.reply), (Next::Same, Reply::None), "{what}");
        }
        // local events never produce protocol-error or stale notes
        if !matches!(s, Stimulus::Recv(..)) && !is_impossible_state(role, class) {
            assert_eq!(c.note, Note::Ok, "{what}");
        }
        // an idle end only answers: it never sends its own ABORT, COMMIT or QUERY
        if class == Idle {
            assert!(
                matches!(
                    c.reply,
                    Reply::None | Reply::AbortTheirs | Reply::ProposeNew | Reply::Reflect
                ),
                "{what}"
            );
        }
        // only the guard opens a proposal, and only from idle
        if c.next == Next::Tentative || c.reply == Reply::ProposeNew {
            assert_eq!((role, class, s), (I, Idle, Stimulus::Guard), "{what}");
            assert_eq!((c.next, c.reply), (Next::Tentative, Reply::ProposeNew));
        }
    }
}

/// One row of docs/protocol.md's table, as the cells it covers.
struct Row {
    role: Role,
    classes: &'static [Class],
    stimuli: Vec<Stimulus>,
    /// `None`: the row holds whatever `ready` is.
    ready: Option<bool>,
    next: Next,
    reply: Reply,
    /// `None`: the design does not say.
    note: Option<Note>,
}

fn recv(kinds: &[TxnKind], rels: &[Rel]) -> Vec<Stimulus> {
    let mut v = Vec::new();
    for &k in kinds {
        for &r in rels {
            v.push(Stimulus::Recv(k, r));
        }
    }
    v
}

#[allow(clippy::too_many_arguments)]
fn row(
    role: Role,
    classes: &'static [Class],
    stimuli: Vec<Stimulus>,
    ready: Option<bool>,
    next: Next,
    reply: Reply,
    note: Option<Note>,
) -> Row {
    Row {
        role,
        classes,
        stimuli,
        ready,
        next,
        reply,
        note,
    }
}

/// docs/protocol.md "The link transaction for epoch e", row by row (plus its restart paragraph).
/// Where the design writes "timeout" for the initiator's abort, the table's stimulus is GiveUp
/// (a plain Timeout retransmits); an ABORT received needs no ABORT back.
fn design_rows() -> Vec<Row> {
    use Next as N;
    use Reply as Y;
    use TxnKind::*;
    const ALL_RELS: &[Rel] = &Rel::ALL;
    const OTHER: &[Rel] = &[Rel::Stale, Rel::Newer];
    const SAME: &[Rel] = &[Rel::Same];
    let ok = Some(Note::Ok);
    vec![
        // I Idle(e-1), guard → Tentative(e, n+1), PROPOSE(e, n+1)
        row(
            I,
            &[Idle],
            vec![Stimulus::Guard],
            None,
            N::Tentative,
            Y::ProposeNew,
            ok,
        ),
        // I Tentative(e, n), REFLECT(e, n) or QUERY(e, n) → Committed(e), COMMIT(e, n)
        row(
            I,
            &[Tentative],
            recv(&[Reflect, Query], SAME),
            None,
            N::Committed,
            Y::Commit,
            ok,
        ),
        // I Tentative(e, n), ABORT(e, n) → Idle(e-1)
        row(
            I,
            &[Tentative],
            recv(&[Abort], SAME),
            None,
            N::Idle,
            Y::None,
            ok,
        ),
        // I Tentative(e, n), local failure, timeout → Idle(e-1), ABORT(e, n)
        row(
            I,
            &[Tentative],
            vec![Stimulus::LocalFailure, Stimulus::GiveUp],
            None,
            N::Idle,
            Y::AbortOwn,
            ok,
        ),
        // (retransmission before giving up)
        row(
            I,
            &[Tentative],
            vec![Stimulus::Timeout],
            None,
            N::Same,
            Y::ProposeAgain,
            ok,
        ),
        // I Tentative(e, n), REFLECT / QUERY with another nonce → same, ABORT(that nonce)
        row(
            I,
            &[Tentative],
            recv(&[Reflect, Query], OTHER),
            None,
            N::Same,
            Y::AbortTheirs,
            ok,
        ),
        // I Idle(e-1), REFLECT(e, m) or QUERY(e, m) → same, ABORT(e, m)
        row(
            I,
            &[Idle],
            recv(&[Reflect, Query], ALL_RELS),
            None,
            N::Same,
            Y::AbortTheirs,
            ok,
        ),
        // I Committed(e), REFLECT(e, n) or QUERY(e, n) → same, COMMIT(e, n)
        row(
            I,
            &[Committed, Acked],
            recv(&[Reflect, Query], SAME),
            None,
            N::Same,
            Y::Commit,
            ok,
        ),
        // I Committed(e), COMMIT_ACK(e, n) → acknowledged
        row(
            I,
            &[Committed],
            recv(&[CommitAck], SAME),
            None,
            N::Acked,
            Y::None,
            ok,
        ),
        // I Committed(e), REFLECT / QUERY with another nonce → same, ABORT(that nonce)
        row(
            I,
            &[Committed, Acked],
            recv(&[Reflect, Query], OTHER),
            None,
            N::Same,
            Y::AbortTheirs,
            ok,
        ),
        // R Idle(e-1), PROPOSE(e, n), self Activated(e) → Reflecting(e, n), REFLECT(e, n)
        row(
            R,
            &[Idle],
            recv(&[Propose], &[Rel::Newer]),
            Some(true),
            N::Reflecting,
            Y::Reflect,
            ok,
        ),
        // R Idle(e-1), PROPOSE(e, n), not ready → same, ABORT(e, n, reason)
        row(
            R,
            &[Idle],
            recv(&[Propose], &[Rel::Newer]),
            Some(false),
            N::Same,
            Y::AbortTheirs,
            ok,
        ),
        // R Reflecting(e, n), PROPOSE(e, n) again → same, REFLECT(e, n)
        row(
            R,
            &[Reflecting],
            recv(&[Propose], SAME),
            None,
            N::Same,
            Y::Reflect,
            ok,
        ),
        // R Reflecting(e, n), PROPOSE(e, m), m > n → Reflecting(e, m), REFLECT(e, m)
        // (a new vote: only when ready, as from Idle)
        row(
            R,
            &[Reflecting],
            recv(&[Propose], &[Rel::Newer]),
            Some(true),
            N::Reflecting,
            Y::Reflect,
            ok,
        ),
        // R Reflecting(e, n), COMMIT(e, n) on this link's connection → Committed, COMMIT_ACK
        row(
            R,
            &[Reflecting],
            recv(&[Commit], SAME),
            None,
            N::Committed,
            Y::CommitAck,
            ok,
        ),
        // R Reflecting(e, n), ABORT(e, n) → Idle(e-1)
        row(
            R,
            &[Reflecting],
            recv(&[Abort], SAME),
            None,
            N::Idle,
            Y::None,
            ok,
        ),
        // R Reflecting(e, n), timeout → same, QUERY(e, n)
        row(
            R,
            &[Reflecting],
            vec![Stimulus::Timeout],
            None,
            N::Same,
            Y::Query,
            ok,
        ),
        // R Committed(e), COMMIT(e, n) again → same, COMMIT_ACK(e, n)
        row(
            R,
            &[Committed],
            recv(&[Commit], SAME),
            None,
            N::Same,
            Y::CommitAck,
            ok,
        ),
        // R Committed(e), PROPOSE(e, n) with its nonce (a duplicate) → same, nothing
        row(
            R,
            &[Committed],
            recv(&[Propose], SAME),
            None,
            N::Same,
            Y::None,
            None,
        ),
        // R Idle(e-1), ABORT(e, n) → same, nothing
        row(
            R,
            &[Idle],
            recv(&[Abort], ALL_RELS),
            None,
            N::Same,
            Y::None,
            None,
        ),
        // R any, PROPOSE / COMMIT / ABORT with a lower (stale) nonce → same, counted
        // (COMMIT while Idle is a protocol error whatever its nonce: see below)
        row(
            R,
            &[Idle, Reflecting, Committed],
            recv(&[Propose], &[Rel::Stale]),
            None,
            N::Same,
            Y::None,
            Some(Note::Stale),
        ),
        row(
            R,
            &[Reflecting, Committed],
            recv(&[Commit, Abort], &[Rel::Stale]),
            None,
            N::Same,
            Y::None,
            Some(Note::Stale),
        ),
        // R, COMMIT while Idle → counted, a protocol error
        row(
            R,
            &[Idle],
            recv(&[Commit], ALL_RELS),
            None,
            N::Same,
            Y::None,
            Some(Note::ProtocolError),
        ),
        // R, PROPOSE with a higher nonce while Committed → counted, a protocol error
        row(
            R,
            &[Committed],
            recv(&[Propose], &[Rel::Newer]),
            None,
            N::Same,
            Y::None,
            Some(Note::ProtocolError),
        ),
        // Restart: I in Tentative → abort (send ABORT)
        row(
            I,
            &[Tentative],
            vec![Stimulus::Restart],
            None,
            N::Idle,
            Y::AbortOwn,
            ok,
        ),
        // Restart: I in Committed without COMMIT_ACK → re-send COMMIT
        row(
            I,
            &[Committed],
            vec![Stimulus::Restart],
            None,
            N::Same,
            Y::Commit,
            ok,
        ),
        // Restart: R in Reflecting → QUERY
        row(
            R,
            &[Reflecting],
            vec![Stimulus::Restart],
            None,
            N::Same,
            Y::Query,
            ok,
        ),
        // Restart: everything else resumes silently
        row(
            I,
            &[Idle, Acked],
            vec![Stimulus::Restart],
            None,
            N::Same,
            Y::None,
            ok,
        ),
        row(
            R,
            &[Idle, Committed],
            vec![Stimulus::Restart],
            None,
            N::Same,
            Y::None,
            ok,
        ),
    ]
}

#[test]
fn design_table_rows_match() {
    let rows = design_rows();
    assert!(rows.len() >= 25);
    let mut checked = 0;
    for r in &rows {
        for &class in r.classes {
            for &s in &r.stimuli {
                let readies: &[bool] = match r.ready {
                    Some(true) => &[true],
                    Some(false) => &[false],
                    None => &[false, true],
                };
                for &ready in readies {
                    let c = cell(r.role, class, s, ready);
                    let what = format!("{:?} {class:?} {s:?} ready={ready}: {c:?}", r.role);
                    assert_eq!(c.next, r.next, "next of {what}");
                    assert_eq!(c.reply, r.reply, "reply of {what}");
                    if let Some(n) = r.note {
                        assert_eq!(c.note, n, "note of {what}");
                    }
                    assert_ne!(c.note, Note::Impossible, "{what}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 80, "{checked} cells checked");
}

#[test]
fn golden_table_doc() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/link-table.md");
    let rendered = render();
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate with UPDATE_GOLDEN=1 cargo test -p entente-proto --test link_table",
            path.display()
        )
    });
    assert!(
        committed == rendered,
        "{} is out of date with link::table::render(); regenerate with \
         UPDATE_GOLDEN=1 cargo test -p entente-proto --test link_table",
        path.display()
    );
}

#[test]
fn render_lists_every_possible_cell_once() {
    let doc = render();
    let rows: Vec<&str> = doc
        .lines()
        .filter(|l| l.starts_with("| Initiator") || l.starts_with("| Responder"))
        .collect();
    // every possible cell, with a responder's PROPOSE split by readiness
    let per_ready_split = 3 * 3; // responder classes × nonce relations
    assert_eq!(rows.len(), (4 + 3) * 24 + per_ready_split);
    let mut dedup = rows.clone();
    dedup.sort_unstable();
    dedup.dedup();
    assert_eq!(dedup.len(), rows.len());
    assert!(!doc.contains("Impossible"));
    assert!(doc.contains("| Responder | Reflecting | Commit(Same) | Committed | CommitAck | Ok |"));
    assert!(doc.contains("| Initiator | Tentative | Reflect(Same) | Committed | Commit | Ok |"));
}

// ---------------------------------------------------------------------------------------------
// LinkEnd
// ---------------------------------------------------------------------------------------------

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
/// Link epoch before the transaction; the transaction moves it to `E`.
const E0: Epoch = Epoch(4);
const E: Epoch = Epoch(5);
const DIGEST: [u8; 32] = [7; 32];

fn timers() -> LinkTimers {
    LinkTimers {
        retransmit: 30,
        max_backoff: 200,
        max_tries: 5,
        query: 50,
    }
}

fn ctx(ready: bool) -> LinkCtx {
    LinkCtx {
        ready_for: ready.then_some(E),
        device_refused: false,
        nonce_floor: entente_proto::Nonce(0),
        firmware_digest: DIGEST,
        timers: timers(),
        #[cfg(feature = "mutants")]
        mutant: None,
    }
}

/// The initiator end (A → B), connected, the peer activated `E`.
fn initiator() -> LinkEnd {
    let mut l = LinkEnd::new(A, B, LinkState::established(E0));
    assert_eq!(l.role, I);
    l.conn = Some(1);
    l.device = Some(E0);
    l.peer_activated = Some(E);
    l
}

/// The responder end (B → A), connected.
fn responder() -> LinkEnd {
    let mut l = LinkEnd::new(B, A, LinkState::established(E0));
    assert_eq!(l.role, R);
    l.conn = Some(1);
    l.device = Some(E0);
    l
}

fn txn(kind: TxnKind, epoch: Epoch, nonce: u64) -> Txn {
    Txn::new(kind, epoch, Nonce(nonce))
}

fn reflect(nonce: u64) -> Txn {
    Txn {
        digest: DIGEST,
        ..txn(TxnKind::Reflect, E, nonce)
    }
}

/// Initiator with PROPOSE(E, n) open (nonce 1 unless more proposals were made).
fn tentative() -> LinkEnd {
    let mut i = initiator();
    let fx = i.try_propose(&ctx(true));
    assert_eq!(fx.send, Some(txn(TxnKind::Propose, E, 1)));
    i
}

/// Responder reflecting PROPOSE(E, n).
fn reflecting(n: u64) -> LinkEnd {
    let mut r = responder();
    let fx = r.on_txn(&txn(TxnKind::Propose, E, n), &ctx(true));
    assert_eq!(fx.send, Some(reflect(n)));
    r
}

#[test]
fn happy_path_exact_messages() {
    let c = ctx(true);
    let mut i = initiator();
    let mut r = responder();
    // both ends speak E0; the initiator keeps sending old-epoch data until it commits
    assert_eq!(i.send_epoch(&c), Some(E0));
    assert_eq!(r.send_epoch(&c), Some(E0));

    // PROPOSE
    assert!(i.guard(&c));
    let fx = i.try_propose(&c);
    assert!(fx.persist);
    assert_eq!(fx.note, Some(Note::Ok));
    assert_eq!(fx.committed, None);
    let propose = fx.send.unwrap();
    assert_eq!(propose, txn(TxnKind::Propose, E, 1));
    assert_eq!(i.state.pending, Pending::Tentative(Nonce(1)));
    assert_eq!(i.state.last_nonce, Nonce(1));
    assert_eq!(i.state.committed, E0);
    assert_eq!(i.send_epoch(&c), Some(E0), "Tentative still sends old data");
    assert!(!i.guard(&c), "one proposal at a time");
    assert_eq!(i.try_propose(&c), Default::default());

    // REFLECT: the responder pauses its data
    let fx = r.on_txn(&propose, &c);
    assert!(fx.persist);
    assert_eq!(fx.note, Some(Note::Ok));
    let refl = fx.send.unwrap();
    assert_eq!(refl, reflect(1));
    assert_eq!(refl.reason, AbortReason::Unspecified);
    assert_eq!(r.state.pending, Pending::Reflecting(Nonce(1)));
    assert_eq!(r.send_epoch(&c), None, "reflecting responder pauses data");
    assert_eq!(r.recv_epoch(), E0);

    // COMMIT: the initiator commits, its device applies E, then COMMIT goes out; no data
    // flows meanwhile
    let fx = i.on_txn(&refl, &c);
    assert!(fx.persist);
    assert_eq!(fx.committed, Some(E));
    assert_eq!(fx.send, None, "COMMIT waits for the device");
    assert_eq!(i.send_epoch(&c), None, "no data while the device switches");
    assert_eq!(i.device_applied(E0).send, None, "not the committed epoch");
    let commit = i.device_applied(E).send.unwrap();
    assert_eq!(commit, txn(TxnKind::Commit, E, 1));
    assert_eq!(i.state.committed, E);
    assert_eq!(i.state.pending, Pending::None);
    assert_eq!(i.state.commit_nonce, Nonce(1));
    assert!(!i.state.acked);
    assert_eq!(
        i.state.last_nonce,
        Nonce(0),
        "nonces restart for the next epoch"
    );
    assert_eq!(i.recv_epoch(), E);
    i.commit_sent_on_conn = true; // what the node does when it sends the COMMIT
    assert_eq!(
        i.send_epoch(&c),
        None,
        "no new-epoch data before COMMIT_ACK: the responder's device may not speak E yet"
    );

    // COMMIT_ACK, once the responder's device took E
    let fx = r.on_txn(&commit, &c);
    assert!(fx.persist);
    assert_eq!(fx.committed, Some(E));
    assert_eq!(fx.send, None, "COMMIT_ACK waits for the device");
    assert_eq!(r.send_epoch(&c), None);
    let ack = r.device_applied(E).send.unwrap();
    assert_eq!(ack, txn(TxnKind::CommitAck, E, 1));
    assert_eq!(r.state.committed, E);
    assert_eq!(r.state.pending, Pending::None);
    assert_eq!(r.state.commit_nonce, Nonce(1));
    assert_eq!(r.send_epoch(&c), Some(E));
    assert_eq!(r.recv_epoch(), E);

    let fx = i.on_txn(&ack, &c);
    assert!(fx.persist);
    assert_eq!(fx.send, None);
    assert_eq!(fx.committed, None);
    assert!(i.state.acked);
    // acknowledged: new data flows on any later connection without another COMMIT
    i.commit_sent_on_conn = false;
    assert_eq!(i.send_epoch(&c), Some(E));
    // and the next epoch is not proposed before the node activates it
    assert!(!i.guard(&c));
}

#[test]
fn query_commits_like_reflect() {
    let c = ctx(true);
    let mut i = tentative();
    let fx = i.on_txn(&txn(TxnKind::Query, E, 1), &c);
    assert_eq!(fx.committed, Some(E));
    assert_eq!(fx.send, None);
    assert_eq!(i.device_applied(E).send, Some(txn(TxnKind::Commit, E, 1)));
}

#[test]
fn committed_initiator_answers_reflect_and_query_with_commit() {
    let c = ctx(true);
    let mut i = tentative();
    i.on_txn(&reflect(1), &c);
    i.device_applied(E);
    for k in [TxnKind::Reflect, TxnKind::Query] {
        let fx = i.on_txn(&txn(k, E, 1), &c);
        assert!(!fx.persist);
        assert_eq!(fx.committed, None);
        assert_eq!(fx.send, Some(txn(TxnKind::Commit, E, 1)));
    }
    i.on_txn(&txn(TxnKind::CommitAck, E, 1), &c);
    assert!(i.state.acked);
    let fx = i.on_txn(&txn(TxnKind::Query, E, 1), &c);
    assert_eq!(fx.send, Some(txn(TxnKind::Commit, E, 1)));
    // a duplicate COMMIT_ACK is stale
    let fx = i.on_txn(&txn(TxnKind::CommitAck, E, 1), &c);
    assert_eq!(fx.note, Some(Note::Stale));
    // another nonce is refused
    let fx = i.on_txn(&txn(TxnKind::Query, E, 3), &c);
    assert_eq!(
        fx.send,
        Some(Txn::abort(E, Nonce(3), AbortReason::WrongNonce))
    );
    assert_eq!(i.state.committed, E);
}

#[test]
fn retransmits_with_the_same_nonce() {
    let c = ctx(true);
    let mut i = tentative();
    let at = i.rearm(0, &c, true).unwrap();
    assert_eq!(at, 30);
    let fx = i.on_timer(at, &c);
    assert!(!fx.persist);
    assert_eq!(fx.send, Some(txn(TxnKind::Propose, E, 1)));
    assert_eq!(i.tries, 1);
    assert_eq!(i.state.pending, Pending::Tentative(Nonce(1)));
    // on a new connection too
    let fx = i.on_event(Stimulus::Reconnect, &c);
    assert_eq!(fx.send, Some(txn(TxnKind::Propose, E, 1)));
    assert!(!fx.persist);
}

#[test]
fn gives_up_after_max_tries_with_own_nonce() {
    let c = ctx(true);
    let mut i = tentative();
    let mut now: Nanos = 0;
    let mut at = i.rearm(now, &c, true).unwrap();
    let mut proposes = 1;
    let abort = loop {
        now = at;
        let fx = i.on_timer(now, &c);
        match fx.send.unwrap() {
            t if t.kind == TxnKind::Propose => {
                assert_eq!(t, txn(TxnKind::Propose, E, 1));
                assert!(!fx.persist);
                proposes += 1;
            }
            t => {
                assert!(fx.persist, "the abort is persisted before it is sent");
                break t;
            }
        }
        at = i.rearm(now, &c, fx.persist).unwrap();
    };
    assert_eq!(
        proposes,
        timers().max_tries,
        "PROPOSE sent max_tries times in all"
    );
    assert_eq!(abort, Txn::abort(E, Nonce(1), AbortReason::GaveUp));
    assert_eq!(i.state.pending, Pending::None);
    assert_eq!(i.state.committed, E0);
    assert_eq!(i.state.last_nonce, Nonce(1));
    assert_eq!(i.aborts, 1);
    // the guard is re-checked with backoff, and the next proposal takes a new nonce
    let at = i.rearm(now, &c, true).unwrap();
    assert_eq!(at, now + 60);
    let fx = i.on_timer(at, &c);
    assert!(fx.persist);
    assert_eq!(fx.send, Some(txn(TxnKind::Propose, E, 2)));
    assert_eq!(i.tries, 0);
    // a late REFLECT of the dead nonce is refused, not committed on
    let fx = i.on_txn(&reflect(1), &c);
    assert_eq!(
        fx.send,
        Some(Txn::abort(E, Nonce(1), AbortReason::WrongNonce))
    );
    assert_eq!(fx.committed, None);
}

#[test]
fn local_failure_aborts_the_open_proposal() {
    let c = ctx(true);
    let mut i = tentative();
    let fx = i.on_event(Stimulus::LocalFailure, &c);
    assert!(fx.persist);
    assert_eq!(
        fx.send,
        Some(Txn::abort(E, Nonce(1), AbortReason::LocalFailure))
    );
    assert_eq!(i.state.pending, Pending::None);
    // local failure with nothing open, or after commit, does nothing
    let fx = i.on_event(Stimulus::LocalFailure, &c);
    assert_eq!((fx.persist, fx.send), (false, None));
    let mut i = tentative();
    i.on_txn(&reflect(1), &c);
    let fx = i.on_event(Stimulus::LocalFailure, &c);
    assert_eq!((fx.persist, fx.send), (false, None));
    assert_eq!(i.state.committed, E);
}

#[test]
fn responder_abort_ends_tentative_without_reply() {
    let c = ctx(true);
    let mut i = tentative();
    let fx = i.on_txn(&Txn::abort(E, Nonce(1), AbortReason::NotActivated), &c);
    assert!(fx.persist);
    assert_eq!(fx.send, None);
    assert_eq!(i.state.pending, Pending::None);
    assert_eq!(i.aborts, 1);
    // a second copy is stale
    let fx = i.on_txn(&Txn::abort(E, Nonce(1), AbortReason::NotActivated), &c);
    assert_eq!(fx.note, Some(Note::Stale));
    assert!(!fx.persist);
}

#[test]
fn responder_not_ready_refuses_and_ignores_the_stale_repropose() {
    let mut r = responder();
    let fx = r.on_txn(&txn(TxnKind::Propose, E, 1), &ctx(false));
    assert_eq!(
        fx.send,
        Some(Txn::abort(E, Nonce(1), AbortReason::NotActivated))
    );
    assert_eq!(fx.note, Some(Note::Ok));
    assert_eq!(r.state.pending, Pending::None);
    assert_eq!(r.state.last_nonce, Nonce(1));
    assert_eq!(
        r.send_epoch(&ctx(false)),
        Some(E0),
        "refusing does not pause"
    );
    // the initiator's retransmission of the refused nonce, even once ready, is stale
    let fx = r.on_txn(&txn(TxnKind::Propose, E, 1), &ctx(true));
    assert_eq!(fx.note, Some(Note::Stale));
    assert_eq!(fx.send, None);
    assert_eq!(r.state.pending, Pending::None);
    // a new proposal is reflected once ready
    let fx = r.on_txn(&txn(TxnKind::Propose, E, 2), &ctx(true));
    assert_eq!(fx.send, Some(reflect(2)));
    assert_eq!(r.state.pending, Pending::Reflecting(Nonce(2)));
}

#[test]
fn reflect_with_another_nonce_is_aborted() {
    let c = ctx(true);
    for other in [0, 2, 9] {
        let mut i = tentative();
        let fx = i.on_txn(&reflect(other), &c);
        assert_eq!(
            fx.send,
            Some(Txn::abort(E, Nonce(other), AbortReason::WrongNonce))
        );
        assert!(!fx.persist);
        assert_eq!(fx.committed, None);
        assert_eq!(i.state.pending, Pending::Tentative(Nonce(1)));
    }
    // an idle initiator refuses any reflection
    let mut i = initiator();
    let fx = i.on_txn(&reflect(1), &c);
    assert_eq!(
        fx.send,
        Some(Txn::abort(E, Nonce(1), AbortReason::WrongNonce))
    );
    assert_eq!(i.state.pending, Pending::None);
}

#[test]
fn higher_propose_while_reflecting_moves_to_the_new_nonce() {
    let c = ctx(true);
    let mut r = reflecting(1);
    // the same proposal again is re-reflected
    let fx = r.on_txn(&txn(TxnKind::Propose, E, 1), &c);
    assert_eq!(fx.send, Some(reflect(1)));
    assert!(!fx.persist);
    // a higher one: the initiator gave 1 up
    let fx = r.on_txn(&txn(TxnKind::Propose, E, 3), &c);
    assert!(fx.persist);
    assert_eq!(fx.send, Some(reflect(3)));
    assert_eq!(r.state.pending, Pending::Reflecting(Nonce(3)));
    // the initiator's ABORT of the old nonce arrives late: stale
    let fx = r.on_txn(&Txn::abort(E, Nonce(1), AbortReason::GaveUp), &c);
    assert_eq!(fx.note, Some(Note::Stale));
    assert_eq!(r.state.pending, Pending::Reflecting(Nonce(3)));
    // a COMMIT of the old nonce is stale, never committed on
    let fx = r.on_txn(&txn(TxnKind::Commit, E, 1), &c);
    assert_eq!(fx.note, Some(Note::Stale));
    assert_eq!(fx.committed, None);
    let fx = r.on_txn(&txn(TxnKind::Commit, E, 3), &c);
    assert_eq!(fx.committed, Some(E));
    assert_eq!(r.state.commit_nonce, Nonce(3));
}

#[test]
fn responder_not_ready_while_reflecting_refuses_a_new_nonce() {
    // a reflecting responder that is no longer ready (campaign halted) keeps its standing vote
    // but does not vote for a new proposal
    let mut r = reflecting(1);
    let fx = r.on_txn(&txn(TxnKind::Propose, E, 1), &ctx(false));
    assert_eq!(fx.send, Some(reflect(1)), "the standing vote is repeated");
    let fx = r.on_txn(&txn(TxnKind::Propose, E, 2), &ctx(false));
    assert_eq!(
        fx.send,
        Some(Txn::abort(E, Nonce(2), AbortReason::NotActivated))
    );
    assert_eq!(r.state.pending, Pending::Reflecting(Nonce(1)));
    // the initiator's answer to its QUERY settles the old nonce
    let fx = r.on_txn(
        &Txn::abort(E, Nonce(1), AbortReason::WrongNonce),
        &ctx(false),
    );
    assert!(fx.persist);
    assert_eq!(r.state.pending, Pending::None);
    assert_eq!(r.state.last_nonce, Nonce(2));
    let fx = r.on_txn(&txn(TxnKind::Propose, E, 2), &ctx(true));
    assert_eq!(fx.note, Some(Note::Stale));
}

#[test]
fn responder_abort_of_its_nonce_returns_to_idle() {
    let c = ctx(true);
    let mut r = reflecting(2);
    let fx = r.on_txn(&Txn::abort(E, Nonce(2), AbortReason::GaveUp), &c);
    assert!(fx.persist);
    assert_eq!(fx.send, None);
    assert_eq!(r.state.pending, Pending::None);
    assert_eq!(r.state.last_nonce, Nonce(2));
    assert_eq!(r.send_epoch(&c), Some(E0), "data resumes at the old epoch");
    // the retransmitted PROPOSE of the aborted nonce is stale
    let fx = r.on_txn(&txn(TxnKind::Propose, E, 2), &c);
    assert_eq!(fx.note, Some(Note::Stale));
    assert_eq!(r.state.pending, Pending::None);
    // an abort while idle is ignored quietly
    let fx = r.on_txn(&Txn::abort(E, Nonce(7), AbortReason::GaveUp), &c);
    assert_eq!(fx.note, Some(Note::Ok));
    assert_eq!((fx.persist, fx.send), (false, None));
}

#[test]
fn duplicate_commit_is_reacked() {
    let c = ctx(true);
    let mut r = reflecting(1);
    r.on_txn(&txn(TxnKind::Commit, E, 1), &c);
    r.device_applied(E);
    for _ in 0..2 {
        let fx = r.on_txn(&txn(TxnKind::Commit, E, 1), &c);
        assert!(!fx.persist);
        assert_eq!(fx.committed, None);
        assert_eq!(fx.send, Some(txn(TxnKind::CommitAck, E, 1)));
    }
    // a duplicate PROPOSE of the committed nonce is stale
    let fx = r.on_txn(&txn(TxnKind::Propose, E, 1), &c);
    assert_eq!(fx.note, Some(Note::Stale));
    assert_eq!(fx.send, None);
    // a higher PROPOSE or COMMIT for the committed epoch is a protocol error
    let fx = r.on_txn(&txn(TxnKind::Propose, E, 2), &c);
    assert_eq!(fx.note, Some(Note::ProtocolError));
    assert!(!fx.out_of_range);
    let fx = r.on_txn(&txn(TxnKind::Abort, E, 1), &c);
    assert_eq!(fx.note, Some(Note::ProtocolError));
    assert_eq!(r.state.committed, E);
}

#[test]
fn stale_nonces_are_counted_as_stale() {
    let c = ctx(true);
    let mut r = reflecting(3);
    for t in [
        txn(TxnKind::Propose, E, 2),
        txn(TxnKind::Commit, E, 2),
        Txn::abort(E, Nonce(2), AbortReason::GaveUp),
    ] {
        let fx = r.on_txn(&t, &c);
        assert_eq!(fx.note, Some(Note::Stale), "{t:?}");
        assert_eq!((fx.persist, fx.send, fx.committed), (false, None, None));
    }
    assert_eq!(r.state.pending, Pending::Reflecting(Nonce(3)));
    // initiator: an ABORT of an older nonce is stale
    let mut i = tentative();
    i.on_txn(&Txn::abort(E, Nonce(1), AbortReason::DeviceRefused), &c);
    i.try_propose(&c);
    assert_eq!(i.state.pending, Pending::Tentative(Nonce(2)));
    let fx = i.on_txn(&Txn::abort(E, Nonce(1), AbortReason::DeviceRefused), &c);
    assert_eq!(fx.note, Some(Note::Stale));
    assert_eq!(i.state.pending, Pending::Tentative(Nonce(2)));
}

#[test]
fn messages_the_role_never_gets_are_protocol_errors() {
    let c = ctx(true);
    let mut i = tentative();
    for k in [TxnKind::Propose, TxnKind::Commit] {
        let fx = i.on_txn(&txn(k, E, 1), &c);
        assert_eq!(fx.note, Some(Note::ProtocolError), "{k:?}");
        assert_eq!((fx.persist, fx.send), (false, None));
    }
    let mut r = reflecting(1);
    for k in [TxnKind::Reflect, TxnKind::Query, TxnKind::CommitAck] {
        let fx = r.on_txn(&txn(k, E, 1), &c);
        assert_eq!(fx.note, Some(Note::ProtocolError), "{k:?}");
        assert_eq!((fx.persist, fx.send), (false, None));
    }
    // COMMIT while idle
    let mut r = responder();
    let fx = r.on_txn(&txn(TxnKind::Commit, E, 1), &c);
    assert_eq!(fx.note, Some(Note::ProtocolError));
    assert_eq!(fx.committed, None);
}

#[test]
fn out_of_range_epochs() {
    let c = ctx(true);
    let mut r = responder();
    // two epochs ahead: a protocol error, flagged out of range, nothing changes
    let fx = r.on_txn(&txn(TxnKind::Propose, Epoch(E.0 + 1), 1), &c);
    assert_eq!(fx.note, Some(Note::ProtocolError));
    assert!(fx.out_of_range);
    assert_eq!((fx.persist, fx.send), (false, None));
    // older than the committed epoch: stale
    let fx = r.on_txn(&txn(TxnKind::Commit, Epoch(E0.0 - 1), 1), &c);
    assert_eq!(fx.note, Some(Note::Stale));
    assert!(!fx.out_of_range);
    let mut i = initiator();
    let fx = i.on_txn(
        &Txn {
            epoch: Epoch(9),
            ..reflect(1)
        },
        &c,
    );
    assert_eq!(fx.note, Some(Note::ProtocolError));
    assert!(fx.out_of_range);
    assert_eq!(i.state.pending, Pending::None);
    // a link still at epoch 0 treats messages for epoch 0 as stale
    let mut r0 = LinkEnd::new(B, A, LinkState::established(Epoch(0)));
    r0.conn = Some(1);
    let fx = r0.on_txn(&txn(TxnKind::Commit, Epoch(0), 1), &c);
    assert_eq!(fx.note, Some(Note::Stale));
    // fresh (no agreed state) and retired links ignore transactions
    let mut f = LinkEnd::new(B, A, LinkState::fresh());
    let fx = f.on_txn(&txn(TxnKind::Propose, Epoch(1), 1), &c);
    assert_eq!(fx.note, Some(Note::Stale));
    assert_eq!(fx.send, None);
    let mut gone = responder();
    gone.retired = true;
    let fx = gone.on_txn(&txn(TxnKind::Propose, E, 1), &c);
    assert_eq!((fx.send, fx.note), (None, Some(Note::Stale)));
}

// ---- restart and reconnect ----

/// A link end rebuilt from its persisted state, as `Node::new` does.
fn restarted(l: &LinkEnd, me: NodeId) -> LinkEnd {
    LinkEnd::new(me, l.peer, l.state)
}

#[test]
fn restart_initiator_tentative_aborts() {
    let c = ctx(true);
    let i = tentative();
    let mut i = restarted(&i, A);
    let fx = i.on_event(Stimulus::Restart, &c);
    assert!(fx.persist);
    assert_eq!(
        fx.send,
        Some(Txn::abort(E, Nonce(1), AbortReason::Restarted))
    );
    assert_eq!(i.state.pending, Pending::None);
    assert_eq!(
        i.state.last_nonce,
        Nonce(1),
        "the next proposal takes nonce 2"
    );
    i.conn = Some(2);
    i.peer_activated = Some(E);
    let fx = i.try_propose(&c);
    assert_eq!(fx.send, Some(txn(TxnKind::Propose, E, 2)));
}

#[test]
fn restart_initiator_committed_unacked_resends_commit() {
    let c = ctx(true);
    let mut i = tentative();
    i.on_txn(&reflect(1), &c);
    let mut i = restarted(&i, A);
    assert_eq!(i.send_epoch(&c), None, "connection down");
    let fx = i.on_event(Stimulus::Restart, &c);
    assert!(!fx.persist);
    assert_eq!(
        fx.send, None,
        "the restarted agent's device must take E again first"
    );
    let fx = i.device_applied(E);
    assert_eq!(fx.send, Some(txn(TxnKind::Commit, E, 1)));
    assert_eq!(i.state.committed, E);
    // on the new connection: no new-epoch data until the responder acknowledged the COMMIT
    i.conn = Some(2);
    assert_eq!(i.send_epoch(&c), None);
    let fx = i.on_event(Stimulus::Reconnect, &c);
    assert_eq!(fx.send, Some(txn(TxnKind::Commit, E, 1)));
    i.commit_sent_on_conn = true;
    assert_eq!(i.send_epoch(&c), None);
    // the commit is retransmitted until acknowledged
    let at = i.rearm(10, &c, true).unwrap();
    assert_eq!(at, 10 + 30);
    let fx = i.on_timer(at, &c);
    assert_eq!(fx.send, Some(txn(TxnKind::Commit, E, 1)));
}

#[test]
fn restart_initiator_acked_is_silent() {
    let c = ctx(true);
    let mut i = tentative();
    i.on_txn(&reflect(1), &c);
    i.on_txn(&txn(TxnKind::CommitAck, E, 1), &c);
    let mut i = restarted(&i, A);
    let fx = i.on_event(Stimulus::Restart, &c);
    assert_eq!((fx.persist, fx.send), (false, None));
    let fx = i.on_event(Stimulus::Reconnect, &c);
    assert_eq!((fx.persist, fx.send), (false, None));
    assert_eq!(i.rearm(0, &c, true), None);
}

#[test]
fn restart_responder_reflecting_queries() {
    let c = ctx(true);
    let r = reflecting(4);
    let mut r = restarted(&r, B);
    let fx = r.on_event(Stimulus::Restart, &c);
    assert!(!fx.persist);
    assert_eq!(fx.send, Some(txn(TxnKind::Query, E, 4)));
    assert_eq!(r.state.pending, Pending::Reflecting(Nonce(4)));
    r.conn = Some(2);
    assert_eq!(r.send_epoch(&c), None, "still paused after restart");
    let fx = r.on_event(Stimulus::Reconnect, &c);
    assert_eq!(fx.send, Some(txn(TxnKind::Query, E, 4)));
}

#[test]
fn restart_of_settled_ends_is_silent() {
    let c = ctx(true);
    for mut l in [initiator(), responder()] {
        let fx = l.on_event(Stimulus::Restart, &c);
        assert_eq!((fx.persist, fx.send), (false, None));
    }
    let mut r = reflecting(1);
    r.on_txn(&txn(TxnKind::Commit, E, 1), &c);
    let mut r = restarted(&r, B);
    let fx = r.on_event(Stimulus::Restart, &c);
    assert_eq!((fx.persist, fx.send), (false, None));
}

#[test]
fn reconnect_rules() {
    let c = ctx(true);
    // Tentative: PROPOSE again
    let mut i = tentative();
    let fx = i.on_event(Stimulus::Reconnect, &c);
    assert_eq!(fx.send, Some(txn(TxnKind::Propose, E, 1)));
    // Committed, unacked: COMMIT again
    i.on_txn(&reflect(1), &c);
    i.device_applied(E);
    let fx = i.on_event(Stimulus::Reconnect, &c);
    assert_eq!(fx.send, Some(txn(TxnKind::Commit, E, 1)));
    // acked: nothing
    i.on_txn(&txn(TxnKind::CommitAck, E, 1), &c);
    assert_eq!(i.on_event(Stimulus::Reconnect, &c).send, None);
    // Reflecting: QUERY
    let mut r = reflecting(1);
    let fx = r.on_event(Stimulus::Reconnect, &c);
    assert_eq!(fx.send, Some(txn(TxnKind::Query, E, 1)));
    // idle / committed responder: nothing
    assert_eq!(responder().on_event(Stimulus::Reconnect, &c).send, None);
    r.on_txn(&txn(TxnKind::Commit, E, 1), &c);
    assert_eq!(r.on_event(Stimulus::Reconnect, &c).send, None);
}

#[test]
fn guard_needs_connection_activation_and_ack() {
    let c = ctx(true);
    let mut i = initiator();
    assert!(i.guard(&c));
    assert!(!i.guard(&ctx(false)), "self not activated");
    i.peer_activated = Some(E0);
    assert!(!i.guard(&c), "peer not activated");
    i.peer_activated = Some(Epoch(E.0 + 3));
    assert!(i.guard(&c), "a peer further ahead activated E too");
    i.conn = None;
    assert!(!i.guard(&c), "connection down");
    assert_eq!(i.try_propose(&c), Default::default());
    i.conn = Some(3);
    i.retired = true;
    assert!(!i.guard(&c), "retired");
    let r = responder();
    assert!(!r.guard(&c), "the responder never proposes");
    let mut f = LinkEnd::new(A, B, LinkState::fresh());
    f.conn = Some(1);
    f.peer_activated = Some(Epoch(1));
    assert!(
        !f.guard(&LinkCtx {
            ready_for: Some(Epoch(1)),
            ..c
        }),
        "fresh link waits for HELLO"
    );
}

// ---- LINK_HELLO ----

fn hello(window: Window, activated: Option<u64>, link: Option<(u64, Pending)>) -> Hello {
    Hello {
        window,
        activated: activated.map(Epoch),
        link: link.map(|(e, pending)| LinkSnapshot {
            committed: Epoch(e),
            pending,
        }),
        your_version: None,
    }
}

#[test]
fn hello_on_fresh_links_takes_the_highest_common_epoch() {
    let mut f = LinkEnd::new(A, B, LinkState::fresh());
    f.conn = Some(1);
    assert_eq!(f.state.snapshot(), None);
    assert_eq!(
        f.send_epoch(&ctx(true)),
        None,
        "no data before the epoch is agreed"
    );
    let changed = f
        .on_hello(&hello(Window::new(2, 6), Some(6), None), &Window::new(1, 4))
        .unwrap();
    assert!(changed);
    assert_eq!(f.state, LinkState::established(Epoch(4)));
    assert_eq!(f.peer_window, Some(Window::new(2, 6)));
    assert_eq!(f.peer_activated, Some(Epoch(6)));
    assert_eq!(
        f.send_epoch(&ctx(true)),
        None,
        "the device has not taken the epoch yet"
    );
    f.device_applied(Epoch(4));
    assert_eq!(f.send_epoch(&ctx(true)), Some(Epoch(4)));
    assert_eq!(
        f.state.snapshot(),
        Some(LinkSnapshot {
            committed: Epoch(4),
            pending: Pending::None
        })
    );
    // a second HELLO on an agreed link changes nothing persistent, but learns activation
    let changed = f
        .on_hello(
            &hello(Window::new(0, 9), Some(7), Some((4, Pending::None))),
            &Window::new(1, 4),
        )
        .unwrap();
    assert!(!changed);
    assert_eq!(f.state.committed, Epoch(4));
    assert_eq!(f.peer_activated, Some(Epoch(7)));
    // activation reports never go back
    f.on_hello(&hello(Window::new(0, 9), Some(2), None), &Window::new(1, 4))
        .unwrap();
    assert_eq!(f.peer_activated, Some(Epoch(7)));
}

#[test]
fn hello_on_fresh_link_adopts_the_peers_committed_epoch() {
    let mut f = LinkEnd::new(B, A, LinkState::fresh());
    let changed = f
        .on_hello(
            &hello(
                Window::new(1, 5),
                None,
                Some((3, Pending::Tentative(Nonce(2)))),
            ),
            &Window::new(0, 5),
        )
        .unwrap();
    assert!(changed);
    assert_eq!(f.state, LinkState::established(Epoch(3)));
    // the peer's committed epoch outside this end's window: the link is incompatible (never
    // another epoch than the one the peer holds), nothing persisted, nothing sent
    let mut f = LinkEnd::new(B, A, LinkState::fresh());
    f.conn = Some(1);
    let err = f
        .on_hello(
            &hello(Window::new(1, 5), None, Some((1, Pending::None))),
            &Window::new(2, 4),
        )
        .unwrap_err();
    assert_eq!(
        err,
        HelloError::Incompatible {
            epoch: Epoch(1),
            mine: Window::new(2, 4),
            theirs: Window::new(1, 5)
        }
    );
    assert!(f.state.fresh && f.incompatible);
    assert_eq!(f.send_epoch(&ctx(true)), None);
    // the end that holds the state decides alike from the same pair of windows
    let mut s = LinkEnd::new(A, B, LinkState::established(Epoch(1)));
    s.conn = Some(1);
    s.device = Some(Epoch(1));
    assert!(s
        .on_hello(&hello(Window::new(2, 4), None, None), &Window::new(1, 5))
        .is_err());
    assert!(s.incompatible && !s.guard(&ctx(true)));
    assert_eq!(s.send_epoch(&ctx(true)), None);
    // a later HELLO whose windows hold the epoch clears it
    s.on_hello(&hello(Window::new(1, 4), None, None), &Window::new(1, 5))
        .unwrap();
    assert!(!s.incompatible);
    assert_eq!(s.send_epoch(&ctx(true)), Some(Epoch(1)));
}

#[test]
fn hello_without_common_epoch_is_an_error() {
    let mut f = LinkEnd::new(A, B, LinkState::fresh());
    let err = f
        .on_hello(&hello(Window::new(5, 6), Some(6), None), &Window::new(1, 4))
        .unwrap_err();
    assert_eq!(
        err,
        HelloError::NoCommonEpoch {
            mine: Window::new(1, 4),
            theirs: Window::new(5, 6)
        }
    );
    assert!(f.state.fresh, "nothing agreed");
    assert_eq!(f.send_epoch(&ctx(true)), None);
}

#[test]
fn link_agreed_by_hello_acknowledges_any_commit_of_its_epoch() {
    // a responder that adopted E from the initiator's HELLO (its disk was wiped while the
    // initiator's COMMIT was in flight) does not know the committing nonce
    let c = ctx(true);
    let mut r = LinkEnd::new(B, A, LinkState::fresh());
    r.conn = Some(1);
    r.on_hello(
        &hello(Window::new(0, 9), Some(5), Some((5, Pending::None))),
        &Window::new(0, 9),
    )
    .unwrap();
    assert_eq!(r.state, LinkState::established(E));
    r.device_applied(E);
    let fx = r.on_txn(&txn(TxnKind::Commit, E, 7), &c);
    assert_eq!(fx.note, Some(Note::Ok));
    assert_eq!(fx.send, Some(txn(TxnKind::CommitAck, E, 7)));
    assert_eq!((fx.persist, fx.committed), (false, None));
    // a late PROPOSE of that epoch is stale
    let fx = r.on_txn(&txn(TxnKind::Propose, E, 7), &c);
    assert_eq!((fx.note, fx.send), (Some(Note::Stale), None));
    // a link committed by a transaction still tells nonces apart
    let mut r = reflecting(1);
    r.on_txn(&txn(TxnKind::Commit, E, 1), &c);
    let fx = r.on_txn(&txn(TxnKind::Commit, E, 2), &c);
    assert_eq!((fx.note, fx.send), (Some(Note::ProtocolError), None));
}

#[test]
fn hello_does_not_move_an_agreed_link() {
    let mut i = tentative();
    let before = i.state;
    // the peer at the same epoch, or behind: this end keeps its state
    for theirs in [before.committed.0, before.committed.0 - 1] {
        let changed = i
            .on_hello(
                &hello(Window::new(0, 9), Some(5), Some((theirs, Pending::None))),
                &Window::new(0, 9),
            )
            .unwrap();
        assert!(!changed);
        assert_eq!(i.state, before);
    }
}

#[test]
fn hello_moves_an_end_behind_to_the_higher_committed_epoch() {
    // a store restored from an older copy: both ends take the higher epoch
    let mut i = tentative();
    let changed = i
        .on_hello(
            &hello(Window::new(0, 9), Some(5), Some((9, Pending::None))),
            &Window::new(0, 9),
        )
        .unwrap();
    assert!(changed);
    assert_eq!(i.state, LinkState::established(Epoch(9)));
    // unless a window does not hold it: incompatible, state kept
    let mut i = tentative();
    let before = i.state;
    assert!(i
        .on_hello(
            &hello(Window::new(0, 9), Some(5), Some((9, Pending::None))),
            &Window::new(0, 8),
        )
        .is_err());
    assert!(i.incompatible);
    assert_eq!(i.state, before);
    // a responder one epoch behind that reflected waits for the COMMIT its initiator re-sends
    let mut r = reflecting(1);
    let before = r.state;
    let changed = r
        .on_hello(
            &hello(Window::new(0, 9), Some(5), Some((E.0, Pending::None))),
            &Window::new(0, 9),
        )
        .unwrap();
    assert!(!changed);
    assert_eq!(r.state, before);
}

// ---- timers ----

#[test]
fn rearm_backoff_doubles_and_caps() {
    let c = ctx(true);
    let mut i = tentative();
    let mut now = 1_000;
    let mut gaps = Vec::new();
    let mut at = i.rearm(now, &c, true).unwrap();
    loop {
        gaps.push(at - now);
        // a stale deadline does nothing
        let early = i.on_timer(at - 1, &c);
        assert_eq!(early, Default::default());
        now = at;
        let fx = i.on_timer(now, &c);
        if fx.send.map(|t| t.kind) != Some(TxnKind::Propose) {
            break;
        }
        // an armed timer is kept unless the state changed
        at = i.rearm(now, &c, false).unwrap();
        assert_eq!(i.rearm(now + 1, &c, false), None);
        assert_eq!(i.timer_at, Some(at));
    }
    // retransmit 30, doubling, capped at max_backoff 200; max_tries 5
    assert_eq!(gaps, vec![30, 60, 120, 200, 200]);
}

#[test]
fn commit_retransmission_backs_off_and_never_gives_up() {
    let c = ctx(true);
    let mut i = tentative();
    i.on_txn(&reflect(1), &c);
    i.device_applied(E);
    let mut now = 0;
    let mut at = i.rearm(now, &c, true).unwrap();
    let mut gaps = Vec::new();
    for _ in 0..10 {
        gaps.push(at - now);
        now = at;
        let fx = i.on_timer(now, &c);
        assert_eq!(fx.send, Some(txn(TxnKind::Commit, E, 1)));
        at = i.rearm(now, &c, false).unwrap();
    }
    assert_eq!(gaps, vec![30, 60, 120, 200, 200, 200, 200, 200, 200, 200]);
    assert_eq!(i.state.committed, E);
    // acknowledged: timer disarmed
    let fx = i.on_txn(&txn(TxnKind::CommitAck, E, 1), &c);
    assert_eq!(i.rearm(now, &c, fx.persist), None);
    assert_eq!(i.timer_at, None);
}

#[test]
fn responder_queries_at_a_fixed_interval() {
    let c = ctx(true);
    let mut r = reflecting(2);
    let mut now = 500;
    let mut at = r.rearm(now, &c, true).unwrap();
    for _ in 0..4 {
        assert_eq!(at - now, timers().query);
        now = at;
        let fx = r.on_timer(now, &c);
        assert_eq!(fx.send, Some(txn(TxnKind::Query, E, 2)));
        assert_eq!(r.state.pending, Pending::Reflecting(Nonce(2)));
        at = r.rearm(now, &c, false).unwrap();
    }
    // committed: no timer
    let fx = r.on_txn(&txn(TxnKind::Commit, E, 2), &c);
    assert_eq!(r.rearm(now, &c, fx.persist), None);
    // idle responders and acked initiators arm nothing
    assert_eq!(responder().rearm(0, &c, true), None);
    assert_eq!(initiator().rearm(0, &c, true), None);
}

#[test]
fn guard_recheck_after_abort_backs_off() {
    let c = ctx(true);
    let mut i = tentative();
    let mut now = 0;
    let mut gaps = Vec::new();
    for n in 1..=5u64 {
        // the responder's device could not take the epoch: it may be able to shortly
        let fx = i.on_txn(&Txn::abort(E, Nonce(n), AbortReason::DeviceRefused), &c);
        assert!(fx.persist);
        let at = i.rearm(now, &c, true).unwrap();
        gaps.push(at - now);
        now = at;
        let fx = i.on_timer(now, &c);
        assert_eq!(fx.send, Some(txn(TxnKind::Propose, E, n + 1)));
        i.rearm(now, &c, true);
    }
    assert_eq!(gaps, vec![60, 120, 200, 200, 200]);
    // without the guard (no connection) no re-check is armed
    let mut i = tentative();
    i.on_txn(&Txn::abort(E, Nonce(1), AbortReason::DeviceRefused), &c);
    i.conn = None;
    assert_eq!(i.rearm(0, &c, true), None);
    // a responder not ready for the epoch (not activated, halted, rolled back): nothing is
    // re-checked until it says it activated
    let mut i = tentative();
    let fx = i.on_txn(&Txn::abort(E, Nonce(1), AbortReason::NotActivated), &c);
    assert!(fx.persist);
    assert_eq!(i.peer_activated, None);
    assert_eq!(i.rearm(0, &c, true), None);
    assert_eq!(i.try_propose(&c).send, None);
}

#[test]
fn end_agreed_by_hello_never_reuses_a_nonce_the_peer_holds_open() {
    // the initiator proposed nonce 7 in a life whose store is gone (twice, so its incarnation,
    // and with it its nonce floor, is the one of that life again); the responder still reflects
    // 7 and will ask about it: the initiator's next proposal must not be 7, or that question
    // would commit it on the responder's answer to the old proposal
    let c = ctx(true);
    let mut i = LinkEnd::new(A, B, LinkState::fresh());
    i.conn = Some(1);
    i.peer_activated = Some(E);
    let changed = i
        .on_hello(
            &hello(
                Window::new(0, 9),
                Some(5),
                Some((4, Pending::Reflecting(Nonce(7)))),
            ),
            &Window::new(0, 9),
        )
        .unwrap();
    assert!(changed);
    assert_eq!(i.state.committed, E0);
    i.device_applied(E0);
    let fx = i.try_propose(&c);
    let sent = fx.send.expect("a proposal");
    assert_eq!(sent.kind, TxnKind::Propose);
    assert!(sent.nonce > Nonce(7), "{sent:?}");
    // the responder's question about the old proposal does not commit the new one
    let fx = i.on_txn(&txn(TxnKind::Query, E, 7), &c);
    assert_eq!(fx.committed, None);
    // a responder agreed by HELLO takes up its initiator's open proposal as it is
    let mut r = LinkEnd::new(B, A, LinkState::fresh());
    r.conn = Some(1);
    r.on_hello(
        &hello(
            Window::new(0, 9),
            Some(5),
            Some((4, Pending::Tentative(Nonce(7)))),
        ),
        &Window::new(0, 9),
    )
    .unwrap();
    assert_eq!(r.state, LinkState::established(E0));
}
