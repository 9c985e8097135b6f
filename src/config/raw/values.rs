//! Reading one value of the raw config: a secret reference (`env:`,
//! `file:` or a literal), a path relative to the config file, a duration,
//! a size, a count, a name; each error names the key it came from.

use super::*;

pub(super) struct Resolver<'a> {
    pub(super) base_dir: &'a Path,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    /// The `file:` secrets read so far.
    pub(super) files: std::cell::RefCell<Vec<WatchedFile>>,
}

impl Resolver<'_> {
    /// Resolves `env:VAR`, `file:PATH` or a literal into a secret.
    pub(super) fn secret(&self, path: &str, value: &str) -> Result<Secret, ConfigError> {
        let resolved = if let Some(var) = value.strip_prefix("env:") {
            match (self.env)(var) {
                Some(v) => v,
                None => {
                    return Err(invalid(
                        path,
                        format!("environment variable {var} is not set"),
                    ));
                }
            }
        } else if let Some(file) = value.strip_prefix("file:") {
            let p = self.path(file);
            match std::fs::read_to_string(&p) {
                Ok(v) => {
                    self.files.borrow_mut().push(WatchedFile {
                        hash: content_hash(v.as_bytes()),
                        path: p.clone(),
                    });
                    v.trim_end_matches(['\n', '\r']).to_string()
                }
                Err(e) => {
                    return Err(invalid(
                        path,
                        format!("cannot read secret file {}: {e}", p.display()),
                    ));
                }
            }
        } else {
            value.to_string()
        };
        if resolved.trim().is_empty() {
            return Err(invalid(path, "is empty"));
        }
        if resolved.chars().any(|c| c.is_control()) {
            return Err(invalid(
                path,
                "contains control characters (a stray newline in the secret?)",
            ));
        }
        Ok(Secret::new(resolved))
    }

    pub(super) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

pub(super) fn duration(
    path: &str,
    value: Option<&String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => humantime::parse_duration(v.trim()).map_err(|e| {
            invalid(
                path,
                format!("{v:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"1h\""),
            )
        }),
    }
}

pub(super) fn size(path: &str, value: &RawSize) -> Result<usize, ConfigError> {
    let bad = |v: &dyn std::fmt::Debug| {
        invalid(
            path,
            format!("{v:?} is not a size; write bytes (1048576) or \"512KiB\", \"32MiB\""),
        )
    };
    let n: u64 = match value {
        RawSize::Bytes(n) if *n > 0 => *n as u64,
        RawSize::Bytes(n) => return Err(bad(n)),
        RawSize::Text(t) => {
            let t = t.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let num: u64 = num.parse().map_err(|_| bad(&t))?;
            let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "kb" => 1000,
                "kib" | "k" => 1024,
                "mb" => 1000 * 1000,
                "mib" | "m" => 1024 * 1024,
                "gb" => 1000 * 1000 * 1000,
                "gib" | "g" => 1024 * 1024 * 1024,
                _ => return Err(bad(&t)),
            };
            num.checked_mul(mult).ok_or_else(|| bad(&t))?
        }
    };
    if n == 0 {
        return Err(invalid(path, "must be greater than zero"));
    }
    usize::try_from(n).map_err(|_| invalid(path, "is too large"))
}

/// A budget's three limits, read under `at` (`pool.` or `credential[i].`).
pub(super) fn budget(
    at: &str,
    rpm: Option<i64>,
    tpm: Option<i64>,
    tpd: Option<i64>,
) -> Result<crate::config::Budget, ConfigError> {
    let limit = |key: &str, v: Option<i64>| match v {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(n as u64)),
        Some(n) => Err(invalid(
            format!("{at}{key}"),
            format!("{n} must be a whole number of at least 1 (leave it out for no limit)"),
        )),
    };
    Ok(crate::config::Budget {
        requests_per_minute: limit("max_requests_per_minute", rpm)?,
        tokens_per_minute: limit("max_tokens_per_minute", tpm)?,
        tokens_per_day: limit("max_tokens_per_day", tpd)?,
    })
}

pub(super) fn positive(path: &str, value: Option<i64>, default: u32) -> Result<u32, ConfigError> {
    match value {
        None => Ok(default),
        Some(n) if n >= 1 && n <= u32::MAX as i64 => Ok(n as u32),
        Some(n) => Err(invalid(
            path,
            format!("{n} must be a whole number of at least 1"),
        )),
    }
}

/// Names end up in URLs (`/admin/credentials/{name}/disable`) and logs, so
/// they are kept to a plain alphabet.
pub(super) fn check_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            format!("{name:?} is not a valid name; use 1-64 letters, digits, '-', '_' or '.'"),
        ))
    }
}

/// A required, well-formed name not used before among `what`.
pub(super) fn unique_name(
    path: &str,
    name: Option<&str>,
    seen: &mut HashSet<String>,
    what: &str,
) -> Result<String, ConfigError> {
    let name = name.ok_or_else(|| invalid(path, "is missing"))?;
    check_name(path, name)?;
    if !seen.insert(name.to_string()) {
        return Err(invalid(path, format!("{name:?} is used by two {what}")));
    }
    Ok(name.to_string())
}

pub(super) fn one_of(path: &str, value: &str, allowed: &[String]) -> ConfigError {
    invalid(
        path,
        format!("{value:?} is not one of {}", allowed.join(", ")),
    )
}
