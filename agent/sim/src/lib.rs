//! entente-sim: a deterministic cluster simulator for the entente protocol.
//!
//! Every node runs the real `entente-proto` state machines; the simulator is their driver. It
//! models links that break and lose what is in flight, crash-restart with durable state,
//! partitions, clock skew and drift, activation failures, corrupt chunks and data-plane
//! traffic, checks the seven safety invariants after every step, and requires convergence within
//! the liveness bound once the network heals. One seed determines the whole run.

pub mod check;
pub mod clock;
pub mod config;
mod driver;
pub mod fanout;
mod fito;
mod net;
mod operator;
pub mod plot;
pub mod report;
pub mod swarm;
pub mod topology;
mod wall;
pub mod world;

pub use config::{Budget, ConfigError, DriverBug, GossipMode, Protocol, SimConfig, TopologyKind};
pub use report::Report;
pub use world::{Progress, World};

/// Validates the options, runs the simulation and reports.
pub fn run(cfg: SimConfig) -> Result<Report, ConfigError> {
    cfg.validate()?;
    Ok(World::new(cfg).run())
}
