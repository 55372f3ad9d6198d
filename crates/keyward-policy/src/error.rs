//! The one error a policy file can produce: where the mistake is (rule and field) and
//! what to write instead.

use std::fmt;

/// A policy file that cannot be loaded.
///
/// Its `Display` names the rule (position, 1-based, and `name`) and the field, and says
/// what to write instead; TOML syntax errors keep the parser's line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}{message}")]
pub struct PolicyError {
    location: Location,
    message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    /// The file as a whole (syntax, top-level keys).
    File,
    Rule {
        /// 1-based.
        position: usize,
        name: Option<String>,
        field: Option<&'static str>,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File => f.write_str("policy: "),
            Location::Rule {
                position,
                name,
                field,
            } => {
                write!(f, "policy rule {position}")?;
                match name {
                    Some(name) => write!(f, " ({name:?})")?,
                    None => f.write_str(" (no name yet)")?,
                }
                if let Some(field) = field {
                    write!(f, ", field `{field}`")?;
                }
                f.write_str(": ")
            }
        }
    }
}

impl PolicyError {
    /// The file is not valid TOML, or its top level is wrong.
    pub(crate) fn file(message: impl Into<String>) -> Self {
        Self {
            location: Location::File,
            message: message.into(),
        }
    }

    /// A mistake inside the rule at `index` (0-based), in `field` when there is one.
    pub(crate) fn rule(
        index: usize,
        name: Option<&str>,
        field: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            location: Location::Rule {
                position: index + 1,
                name: name.map(str::to_owned),
                field,
            },
            message: message.into(),
        }
    }

    /// 1-based position of the offending rule in the file, if the error is in a rule.
    pub fn rule_position(&self) -> Option<usize> {
        match &self.location {
            Location::Rule { position, .. } => Some(*position),
            Location::File => None,
        }
    }

    /// `name` of the offending rule, when it has one.
    pub fn rule_name(&self) -> Option<&str> {
        match &self.location {
            Location::Rule { name, .. } => name.as_deref(),
            Location::File => None,
        }
    }

    /// The offending field of the rule (`hosts`, `access`, ...), when there is one.
    pub fn field(&self) -> Option<&'static str> {
        match &self.location {
            Location::Rule { field, .. } => *field,
            Location::File => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_rule_and_field() {
        let e = PolicyError::rule(2, Some("admin"), Some("paths"), "write \"/admin\"");
        assert_eq!(
            e.to_string(),
            "policy rule 3 (\"admin\"), field `paths`: write \"/admin\""
        );
        assert_eq!(e.rule_position(), Some(3));
        assert_eq!(e.rule_name(), Some("admin"));
        assert_eq!(e.field(), Some("paths"));

        let e = PolicyError::rule(0, None, None, "add `name = \"...\"`");
        assert_eq!(
            e.to_string(),
            "policy rule 1 (no name yet): add `name = \"...\"`"
        );
        let e = PolicyError::file("bad");
        assert_eq!(e.to_string(), "policy: bad");
        assert_eq!((e.rule_position(), e.field()), (None, None));
    }
}
