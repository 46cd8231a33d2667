//! Frames between running agents: a forger on the tcp path between two of them, and agents with
//! and without frame MACs (`[transport] frame_macs`) in one cluster, as during a rolling upgrade.

use entente_fastpath::frame::{Fields, FrameHeader, Kind, HEADER_LEN};
use entente_tests::{tempdir, Cluster};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// Points node `i`'s configured address of `peer` at `addr` instead.
fn redirect(c: &Cluster, i: usize, peer: SocketAddr, addr: SocketAddr) {
    let path = c.agent(i, "config");
    let text = std::fs::read_to_string(&path).unwrap();
    let from = format!("addr = \"{peer}\"");
    assert!(text.contains(&from), "{text}");
    std::fs::write(&path, text.replace(&from, &format!("addr = \"{addr}\""))).unwrap();
}

/// Appends `[transport] frame_macs = "<setting>"` to node `i`'s configuration.
fn frame_macs(c: &Cluster, i: usize, setting: &str) {
    let path = c.agent(i, "config");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        "[transport]\n",
        &format!("[transport]\nframe_macs = \"{setting}\"\n"),
    );
    std::fs::write(&path, text).unwrap();
}

/// A tcp proxy in front of `target`, for every connection made to it. In the first connection
/// only, the first Data frame from the dialling side is replaced by a forgery: one payload byte
/// changed, and a header whose checksum matches. `forged` is set once it went out.
fn forging_proxy(target: SocketAddr, forged: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { return };
            let Ok(outbound) = TcpStream::connect(target) else {
                continue;
            };
            let (in2, out2) = (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
            thread::spawn(move || relay(out2, in2, None));
            let forged = forged.clone();
            thread::spawn(move || relay(inbound, outbound, Some(forged)));
        }
    });
    addr
}

fn relay(mut from: TcpStream, mut to: TcpStream, forge: Option<Arc<AtomicBool>>) {
    loop {
        let mut frame = vec![0u8; HEADER_LEN];
        if from.read_exact(&mut frame).is_err() {
            return;
        }
        let len = u32::from_le_bytes(frame[8..12].try_into().unwrap()) as usize;
        frame.resize(HEADER_LEN + len, 0);
        if from.read_exact(&mut frame[HEADER_LEN..]).is_err() {
            return;
        }
        let is_data = frame[5] == Kind::Data as u8 && len > 0;
        if let Some(done) = forge.as_ref().filter(|_| is_data) {
            if !done.swap(true, Ordering::SeqCst) {
                frame = forge_frame(&frame);
            }
        }
        if to.write_all(&frame).is_err() {
            return;
        }
    }
}

/// The same frame with its first payload byte changed, under a header rebuilt with a valid
/// checksum.
fn forge_frame(frame: &[u8]) -> Vec<u8> {
    let h = FrameHeader::decode(frame).unwrap();
    let mut payload = frame[HEADER_LEN..].to_vec();
    payload[0] ^= 0x01;
    let forged = FrameHeader::new(
        Fields {
            kind: h.kind(),
            flags: h.flags(),
            src: h.src(),
            dst: h.dst(),
            seq: h.seq(),
            generation: h.generation(),
            aux: h.aux(),
            freed: h.freed(),
        },
        &payload,
    );
    assert!(
        entente_fastpath::frame::decode_frame(&[forged.bytes(), &payload[..]].concat()).is_ok()
    );
    [forged.bytes(), &payload[..]].concat()
}

/// A frame spliced in on the path with a valid checksum is refused: the connection is cut, the
/// forgery counted and logged once, and the agents reconnect and converge.
#[test]
fn hostile_forged_frame() {
    let dir = tempdir("forged-frame");
    let mut c = Cluster::new(&dir, 2);
    let forged = Arc::new(AtomicBool::new(false));
    let proxy = forging_proxy(c.listen_addr(1), forged.clone());
    redirect(&c, 0, c.listen_addr(1), proxy);
    c.start_all();
    let s = c.wait_status(1, LIMIT, |s| s["transport"]["auth_failures"] == 1);
    assert!(forged.load(Ordering::SeqCst));
    assert_eq!(s["transport"]["connections_untagged"], 0, "{s:#}");
    c.start_seeded_campaign();
    let s = c.wait_converged(0, LIMIT);
    assert_eq!(s["links_committed"], 1, "{s:#}");
    let log = c.log(1);
    assert_eq!(log.matches("failed its MAC").count(), 1, "{log}");
    let s = c.status(1).unwrap();
    assert_eq!(s["transport"]["auth_failures"], 1, "{s:#}");
}

/// An agent without frame MACs (`off`, as builds before them speak) and one that prefers them
/// converge, untagged; an agent that requires them refuses the older one, saying why.
#[test]
fn mixed_frame_versions() {
    let dir = tempdir("mixed-frames");
    let mut c = Cluster::new(&dir, 3);
    frame_macs(&c, 0, "off");
    c.start_all();
    c.start_seeded_campaign();
    let s = c.wait_converged(0, LIMIT);
    assert_eq!(s["links_committed"], 3, "{s:#}");
    assert!(
        s["transport"]["connections_untagged"].as_u64().unwrap() >= 2,
        "node 1 speaks untagged with both: {s:#}"
    );
    let s = c.status(1).unwrap();
    assert!(
        s["transport"]["connections_untagged"].as_u64().unwrap() >= 1,
        "{s:#}"
    );
    // Node 3 now requires frame MACs: node 1 (untagged) is refused, node 2 still connects.
    c.kill(2);
    frame_macs(&c, 2, "require");
    c.start(2);
    let log_has_refusal = || c.log(2).contains("does not offer frame MACs");
    let deadline = std::time::Instant::now() + LIMIT;
    while !log_has_refusal() {
        assert!(std::time::Instant::now() < deadline, "{}", c.log(2));
        thread::sleep(Duration::from_millis(100));
    }
    let s = c.wait_status(2, LIMIT, |s| {
        s["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["peer"] == 2 && l["connected"] == true)
    });
    let untagged_link = s["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["peer"] == 1)
        .cloned()
        .unwrap();
    assert_eq!(untagged_link["connected"], false, "{s:#}");
    assert_eq!(s["transport"]["connections_untagged"], 0, "{s:#}");
}
