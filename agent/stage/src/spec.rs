//! The human-written description a manifest is built from (`entente manifest sign --in`).
//!
//! TOML (or JSON with the same fields):
//!
//! ```toml
//! epoch = 7
//! manifest_version = 12
//! valid_days = 30            # or: expires_at = 1767225600 (Unix seconds)
//! semantics = "RoCE CC v3 enabled"
//!
//! [profiles.cx7-nic]
//! image = "images/cx7.bin"   # relative to the description file
//! version = "28.41.1000"
//! chunk_size = 1048576       # optional, default 1 MiB
//! compat = [6, 7]            # [min_epoch, max_epoch]
//! ```

use crate::manifest::{CompatWindow, Manifest, ProfileImage, MANIFEST_FORMAT};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The default chunk size, 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;

/// A manifest description as an operator writes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSpec {
    /// The campaign's epoch.
    pub epoch: u64,
    /// The signer's manifest counter.
    pub manifest_version: u64,
    /// Absolute expiry, Unix seconds.
    pub expires_at: Option<u64>,
    /// Expiry relative to the signing time, in days.
    pub valid_days: Option<u64>,
    /// What the epoch means.
    #[serde(default)]
    pub semantics: String,
    /// Per hw-profile images.
    pub profiles: BTreeMap<String, ProfileSpec>,
}

/// One hw-profile's image as an operator describes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// The image file, relative to the description file.
    pub image: PathBuf,
    /// The firmware's version string.
    pub version: String,
    /// Chunk size in bytes.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: u32,
    /// `[min_epoch, max_epoch]`.
    pub compat: [u64; 2],
}

fn default_chunk_size() -> u32 {
    DEFAULT_CHUNK_SIZE
}

/// A description that cannot be read or built into a manifest.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The description does not parse.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// The description parses but does not make a valid manifest.
    #[error("{0}")]
    Invalid(String),
}

impl ManifestSpec {
    /// Reads a description: JSON if the file name ends in `.json`, TOML otherwise.
    pub fn load(path: &Path) -> Result<ManifestSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
            path: path.to_owned(),
            source,
        })?;
        let parse = |reason: String| SpecError::Parse {
            path: path.to_owned(),
            reason,
        };
        if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| parse(e.to_string()))
        } else {
            toml::from_str(&text).map_err(|e| parse(e.to_string()))
        }
    }

    /// Builds the manifest: hashes every image (paths relative to `base`), sets the expiry
    /// from `now` (Unix seconds) if it is relative, and validates the result.
    pub fn build(&self, base: &Path, now: u64) -> Result<Manifest, SpecError> {
        let expires_at = match (self.expires_at, self.valid_days) {
            (Some(at), None) => at,
            (None, Some(days)) => now + days * 86_400,
            _ => {
                return Err(SpecError::Invalid(
                    "give exactly one of expires_at and valid_days".into(),
                ))
            }
        };
        let mut profiles = BTreeMap::new();
        for (name, p) in &self.profiles {
            // Checked before the image is read in chunks of that size (a huge one would be
            // allocated first).
            crate::manifest::check_chunk_size(p.chunk_size)
                .map_err(|why| SpecError::Invalid(format!("profile {name}: {why}")))?;
            let path = base.join(&p.image);
            let io = |source| SpecError::Io {
                path: path.clone(),
                source,
            };
            let f = File::open(&path).map_err(io)?;
            let compat = CompatWindow {
                min_epoch: p.compat[0],
                max_epoch: p.compat[1],
            };
            let image =
                ProfileImage::from_reader(f, p.chunk_size, &p.version, compat).map_err(io)?;
            profiles.insert(name.clone(), image);
        }
        let m = Manifest {
            epoch: self.epoch,
            expires_at,
            format: MANIFEST_FORMAT,
            manifest_version: self.manifest_version,
            profiles,
            semantics: self.semantics.clone(),
        };
        m.validate()
            .map_err(|e| SpecError::Invalid(e.to_string()))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_json_descriptions_build_the_same_manifest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fw.bin"), vec![5u8; 70_000]).unwrap();
        let toml_path = dir.path().join("m.toml");
        std::fs::write(
            &toml_path,
            "epoch = 3\nmanifest_version = 4\nexpires_at = 100\nsemantics = \"x\"\n\
             [profiles.gpu-a]\nimage = \"fw.bin\"\nversion = \"9\"\nchunk_size = 16384\ncompat = [2, 3]\n",
        )
        .unwrap();
        let json_path = dir.path().join("m.json");
        std::fs::write(
            &json_path,
            r#"{"epoch":3,"manifest_version":4,"expires_at":100,"semantics":"x",
               "profiles":{"gpu-a":{"image":"fw.bin","version":"9","chunk_size":16384,"compat":[2,3]}}}"#,
        )
        .unwrap();
        let a = ManifestSpec::load(&toml_path)
            .unwrap()
            .build(dir.path(), 0)
            .unwrap();
        let b = ManifestSpec::load(&json_path)
            .unwrap()
            .build(dir.path(), 0)
            .unwrap();
        assert_eq!(a, b);
        let p = &a.profiles["gpu-a"];
        assert_eq!((p.size, p.chunks.len()), (70_000, 5));
        assert_eq!(
            p.compat,
            CompatWindow {
                min_epoch: 2,
                max_epoch: 3
            }
        );
    }

    #[test]
    fn bad_descriptions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fw.bin"), [1u8; 10]).unwrap();
        let p = dir.path().join("m.toml");
        let base = "epoch = 3\nmanifest_version = 4\n[profiles.a]\nimage = \"fw.bin\"\nversion = \"9\"\ncompat = [2, 3]\n";
        std::fs::write(&p, base).unwrap();
        let spec = ManifestSpec::load(&p).unwrap();
        assert!(matches!(
            spec.build(dir.path(), 0),
            Err(SpecError::Invalid(_))
        ));
        std::fs::write(&p, format!("valid_days = 1\n{base}")).unwrap();
        let m = ManifestSpec::load(&p)
            .unwrap()
            .build(dir.path(), 50)
            .unwrap();
        assert_eq!(m.expires_at, 50 + 86_400);
        std::fs::write(&p, format!("valid_days = 1\nbogus = 1\n{base}")).unwrap();
        assert!(matches!(
            ManifestSpec::load(&p),
            Err(SpecError::Parse { .. })
        ));
        std::fs::write(
            &p,
            base.replace("fw.bin", "missing.bin")
                .replace("epoch = 3", "epoch = 3\nvalid_days = 1"),
        )
        .unwrap();
        assert!(matches!(
            ManifestSpec::load(&p).unwrap().build(dir.path(), 0),
            Err(SpecError::Io { .. })
        ));
    }

    #[test]
    fn a_bad_chunk_size_is_named_as_written_before_the_image_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fw.bin"), vec![5u8; 10_000]).unwrap();
        for size in [0u64, 1000, 4_294_967_295] {
            let path = dir.path().join("m.toml");
            std::fs::write(
                &path,
                format!(
                    "epoch = 3\nmanifest_version = 4\nexpires_at = 100\nsemantics = \"x\"\n\
                     [profiles.gpu-a]\nimage = \"fw.bin\"\nversion = \"9\"\nchunk_size = {size}\ncompat = [2, 3]\n"
                ),
            )
            .unwrap();
            let spec = ManifestSpec::load(&path).unwrap();
            let err = spec.build(dir.path(), 0).unwrap_err().to_string();
            assert!(err.contains(&format!("chunk_size {size} ")), "{err}");
        }
    }
}
