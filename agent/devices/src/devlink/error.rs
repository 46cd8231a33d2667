//! What can go wrong talking to devlink, and the kernel's extended ack: the message a driver
//! sets with `NL_SET_ERR_MSG`, which is reported verbatim.

use super::uapi::NLMSGERR_ATTR_MSG;
use netlink_packet_core::{
    parse_string, ErrorMessage, NetlinkHeader, NlasIterator, NLA_TYPE_MASK, NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
};
use std::time::Duration;

/// Length of a `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;

/// Why a devlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel has no devlink family (built without devlink).
    #[error("the kernel has no devlink generic netlink family (is devlink built in?)")]
    NoFamily,
    /// The kernel refused the request.
    #[error("{}", kernel_text(.message.as_deref(), *.errno))]
    Kernel {
        /// The positive errno.
        errno: i32,
        /// The extended ack message, verbatim.
        message: Option<String>,
    },
    /// No answer in time.
    #[error("no answer from the kernel within {} s", .0.as_secs())]
    Timeout(Duration),
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kernel's answer could not be decoded.
    #[error("cannot decode the kernel's answer: {0}")]
    Decode(String),
}

fn kernel_text(message: Option<&str>, errno: i32) -> String {
    let os = std::io::Error::from_raw_os_error(errno);
    let os = os.to_string();
    // "Invalid argument (os error 22)" -> "Invalid argument, errno 22"
    let os = os.replace(" (os error", ", errno").replace(')', "");
    match message {
        Some(m) => format!("{m} ({os})"),
        None => format!("{os} (the kernel gave no message)"),
    }
}

impl NetlinkError {
    /// A kernel error from an `NLMSG_ERROR` message with a non-zero code.
    pub fn from_kernel(header: &NetlinkHeader, e: &ErrorMessage) -> NetlinkError {
        NetlinkError::Kernel {
            errno: e.raw_code().abs(),
            message: extack_message(header.flags, &e.header),
        }
    }
}

/// The extended ack message of an `NLMSG_ERROR` whose header has `flags`, and whose payload after
/// the error code is `rest` (the request's header, or the whole request unless the ack is
/// capped, then the ack's attributes when `NLM_F_ACK_TLVS` is set).
pub fn extack_message(flags: u16, rest: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || rest.len() < NLMSG_HDRLEN {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len = u32::from_ne_bytes(rest[..4].try_into().ok()?) as usize;
        (len + 3) & !3
    };
    let tlvs = rest.get(echoed..)?;
    NlasIterator::new(tlvs)
        .map_while(Result::ok)
        .find(|nla| nla.kind() & NLA_TYPE_MASK == NLMSGERR_ATTR_MSG)
        .and_then(|nla| parse_string(nla.value()).ok())
        .filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `NLMSG_ERROR` payload after the code: the echoed request header, then `msg` as
    /// `NLMSGERR_ATTR_MSG`.
    fn payload(msg: &str, capped: bool) -> Vec<u8> {
        let mut b = Vec::new();
        let request_len: u32 = if capped { 16 } else { 24 };
        b.extend_from_slice(&request_len.to_ne_bytes());
        b.extend_from_slice(&[0u8; 12]);
        if !capped {
            b.extend_from_slice(&[9u8; 8]); // the request's body
        }
        let len = 4 + msg.len() + 1;
        b.extend_from_slice(&(len as u16).to_ne_bytes());
        b.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        b.extend_from_slice(msg.as_bytes());
        b.push(0);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    #[test]
    fn the_driver_message_is_read_capped_or_not() {
        let m = "netdevsim: User setup the reload to fail for testing purposes";
        let flags = NLM_F_ACK_TLVS | NLM_F_CAPPED;
        assert_eq!(extack_message(flags, &payload(m, true)).as_deref(), Some(m));
        assert_eq!(
            extack_message(NLM_F_ACK_TLVS, &payload(m, false)).as_deref(),
            Some(m)
        );
        assert_eq!(extack_message(NLM_F_CAPPED, &payload(m, true)), None);
        assert_eq!(extack_message(flags, &[1, 2]), None);
    }

    #[test]
    fn kernel_errors_show_the_message_then_the_errno() {
        let e = NetlinkError::Kernel {
            errno: 22,
            message: Some("Flash failed".into()),
        };
        assert_eq!(e.to_string(), "Flash failed (Invalid argument, errno 22)");
        let e = NetlinkError::Kernel {
            errno: 95,
            message: None,
        };
        assert!(e.to_string().contains("errno 95"), "{e}");
        assert!(e.to_string().contains("no message"), "{e}");
    }
}
