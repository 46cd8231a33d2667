//! devlink parameters: `devlink dev param show DEV name NAME` (`DEVLINK_CMD_PARAM_GET`) and
//! `devlink dev param set DEV name NAME value V cmode runtime` (`DEVLINK_CMD_PARAM_SET`) for a
//! u32 parameter, as plain data.
//!
//! A `PARAM_GET` reply carries one `DEVLINK_ATTR_PARAM`, nested without `NLA_F_NESTED`: the
//! name, a flag when the parameter is generic, its type (the netlink type of its value, `NLA_U32`
//! for a u32), and a values list with one value (cmode, data) per configuration mode the
//! parameter supports. A `PARAM_SET` request names the parameter, its type, the data and the
//! cmode at the top level.

use super::message::{Attr, DevlinkMessage};
use super::requests::Handle;
use super::uapi::*;
use netlink_packet_core::{
    parse_string, parse_u8, DecodeError, DefaultNla, Emitable, NlasIterator, NLA_TYPE_MASK,
};

/// One value of a parameter: its configuration mode and its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamValue {
    /// `DEVLINK_PARAM_CMODE_*` (runtime, driverinit, permanent).
    pub cmode: u8,
    /// The value's bytes, in the parameter's type; `None` when absent (a false bool).
    pub data: Option<Vec<u8>>,
}

/// A parameter as `DEVLINK_CMD_PARAM_GET` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// Its name (`entente_link_epoch`).
    pub name: String,
    /// Whether it is one of devlink's generic parameters (not driver-specific).
    pub generic: bool,
    /// The netlink type of its value (`NLA_U32` = 3 for a u32).
    pub kind: u8,
    /// Its values, one per supported configuration mode.
    pub values: Vec<ParamValue>,
}

/// The bytes of `attrs`, emitted one after another (a nested attribute's payload).
fn nested(attrs: &[DefaultNla]) -> Vec<u8> {
    let mut b = vec![0u8; attrs.buffer_len()];
    attrs.emit(&mut b);
    b
}

impl ParamInfo {
    /// The nested attributes of `DEVLINK_ATTR_PARAM`, as the kernel emits them.
    pub(crate) fn attrs(&self) -> Vec<DefaultNla> {
        let mut name = self.name.as_bytes().to_vec();
        name.push(0);
        let values: Vec<DefaultNla> = self
            .values
            .iter()
            .map(|v| {
                let mut inner = vec![DefaultNla::new(ATTR_PARAM_VALUE_CMODE, vec![v.cmode])];
                if let Some(d) = &v.data {
                    inner.push(DefaultNla::new(ATTR_PARAM_VALUE_DATA, d.clone()));
                }
                DefaultNla::new(ATTR_PARAM_VALUE, nested(&inner))
            })
            .collect();
        let mut attrs = vec![DefaultNla::new(ATTR_PARAM_NAME, name)];
        if self.generic {
            attrs.push(DefaultNla::new(ATTR_PARAM_GENERIC, Vec::new()));
        }
        attrs.push(DefaultNla::new(ATTR_PARAM_TYPE, vec![self.kind]));
        attrs.push(DefaultNla::new(ATTR_PARAM_VALUES_LIST, nested(&values)));
        attrs
    }

    /// Decodes the payload of `DEVLINK_ATTR_PARAM`.
    pub(crate) fn parse(payload: &[u8]) -> Result<ParamInfo, DecodeError> {
        let (mut name, mut generic, mut kind, mut values) = (None, false, None, Vec::new());
        for nla in NlasIterator::new(payload) {
            let nla = nla?;
            match nla.kind() & NLA_TYPE_MASK {
                ATTR_PARAM_NAME => name = Some(parse_string(nla.value())?),
                ATTR_PARAM_GENERIC => generic = true,
                ATTR_PARAM_TYPE => kind = Some(parse_u8(nla.value())?),
                ATTR_PARAM_VALUES_LIST => {
                    for v in NlasIterator::new(nla.value()) {
                        let v = v?;
                        if v.kind() & NLA_TYPE_MASK == ATTR_PARAM_VALUE {
                            values.push(parse_value(v.value())?);
                        }
                    }
                }
                _ => {}
            }
        }
        match (name, kind) {
            (Some(name), Some(kind)) => Ok(ParamInfo {
                name,
                generic,
                kind,
                values,
            }),
            _ => Err(DecodeError::from(
                "a devlink parameter without its name or type",
            )),
        }
    }

    /// The parameter a `PARAM_GET` reply carries.
    pub fn from_reply(m: &DevlinkMessage) -> Option<&ParamInfo> {
        m.attrs.iter().find_map(|a| match a {
            Attr::Param(p) => Some(p),
            _ => None,
        })
    }

    /// Its runtime value, which must be a u32.
    pub fn runtime_u32(&self) -> Result<u32, String> {
        if self.kind != PARAM_TYPE_U32 {
            return Err(format!(
                "devlink parameter {} has netlink type {}, not u32 ({PARAM_TYPE_U32})",
                self.name, self.kind
            ));
        }
        let v = self
            .values
            .iter()
            .find(|v| v.cmode == PARAM_CMODE_RUNTIME)
            .ok_or_else(|| format!("devlink parameter {} has no runtime value", self.name))?;
        match v.data.as_deref().map(<[u8; 4]>::try_from) {
            Some(Ok(b)) => Ok(u32::from_ne_bytes(b)),
            _ => Err(format!(
                "devlink parameter {}: a runtime value that is not 4 bytes",
                self.name
            )),
        }
    }
}

fn parse_value(payload: &[u8]) -> Result<ParamValue, DecodeError> {
    let (mut cmode, mut data) = (None, None);
    for nla in NlasIterator::new(payload) {
        let nla = nla?;
        match nla.kind() & NLA_TYPE_MASK {
            ATTR_PARAM_VALUE_CMODE => cmode = Some(parse_u8(nla.value())?),
            ATTR_PARAM_VALUE_DATA => data = Some(nla.value().to_vec()),
            _ => {}
        }
    }
    let cmode =
        cmode.ok_or_else(|| DecodeError::from("a devlink parameter value without cmode"))?;
    Ok(ParamValue { cmode, data })
}

/// `devlink dev param show BUS/DEV name NAME`.
pub fn param_get_request(h: &Handle, name: &str) -> DevlinkMessage {
    DevlinkMessage {
        cmd: CMD_PARAM_GET,
        attrs: vec![
            Attr::BusName(h.bus.clone()),
            Attr::DevName(h.device.clone()),
            Attr::ParamName(name.into()),
        ],
    }
}

/// `devlink dev param set BUS/DEV name NAME value VALUE cmode runtime`, for a u32 parameter.
pub fn param_set_u32_request(h: &Handle, name: &str, value: u32) -> DevlinkMessage {
    DevlinkMessage {
        cmd: CMD_PARAM_SET,
        attrs: vec![
            Attr::BusName(h.bus.clone()),
            Attr::DevName(h.device.clone()),
            Attr::ParamName(name.into()),
            Attr::ParamType(PARAM_TYPE_U32),
            Attr::ParamData(value.to_ne_bytes().to_vec()),
            Attr::ParamCmode(PARAM_CMODE_RUNTIME),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::ParseableParametrized;
    use netlink_packet_generic::GenlHeader;

    fn h() -> Handle {
        "netdevsim/netdevsim1".parse().unwrap()
    }

    fn bytes(m: &DevlinkMessage) -> Vec<u8> {
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b);
        b
    }

    fn parse(cmd: u8, b: &[u8]) -> DevlinkMessage {
        let header = GenlHeader { cmd, version: 1 };
        DevlinkMessage::parse_with_param(b, header).unwrap()
    }

    /// An attribute header: length (header included, padding not), type.
    fn hdr(len: u16, kind: u16) -> Vec<u8> {
        [len.to_ne_bytes(), kind.to_ne_bytes()].concat()
    }

    #[test]
    fn a_u32_set_names_type_data_and_runtime_cmode_at_the_top_level() {
        let m = param_set_u32_request(&h(), "entente_link_epoch", 7);
        assert_eq!(m.cmd, CMD_PARAM_SET);
        let b = bytes(&m);
        // bus (4 + "netdevsim\0" = 14, padded 16), dev (4 + 11 = 15, padded 16), then name.
        let at = 32;
        assert_eq!(&b[at..at + 4], &hdr(23, ATTR_PARAM_NAME)[..]);
        assert_eq!(&b[at + 4..at + 23], b"entente_link_epoch\0");
        let at = at + 24;
        assert_eq!(&b[at..at + 8], &[hdr(5, 83), vec![3, 0, 0, 0]].concat()[..]);
        let at = at + 8;
        assert_eq!(
            &b[at..at + 8],
            &[hdr(8, 86), 7u32.to_ne_bytes().to_vec()].concat()[..]
        );
        let at = at + 8;
        assert_eq!(&b[at..], &[hdr(5, 87), vec![0, 0, 0, 0]].concat()[..]);
        assert_eq!(parse(CMD_PARAM_SET, &b), m);
    }

    #[test]
    fn a_get_names_the_device_and_the_parameter() {
        let m = param_get_request(&h(), "entente_link_epoch");
        assert_eq!(m.cmd, CMD_PARAM_GET);
        assert_eq!(
            m.attrs,
            vec![
                Attr::BusName("netdevsim".into()),
                Attr::DevName("netdevsim1".into()),
                Attr::ParamName("entente_link_epoch".into()),
            ]
        );
    }

    /// `DEVLINK_ATTR_PARAM` as the kernel's `devlink_nl_param_fill` writes it for a
    /// driver-specific u32 runtime parameter holding `value`.
    fn kernel_param(value: u32) -> Vec<u8> {
        let mut name = hdr(23, ATTR_PARAM_NAME);
        name.extend_from_slice(b"entente_link_epoch\0\0");
        let kind = [hdr(5, ATTR_PARAM_TYPE), vec![3, 0, 0, 0]].concat();
        let cmode = [hdr(5, ATTR_PARAM_VALUE_CMODE), vec![0, 0, 0, 0]].concat();
        let data = [hdr(8, ATTR_PARAM_VALUE_DATA), value.to_ne_bytes().to_vec()].concat();
        let value = [hdr(20, ATTR_PARAM_VALUE), cmode, data].concat();
        let list = [hdr(24, ATTR_PARAM_VALUES_LIST), value].concat();
        [hdr(60, ATTR_PARAM), name, kind, list].concat()
    }

    #[test]
    fn the_kernels_reply_decodes_to_the_runtime_value() {
        let m = parse(CMD_PARAM_GET, &kernel_param(41));
        let p = ParamInfo::from_reply(&m).expect("a parameter");
        assert_eq!(p.name, "entente_link_epoch");
        assert!(!p.generic);
        assert_eq!(p.runtime_u32(), Ok(41));
        // What this crate emits for it is what the kernel wrote.
        assert_eq!(bytes(&m), kernel_param(41));
    }

    #[test]
    fn only_a_u32_runtime_value_is_read() {
        let p = |kind: u8, values: Vec<ParamValue>| ParamInfo {
            name: "p".into(),
            generic: kind == 6,
            kind,
            values,
        };
        let driverinit = ParamValue {
            cmode: 1,
            data: Some(5u32.to_ne_bytes().to_vec()),
        };
        let e = p(3, vec![driverinit.clone()]).runtime_u32().unwrap_err();
        assert!(e.contains("no runtime value"), "{e}");
        let e = p(6, vec![]).runtime_u32().unwrap_err();
        assert!(e.contains("not u32"), "{e}");
        let short = ParamValue {
            cmode: 0,
            data: Some(vec![1]),
        };
        assert!(p(3, vec![short]).runtime_u32().is_err());
        // Every mode round-trips, a generic flag and an absent value included.
        let all = p(
            6,
            vec![
                ParamValue {
                    cmode: 0,
                    data: None,
                },
                driverinit,
            ],
        );
        let m = DevlinkMessage {
            cmd: CMD_PARAM_GET,
            attrs: vec![Attr::Param(all)],
        };
        assert_eq!(parse(CMD_PARAM_GET, &bytes(&m)), m);
    }

    #[test]
    fn a_parameter_without_its_type_is_a_decode_error() {
        let mut b = hdr(28, ATTR_PARAM);
        b.extend(hdr(23, ATTR_PARAM_NAME));
        b.extend_from_slice(b"entente_link_epoch\0\0");
        let header = GenlHeader {
            cmd: CMD_PARAM_GET,
            version: 1,
        };
        let e = DevlinkMessage::parse_with_param(&b[..], header).unwrap_err();
        assert!(e.to_string().contains("name or type"), "{e}");
    }
}
