//! The multipart/form-data body of a Redfish multipart push (DSP0266 "Multipart HTTP push
//! updates"): an `UpdateParameters` JSON part and an `UpdateFile` part, streamed from the image
//! reader while its length and SHA-256 are checked.

use crate::device::{hex, DeviceError, ImageInfo};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{self, Read};

/// A streamed multipart body. Read it to the end; if the image was not what `info` announced,
/// the read fails (so the upload is cut short and the BMC gets no complete body) and
/// [`MultipartUpload::failure`] says why.
pub(crate) struct MultipartUpload<'a> {
    boundary: String,
    head: io::Cursor<Vec<u8>>,
    tail: io::Cursor<Vec<u8>>,
    image: &'a mut dyn Read,
    component: String,
    info: ImageInfo,
    hasher: Sha256,
    sent: u64,
    image_done: bool,
    failure: Option<DeviceError>,
    on_progress: &'a mut dyn FnMut(u64),
}

impl<'a> MultipartUpload<'a> {
    /// A body carrying `parameters` and the image read from `image`; `on_progress` gets the
    /// number of image bytes sent so far.
    pub fn new(
        parameters: &Value,
        component: &str,
        info: &ImageInfo,
        image: &'a mut dyn Read,
        on_progress: &'a mut dyn FnMut(u64),
    ) -> MultipartUpload<'a> {
        let boundary = format!("entente-{}", &hex(&info.sha256)[..32]);
        let head = format!(
            "--{boundary}\r\n\
             Content-Disposition: form-data; name=\"UpdateParameters\"\r\n\
             Content-Type: application/json\r\n\r\n\
             {parameters}\r\n\
             --{boundary}\r\n\
             Content-Disposition: form-data; name=\"UpdateFile\"; filename=\"{component}.fwpkg\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        MultipartUpload {
            boundary,
            head: io::Cursor::new(head.into_bytes()),
            tail: io::Cursor::new(tail.into_bytes()),
            image,
            component: component.to_string(),
            info: info.clone(),
            hasher: Sha256::new(),
            sent: 0,
            image_done: false,
            failure: None,
            on_progress,
        }
    }

    /// The Content-Type header, with the boundary.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        self.head.get_ref().len() as u64 + self.info.len + self.tail.get_ref().len() as u64
    }

    /// Why the image was refused while it was being sent, if it was.
    pub fn failure(&mut self) -> Option<DeviceError> {
        self.failure.take()
    }

    fn fail(&mut self, e: DeviceError) -> io::Error {
        let error = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        self.failure = Some(e);
        error
    }

    fn read_image(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.info.len - self.sent;
        if left == 0 {
            let mut probe = [0u8; 1];
            if self.image.read(&mut probe)? != 0 {
                return Err(self.fail(DeviceError::LongImage {
                    component: self.component.clone(),
                    expected: self.info.len,
                }));
            }
            let actual = hex(&std::mem::take(&mut self.hasher).finalize());
            if actual != hex(&self.info.sha256) {
                return Err(self.fail(DeviceError::DigestMismatch {
                    component: self.component.clone(),
                    expected: hex(&self.info.sha256),
                    actual,
                }));
            }
            self.image_done = true;
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = loop {
            match self.image.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            return Err(self.fail(DeviceError::ShortImage {
                component: self.component.clone(),
                expected: self.info.len,
                got: self.sent,
            }));
        }
        self.hasher.update(&buf[..n]);
        self.sent += n as u64;
        (self.on_progress)(self.sent);
        Ok(n)
    }
}

impl Read for MultipartUpload<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.head.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        if !self.image_done {
            let n = self.read_image(buf)?;
            if n > 0 {
                return Ok(n);
            }
        }
        self.tail.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(image: &[u8]) -> ImageInfo {
        ImageInfo {
            version: "1.0".into(),
            len: image.len() as u64,
            sha256: Sha256::digest(image).into(),
        }
    }

    #[test]
    fn body_has_both_parts_and_the_announced_length() {
        let image = b"ENTENTE-TEST-FWPKG\nversion=1.0\n".to_vec();
        let params = serde_json::json!({"Targets": ["/t"]});
        let mut seen = Vec::new();
        let mut progress = |n| seen.push(n);
        let mut reader: &[u8] = &image;
        let mut body =
            MultipartUpload::new(&params, "gpu-fw", &info(&image), &mut reader, &mut progress);
        let content_type = body.content_type();
        let len = body.len();
        let mut out = Vec::new();
        body.read_to_end(&mut out).unwrap();
        assert!(body.failure().is_none());
        assert_eq!(out.len() as u64, len);
        let boundary = content_type.split("boundary=").nth(1).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
        assert!(text.contains("name=\"UpdateParameters\"\r\nContent-Type: application/json\r\n\r\n{\"Targets\":[\"/t\"]}\r\n"));
        assert!(text.contains("name=\"UpdateFile\"; filename=\"gpu-fw.fwpkg\""));
        assert!(text.contains("ENTENTE-TEST-FWPKG\nversion=1.0\n\r\n"));
        assert_eq!(seen.last(), Some(&(image.len() as u64)));
    }

    #[test]
    fn a_wrong_image_cuts_the_body_short_and_says_why() {
        let image = b"abc".to_vec();
        let params = serde_json::json!({});
        let cases: [(&[u8], &str); 3] = [
            (b"ab", "ended after 2 of 3 bytes"),
            (b"abcd", "longer than the announced 3 bytes"),
            (b"abd", "has sha256"),
        ];
        for (given, expected) in cases {
            let mut progress = |_| {};
            let mut reader = given;
            let mut body =
                MultipartUpload::new(&params, "c", &info(&image), &mut reader, &mut progress);
            let mut out = Vec::new();
            assert!(body.read_to_end(&mut out).is_err());
            assert!((out.len() as u64) < body.len());
            let e = body.failure().expect("a failure").to_string();
            assert!(e.contains(expected), "{e}");
        }
    }
}
