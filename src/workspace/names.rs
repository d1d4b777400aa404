//! Model names, aliases and model references (`name`, `name:3`, `name@production`).
//!
//! Names are restricted to a portable character set so they can appear unescaped in URLs
//! (`/v2/models/{name}`), file names and shell commands, and so `:` and `@` stay free as the
//! separators of a reference.

use super::error::{Result, WorkspaceError};
use std::fmt;
use std::str::FromStr;

/// Longest model name or alias.
pub const MAX_NAME_LEN: usize = 64;

/// The alias that always means the newest version; it cannot be set by hand.
pub const LATEST: &str = "latest";

/// Checks a model name: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
pub fn validate_model_name(name: &str) -> Result<()> {
    validate(name, "model name", |c| c.is_ascii_alphanumeric())
}

/// Checks an alias: like a model name but starting with a letter, so `name@3` can never be
/// confused with version 3; `latest` is reserved.
pub fn validate_alias(alias: &str) -> Result<()> {
    validate(alias, "alias", |c| c.is_ascii_alphabetic())?;
    if alias == LATEST {
        return Err(WorkspaceError::InvalidName {
            what: "alias",
            value: alias.to_string(),
            reason: "'latest' is reserved: it always means the newest version".into(),
        });
    }
    Ok(())
}

/// Checks a tag or parameter key: non-empty, at most 256 bytes, no control characters.
pub fn validate_key(what: &'static str, key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        Some("it is empty")
    } else if key.len() > 256 {
        Some("it is longer than 256 bytes")
    } else if key.chars().any(char::is_control) {
        Some("it contains control characters")
    } else {
        None
    };
    match reason {
        Some(r) => Err(WorkspaceError::InvalidName {
            what,
            value: key.to_string(),
            reason: r.into(),
        }),
        None => Ok(()),
    }
}

fn validate(s: &str, what: &'static str, first_ok: impl Fn(char) -> bool) -> Result<()> {
    let bad = |reason: String| WorkspaceError::InvalidName {
        what,
        value: s.to_string(),
        reason,
    };
    let mut chars = s.chars();
    match chars.next() {
        None => return Err(bad("it is empty".into())),
        Some(c) if !first_ok(c) => {
            return Err(bad(format!(
                "it must start with an ASCII {}",
                if what == "alias" {
                    "letter"
                } else {
                    "letter or digit"
                }
            )))
        }
        Some(_) => {}
    }
    if s.len() > MAX_NAME_LEN {
        return Err(bad(format!(
            "it is {} characters long, the limit is {MAX_NAME_LEN}",
            s.chars().count()
        )));
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(bad(format!(
            "character {c:?} is not allowed (use letters, digits, '.', '_' and '-')"
        )));
    }
    Ok(())
}

/// Which version of a model a reference selects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    /// The newest version (`name` or `name@latest`).
    Latest,
    /// An explicit version number (`name:3`).
    Version(u32),
    /// The version an alias points to (`name@production`).
    Alias(String),
}

/// A reference to one model version as users type it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelRef {
    pub name: String,
    pub selector: Selector,
}

impl ModelRef {
    pub fn version(name: &str, version: u32) -> Result<ModelRef> {
        validate_model_name(name)?;
        if version == 0 {
            return Err(WorkspaceError::BadModelRef {
                input: format!("{name}:0"),
                reason: "versions start at 1".into(),
            });
        }
        Ok(ModelRef {
            name: name.to_string(),
            selector: Selector::Version(version),
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Latest => write!(f, "{}", self.name),
            Selector::Version(v) => write!(f, "{}:{v}", self.name),
            Selector::Alias(a) => write!(f, "{}@{a}", self.name),
        }
    }
}

impl FromStr for ModelRef {
    type Err = WorkspaceError;

    fn from_str(input: &str) -> Result<ModelRef> {
        let bad = |reason: String| WorkspaceError::BadModelRef {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let colon = s.find(':');
        let at = s.find('@');
        let inner = |e: WorkspaceError| match e {
            WorkspaceError::InvalidName {
                what,
                value,
                reason,
            } => bad(format!("{what} '{value}': {reason}")),
            other => other,
        };
        let (name, selector) = match (colon, at) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "give either a version (':') or an alias ('@'), not both".into(),
                ))
            }
            (None, None) => (s, Selector::Latest),
            (Some(i), None) => {
                let (name, v) = (&s[..i], &s[i + 1..]);
                if v.is_empty() {
                    return Err(bad("the version after ':' is missing".into()));
                }
                if !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(format!("version '{v}' is not a positive whole number")));
                }
                let n: u32 = v
                    .parse()
                    .map_err(|_| bad(format!("version '{v}' is too large")))?;
                if n == 0 {
                    return Err(bad("versions start at 1".into()));
                }
                (name, Selector::Version(n))
            }
            (None, Some(i)) => {
                let (name, a) = (&s[..i], &s[i + 1..]);
                if a.is_empty() {
                    return Err(bad("the alias after '@' is missing".into()));
                }
                if a == LATEST {
                    (name, Selector::Latest)
                } else {
                    validate_alias(a).map_err(inner)?;
                    (name, Selector::Alias(a.to_string()))
                }
            }
        };
        if name.is_empty() {
            return Err(bad("the model name is missing".into()));
        }
        validate_model_name(name).map_err(inner)?;
        Ok(ModelRef {
            name: name.to_string(),
            selector,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "resnet18",
            "Mobile.Net_v2-int8",
            "9lives",
            &"x".repeat(64),
        ] {
            validate_model_name(ok).unwrap();
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "a b",
            "a/b",
            "a:b",
            "a@b",
            "é",
            &"x".repeat(65),
        ] {
            let e = validate_model_name(bad).unwrap_err();
            assert!(matches!(e, WorkspaceError::InvalidName { .. }), "{bad}");
        }
        validate_alias("production").unwrap();
        assert!(validate_alias("1st").is_err());
        assert!(validate_alias("latest").is_err());
    }

    #[test]
    fn parses_references() {
        let r: ModelRef = "resnet".parse().unwrap();
        assert_eq!(r.selector, Selector::Latest);
        let r: ModelRef = "resnet:12".parse().unwrap();
        assert_eq!(r.selector, Selector::Version(12));
        assert_eq!(r.to_string(), "resnet:12");
        let r: ModelRef = "resnet@production".parse().unwrap();
        assert_eq!(r.selector, Selector::Alias("production".into()));
        assert_eq!(r.to_string(), "resnet@production");
        let r: ModelRef = "resnet@latest".parse().unwrap();
        assert_eq!(r.selector, Selector::Latest);
    }

    #[test]
    fn reference_errors_say_why() {
        let cases = [
            ("", "empty"),
            ("resnet:", "missing"),
            (":3", "model name is missing"),
            ("@prod", "model name is missing"),
            ("resnet:0", "start at 1"),
            ("resnet:-1", "positive whole number"),
            ("resnet:abc", "positive whole number"),
            ("resnet:99999999999", "too large"),
            ("resnet@", "missing"),
            ("resnet@1x", "must start with"),
            ("resnet:3@prod", "not both"),
            ("res net", "not allowed"),
        ];
        for (input, needle) in cases {
            let e = input.parse::<ModelRef>().unwrap_err();
            assert!(matches!(e, WorkspaceError::BadModelRef { .. }), "{input}");
            let msg = e.to_string();
            assert!(msg.contains(needle), "{input}: {msg}");
        }
    }
}
