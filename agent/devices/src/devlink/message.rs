//! devlink messages: the attributes this backend uses, with their encoding and decoding on top of
//! `netlink-packet-core`'s attribute framing, and the generic netlink payload that carries them.
//! Attributes this backend does not know are kept as raw attributes, never an error.

use super::param::ParamInfo;
use super::uapi::*;
use netlink_packet_core::{
    emit_u32, emit_u64, parse_string, parse_u32, parse_u64, parse_u8, DecodeError, DefaultNla,
    Emitable, Nla, NlaBuffer, NlasIterator, Parseable, ParseableParametrized, NLA_F_NESTED,
    NLA_TYPE_MASK,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

/// A `struct nla_bitfield32`: the bits set, and which bits the sender speaks of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bitfield32 {
    /// Bit values.
    pub value: u32,
    /// Bits that are meaningful in `value`.
    pub selector: u32,
}

impl Bitfield32 {
    /// The bits of `value` that the selector covers.
    pub fn selected(self) -> u32 {
        self.value & self.selector
    }

    fn parse(b: &[u8]) -> Result<Bitfield32, DecodeError> {
        if b.len() != 8 {
            return Err(DecodeError::invalid_number(8, b.len()));
        }
        Ok(Bitfield32 {
            value: parse_u32(&b[..4])?,
            selector: parse_u32(&b[4..])?,
        })
    }
}

/// One `name = value` pair of `devlink dev info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionPair {
    /// The version's name (`fw.mgmt`, `fw.psid`).
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A devlink attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attr {
    /// `DEVLINK_ATTR_BUS_NAME`.
    BusName(String),
    /// `DEVLINK_ATTR_DEV_NAME`.
    DevName(String),
    /// `DEVLINK_ATTR_INFO_DRIVER_NAME`.
    DriverName(String),
    /// `DEVLINK_ATTR_INFO_SERIAL_NUMBER`.
    SerialNumber(String),
    /// `DEVLINK_ATTR_INFO_VERSION_FIXED`.
    VersionFixed(VersionPair),
    /// `DEVLINK_ATTR_INFO_VERSION_RUNNING`.
    VersionRunning(VersionPair),
    /// `DEVLINK_ATTR_INFO_VERSION_STORED`.
    VersionStored(VersionPair),
    /// `DEVLINK_ATTR_FLASH_UPDATE_FILE_NAME`.
    FlashFileName(String),
    /// `DEVLINK_ATTR_FLASH_UPDATE_COMPONENT`.
    FlashComponent(String),
    /// `DEVLINK_ATTR_FLASH_UPDATE_OVERWRITE_MASK`.
    FlashOverwriteMask(Bitfield32),
    /// `DEVLINK_ATTR_FLASH_UPDATE_STATUS_MSG`.
    StatusMsg(String),
    /// `DEVLINK_ATTR_FLASH_UPDATE_STATUS_DONE`.
    StatusDone(u64),
    /// `DEVLINK_ATTR_FLASH_UPDATE_STATUS_TOTAL`.
    StatusTotal(u64),
    /// `DEVLINK_ATTR_FLASH_UPDATE_STATUS_TIMEOUT`, seconds.
    StatusTimeout(u64),
    /// `DEVLINK_ATTR_RELOAD_ACTION`.
    ReloadAction(u8),
    /// `DEVLINK_ATTR_RELOAD_LIMITS`.
    ReloadLimits(Bitfield32),
    /// `DEVLINK_ATTR_RELOAD_ACTIONS_PERFORMED`.
    ReloadActionsPerformed(Bitfield32),
    /// `DEVLINK_ATTR_PARAM`: a parameter as `PARAM_GET` answers it.
    Param(ParamInfo),
    /// `DEVLINK_ATTR_PARAM_NAME` (at the top level: which parameter a request is about).
    ParamName(String),
    /// `DEVLINK_ATTR_PARAM_TYPE` (the netlink type of the value, `NLA_U32` for a u32).
    ParamType(u8),
    /// `DEVLINK_ATTR_PARAM_VALUE_DATA`, as the bytes of the parameter's type.
    ParamData(Vec<u8>),
    /// `DEVLINK_ATTR_PARAM_VALUE_CMODE`.
    ParamCmode(u8),
    /// Any other attribute, undecoded.
    Other(DefaultNla),
}

fn string_len(s: &str) -> usize {
    s.len() + 1
}

fn emit_string(buf: &mut [u8], s: &str) {
    buf[..s.len()].copy_from_slice(s.as_bytes());
    buf[s.len()] = 0;
}

fn emit_bitfield(buf: &mut [u8], b: Bitfield32) {
    emit_u32(&mut buf[..4], b.value).expect("4 bytes");
    emit_u32(&mut buf[4..8], b.selector).expect("4 bytes");
}

/// The nested name/value attributes of a version.
fn version_attrs(v: &VersionPair) -> [DefaultNla; 2] {
    let nul = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        b
    };
    [
        DefaultNla::new(ATTR_INFO_VERSION_NAME, nul(&v.name)),
        DefaultNla::new(ATTR_INFO_VERSION_VALUE, nul(&v.value)),
    ]
}

fn parse_version(payload: &[u8]) -> Result<VersionPair, DecodeError> {
    let (mut name, mut value) = (None, None);
    for nla in NlasIterator::new(payload) {
        let nla = nla?;
        match nla.kind() & NLA_TYPE_MASK {
            ATTR_INFO_VERSION_NAME => name = Some(parse_string(nla.value())?),
            ATTR_INFO_VERSION_VALUE => value = Some(parse_string(nla.value())?),
            _ => {}
        }
    }
    match (name, value) {
        (Some(name), Some(value)) => Ok(VersionPair { name, value }),
        _ => Err(DecodeError::from(
            "a devlink info version without its name or value",
        )),
    }
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        use Attr::*;
        match self {
            BusName(s) | DevName(s) | DriverName(s) | SerialNumber(s) | FlashFileName(s)
            | FlashComponent(s) | StatusMsg(s) | ParamName(s) => string_len(s),
            Param(p) => p.attrs().as_slice().buffer_len(),
            ParamData(b) => b.len(),
            ParamType(_) | ParamCmode(_) => 1,
            VersionFixed(v) | VersionRunning(v) | VersionStored(v) => {
                version_attrs(v).as_slice().buffer_len()
            }
            FlashOverwriteMask(_) | ReloadLimits(_) | ReloadActionsPerformed(_) => 8,
            StatusDone(_) | StatusTotal(_) | StatusTimeout(_) => 8,
            ReloadAction(_) => 1,
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use Attr::*;
        match self {
            BusName(_) => ATTR_BUS_NAME,
            DevName(_) => ATTR_DEV_NAME,
            DriverName(_) => ATTR_INFO_DRIVER_NAME,
            SerialNumber(_) => ATTR_INFO_SERIAL_NUMBER,
            VersionFixed(_) => ATTR_INFO_VERSION_FIXED | NLA_F_NESTED,
            VersionRunning(_) => ATTR_INFO_VERSION_RUNNING | NLA_F_NESTED,
            VersionStored(_) => ATTR_INFO_VERSION_STORED | NLA_F_NESTED,
            FlashFileName(_) => ATTR_FLASH_UPDATE_FILE_NAME,
            FlashComponent(_) => ATTR_FLASH_UPDATE_COMPONENT,
            FlashOverwriteMask(_) => ATTR_FLASH_UPDATE_OVERWRITE_MASK,
            StatusMsg(_) => ATTR_FLASH_UPDATE_STATUS_MSG,
            StatusDone(_) => ATTR_FLASH_UPDATE_STATUS_DONE,
            StatusTotal(_) => ATTR_FLASH_UPDATE_STATUS_TOTAL,
            StatusTimeout(_) => ATTR_FLASH_UPDATE_STATUS_TIMEOUT,
            ReloadAction(_) => ATTR_RELOAD_ACTION,
            ReloadLimits(_) => ATTR_RELOAD_LIMITS,
            ReloadActionsPerformed(_) => ATTR_RELOAD_ACTIONS_PERFORMED,
            // The kernel nests parameters without NLA_F_NESTED (`nla_nest_start_noflag`).
            Param(_) => ATTR_PARAM,
            ParamName(_) => ATTR_PARAM_NAME,
            ParamType(_) => ATTR_PARAM_TYPE,
            ParamData(_) => ATTR_PARAM_VALUE_DATA,
            ParamCmode(_) => ATTR_PARAM_VALUE_CMODE,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        use Attr::*;
        match self {
            BusName(s) | DevName(s) | DriverName(s) | SerialNumber(s) | FlashFileName(s)
            | FlashComponent(s) | StatusMsg(s) | ParamName(s) => emit_string(buf, s),
            Param(p) => p.attrs().as_slice().emit(buf),
            ParamData(b) => buf[..b.len()].copy_from_slice(b),
            ParamType(n) | ParamCmode(n) => buf[0] = *n,
            VersionFixed(v) | VersionRunning(v) | VersionStored(v) => {
                version_attrs(v).as_slice().emit(buf)
            }
            FlashOverwriteMask(b) | ReloadLimits(b) | ReloadActionsPerformed(b) => {
                emit_bitfield(buf, *b)
            }
            StatusDone(n) | StatusTotal(n) | StatusTimeout(n) => {
                emit_u64(&mut buf[..8], *n).expect("8 bytes")
            }
            ReloadAction(a) => buf[0] = *a,
            Other(nla) => nla.emit_value(buf),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for Attr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Attr, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() & NLA_TYPE_MASK {
            ATTR_BUS_NAME => Attr::BusName(parse_string(v)?),
            ATTR_DEV_NAME => Attr::DevName(parse_string(v)?),
            ATTR_INFO_DRIVER_NAME => Attr::DriverName(parse_string(v)?),
            ATTR_INFO_SERIAL_NUMBER => Attr::SerialNumber(parse_string(v)?),
            ATTR_INFO_VERSION_FIXED => Attr::VersionFixed(parse_version(v)?),
            ATTR_INFO_VERSION_RUNNING => Attr::VersionRunning(parse_version(v)?),
            ATTR_INFO_VERSION_STORED => Attr::VersionStored(parse_version(v)?),
            ATTR_FLASH_UPDATE_FILE_NAME => Attr::FlashFileName(parse_string(v)?),
            ATTR_FLASH_UPDATE_COMPONENT => Attr::FlashComponent(parse_string(v)?),
            ATTR_FLASH_UPDATE_OVERWRITE_MASK => Attr::FlashOverwriteMask(Bitfield32::parse(v)?),
            ATTR_FLASH_UPDATE_STATUS_MSG => Attr::StatusMsg(parse_string(v)?),
            ATTR_FLASH_UPDATE_STATUS_DONE => Attr::StatusDone(parse_u64(v)?),
            ATTR_FLASH_UPDATE_STATUS_TOTAL => Attr::StatusTotal(parse_u64(v)?),
            ATTR_FLASH_UPDATE_STATUS_TIMEOUT => Attr::StatusTimeout(parse_u64(v)?),
            ATTR_RELOAD_ACTION => Attr::ReloadAction(parse_u8(v)?),
            ATTR_RELOAD_LIMITS => Attr::ReloadLimits(Bitfield32::parse(v)?),
            ATTR_RELOAD_ACTIONS_PERFORMED => Attr::ReloadActionsPerformed(Bitfield32::parse(v)?),
            ATTR_PARAM => Attr::Param(ParamInfo::parse(v)?),
            ATTR_PARAM_NAME => Attr::ParamName(parse_string(v)?),
            ATTR_PARAM_TYPE => Attr::ParamType(parse_u8(v)?),
            ATTR_PARAM_VALUE_DATA => Attr::ParamData(v.to_vec()),
            ATTR_PARAM_VALUE_CMODE => Attr::ParamCmode(parse_u8(v)?),
            _ => Attr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// A devlink generic netlink message: a command and its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevlinkMessage {
    /// The `DEVLINK_CMD_*` command.
    pub cmd: u8,
    /// Its attributes, in order.
    pub attrs: Vec<Attr>,
}

impl DevlinkMessage {
    /// The bus and device names the message is about, when it names them.
    pub fn handle(&self) -> (Option<&str>, Option<&str>) {
        let mut bus = None;
        let mut dev = None;
        for a in &self.attrs {
            match a {
                Attr::BusName(s) => bus = Some(s.as_str()),
                Attr::DevName(s) => dev = Some(s.as_str()),
                _ => {}
            }
        }
        (bus, dev)
    }
}

impl GenlFamily for DevlinkMessage {
    fn family_name() -> &'static str {
        FAMILY_NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        FAMILY_VERSION
    }
}

impl Emitable for DevlinkMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for DevlinkMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let mut attrs = Vec::new();
        for nla in NlasIterator::new(buf) {
            attrs.push(Attr::parse(&nla?)?);
        }
        Ok(DevlinkMessage {
            cmd: header.cmd,
            attrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(m: &DevlinkMessage) -> Vec<u8> {
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b);
        b
    }

    fn round_trip(m: &DevlinkMessage) -> DevlinkMessage {
        let header = GenlHeader {
            cmd: m.cmd,
            version: FAMILY_VERSION,
        };
        DevlinkMessage::parse_with_param(&bytes(m), header).unwrap()
    }

    #[test]
    fn strings_are_nul_terminated_and_padded() {
        let m = DevlinkMessage {
            cmd: CMD_INFO_GET,
            attrs: vec![Attr::BusName("pci".into())],
        };
        // length 8 (4 header + "pci\0"), type 1, then the string: already aligned.
        assert_eq!(bytes(&m), vec![8, 0, 1, 0, b'p', b'c', b'i', 0]);
        let m = DevlinkMessage {
            cmd: CMD_INFO_GET,
            attrs: vec![Attr::DevName("netdevsim1".into())],
        };
        let b = bytes(&m);
        assert_eq!(
            &b[..4],
            &[15, 0, 2, 0],
            "length counts the NUL, not the padding"
        );
        assert_eq!(b.len(), 16);
        assert_eq!(&b[4..15], b"netdevsim1\0");
    }

    #[test]
    fn bitfields_and_numbers_encode_little_endian() {
        let m = DevlinkMessage {
            cmd: CMD_RELOAD,
            attrs: vec![
                Attr::ReloadAction(RELOAD_ACTION_FW_ACTIVATE),
                Attr::ReloadLimits(Bitfield32 {
                    value: 1 << RELOAD_LIMIT_NO_RESET,
                    selector: 1 << RELOAD_LIMIT_NO_RESET,
                }),
            ],
        };
        let b = bytes(&m);
        assert_eq!(&b[..8], &[5, 0, 153, 0, 2, 0, 0, 0]);
        assert_eq!(&b[8..], &[12, 0, 155, 0, 2, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(round_trip(&m), m);
    }

    #[test]
    fn every_attribute_round_trips() {
        let v = |n: &str, val: &str| VersionPair {
            name: n.into(),
            value: val.into(),
        };
        let m = DevlinkMessage {
            cmd: CMD_FLASH_UPDATE_STATUS,
            attrs: vec![
                Attr::BusName("netdevsim".into()),
                Attr::DevName("netdevsim1".into()),
                Attr::DriverName("netdevsim".into()),
                Attr::SerialNumber("MT0001".into()),
                Attr::VersionFixed(v("fw.psid", "MT_0000000359")),
                Attr::VersionRunning(v("fw.mgmt", "10.20.30")),
                Attr::VersionStored(v("fw.mgmt", "10.21.0")),
                Attr::FlashFileName("entente/ab.bin".into()),
                Attr::FlashComponent("fw.mgmt".into()),
                Attr::FlashOverwriteMask(Bitfield32 {
                    value: 3,
                    selector: 3,
                }),
                Attr::StatusMsg("Flashing".into()),
                Attr::StatusDone(250_000),
                Attr::StatusTotal(500_000),
                Attr::StatusTimeout(81),
                Attr::ReloadActionsPerformed(Bitfield32 {
                    value: 4,
                    selector: 4,
                }),
                Attr::Other(DefaultNla::new(200, vec![1, 2, 3])),
            ],
        };
        assert_eq!(round_trip(&m), m);
        assert_eq!(m.handle(), (Some("netdevsim"), Some("netdevsim1")));
    }

    #[test]
    fn a_version_without_its_value_is_a_decode_error() {
        let m = DevlinkMessage {
            cmd: CMD_INFO_GET,
            attrs: vec![Attr::Other(DefaultNla::new(
                ATTR_INFO_VERSION_RUNNING | NLA_F_NESTED,
                vec![12, 0, 103, 0, b'f', b'w', b'.', b'x', 0, 0, 0, 0],
            ))],
        };
        let header = GenlHeader {
            cmd: CMD_INFO_GET,
            version: 1,
        };
        let e = DevlinkMessage::parse_with_param(&bytes(&m), header).unwrap_err();
        assert!(e.to_string().contains("name or value"), "{e}");
    }
}
