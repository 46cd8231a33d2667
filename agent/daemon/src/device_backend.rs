//! Opens the device the configuration names, with the backend it names, as the `Device` the
//! worker drives: `sim` (a directory under the data dir), `devlink` (a kernel devlink instance,
//! with its link-epoch record under `<data_dir>/devlink`) or `redfish` (a BMC's UpdateService,
//! for GPU baseboard firmware). The devlink options come from `DevlinkConfig::options`, which
//! the configuration check uses too, so the two agree; this module depends on the
//! configuration, never the other way round.

use crate::config::Config;
use anyhow::{bail, Context, Result};
use entente_devices::devlink::DevlinkDevice;
use entente_devices::profile::Profile;
use entente_devices::redfish::RedfishDevice;
use entente_devices::sim::{Faults, SimDevice};
use entente_devices::Device;

/// Opens the configured device for `profile`.
pub fn open(cfg: &Config, profile: &Profile) -> Result<Box<dyn Device + Send>> {
    let d = &cfg.device;
    match d.backend.as_str() {
        "sim" => {
            let faults = match &d.faults {
                Some(t) => Faults::from_toml(&t.to_string())
                    .map_err(|e| anyhow::anyhow!("device.faults: {e}"))?,
                None => Faults::default(),
            };
            let dev = SimDevice::open(&cfg.data_dir.join("device"), profile.clone(), faults)
                .context("open the sim device")?;
            Ok(Box::new(dev))
        }
        "devlink" => {
            let c = d
                .devlink
                .as_ref()
                .context("backend devlink needs [device.devlink]")?;
            let mut opts = c
                .options()
                .map_err(|(key, e)| anyhow::anyhow!("{key}: {e}"))?;
            // The committed link epochs the backend keeps (the parameter's floor on restart).
            opts.state_dir = Some(cfg.data_dir.join("devlink"));
            let dev = DevlinkDevice::open(profile.clone(), &c.handle, opts)
                .with_context(|| format!("open the devlink device {}", c.handle))?;
            Ok(Box::new(dev))
        }
        "redfish" => {
            let c = d
                .redfish
                .as_ref()
                .context("backend redfish needs [device.redfish]")?;
            let dev = RedfishDevice::open(profile.clone(), c)
                .with_context(|| format!("open the Redfish device at {}", c.url))?;
            Ok(Box::new(dev))
        }
        other => bail!("unknown device backend {other:?} (this build has: sim, devlink, redfish)"),
    }
}
