//! Faults a simulated device injects, read from its configuration.

use serde::{Deserialize, Serialize};

/// When a bank is corrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CorruptBank {
    /// A byte is flipped on its way to the bank: the read-back check after the flash catches it.
    DuringWrite,
    /// The bank decays after a successful stage: the check before activation catches it.
    AfterStage,
}

/// The faults of one simulated device. The default injects none.
///
/// In TOML (unknown keys are refused):
///
/// ```toml
/// fail_at_percent = 40          # the flash fails once 40 % is written
/// corrupt_bank = "after-stage"  # or "during-write"
/// slow_flash_ms_per_mib = 200   # flashing takes 200 ms per MiB
/// activation_failure = true     # every activation fails, the old image keeps running
/// power_loss_at_percent = 60    # power is lost at 60 %: the process's device is gone
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// The flash fails once this percentage of the image is written (0–100).
    pub fail_at_percent: Option<u8>,
    /// Corrupt the staged bank, during the write or after it.
    pub corrupt_bank: Option<CorruptBank>,
    /// Milliseconds of flashing per MiB written.
    pub slow_flash_ms_per_mib: u64,
    /// Every activation fails.
    pub activation_failure: bool,
    /// Power is lost once this percentage is written (0–100): the write stops, nothing is
    /// recorded as complete, and the device must be opened again.
    pub power_loss_at_percent: Option<u8>,
    /// The device cannot take this link epoch: it votes no before the agent reflects it.
    pub refuse_link_epoch: Option<u64>,
    /// Setting a link epoch fails this many times (since the device was opened) before it
    /// succeeds: a device that lags behind a committed link.
    pub link_epoch_failures: u32,
}

impl Faults {
    /// Parses and checks faults from TOML text.
    pub fn from_toml(text: &str) -> Result<Faults, String> {
        let f: Faults = toml::from_str(text).map_err(|e| e.to_string())?;
        f.validate()?;
        Ok(f)
    }

    /// Checks that percentages are at most 100.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("fail_at_percent", self.fail_at_percent),
            ("power_loss_at_percent", self.power_loss_at_percent),
        ] {
            if let Some(p) = v {
                if p > 100 {
                    return Err(format!("{name} = {p}: a percentage is at most 100"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_toml_and_refuse_unknown_keys() {
        let f = Faults::from_toml(
            "fail_at_percent = 40\ncorrupt_bank = \"during-write\"\nslow_flash_ms_per_mib = 5\n\
             activation_failure = true\npower_loss_at_percent = 60\n",
        )
        .unwrap();
        assert_eq!(f.fail_at_percent, Some(40));
        assert_eq!(f.corrupt_bank, Some(CorruptBank::DuringWrite));
        assert_eq!(f.slow_flash_ms_per_mib, 5);
        assert!(f.activation_failure);
        assert_eq!(f.power_loss_at_percent, Some(60));
        assert_eq!(Faults::from_toml("").unwrap(), Faults::default());
        assert!(Faults::from_toml("fail_at = 3")
            .unwrap_err()
            .contains("unknown field"));
        assert!(Faults::from_toml("power_loss_at_percent = 101")
            .unwrap_err()
            .contains("at most 100"));
    }
}
