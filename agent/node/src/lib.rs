//! The node agent's decisions as a sans-IO state machine, as quinn-proto is to quinn: the
//! caller feeds it what happened (a message, a timer, a completion) and the time, and carries
//! out what it decides. Nothing here reads a clock, a socket or a file, so `entented` and the
//! simulator run the same code (ARCHITECTURE.md, "entente-node").
//!
//! [`fanout`] holds the image fan-out policy: which chunk to ask for and of whom, how requests
//! are answered, what is announced, and the traffic caps.

pub mod fanout;

pub use entente_proto::Nanos;
