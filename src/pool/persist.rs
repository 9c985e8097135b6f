//! The state file: what must survive a restart (cooldown deadlines as wall
//! clock, disabled flags, failure counts, rotated refresh tokens).
//!
//! Written atomically — a temp file created with mode 0600 in the same
//! directory, fsync, rename, fsync of the directory — so a crash leaves the
//! old file or the new one, never half of either, and the file is never
//! readable by others, not even for a moment. A file that cannot be parsed
//! is moved aside with a warning so a bad file never becomes a crash loop.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StateFile {
    pub version: u32,
    pub saved_at_ms: u64,
    pub credentials: BTreeMap<String, SavedCredential>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SavedCredential {
    /// Fingerprint of the configured secret; state for a credential whose
    /// secret changed is dropped.
    pub fingerprint: String,
    #[serde(default)]
    pub disabled: bool,
    /// Why it was disabled, when not by the operator (a 402, an error
    /// policy rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<SavedCooldown>,
    /// The refresh token the provider rotated to. This is the one field
    /// that holds a secret, which is why the file is 0600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Answers and tokens so far (since the first start with this file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<super::usage::SavedUsage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedCooldown {
    pub until_ms: u64,
    /// "cooling" or "exhausted".
    pub kind: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    Missing,
    Ok(StateFile),
    /// Unreadable content, moved to the given path.
    MovedAside {
        to: PathBuf,
        why: String,
    },
    /// Unreadable content, left where it is.
    Unreadable {
        why: String,
    },
}

/// Reads the state file. With `move_aside`, an unreadable file is renamed
/// out of the way; without it (for `check`), it is only reported.
pub fn load(path: &Path, move_aside: bool) -> Result<Loaded, PersistError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(source) => {
            return Err(PersistError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    let why = match serde_json::from_slice::<StateFile>(&bytes) {
        Ok(f) if f.version == VERSION => return Ok(Loaded::Ok(f)),
        Ok(f) => format!("unknown version {}", f.version),
        Err(e) => e.to_string(),
    };
    if !move_aside {
        return Ok(Loaded::Unreadable { why });
    }
    let stamp = crate::events::unix_ms(std::time::SystemTime::now());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{stamp}"));
    let to = PathBuf::from(aside);
    std::fs::rename(path, &to).map_err(|source| PersistError::Write {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Loaded::MovedAside { to, why })
}

pub fn save(path: &Path, state: &StateFile) -> Result<(), PersistError> {
    let err = |source| PersistError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(err)?;
    let json = serde_json::to_vec_pretty(state).expect("state serializes");
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "state.json".into());
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = open_private(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StateFile {
        let mut s = StateFile {
            version: VERSION,
            saved_at_ms: 5,
            ..Default::default()
        };
        s.credentials.insert(
            "team-a".into(),
            SavedCredential {
                fingerprint: "ab".into(),
                disabled: true,
                disabled_reason: None,
                failures: 2,
                failed_reason: None,
                cooldown: Some(SavedCooldown {
                    until_ms: 99,
                    kind: "cooling".into(),
                    reason: "429".into(),
                }),
                refresh_token: Some("rt-2".into()),
                usage: None,
            },
        );
        s
    }

    #[test]
    fn round_trip_and_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("state.json");
        save(&path, &sample()).unwrap();
        match load(&path, true).unwrap() {
            Loaded::Ok(s) => assert_eq!(s, sample()),
            other => panic!("{other:?}"),
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn missing_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load(&dir.path().join("nope.json"), true).unwrap(),
            Loaded::Missing
        ));
    }

    #[test]
    fn corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{\"version\":1,\"credentials\":{").unwrap();
        match load(&path, true).unwrap() {
            Loaded::MovedAside { to, .. } => {
                assert!(to.exists());
                assert!(!path.exists());
            }
            other => panic!("{other:?}"),
        }
        // And a fresh save works afterwards.
        save(&path, &sample()).unwrap();
        assert!(matches!(load(&path, true).unwrap(), Loaded::Ok(_)));
    }
}
