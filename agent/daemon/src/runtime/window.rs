//! The firmware window an agent starts with: read from what its device runs, never assumed, and
//! never taken from a state store that may have been lost or restored from an older copy.

use entente_devices::device::Inventory;
use entente_devices::profile::Profile;
use entente_proto::Window;
use entente_stage::Manifest;

/// The window of the firmware the device runs, and how it was found (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningWindow {
    /// The epochs the running firmware speaks.
    pub window: Window,
    /// The running version, as the device reports it.
    pub version: Option<String>,
    /// Where the window came from.
    pub source: String,
    /// The campaign whose manifest describes the running firmware, if one does.
    pub campaign: Option<u64>,
}

/// The running version of the profile's first flashable component (the one campaigns stage).
pub fn running_version(profile: &Profile, inv: &Inventory) -> Option<String> {
    let name = &profile.components.iter().find(|c| c.flashable)?.name;
    inv.component(name)?.running.clone()
}

/// Maps the device's running version to a window: the newest manifest held whose image for
/// this profile has that version, or else the profile's base window (firmware no campaign
/// describes, such as the factory image). When the device cannot be read, the window recorded
/// at the last activation is used if there is one; with neither, the agent refuses to start.
pub fn running_window(
    profile: &Profile,
    device: Result<&Inventory, String>,
    manifests: &[Manifest],
    recorded: Option<Window>,
) -> Result<RunningWindow, String> {
    let inv = match device {
        Ok(inv) => inv,
        Err(e) => {
            return recorded
                .map(|w| RunningWindow {
                    window: w,
                    version: None,
                    source: format!(
                    "the window recorded at the last activation (the device cannot be read: {e})"
                ),
                    campaign: None,
                })
                .ok_or_else(|| {
                    format!(
                        "the device cannot be read ({e}) and no activation recorded what it runs: \
                         refusing to guess its firmware window"
                    )
                })
        }
    };
    let version = running_version(profile, inv);
    let described = version.as_ref().and_then(|v| {
        manifests
            .iter()
            .filter_map(|m| Some((m, m.profiles.get(&profile.name)?)))
            .filter(|(_, img)| &img.version == v)
            .max_by_key(|(m, _)| (m.epoch, m.manifest_version))
    });
    Ok(match described {
        Some((m, img)) => RunningWindow {
            window: Window::new(img.compat.min_epoch, img.compat.max_epoch),
            version,
            source: format!("the manifest of campaign {}", m.epoch),
            campaign: Some(m.epoch),
        },
        None => RunningWindow {
            window: Window::new(profile.base_window.0, profile.base_window.1),
            source: format!(
                "profile {}'s base window (no manifest held describes version {})",
                profile.name,
                version.as_deref().unwrap_or("(none reported)")
            ),
            version,
            campaign: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use entente_devices::device::ComponentVersions;
    use entente_stage::manifest::{CompatWindow, ProfileImage};

    fn profile() -> Profile {
        let text = include_str!("../../../../hw-profiles/sim-nic.toml");
        entente_devices::profile::parse(std::path::Path::new("sim-nic.toml"), text).unwrap()
    }

    fn inventory(running: &str) -> Inventory {
        Inventory {
            profile: "sim-nic".into(),
            components: vec![ComponentVersions {
                component: "nic-fw".into(),
                fixed: Default::default(),
                running: Some(running.into()),
                stored: None,
                pending_activation: false,
            }],
        }
    }

    fn manifest(epoch: u64, version: &str, window: (u64, u64)) -> Manifest {
        let img = ProfileImage::from_reader(
            &[1u8; 10][..],
            4096,
            version,
            CompatWindow {
                min_epoch: window.0,
                max_epoch: window.1,
            },
        )
        .unwrap();
        Manifest {
            epoch,
            expires_at: u64::MAX,
            format: entente_stage::manifest::MANIFEST_FORMAT,
            manifest_version: epoch,
            profiles: [("sim-nic".to_owned(), img)].into(),
            semantics: String::new(),
        }
    }

    #[test]
    fn the_newest_manifest_describing_the_running_version_gives_the_window() {
        let ms = [
            manifest(1, "2.0", (0, 1)),
            manifest(2, "2.0", (1, 2)),
            manifest(3, "3.0", (2, 3)),
        ];
        let w = running_window(&profile(), Ok(&inventory("2.0")), &ms, None).unwrap();
        assert_eq!(w.window, Window::new(1, 2));
        assert!(w.source.contains("campaign 2"), "{}", w.source);
    }

    #[test]
    fn firmware_no_manifest_describes_speaks_the_base_window() {
        let w = running_window(
            &profile(),
            Ok(&inventory("factory")),
            &[manifest(1, "2.0", (0, 1))],
            Some(Window::new(0, 1)),
        )
        .unwrap();
        assert_eq!(w.window, Window::new(0, 0));
    }

    #[test]
    fn an_unreadable_device_uses_the_recorded_window_or_refuses() {
        let w = running_window(
            &profile(),
            Err("no bmc".into()),
            &[],
            Some(Window::new(0, 1)),
        );
        assert_eq!(w.unwrap().window, Window::new(0, 1));
        let e = running_window(&profile(), Err("no bmc".into()), &[], None).unwrap_err();
        assert!(
            e.contains("no bmc") && e.contains("refusing to guess"),
            "{e}"
        );
    }
}
