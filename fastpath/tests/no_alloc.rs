//! No allocation per message in steady state on the mem and tcp send and receive paths: a
//! counting global allocator watches a ping-pong after warm-up.

mod common;

use bytes::Bytes;
use common::*;
use entente_fastpath::{Config, Event, FrameMacs, Transport};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls on this thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

/// Bounces one message back and forth `rounds` times.
fn ping_pong(
    a: &mut Box<dyn Transport>,
    c: &mut Box<dyn Transport>,
    conns: (entente_fastpath::ConnId, entente_fastpath::ConnId),
    payload: &Bytes,
    rounds: usize,
    ev: &mut Vec<Event>,
) {
    for _ in 0..rounds {
        a.send(conns.0, payload.clone()).unwrap();
        loop {
            ev.clear();
            c.poll(ev, Some(Duration::from_millis(1))).unwrap();
            if ev.iter().any(|e| matches!(e, Event::Message(..))) {
                break;
            }
        }
        c.send(conns.1, payload.clone()).unwrap();
        loop {
            ev.clear();
            a.poll(ev, Some(Duration::from_millis(1))).unwrap();
            if ev.iter().any(|e| matches!(e, Event::Message(..))) {
                break;
            }
        }
    }
    ev.clear();
}

fn steady_state_allocations(b: &mut dyn Backend, config: Config) -> u64 {
    let mut a = b.endpoint(1, key(), config.clone());
    let mut c = b.endpoint(2, key(), config);
    let conns = connect(&mut a, &mut c);
    let payload = Bytes::from(vec![0xab; 256]);
    let mut ev = Vec::with_capacity(1024);
    ping_pong(&mut a, &mut c, conns, &payload, 1000, &mut ev);
    let before = allocations();
    ping_pong(&mut a, &mut c, conns, &payload, 5000, &mut ev);
    allocations() - before
}

/// Untagged: the mem backend copies a tagged frame's payload once to append its tag (frames
/// between threads of one process have no path to forge them on).
#[test]
fn mem_steady_state_does_not_allocate() {
    let untagged = Config {
        frame_macs: FrameMacs::Off,
        ..Config::default()
    };
    assert_eq!(steady_state_allocations(&mut Mem::new(), untagged), 0);
}

/// Tagged (the default) and untagged: tags are computed on the stack and written from the
/// queued frame.
#[test]
fn tcp_steady_state_does_not_allocate() {
    assert_eq!(steady_state_allocations(&mut Tcp, Config::default()), 0);
    let untagged = Config {
        frame_macs: FrameMacs::Off,
        ..Config::default()
    };
    assert_eq!(steady_state_allocations(&mut Tcp, untagged), 0);
}

#[test]
fn the_counter_counts() {
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 100]);
    assert!(allocations() > before, "{}", v.len());
}
