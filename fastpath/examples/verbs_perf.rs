//! Two-process latency and throughput of the verbs backend, for comparison with
//! `ibv_rc_pingpong` and perftest on the same device (the rxe lab runs it; see
//! `docs/bench/lab.md`).
//!
//! ```text
//! verbs_perf server ADDR pingpong            # echoes every message back, one connection
//! verbs_perf client ADDR pingpong SIZE ITERS # prints {"mode":"pingpong",...,"usec_per_iter":..}
//! verbs_perf server ADDR bulk CHUNK CHUNKS   # grants slots, drops chunks, says "done"
//! verbs_perf client ADDR bulk CHUNK CHUNKS   # prints {"mode":"bulk",...,"mib_per_sec":..}
//! ```
//!
//! Like the tools it is compared with: both ends of the ping-pong poll busily
//! (`Config::busy_poll`), as `ibv_rc_pingpong` and `ib_send_lat` do; the bulk sender polls busily
//! and the receiver sleeps until a chunk arrives (`ib_write_bw`'s passive side sleeps too). SIZE
//! is the message payload (at most 4016 bytes: a 4 KiB frame with its 64-byte header and 16-byte
//! tag). Nothing is checksummed or verified inside the timed loops.

#[cfg(not(feature = "rdma"))]
fn main() {
    eprintln!("verbs_perf needs the rdma feature: cargo run --features rdma --example verbs_perf");
    std::process::exit(2);
}

#[cfg(feature = "rdma")]
fn main() {
    if let Err(e) = perf::main() {
        eprintln!("verbs_perf: {e}");
        std::process::exit(1);
    }
}

#[cfg(feature = "rdma")]
mod perf {
    use bytes::Bytes;
    use entente_fastpath::frame::{HEADER_LEN, MAX_CONTROL_PAYLOAD};
    use entente_fastpath::{ClusterKey, Config, ConnId, Event, Transport, VerbsTransport};
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

    const SERVER: u64 = 1;
    const CLIENT: u64 = 2;
    /// Nothing here may take longer: a stuck run fails instead of hanging the lab.
    const LIMIT: Duration = Duration::from_secs(60);
    /// Untimed round trips before the timed ones.
    const WARMUP: u32 = 20;
    /// Untimed chunks before the timed ones.
    const BULK_WARMUP: u32 = 4;

    fn usage() -> Box<dyn std::error::Error> {
        "usage: verbs_perf server|client ADDR pingpong [SIZE ITERS] | bulk CHUNK CHUNKS".into()
    }

    pub fn main() -> Result<()> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let (role, addr, mode) = match &args[..] {
            [r, a, m, ..] => (r.as_str(), a.parse::<SocketAddr>()?, m.as_str()),
            _ => return Err(usage()),
        };
        let num = |i: usize, default: u32| -> Result<u32> {
            Ok(args
                .get(i)
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(default))
        };
        let key = ClusterKey::from_bytes(&[0x42; 32]).ok_or("cluster key")?;
        let config = |bulk_slot_len: u32, spin: bool| Config {
            bulk_slot_len,
            busy_poll: if spin {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            },
            ..Config::default()
        };
        match (role, mode) {
            ("server", "pingpong") => {
                let mut t = VerbsTransport::bind(addr, SERVER, key, config(4096, true))?;
                ready(&t);
                echo(&mut t)
            }
            ("client", "pingpong") => {
                let size = num(3, 64)?;
                let iters = num(4, 1000)?;
                let payload = size as usize;
                if payload > MAX_CONTROL_PAYLOAD {
                    return Err(format!("SIZE is at most {MAX_CONTROL_PAYLOAD}").into());
                }
                let local = SocketAddr::new(addr.ip(), 0);
                let mut t = VerbsTransport::bind(local, CLIENT, key, config(4096, true))?;
                let mut ev = Vec::with_capacity(64);
                let conn = connect(&mut t, addr, &mut ev)?;
                let (mean, median) = pingpong(&mut t, conn, payload, iters, &mut ev)?;
                let frame = payload + HEADER_LEN;
                println!(
                    "{{\"mode\":\"pingpong\",\"payload_bytes\":{payload},\"frame_bytes\":{frame},\
                     \"iters\":{iters},\"usec_per_iter\":{mean:.3},\"median_usec\":{median:.3}}}"
                );
                Ok(())
            }
            ("server", "bulk") => {
                let chunk = num(3, 1 << 20)?;
                let chunks = num(4, 64)?;
                let mut t = VerbsTransport::bind(addr, SERVER, key, config(chunk, false))?;
                ready(&t);
                sink(&mut t, chunk, chunks + BULK_WARMUP)
            }
            ("client", "bulk") => {
                let chunk = num(3, 1 << 20)?;
                let chunks = num(4, 64)?;
                let local = SocketAddr::new(addr.ip(), 0);
                let mut t = VerbsTransport::bind(local, CLIENT, key, config(chunk, true))?;
                let mut ev = Vec::with_capacity(64);
                let conn = connect(&mut t, addr, &mut ev)?;
                let secs = bulk(&mut t, conn, chunk, chunks, &mut ev)?;
                let mib = chunks as f64 * chunk as f64 / (1 << 20) as f64 / secs;
                println!(
                    "{{\"mode\":\"bulk\",\"chunk_bytes\":{chunk},\"chunks\":{chunks},\
                     \"seconds\":{secs:.6},\"mib_per_sec\":{mib:.3}}}"
                );
                Ok(())
            }
            _ => Err(usage()),
        }
    }

    /// Tells the lab script the server listens.
    fn ready(t: &VerbsTransport) {
        eprintln!("verbs_perf: listening on {}", t.local_addr());
    }

    fn deadline() -> Instant {
        Instant::now() + LIMIT
    }

    /// Polls until `f` returns something, or fails after `LIMIT`.
    fn until<T>(
        t: &mut dyn Transport,
        ev: &mut Vec<Event>,
        mut f: impl FnMut(&mut Vec<Event>) -> Result<Option<T>>,
    ) -> Result<T> {
        let end = deadline();
        loop {
            if let Some(x) = f(ev)? {
                return Ok(x);
            }
            if Instant::now() > end {
                return Err("timed out".into());
            }
            t.poll(ev, Some(Duration::from_millis(100)))?;
        }
    }

    fn down(e: &Event) -> Option<String> {
        match e {
            Event::Down(_, why) => Some(format!("connection down: {why:?}")),
            Event::Refused { reason, .. } => Some(format!("connection refused: {reason:?}")),
            _ => None,
        }
    }

    /// Connects; the events that came with `Up` (the peer's first grants) stay in `ev`.
    fn connect(t: &mut VerbsTransport, addr: SocketAddr, ev: &mut Vec<Event>) -> Result<ConnId> {
        t.connect(addr)?;
        until(t, ev, |ev| {
            if let Some(why) = ev.iter().find_map(down) {
                return Err(format!("connect: {why}").into());
            }
            match ev.iter().position(|e| matches!(e, Event::Up(_))) {
                Some(at) => match ev.drain(..=at).last() {
                    Some(Event::Up(c)) => Ok(Some(c)),
                    _ => unreachable!("found above"),
                },
                None => Ok(None),
            }
        })
    }

    fn accept(t: &mut VerbsTransport, ev: &mut Vec<Event>) -> Result<ConnId> {
        until(t, ev, |ev| {
            Ok(ev.iter().find_map(|e| match e {
                Event::Up(c) => Some(*c),
                _ => None,
            }))
        })
    }

    /// Server side of the ping-pong: sends every message back until the peer leaves.
    fn echo(t: &mut VerbsTransport) -> Result<()> {
        let mut ev = Vec::new();
        let conn = accept(t, &mut ev)?;
        let end = Instant::now() + LIMIT * 4;
        while Instant::now() < end {
            for e in ev.drain(..) {
                match e {
                    Event::Message(c, p) if c == conn => t.send(conn, p)?,
                    Event::Down(c, _) if c == conn => return Ok(()),
                    _ => {}
                }
            }
            t.poll(&mut ev, Some(Duration::from_millis(100)))?;
        }
        Err("the client never left".into())
    }

    /// One message out, its echo back, `iters` times after a warm-up; microseconds per
    /// round trip: the mean (as `ibv_rc_pingpong` reports it) and the median. One clock read
    /// per round trip (the guest's clock may be a system call).
    fn pingpong(
        t: &mut VerbsTransport,
        conn: ConnId,
        payload: usize,
        iters: u32,
        ev: &mut Vec<Event>,
    ) -> Result<(f64, f64)> {
        let msg = Bytes::from(vec![0x5au8; payload]);
        let mut each = Vec::with_capacity(iters as usize);
        let mut last = Instant::now();
        let mut start = last;
        for i in 0..WARMUP + iters {
            t.send(conn, msg.clone())?;
            let mut polls = 0u32;
            loop {
                let mut got = false;
                for e in ev.drain(..) {
                    match e {
                        Event::Message(..) => got = true,
                        e => {
                            if let Some(why) = down(&e) {
                                return Err(format!("{why} after {i} round trips").into());
                            }
                        }
                    }
                }
                if got {
                    break;
                }
                polls += 1;
                if polls.is_multiple_of(1024) && last.elapsed() > LIMIT {
                    return Err(format!("no echo after {i} round trips").into());
                }
                t.poll(ev, Some(Duration::from_millis(100)))?;
            }
            let now = Instant::now();
            if i == WARMUP {
                start = last;
            }
            if i >= WARMUP {
                each.push((now - last).as_secs_f64() * 1e6);
            }
            last = now;
        }
        let mean = (last - start).as_secs_f64() * 1e6 / iters as f64;
        each.sort_by(f64::total_cmp);
        let median = each.get(each.len() / 2).copied().unwrap_or(f64::NAN);
        t.close(conn);
        Ok((mean, median))
    }

    /// Receiver of the bulk run: keeps every slot granted, drops each chunk on arrival, and
    /// says "done" after `total` chunks.
    fn sink(t: &mut VerbsTransport, chunk: u32, total: u32) -> Result<()> {
        let mut ev = Vec::new();
        let conn = accept(t, &mut ev)?;
        let (mut granted, mut got) = (0u32, 0u32);
        let mut refused = None;
        let end = Instant::now() + LIMIT;
        while got < total {
            for e in ev.drain(..) {
                match e {
                    Event::Bulk { .. } => got += 1, // the slot is free once the chunk drops
                    e => {
                        if let Some(why) = down(&e) {
                            return Err(format!(
                                "{why} after {got} chunks, {granted} granted, {refused:?}"
                            )
                            .into());
                        }
                    }
                }
            }
            while granted < total {
                match t.grant_bulk(conn, chunk) {
                    Ok(_) => granted += 1,
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                }
            }
            if Instant::now() > end {
                return Err(format!(
                    "bulk stalled after {got} chunks, {granted} granted, {refused:?}"
                )
                .into());
            }
            t.poll(&mut ev, Some(Duration::from_millis(100)))?;
        }
        t.send(conn, Bytes::from_static(b"done"))?;
        // Stay until the client leaves, so "done" is not flushed by our disconnect.
        until(t, &mut ev, |ev| {
            Ok(ev
                .iter()
                .any(|e| matches!(e, Event::Down(..)))
                .then_some(()))
        })
    }

    /// Sender of the bulk run: writes a chunk into every slot granted, `BULK_WARMUP` untimed then
    /// `chunks` timed; seconds from the first timed write to the receiver's "done".
    fn bulk(
        t: &mut VerbsTransport,
        conn: ConnId,
        chunk: u32,
        chunks: u32,
        ev: &mut Vec<Event>,
    ) -> Result<f64> {
        let data = Bytes::from(vec![0xa5u8; chunk as usize]);
        let (mut sent, mut grants) = (0u32, 0u32);
        let mut start = Instant::now();
        let total = chunks + BULK_WARMUP;
        let end = deadline();
        loop {
            if Instant::now() > end {
                return Err(format!("bulk stalled after {sent} chunks ({grants} grants)").into());
            }
            for e in ev.drain(..) {
                match e {
                    Event::BulkGrant { .. } if sent >= total => grants += 1,
                    Event::BulkGrant { slot, .. } => {
                        grants += 1;
                        if sent == BULK_WARMUP {
                            start = Instant::now();
                        }
                        t.send_bulk(conn, slot, data.clone())?;
                        sent += 1;
                    }
                    Event::Message(_, m) if &m[..] == b"done" => {
                        let secs = start.elapsed().as_secs_f64();
                        t.close(conn);
                        return Ok(secs);
                    }
                    e => {
                        if let Some(why) = down(&e) {
                            return Err(format!("{why} after {sent} chunks").into());
                        }
                    }
                }
            }
            t.poll(ev, Some(Duration::from_millis(100)))?;
        }
    }
}
