//! Loading and validating profiles: every problem becomes a [`ProfileError`] with its file and
//! line, and a check reports all of them.
//!
//! A file that is not well-formed TOML, or does not fit the schema (an unknown field, a missing
//! one, a wrong type, an unknown enum value), stops at its first such error: serde cannot go on
//! past it. A file that fits the schema is then checked against every rule below, and every
//! broken rule is reported. Across a directory, names and device matches must be unique.

use super::raw::{RawActivation, RawComponent, RawMatch, RawProfile};
use super::{
    Activation, ActivationMethod, Backend, Bus, Component, DeviceClass, Match, PciId, Profile,
    SCHEMA_VERSION,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Largest `max_image_bytes` a profile may state (4 GiB).
const MAX_IMAGE_LIMIT: i64 = 4 << 30;
/// Longest `max_ms` a profile may state (one day).
const MAX_ACTIVATION_MS: i64 = 86_400_000;
/// NVIDIA's PCI vendor id: NVML sees only NVIDIA devices.
const NVIDIA: PciId = PciId(0x10de);

/// One problem in one profile file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProfileError {
    /// The file, as it was named to the loader.
    pub file: PathBuf,
    /// The 1-based line; 0 when the problem concerns the whole file or directory.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for ProfileError {}

/// The outcome of checking a directory of profiles.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// The `*.toml` files looked at, in name order.
    pub files: Vec<PathBuf>,
    /// The profiles that passed every check, in file order.
    pub profiles: Vec<Profile>,
    /// Every problem found, ordered by file and line.
    pub errors: Vec<ProfileError>,
}

impl CheckReport {
    /// Whether the directory held at least one profile and no errors.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && !self.profiles.is_empty()
    }
}

/// Parses and validates one profile from `text`; `file` names it in errors and its stem must
/// equal the profile's `name`.
pub fn parse(file: &Path, text: &str) -> Result<Profile, Vec<ProfileError>> {
    match check_text(file, text) {
        (Some(checked), errors) if errors.is_empty() => Ok(checked.profile),
        (_, errors) => Err(errors),
    }
}

/// Reads, parses and validates one profile file.
pub fn load_file(path: &Path) -> Result<Profile, Vec<ProfileError>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) => Err(vec![ProfileError {
            file: path.to_path_buf(),
            line: 0,
            message: format!("cannot read: {e}"),
        }]),
    }
}

/// Checks every `*.toml` file in `dir` (not its subdirectories), including the rules that span
/// files: unique names, and no two profiles claiming the same device.
pub fn check_dir(dir: &Path) -> CheckReport {
    let mut report = CheckReport::default();
    let dir_error = |message: String| ProfileError {
        file: dir.to_path_buf(),
        line: 0,
        message,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            report
                .errors
                .push(dir_error(format!("cannot read directory: {e}")));
            return report;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        report
            .errors
            .push(dir_error("no *.toml profiles in this directory".into()));
        return report;
    }

    let mut checked = Vec::new();
    for path in &files {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let (c, errors) = check_text(path, &text);
                let clean = errors.is_empty();
                report.errors.extend(errors);
                if let Some(c) = c {
                    checked.push((path.clone(), c, clean));
                }
            }
            Err(e) => report.errors.push(ProfileError {
                file: path.clone(),
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }

    // Rules across files: the first file (in name order) keeps a name or a device match, later
    // ones are reported.
    let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut pci: BTreeMap<(PciId, PciId), PathBuf> = BTreeMap::new();
    let mut drivers: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    let mut cross_clean = vec![true; checked.len()];
    for (i, (path, c, _)) in checked.iter().enumerate() {
        let mut fail = |line: usize, message: String| {
            report.errors.push(ProfileError {
                file: path.clone(),
                line,
                message,
            });
            cross_clean[i] = false;
        };
        let first = |p: &PathBuf| file_name(p);
        match names.get(&c.profile.name) {
            Some(other) => fail(
                c.lines.name,
                format!(
                    "profile name {:?} is already used by {}",
                    c.profile.name,
                    first(other)
                ),
            ),
            None => {
                names.insert(c.profile.name.clone(), path.clone());
            }
        }
        if let Some(vendor) = c.profile.matcher.pci_vendor {
            for (device, line) in &c.lines.pci_devices {
                match pci.get(&(vendor, *device)) {
                    Some(other) => fail(
                        *line,
                        format!(
                            "PCI device {vendor}:{device} is already matched by {}",
                            first(other)
                        ),
                    ),
                    None => {
                        pci.insert((vendor, *device), path.clone());
                    }
                }
            }
        }
        let m = &c.profile.matcher;
        if let (Bus::Netdevsim | Bus::Virtual, Some(driver)) = (m.bus, &m.driver) {
            let key = (bus_name(m.bus).to_string(), driver.clone());
            match drivers.get(&key) {
                Some(other) => fail(
                    c.lines.driver,
                    format!(
                        "driver {driver:?} on bus {} is already matched by {}",
                        key.0,
                        first(other)
                    ),
                ),
                None => {
                    drivers.insert(key, path.clone());
                }
            }
        }
    }

    for ((_, c, clean), cross) in checked.into_iter().zip(cross_clean) {
        if clean && cross {
            report.profiles.push(c.profile);
        }
    }
    report.files = files;
    report
        .errors
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    report
}

/// Loads every profile of `dir`, or returns every error found.
pub fn load_dir(dir: &Path) -> Result<Vec<Profile>, Vec<ProfileError>> {
    let report = check_dir(dir);
    if report.errors.is_empty() {
        Ok(report.profiles)
    } else {
        Err(report.errors)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn bus_name(bus: Bus) -> &'static str {
    match bus {
        Bus::Pci => "pci",
        Bus::Netdevsim => "netdevsim",
        Bus::Virtual => "virtual",
        Bus::Sim => "sim",
    }
}

/// A profile that fits the schema, with the lines the cross-file rules point at.
struct Checked {
    profile: Profile,
    lines: Lines,
}

struct Lines {
    name: usize,
    driver: usize,
    pci_devices: Vec<(PciId, usize)>,
}

/// The per-file checker: the file's text (for lines) and the errors found so far.
struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ProfileError>,
}

impl Ctx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        1 + self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }

    fn line_of<T>(&self, v: &Spanned<T>) -> usize {
        self.line(&v.span())
    }

    fn err_line(&mut self, line: usize, message: String) {
        self.errors.push(ProfileError {
            file: self.file.to_path_buf(),
            line,
            message,
        });
    }

    fn err<T>(&mut self, at: &Spanned<T>, message: String) {
        let line = self.line_of(at);
        self.err_line(line, message);
    }

    /// A name-like key: non-empty, no whitespace, only the `{index}` placeholder (where allowed).
    fn key(&mut self, v: &Spanned<String>, what: &str, placeholders: bool) {
        let s = v.get_ref();
        if s.is_empty() {
            self.err(v, format!("{what} is empty"));
        } else if s.chars().any(char::is_whitespace) {
            self.err(v, format!("{what} {s:?} contains whitespace"));
        } else {
            let stripped = if placeholders {
                s.replace("{index}", "")
            } else {
                s.clone()
            };
            if stripped.contains('{') || stripped.contains('}') {
                let allowed = if placeholders {
                    "only {index} is known"
                } else {
                    "placeholders are not allowed here"
                };
                self.err(v, format!("{what} {s:?}: unknown placeholder ({allowed})"));
            }
        }
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_component_name(s: &str) -> bool {
    s.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
}

/// `"0x15b3"`: `0x` and exactly four hex digits, as pci.ids writes them.
fn pci_id(s: &str) -> Option<PciId> {
    let hex = s.strip_prefix("0x")?;
    if hex.len() != 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(hex, 16).ok().map(PciId)
}

/// Checks one file's text; returns the profile when the file fits the schema (even if some rules
/// failed, so the cross-file rules still see it) and every error found.
fn check_text(file: &Path, text: &str) -> (Option<Checked>, Vec<ProfileError>) {
    let mut cx = Ctx {
        file,
        text,
        errors: Vec::new(),
    };
    let raw: RawProfile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let line = e.span().map(|s| cx.line(&s)).unwrap_or(1);
            cx.err_line(line, e.message().trim().to_string());
            return (None, cx.errors);
        }
    };
    let checked = check_profile(&mut cx, raw);
    (Some(checked), cx.errors)
}

fn check_profile(cx: &mut Ctx<'_>, raw: RawProfile) -> Checked {
    if *raw.schema.get_ref() != SCHEMA_VERSION {
        cx.err(
            &raw.schema,
            format!(
                "schema {} is not supported (this entente reads schema {SCHEMA_VERSION})",
                raw.schema.get_ref()
            ),
        );
    }

    let name = raw.name.get_ref();
    if !is_name(name) {
        cx.err(
            &raw.name,
            format!("name {name:?} must be lowercase letters, digits and single inner dashes"),
        );
    }
    let stem = cx
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if *name != stem {
        cx.err(
            &raw.name,
            format!("name {name:?} does not match the file name {stem:?}"),
        );
    }

    let description = raw.description.get_ref().trim();
    if description.is_empty() {
        cx.err(&raw.description, "description is empty".into());
    } else if description.contains('\n') {
        cx.err(&raw.description, "description must be one line".into());
    }

    let lab = raw.lab.as_ref().is_some_and(|l| *l.get_ref());
    let backend = *raw.backend.get_ref();
    let inventory = raw
        .inventory
        .as_ref()
        .map(|i| *i.get_ref())
        .unwrap_or(backend);
    let class = *raw.class.get_ref();

    let (matcher, driver_line, pci_lines) = check_match(cx, &raw, backend, inventory, lab);

    if inventory == Backend::Nvml && class != DeviceClass::Gpu {
        let at = raw.inventory.as_ref().unwrap_or(&raw.backend);
        cx.err(
            at,
            "inventory nvml reads GPUs only, but class is not gpu".into(),
        );
    }
    if let Some(inv) = &raw.inventory {
        if *inv.get_ref() == Backend::Sim && backend != Backend::Sim {
            cx.err(inv, "inventory sim needs backend sim".into());
        }
    }

    let components = check_components(cx, &raw, backend, inventory);
    let flashable: Vec<&Component> = components.iter().filter(|c| c.flashable).collect();
    if flashable.is_empty() && backend.can_flash() && !components.is_empty() {
        cx.err(
            &raw.backend,
            format!("backend {backend} flashes, but no component is flashable"),
        );
    }
    if !flashable.is_empty() && !backend.can_flash() {
        cx.err(
            &raw.backend,
            format!(
                "backend {backend} cannot flash, but component {:?} is flashable",
                flashable[0].name
            ),
        );
    }

    let mut activations = check_activations(cx, &raw.activations);
    if !flashable.is_empty() && raw.activations.is_empty() {
        cx.err_line(
            1,
            "no [[activation]]: a profile with a flashable component needs at least one method"
                .into(),
        );
    }
    if flashable.is_empty() && !components.is_empty() {
        if let Some(first) = raw.activations.first() {
            cx.err(
                first,
                "[[activation]] listed, but no component is flashable".into(),
            );
        }
    }
    activations.sort_by_key(|a| a.method);
    let base_window = match &raw.base_window {
        None => (0, 0),
        Some(w) => {
            let [min, max] = *w.get_ref();
            if min < 0 || max < min {
                cx.err(
                    w,
                    format!("base_window [{min}, {max}] must be two epochs, min <= max"),
                );
                (0, 0)
            } else {
                (min as u64, max as u64)
            }
        }
    };

    let link_epoch_param = check_devlink(cx, &raw, backend);

    Checked {
        profile: Profile {
            name: name.clone(),
            description: description.to_string(),
            class,
            lab,
            backend,
            inventory,
            matcher,
            components,
            activations,
            base_window,
            link_epoch_param,
        },
        lines: Lines {
            name: cx.line_of(&raw.name),
            driver: driver_line,
            pci_devices: pci_lines,
        },
    }
}

/// A devlink parameter name as drivers register them: `[a-z0-9_]+`.
fn is_param_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `[devlink]`: only for backend devlink; returns `link_epoch_param`.
fn check_devlink(cx: &mut Ctx<'_>, raw: &RawProfile, backend: Backend) -> Option<String> {
    let table = raw.devlink.as_ref()?;
    if backend != Backend::Devlink {
        cx.err(
            table,
            format!("[devlink] is a devlink setting, but backend is {backend}"),
        );
    }
    let param = table.get_ref().link_epoch_param.as_ref()?;
    let name = param.get_ref();
    if !is_param_name(name) {
        cx.err(
            param,
            format!("link_epoch_param {name:?} is not a devlink parameter name ([a-z0-9_]+)"),
        );
        return None;
    }
    Some(name.clone())
}

fn check_match(
    cx: &mut Ctx<'_>,
    raw: &RawProfile,
    backend: Backend,
    inventory: Backend,
    lab: bool,
) -> (Match, usize, Vec<(PciId, usize)>) {
    let m: &RawMatch = raw.matcher.get_ref();
    let bus = *m.bus.get_ref();
    let bus_line = cx.line_of(&m.bus);

    let mut vendor = None;
    let mut devices = Vec::new();
    let mut device_lines = Vec::new();
    if bus == Bus::Pci {
        match &m.pci_vendor {
            None => cx.err_line(bus_line, "bus pci needs pci_vendor".into()),
            Some(v) => match pci_id(v.get_ref()) {
                None => cx.err(
                    v,
                    format!(
                        "pci_vendor {:?} is not a PCI id (0x and four hex digits, e.g. \"0x15b3\")",
                        v.get_ref()
                    ),
                ),
                Some(PciId(0)) | Some(PciId(0xffff)) => cx.err(
                    v,
                    format!("pci_vendor {:?} is not a vendor id", v.get_ref()),
                ),
                Some(id) => vendor = Some(id),
            },
        }
        match &m.pci_devices {
            None => cx.err_line(bus_line, "bus pci needs pci_devices".into()),
            Some(list) if list.get_ref().is_empty() => cx.err(list, "pci_devices is empty".into()),
            Some(list) => {
                for d in list.get_ref() {
                    match pci_id(d.get_ref()) {
                        None => cx.err(
                            d,
                            format!(
                                "PCI device id {:?} is not a PCI id (0x and four hex digits, e.g. \"0x1021\")",
                                d.get_ref()
                            ),
                        ),
                        Some(id) if devices.contains(&id) => {
                            cx.err(d, format!("PCI device id {id} listed twice"))
                        }
                        Some(id) => {
                            devices.push(id);
                            device_lines.push((id, cx.line_of(d)));
                        }
                    }
                }
            }
        }
    } else {
        if let Some(v) = &m.pci_vendor {
            cx.err(v, format!("pci_vendor given, but bus is {}", bus_name(bus)));
        }
        if let Some(d) = &m.pci_devices {
            cx.err(
                d,
                format!("pci_devices given, but bus is {}", bus_name(bus)),
            );
        }
        if bus != Bus::Pci && bus != Bus::Sim && !lab {
            cx.err(
                &m.bus,
                format!("bus {} is a lab device: set lab = true", bus_name(bus)),
            );
        }
    }

    let driver = m.driver.as_ref().map(|d| {
        cx.key(d, "driver", false);
        d.get_ref().clone()
    });
    let driver_line = m.driver.as_ref().map(|d| cx.line_of(d)).unwrap_or(bus_line);
    let needs_driver = matches!(bus, Bus::Netdevsim | Bus::Virtual) || backend == Backend::Devlink;
    if needs_driver && driver.is_none() {
        cx.err_line(
            bus_line,
            format!(
                "driver is required (bus {}, backend {backend})",
                bus_name(bus)
            ),
        );
    }
    if bus == Bus::Sim && driver.is_some() {
        cx.err_line(driver_line, "bus sim takes no driver".into());
    }

    // Which buses each backend reaches.
    let fits = match backend {
        Backend::Sim => bus == Bus::Sim,
        Backend::Devlink => matches!(bus, Bus::Pci | Bus::Netdevsim),
        Backend::Redfish | Backend::Nvml => bus == Bus::Pci,
        Backend::None => matches!(bus, Bus::Virtual | Bus::Pci),
    };
    if !fits {
        cx.err(
            &raw.backend,
            format!(
                "backend {backend} does not reach devices on bus {}",
                bus_name(bus)
            ),
        );
    }
    if bus == Bus::Sim && backend != Backend::Sim {
        cx.err(&m.bus, format!("bus sim needs backend sim, not {backend}"));
    }
    if backend == Backend::Sim && !lab {
        cx.err(
            &raw.backend,
            "backend sim is a lab device: set lab = true".into(),
        );
    }
    if inventory == Backend::Nvml && bus == Bus::Pci && vendor.is_some_and(|v| v != NVIDIA) {
        cx.err_line(
            bus_line,
            format!("inventory nvml sees NVIDIA devices only (pci_vendor {NVIDIA})"),
        );
    }

    (
        Match {
            bus,
            pci_vendor: vendor,
            pci_devices: devices,
            driver,
        },
        driver_line,
        device_lines,
    )
}

fn check_components(
    cx: &mut Ctx<'_>,
    raw: &RawProfile,
    backend: Backend,
    inventory: Backend,
) -> Vec<Component> {
    if raw.components.is_empty() {
        cx.err_line(1, "no [[component]]: a profile needs at least one".into());
    }
    let mut out: Vec<Component> = Vec::new();
    for rc in &raw.components {
        let c: &RawComponent = rc.get_ref();
        let name = c.name.get_ref();
        if !is_component_name(name) {
            cx.err(
                &c.name,
                format!(
                    "component name {name:?} must start with a lowercase letter or digit and use only [a-z0-9._-]"
                ),
            );
        }
        if out.iter().any(|o| &o.name == name) {
            cx.err(&c.name, format!("component {name:?} listed twice"));
        }
        cx.key(&c.version_key, "version_key", true);
        let mut fixed: Vec<String> = Vec::new();
        for k in &c.fixed_keys {
            cx.key(k, "fixed_keys entry", false);
            if fixed.contains(k.get_ref()) {
                cx.err(k, format!("fixed key {:?} listed twice", k.get_ref()));
            }
            fixed.push(k.get_ref().clone());
        }
        if let Some(k) = &c.inventory_key {
            cx.key(k, "inventory_key", true);
        }
        match (&c.inventory_key, inventory == backend) {
            (Some(k), true) => cx.err(
                k,
                format!("inventory_key given, but inventory is the update backend ({backend})"),
            ),
            (None, false) => cx.err(
                &c.name,
                format!(
                    "component {name:?} needs inventory_key (inventory {inventory} differs from backend {backend})"
                ),
            ),
            _ => {}
        }
        if let Some(fc) = &c.flash_component {
            cx.key(fc, "flash_component", false);
            if backend != Backend::Devlink {
                cx.err(
                    fc,
                    format!("flash_component is a devlink setting, but backend is {backend}"),
                );
            }
        }

        let flashable = c.flashable.as_ref().is_none_or(|f| *f.get_ref());
        let mut max_image_bytes = None;
        if flashable {
            match &c.max_image_bytes {
                None => cx.err(
                    &c.name,
                    format!("flashable component {name:?} needs max_image_bytes"),
                ),
                Some(m) if *m.get_ref() <= 0 || *m.get_ref() > MAX_IMAGE_LIMIT => cx.err(
                    m,
                    format!(
                        "max_image_bytes {} must be between 1 and {MAX_IMAGE_LIMIT}",
                        m.get_ref()
                    ),
                ),
                Some(m) => max_image_bytes = Some(*m.get_ref() as u64),
            }
        } else {
            if let Some(m) = &c.max_image_bytes {
                cx.err(
                    m,
                    "max_image_bytes given, but the component is not flashable".into(),
                );
            }
            if let Some(fc) = &c.flash_component {
                cx.err(
                    fc,
                    "flash_component given, but the component is not flashable".into(),
                );
            }
            if *c.dual_bank.get_ref() {
                cx.err(
                    &c.dual_bank,
                    "dual_bank = true, but the component is not flashable".into(),
                );
            }
        }

        out.push(Component {
            name: name.clone(),
            version_key: c.version_key.get_ref().clone(),
            fixed_keys: fixed,
            inventory_key: c.inventory_key.as_ref().map(|k| k.get_ref().clone()),
            flash_component: c.flash_component.as_ref().map(|k| k.get_ref().clone()),
            flashable,
            max_image_bytes,
            dual_bank: *c.dual_bank.get_ref(),
        });
    }
    out
}

fn check_activations(cx: &mut Ctx<'_>, raw: &[Spanned<RawActivation>]) -> Vec<Activation> {
    let mut out: Vec<Activation> = Vec::new();
    for ra in raw {
        let a = ra.get_ref();
        let method = *a.method.get_ref();
        let duplicate = out.iter().any(|o| o.method == method);
        if duplicate {
            cx.err(
                &a.method,
                format!("activation method {:?} listed twice", method.name()),
            );
        }
        let disruptive = *a.disruptive.get_ref();
        match (method, disruptive) {
            (ActivationMethod::Live, true) => cx.err(
                &a.disruptive,
                "method live is a no-reset activation: it cannot be disruptive".into(),
            ),
            (ActivationMethod::Reboot, false) => cx.err(
                &a.disruptive,
                "method reboot always disrupts traffic: set disruptive = true".into(),
            ),
            _ => {}
        }
        let max_ms = *a.max_ms.get_ref();
        if max_ms <= 0 || max_ms > MAX_ACTIVATION_MS {
            cx.err(
                &a.max_ms,
                format!("max_ms {max_ms} must be between 1 and {MAX_ACTIVATION_MS}"),
            );
        }
        let note = a.note.as_ref().map(|n| n.get_ref().trim().to_string());
        if let (Some(n), Some(raw_note)) = (&note, &a.note) {
            if n.is_empty() {
                cx.err(raw_note, "note is empty".into());
            }
        }
        if duplicate {
            continue;
        }
        out.push(Activation {
            method,
            disruptive,
            max_ms: max_ms.max(0) as u64,
            note,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"schema = 1
name = "x-nic"
description = "a test NIC"
class = "nic"
backend = "devlink"

[match]
bus = "pci"
pci_vendor = "0x15b3"
pci_devices = ["0x1021"]
driver = "mlx5_core"

[[component]]
name = "fw"
version_key = "fw.version"
fixed_keys = ["fw.psid"]
max_image_bytes = 1048576
dual_bank = false

[[activation]]
method = "reset"
disruptive = true
max_ms = 60000

[[activation]]
method = "live"
disruptive = false
max_ms = 5000
"#;

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("p/x-nic.toml"), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_good_profile_parses_with_methods_least_disruptive_first() {
        let p = parse(Path::new("x-nic.toml"), GOOD).expect("valid");
        assert_eq!(
            p.methods(),
            vec![ActivationMethod::Live, ActivationMethod::Reset]
        );
        assert!(p.matches_pci(0x15b3, 0x1021));
        assert!(!p.matches_pci(0x15b3, 0x101d));
        assert_eq!(p.component("fw").unwrap().max_image_bytes, Some(1 << 20));
        assert_eq!(p.least_disruptive().unwrap().method, ActivationMethod::Live);
    }

    #[test]
    fn an_unknown_field_names_its_line() {
        let text = GOOD.replace("dual_bank = false", "dual_bank = false\nbanks = 2");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("p/x-nic.toml:19: unknown field `banks`"),
            "{e:?}"
        );
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let text = GOOD.replace("class = \"nic\"", "class = nic\"");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("p/x-nic.toml:4: "), "{e:?}");
    }

    #[test]
    fn every_semantic_error_is_reported_on_its_line() {
        let text = GOOD
            .replace("name = \"x-nic\"", "name = \"y-nic\"")
            .replace("\"0x1021\"", "\"0x1021\", \"1021\"")
            .replace("max_ms = 5000", "max_ms = 0")
            .replace("method = \"reset\"", "method = \"live\"");
        let e = errors(&text);
        assert!(
            e.contains(
                &"p/x-nic.toml:2: name \"y-nic\" does not match the file name \"x-nic\"".into()
            ),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("p/x-nic.toml:10: PCI device id \"1021\"")),
            "{e:?}"
        );
        assert!(
            e.contains(&"p/x-nic.toml:26: activation method \"live\" listed twice".into()),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("p/x-nic.toml:22: method live is a no-reset")),
            "{e:?}"
        );
        assert!(
            e.contains(&"p/x-nic.toml:28: max_ms 0 must be between 1 and 86400000".into()),
            "{e:?}"
        );
        assert_eq!(e.len(), 5, "{e:?}");
    }

    #[test]
    fn unknown_methods_and_backends_are_schema_errors() {
        let e = errors(&GOOD.replace("method = \"reset\"", "method = \"warm\""));
        assert!(
            e.len() == 1 && e[0].starts_with("p/x-nic.toml:21: unknown variant `warm`"),
            "{e:?}"
        );
        let e = errors(&GOOD.replace("backend = \"devlink\"", "backend = \"ethtool\""));
        assert!(
            e.len() == 1 && e[0].starts_with("p/x-nic.toml:5: unknown variant `ethtool`"),
            "{e:?}"
        );
    }

    #[test]
    fn a_missing_disruptive_flag_is_an_error() {
        let e = errors(&GOOD.replace("disruptive = true\n", ""));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("missing field `disruptive`"), "{e:?}");
        assert!(e[0].starts_with("p/x-nic.toml:2"), "{e:?}");
    }

    #[test]
    fn bad_ids_sizes_and_backends_are_errors() {
        let e = errors(&GOOD.replace("\"0x15b3\"", "\"0xffff\""));
        assert!(e.iter().any(|m| m.contains("not a vendor id")), "{e:?}");
        let e = errors(&GOOD.replace("\"0x1021\"", "\"0x10210\""));
        assert!(e.iter().any(|m| m.contains("is not a PCI id")), "{e:?}");
        let e = errors(&GOOD.replace("max_image_bytes = 1048576", "max_image_bytes = 0"));
        assert!(
            e.contains(
                &"p/x-nic.toml:17: max_image_bytes 0 must be between 1 and 4294967296".into()
            ),
            "{e:?}"
        );
        let e = errors(&GOOD.replace("backend = \"devlink\"", "backend = \"nvml\""));
        assert!(
            e.iter().any(|m| m.contains("backend nvml cannot flash")),
            "{e:?}"
        );
        let e = errors(&GOOD.replace("schema = 1", "schema = 2"));
        assert!(
            e.iter().any(|m| m.contains("schema 2 is not supported")),
            "{e:?}"
        );
    }

    #[test]
    fn a_flashable_profile_needs_an_activation() {
        let cut = GOOD.find("[[activation]]").unwrap();
        let e = errors(&GOOD[..cut]);
        assert_eq!(
            e,
            vec!["p/x-nic.toml:1: no [[activation]]: a profile with a flashable component needs at least one method".to_string()]
        );
    }

    #[test]
    fn a_link_epoch_param_is_a_devlink_param_name_on_a_devlink_profile() {
        let with = |table: &str| format!("{GOOD}\n{table}");
        let p = parse(
            Path::new("x-nic.toml"),
            &with("[devlink]\nlink_epoch_param = \"entente_link_epoch\"\n"),
        )
        .expect("valid");
        assert_eq!(p.link_epoch_param.as_deref(), Some("entente_link_epoch"));
        assert_eq!(
            parse(Path::new("x-nic.toml"), GOOD)
                .unwrap()
                .link_epoch_param,
            None
        );
        let e = errors(&with("[devlink]\nlink_epoch_param = \"Link-Epoch\"\n"));
        assert_eq!(
            e,
            vec!["p/x-nic.toml:31: link_epoch_param \"Link-Epoch\" is not a devlink parameter name ([a-z0-9_]+)".to_string()]
        );
        let e = errors(&with("[devlink]\nlink_epoch_param = \"\"\n"));
        assert!(
            e.iter().any(|m| m.contains("not a devlink parameter name")),
            "{e:?}"
        );
        let e = errors(
            &with("[devlink]\nlink_epoch_param = \"x\"\n")
                .replace("backend = \"devlink\"", "backend = \"redfish\""),
        );
        assert!(
            e.iter()
                .any(|m| m.contains("[devlink] is a devlink setting, but backend is redfish")),
            "{e:?}"
        );
        let e = errors(&with("[devlink]\nepoch_param = \"x\"\n"));
        assert!(
            e.iter().any(|m| m.contains("unknown field `epoch_param`")),
            "{e:?}"
        );
    }

    #[test]
    fn placeholders_other_than_index_are_refused() {
        let e = errors(&GOOD.replace("\"fw.version\"", "\"fw.{slot}\""));
        assert!(e.iter().any(|m| m.contains("unknown placeholder")), "{e:?}");
    }
}
