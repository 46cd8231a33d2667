//! Manifest types and their canonical encoding (see the crate docs for the format).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};

/// The manifest format this crate writes and accepts.
pub const MANIFEST_FORMAT: u32 = 1;
/// The smallest chunk size a manifest may use (and the alignment of every chunk size).
pub const MIN_CHUNK_SIZE: u32 = 4096;
/// The largest chunk size a manifest may use; a chunk always fits one store buffer.
pub const MAX_CHUNK_SIZE: u32 = 4 << 20;

/// A SHA-256 digest, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }

    /// Parses 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Result<Digest, ManifestError> {
        let mut out = [0u8; 32];
        hex_decode(s, &mut out)
            .map_err(|reason| ManifestError::Invalid(format!("digest {s:?}: {reason}")))?;
        Ok(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Decodes exactly `out.len()` bytes of lowercase hex.
pub(crate) fn hex_decode(s: &str, out: &mut [u8]) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.len() != out.len() * 2 {
        return Err("wrong length");
    }
    fn nibble(c: u8) -> Result<u8, &'static str> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err("not lowercase hex"),
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Ok(())
}

/// The epochs whose semantics an image speaks, inclusive at both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompatWindow {
    /// The newest epoch the image speaks.
    pub max_epoch: u64,
    /// The oldest epoch the image speaks.
    pub min_epoch: u64,
}

impl CompatWindow {
    /// Whether the image speaks epoch `e`.
    pub fn contains(&self, e: u64) -> bool {
        self.min_epoch <= e && e <= self.max_epoch
    }
}

/// One hw-profile's image in a manifest.
///
/// Fields are declared in sorted order: serde writes them in this order, which is what makes
/// the JSON canonical.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileImage {
    /// Bytes per chunk; every chunk but the last is exactly this long.
    pub chunk_size: u32,
    /// SHA-256 of each chunk, in order.
    pub chunks: Vec<Digest>,
    /// The epochs the image speaks.
    pub compat: CompatWindow,
    /// SHA-256 of the whole image: its address in the store.
    pub sha256: Digest,
    /// Image length in bytes.
    pub size: u64,
    /// The firmware's own version string.
    pub version: String,
}

/// Checks a chunk size: a multiple of [`MIN_CHUNK_SIZE`] from [`MIN_CHUNK_SIZE`] to
/// [`MAX_CHUNK_SIZE`]; the error names the size given.
pub fn check_chunk_size(chunk_size: u32) -> Result<(), String> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
        || !chunk_size.is_multiple_of(MIN_CHUNK_SIZE)
    {
        return Err(format!(
            "chunk_size {chunk_size} is not a multiple of {MIN_CHUNK_SIZE} between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}"
        ));
    }
    Ok(())
}

impl ProfileImage {
    /// Describes the image read from `r`: its digests and size, cut in `chunk_size` chunks.
    pub fn from_reader(
        mut r: impl Read,
        chunk_size: u32,
        version: &str,
        compat: CompatWindow,
    ) -> io::Result<ProfileImage> {
        let mut whole = Sha256::new();
        let mut chunks = Vec::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; chunk_size as usize];
        loop {
            let n = read_full(&mut r, &mut buf)?;
            if n == 0 {
                break;
            }
            whole.update(&buf[..n]);
            chunks.push(Digest::of(&buf[..n]));
            size += n as u64;
            if n < buf.len() {
                break;
            }
        }
        Ok(ProfileImage {
            chunk_size,
            chunks,
            compat,
            sha256: Digest(whole.finalize().into()),
            size,
            version: version.to_owned(),
        })
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u32 {
        self.chunks.len() as u32
    }

    /// Byte offset of chunk `index`.
    pub fn chunk_offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size)
    }

    /// Length of chunk `index` (the last one may be short).
    pub fn chunk_len(&self, index: u32) -> usize {
        let start = self.chunk_offset(index);
        (self.size - start).min(u64::from(self.chunk_size)) as usize
    }

    fn validate(&self, name: &str) -> Result<(), ManifestError> {
        let bad = |what: String| Err(ManifestError::Invalid(format!("profile {name}: {what}")));
        if let Err(why) = check_chunk_size(self.chunk_size) {
            return bad(why);
        }
        if self.size == 0 {
            return bad("size is 0".into());
        }
        let expected = self.size.div_ceil(u64::from(self.chunk_size));
        if self.chunks.len() as u64 != expected {
            return bad(format!(
                "{} chunk digests for {} bytes in chunks of {} (expected {expected})",
                self.chunks.len(),
                self.size,
                self.chunk_size
            ));
        }
        if self.compat.min_epoch > self.compat.max_epoch {
            return bad(format!(
                "compat window [{}, {}] is empty",
                self.compat.min_epoch, self.compat.max_epoch
            ));
        }
        if self.version.is_empty() {
            return bad("empty version string".into());
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A campaign manifest: what epoch `epoch` means and, per hw-profile, the image that speaks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The campaign's epoch.
    pub epoch: u64,
    /// Unix time (seconds) from which the manifest is refused.
    pub expires_at: u64,
    /// Encoding format; [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The signer's monotone manifest counter.
    pub manifest_version: u64,
    /// Images by hw-profile name.
    pub profiles: BTreeMap<String, ProfileImage>,
    /// What the epoch means, for operators (e.g. "RoCE CC v3 enabled").
    pub semantics: String,
}

/// A manifest that cannot be decoded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The bytes are not a manifest in JSON.
    #[error("manifest is not valid JSON for this format: {0}")]
    Json(String),
    /// The bytes decode but are not the canonical encoding of what they decode to.
    #[error("manifest is not in canonical encoding (sorted keys, no whitespace, lowercase hex)")]
    NotCanonical,
    /// A field's value is out of its allowed range.
    #[error("invalid manifest: {0}")]
    Invalid(String),
}

impl Manifest {
    /// The canonical encoding; signatures are over exactly these bytes.
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serialises")
    }

    /// Decodes canonical bytes and validates them; any other encoding is refused.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        if m.to_canonical_bytes() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        m.validate()?;
        Ok(m)
    }

    /// Checks the format, the profile names and every profile's sizes and digests count.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != MANIFEST_FORMAT {
            return Err(ManifestError::Invalid(format!(
                "format {} (this build reads {MANIFEST_FORMAT})",
                self.format
            )));
        }
        if self.profiles.is_empty() {
            return Err(ManifestError::Invalid("no profiles".into()));
        }
        for (name, p) in &self.profiles {
            let ok_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c));
            if !ok_name {
                return Err(ManifestError::Invalid(format!(
                    "profile name {name:?} (allowed: a-z 0-9 . _ -)"
                )));
            }
            p.validate(name)?;
        }
        Ok(())
    }

    /// SHA-256 of the canonical encoding: the manifest's identity.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_canonical_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let image = vec![7u8; 10_000];
        let p = ProfileImage::from_reader(
            &image[..],
            4096,
            "1.2.3",
            CompatWindow {
                min_epoch: 4,
                max_epoch: 5,
            },
        )
        .unwrap();
        Manifest {
            epoch: 5,
            expires_at: 2_000_000_000,
            format: MANIFEST_FORMAT,
            manifest_version: 9,
            profiles: BTreeMap::from([("nic-a".to_owned(), p)]),
            semantics: "cc v3".into(),
        }
    }

    #[test]
    fn canonical_encoding_has_sorted_keys_and_no_whitespace() {
        let m = sample();
        let bytes = m.to_canonical_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"epoch":5,"expires_at":2000000000,"format":1,"manifest_version":9,"profiles":{"nic-a":{"chunk_size":4096,"chunks":[""#), "{text}");
        assert!(text.contains(r#""compat":{"max_epoch":5,"min_epoch":4},"sha256":""#));
        assert!(text.ends_with(r#""size":10000,"version":"1.2.3"}},"semantics":"cc v3"}"#));
        // The same value through serde_json's sorted map gives the same bytes.
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(serde_json::to_vec(&v).unwrap(), bytes);
        assert_eq!(Manifest::from_canonical_bytes(&bytes).unwrap(), m);
    }

    #[test]
    fn non_canonical_encodings_are_refused() {
        let m = sample();
        let text = String::from_utf8(m.to_canonical_bytes()).unwrap();
        let pretty = serde_json::to_vec_pretty(&m).unwrap();
        assert!(matches!(
            Manifest::from_canonical_bytes(&pretty),
            Err(ManifestError::NotCanonical)
        ));
        let escaped = text.replace("cc v3", "cc\\u0020v3");
        assert!(matches!(
            Manifest::from_canonical_bytes(escaped.as_bytes()),
            Err(ManifestError::NotCanonical)
        ));
        let upper = text.replace(
            &m.profiles["nic-a"].sha256.to_hex(),
            &m.profiles["nic-a"].sha256.to_hex().to_uppercase(),
        );
        assert!(Manifest::from_canonical_bytes(upper.as_bytes()).is_err());
        let extra = text.replacen('{', r#"{"zzz":1,"#, 1);
        assert!(matches!(
            Manifest::from_canonical_bytes(extra.as_bytes()),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn invalid_manifests_are_refused() {
        let mut m = sample();
        m.profiles.get_mut("nic-a").unwrap().chunks.pop();
        assert!(matches!(m.validate(), Err(ManifestError::Invalid(_))));
        let mut m = sample();
        m.profiles.get_mut("nic-a").unwrap().chunk_size = 1000;
        assert!(matches!(m.validate(), Err(ManifestError::Invalid(_))));
        let mut m = sample();
        m.format = 2;
        assert!(matches!(m.validate(), Err(ManifestError::Invalid(_))));
        let mut m = sample();
        let p = m.profiles.remove("nic-a").unwrap();
        m.profiles.insert("NIC A".into(), p);
        assert!(matches!(m.validate(), Err(ManifestError::Invalid(_))));
        let mut m = sample();
        m.profiles.get_mut("nic-a").unwrap().compat.min_epoch = 6;
        assert!(matches!(m.validate(), Err(ManifestError::Invalid(_))));
    }

    #[test]
    fn chunk_geometry() {
        let p = &sample().profiles["nic-a"];
        assert_eq!(p.chunk_count(), 3);
        assert_eq!(p.chunk_offset(2), 8192);
        assert_eq!(p.chunk_len(0), 4096);
        assert_eq!(p.chunk_len(2), 10_000 - 8192);
        assert_eq!(p.sha256, Digest::of(&[7u8; 10_000]));
        assert_eq!(p.chunks[2], Digest::of(&[7u8; 10_000 - 8192]));
    }

    #[test]
    fn hex_round_trip() {
        let d = Digest::of(b"x");
        assert_eq!(Digest::from_hex(&d.to_hex()).unwrap(), d);
        assert!(Digest::from_hex("00").is_err());
        assert!(Digest::from_hex(&"G".repeat(64)).is_err());
    }
}
