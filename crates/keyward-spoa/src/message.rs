//! What a handler sees (the messages of one NOTIFY, with typed argument access) and what
//! it answers (variable actions for the ACK).

use std::net::IpAddr;

use spop::{Action, TypedData, VarScope};

/// One SPOE message: its name and arguments in the order of the `spoe-message` `args`.
///
/// Argument names are optional in HAProxy's config, so unnamed arguments arrive with an
/// empty name; reach those by position with [`Message::arg`].
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    name: String,
    args: Vec<(String, TypedData)>,
}

/// A required argument was missing or of the wrong type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("message argument `{0}` is missing; add it to the spoe-message `args`")]
    Missing(String),
    #[error("message argument `{name}` should be {expected}, HAProxy sent {got}")]
    WrongType {
        name: String,
        expected: &'static str,
        got: &'static str,
    },
}

impl Message {
    pub fn new(name: String, args: Vec<(String, TypedData)>) -> Self {
        Self { name, args }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// All arguments, in order.
    pub fn args(&self) -> &[(String, TypedData)] {
        &self.args
    }

    /// The first argument called `name`.
    pub fn get(&self, name: &str) -> Option<&TypedData> {
        self.args.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The argument at `index` (0-based), named or not.
    pub fn arg(&self, index: usize) -> Option<&TypedData> {
        self.args.get(index).map(|(_, v)| v)
    }

    /// A text argument. `None` when absent or null (HAProxy sends null for a missing
    /// header). Binary values are accepted when they are valid UTF-8.
    pub fn str(&self, name: &str) -> Result<Option<&str>, ArgError> {
        match self.get(name) {
            None | Some(TypedData::Null) => Ok(None),
            Some(TypedData::String(s)) => Ok(Some(s)),
            Some(TypedData::Binary(b)) => std::str::from_utf8(b)
                .map(Some)
                .map_err(|_| wrong(name, "text", "non-UTF-8 binary")),
            Some(other) => Err(wrong(name, "text", type_name(other))),
        }
    }

    /// Raw bytes of a string or binary argument.
    pub fn bytes(&self, name: &str) -> Result<Option<&[u8]>, ArgError> {
        match self.get(name) {
            None | Some(TypedData::Null) => Ok(None),
            Some(TypedData::String(s)) => Ok(Some(s.as_bytes())),
            Some(TypedData::Binary(b)) => Ok(Some(b)),
            Some(other) => Err(wrong(name, "bytes", type_name(other))),
        }
    }

    /// An address argument (`src`, `dst`).
    pub fn ip(&self, name: &str) -> Result<Option<IpAddr>, ArgError> {
        match self.get(name) {
            None | Some(TypedData::Null) => Ok(None),
            Some(TypedData::IPv4(a)) => Ok(Some(IpAddr::V4(*a))),
            Some(TypedData::IPv6(a)) => Ok(Some(IpAddr::V6(*a))),
            Some(other) => Err(wrong(name, "an IP address", type_name(other))),
        }
    }

    /// An integer argument of any width that fits in `i64`.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ArgError> {
        match self.get(name) {
            None | Some(TypedData::Null) => Ok(None),
            Some(TypedData::Int32(n)) => Ok(Some(i64::from(*n))),
            Some(TypedData::UInt32(n)) => Ok(Some(i64::from(*n))),
            Some(TypedData::Int64(n)) => Ok(Some(*n)),
            Some(TypedData::UInt64(n)) => i64::try_from(*n)
                .map(Some)
                .map_err(|_| wrong(name, "an integer below 2^63", "a larger integer")),
            Some(other) => Err(wrong(name, "an integer", type_name(other))),
        }
    }

    /// Like [`Message::str`], but absence is an error.
    pub fn require_str(&self, name: &str) -> Result<&str, ArgError> {
        self.str(name)?
            .ok_or_else(|| ArgError::Missing(name.to_owned()))
    }
}

fn wrong(name: &str, expected: &'static str, got: &'static str) -> ArgError {
    ArgError::WrongType {
        name: name.to_owned(),
        expected,
        got,
    }
}

fn type_name(v: &TypedData) -> &'static str {
    match v {
        TypedData::Null => "null",
        TypedData::Bool(_) => "a boolean",
        TypedData::Int32(_) | TypedData::UInt32(_) | TypedData::Int64(_) | TypedData::UInt64(_) => {
            "an integer"
        }
        TypedData::IPv4(_) | TypedData::IPv6(_) => "an IP address",
        TypedData::String(_) => "text",
        TypedData::Binary(_) => "binary",
    }
}

/// The messages of one NOTIFY frame, handed to the handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub messages: Vec<Message>,
}

impl Request {
    /// The first message called `name`.
    pub fn message(&self, name: &str) -> Option<&Message> {
        self.messages.iter().find(|m| m.name == name)
    }
}

/// Variable actions for one ACK. Names are given without HAProxy's `var-prefix`.
#[derive(Debug, Clone, Default)]
pub struct Actions(Vec<Action>);

impl Actions {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// `set-var` in `scope`.
    pub fn set(&mut self, scope: VarScope, name: &str, value: impl Into<TypedData>) -> &mut Self {
        self.0.push(Action::SetVar {
            scope,
            name: name.to_owned(),
            value: value.into(),
        });
        self
    }

    /// `set-var` in transaction scope: the usual place for per-request answers.
    pub fn set_txn(&mut self, name: &str, value: impl Into<TypedData>) -> &mut Self {
        self.set(VarScope::Transaction, name, value)
    }

    /// `unset-var` in `scope`.
    pub fn unset(&mut self, scope: VarScope, name: &str) -> &mut Self {
        self.0.push(Action::UnSetVar {
            scope,
            name: name.to_owned(),
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[Action] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<Action> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn msg() -> Message {
        Message::new(
            "check".into(),
            vec![
                ("cookie".into(), TypedData::String("a=b".into())),
                ("".into(), TypedData::IPv4(Ipv4Addr::LOCALHOST)),
                ("auth".into(), TypedData::Null),
                ("raw".into(), TypedData::Binary(vec![0xff, 0xfe])),
                ("n".into(), TypedData::UInt64(u64::MAX)),
            ],
        )
    }

    #[test]
    fn named_and_positional_access() {
        let m = msg();
        assert_eq!(m.str("cookie"), Ok(Some("a=b")));
        assert_eq!(m.arg(1), Some(&TypedData::IPv4(Ipv4Addr::LOCALHOST)));
        assert_eq!(m.str("auth"), Ok(None));
        assert_eq!(m.str("absent"), Ok(None));
        assert_eq!(
            m.require_str("absent"),
            Err(ArgError::Missing("absent".into()))
        );
    }

    #[test]
    fn wrong_types_are_errors_not_panics() {
        let m = msg();
        assert!(matches!(m.str("raw"), Err(ArgError::WrongType { .. })));
        assert_eq!(m.bytes("raw"), Ok(Some(&[0xff, 0xfe][..])));
        assert!(matches!(m.ip("cookie"), Err(ArgError::WrongType { .. })));
        assert!(matches!(m.int("n"), Err(ArgError::WrongType { .. })));
        let err = m.ip("cookie").unwrap_err().to_string();
        assert!(
            err.contains("`cookie`") && err.contains("IP address"),
            "{err}"
        );
    }
}
