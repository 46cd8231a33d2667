//! entente-proto: the bilateral convergence protocol as pure state machines.
//!
//! No I/O, no clock, no threads, no global state: the driver passes in events, the current time
//! and a seeded random generator, and executes the outputs in order. A [`node::Output::Persist`]
//! must be durable before any later output of the same batch is carried out.

pub mod link;
pub mod msg;
#[cfg(feature = "mutants")]
pub mod mutant;
pub mod node;
pub mod phase;
pub mod summary;
pub mod types;
pub mod wire;

pub use msg::{Digest, Message, Pending, Txn, TxnKind};
#[cfg(feature = "mutants")]
pub use mutant::Mutant;
pub use node::{Node, NodeConfig, Output};
pub use phase::{Phase, PhaseEntry, Version};
pub use types::{Epoch, Nanos, NodeId, Nonce, Rng, Role, SeededRng, Window};
