//! What a handler sees (the messages of one NOTIFY, with typed argument access) and what
//! it answers (variable actions for the ACK).
//!
//! Both sides avoid per-value allocations, because they run once per HTTP request: a
//! [`Message`] keeps the NOTIFY's bytes (one shared buffer) and the positions of its
//! names and values, and [`Actions`] writes each variable straight into the ACK's
//! LIST-OF-ACTIONS encoding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use bytes::Bytes;
use bytestring::ByteString;
use spop::{TypedData, VarScope};

/// A typed SPOP value, borrowed from the frame it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int32(i32),
    UInt32(u32),
    Int64(i64),
    UInt64(u64),
    IPv4(Ipv4Addr),
    IPv6(Ipv6Addr),
    String(&'a str),
    Binary(&'a [u8]),
}

/// Where a decoded value is: scalars inline, text and bytes in the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Null, booleans, integers and addresses: they borrow nothing.
    Scalar(Value<'static>),
    /// Text, checked once when decoded: a view of the frame, or, for a STRING that was
    /// not valid UTF-8, a copy with U+FFFD in place of the bad bytes (as a lossy decoder
    /// gives).
    Str(ByteString),
    Binary(Range<u32>),
}

/// One SPOE message: its name and arguments in the order of the `spoe-message` `args`.
///
/// Argument names are optional in HAProxy's config, so unnamed arguments arrive with an
/// empty name; reach those by position with [`Message::arg`].
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The NOTIFY payload, shared by every message of the frame.
    frame: Bytes,
    name: Range<u32>,
    args: Vec<(Range<u32>, Slot)>,
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
    /// A message over `frame`, whose name and argument names are valid UTF-8 at the
    /// given positions (the decoder checked them).
    pub(crate) fn from_parts(
        frame: Bytes,
        name: Range<u32>,
        args: Vec<(Range<u32>, Slot)>,
    ) -> Self {
        Self { frame, name, args }
    }

    /// A message built from owned values (tests, tools): encoded as HAProxy would send
    /// it, then read back through the decoder.
    ///
    /// # Panics
    /// With more than 255 arguments, which one SPOE message cannot carry.
    pub fn new(name: &str, args: &[(&str, TypedData)]) -> Self {
        assert!(
            args.len() <= 255,
            "an SPOE message has at most 255 arguments"
        );
        let payload = crate::peer::message_payload(name, args);
        crate::proto::decode_messages(Bytes::from(payload))
            .ok()
            .and_then(|mut m| m.pop())
            .expect("a message encoded from typed values decodes")
    }

    fn raw(&self, at: &Range<u32>) -> &[u8] {
        self.frame
            .get(at.start as usize..at.end as usize)
            .unwrap_or_default()
    }

    /// A name (checked as UTF-8 when decoded; names are compared as bytes).
    fn text(&self, at: &Range<u32>) -> &str {
        std::str::from_utf8(self.raw(at)).unwrap_or_default()
    }

    fn value<'a>(&'a self, slot: &'a Slot) -> Value<'a> {
        match slot {
            Slot::Scalar(v) => *v,
            Slot::Str(s) => Value::String(s),
            Slot::Binary(at) => Value::Binary(self.raw(at)),
        }
    }

    pub fn name(&self) -> &str {
        self.text(&self.name)
    }

    fn is_called(&self, name: &str) -> bool {
        self.raw(&self.name) == name.as_bytes()
    }

    /// All arguments, in order.
    pub fn args(&self) -> impl Iterator<Item = (&str, Value<'_>)> {
        self.args
            .iter()
            .map(|(n, slot)| (self.text(n), self.value(slot)))
    }

    /// The first argument called `name`.
    pub fn get(&self, name: &str) -> Option<Value<'_>> {
        self.args
            .iter()
            .find(|(n, _)| self.raw(n) == name.as_bytes())
            .map(|(_, slot)| self.value(slot))
    }

    /// The argument at `index` (0-based), named or not.
    pub fn arg(&self, index: usize) -> Option<Value<'_>> {
        self.args.get(index).map(|(_, slot)| self.value(slot))
    }

    /// A text argument. `None` when absent or null (HAProxy sends null for a missing
    /// header). Binary values are accepted when they are valid UTF-8.
    pub fn str(&self, name: &str) -> Result<Option<&str>, ArgError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Binary(b)) => std::str::from_utf8(b)
                .map(Some)
                .map_err(|_| wrong(name, "text", "non-UTF-8 binary")),
            Some(other) => Err(wrong(name, "text", type_name(&other))),
        }
    }

    /// Raw bytes of a string or binary argument.
    pub fn bytes(&self, name: &str) -> Result<Option<&[u8]>, ArgError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_bytes())),
            Some(Value::Binary(b)) => Ok(Some(b)),
            Some(other) => Err(wrong(name, "bytes", type_name(&other))),
        }
    }

    /// An address argument (`src`, `dst`).
    pub fn ip(&self, name: &str) -> Result<Option<IpAddr>, ArgError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::IPv4(a)) => Ok(Some(IpAddr::V4(a))),
            Some(Value::IPv6(a)) => Ok(Some(IpAddr::V6(a))),
            Some(other) => Err(wrong(name, "an IP address", type_name(&other))),
        }
    }

    /// An integer argument of any width that fits in `i64`.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ArgError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Int32(n)) => Ok(Some(i64::from(n))),
            Some(Value::UInt32(n)) => Ok(Some(i64::from(n))),
            Some(Value::Int64(n)) => Ok(Some(n)),
            Some(Value::UInt64(n)) => i64::try_from(n)
                .map(Some)
                .map_err(|_| wrong(name, "an integer below 2^63", "a larger integer")),
            Some(other) => Err(wrong(name, "an integer", type_name(&other))),
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

fn type_name(v: &Value<'_>) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Int32(_) | Value::UInt32(_) | Value::Int64(_) | Value::UInt64(_) => "an integer",
        Value::IPv4(_) | Value::IPv6(_) => "an IP address",
        Value::String(_) => "text",
        Value::Binary(_) => "binary",
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
        self.messages.iter().find(|m| m.is_called(name))
    }
}

/// A value that can be set in a variable: text, bytes, or any SPOP typed value.
pub trait VarValue {
    /// Appends the TYPED-DATA encoding.
    fn encode(&self, out: &mut Vec<u8>);
}

impl VarValue for str {
    fn encode(&self, out: &mut Vec<u8>) {
        crate::proto::put_typed_bytes(crate::proto::TYPE_STRING, self.as_bytes(), out);
    }
}

impl VarValue for String {
    fn encode(&self, out: &mut Vec<u8>) {
        self.as_str().encode(out);
    }
}

impl VarValue for [u8] {
    fn encode(&self, out: &mut Vec<u8>) {
        crate::proto::put_typed_bytes(crate::proto::TYPE_BINARY, self, out);
    }
}

impl VarValue for TypedData {
    fn encode(&self, out: &mut Vec<u8>) {
        self.to_bytes(out);
    }
}

impl VarValue for Value<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Value::String(s) => s.encode(out),
            Value::Binary(b) => b.encode(out),
            // Scalars: the crate's owned form allocates nothing.
            scalar => TypedData::from(scalar).to_bytes(out),
        }
    }
}

/// The owned form (copies text and bytes).
impl From<Value<'_>> for TypedData {
    fn from(v: Value<'_>) -> Self {
        match v {
            Value::Null => TypedData::Null,
            Value::Bool(b) => TypedData::Bool(b),
            Value::Int32(n) => TypedData::Int32(n),
            Value::UInt32(n) => TypedData::UInt32(n),
            Value::Int64(n) => TypedData::Int64(n),
            Value::UInt64(n) => TypedData::UInt64(n),
            Value::IPv4(a) => TypedData::IPv4(a),
            Value::IPv6(a) => TypedData::IPv6(a),
            Value::String(s) => TypedData::String(s.to_owned()),
            Value::Binary(b) => TypedData::Binary(b.to_vec()),
        }
    }
}

impl<T: VarValue + ?Sized> VarValue for &T {
    fn encode(&self, out: &mut Vec<u8>) {
        (**self).encode(out);
    }
}

/// Variable actions for one ACK. Names are given without HAProxy's `var-prefix`.
///
/// Kept as the ACK's LIST-OF-ACTIONS encoding, written as the actions are added: no
/// allocation per variable, and the ACK is this buffer behind a frame header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions {
    encoded: Vec<u8>,
}

const ACTION_SET_VAR: u8 = 1;
const ACTION_UNSET_VAR: u8 = 2;

impl Actions {
    pub fn new() -> Self {
        Self::default()
    }

    /// `set-var` in `scope`.
    pub fn set(&mut self, scope: VarScope, name: &str, value: impl VarValue) -> &mut Self {
        if self.encoded.capacity() == 0 {
            // One allocation for a whole allow answer, assertion included.
            self.encoded.reserve(1024);
        }
        self.encoded
            .extend_from_slice(&[ACTION_SET_VAR, 3, scope.to_u8()]);
        crate::proto::put_string(name, &mut self.encoded);
        value.encode(&mut self.encoded);
        self
    }

    /// `set-var` in transaction scope: the usual place for per-request answers.
    pub fn set_txn(&mut self, name: &str, value: impl VarValue) -> &mut Self {
        self.set(VarScope::Transaction, name, value)
    }

    /// `unset-var` in `scope`.
    pub fn unset(&mut self, scope: VarScope, name: &str) -> &mut Self {
        self.encoded
            .extend_from_slice(&[ACTION_UNSET_VAR, 2, scope.to_u8()]);
        crate::proto::put_string(name, &mut self.encoded);
        self
    }

    pub fn is_empty(&self) -> bool {
        // Every action writes at least its type, argument count and scope.
        self.encoded.is_empty()
    }

    /// The LIST-OF-ACTIONS bytes, as they go into the ACK.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// The actions read back from their encoding: (scope, name, value), `None` for
    /// an unset. For tests and tools; the request path never decodes its own answer.
    pub fn decoded(&self) -> Vec<(u8, String, Option<TypedData>)> {
        // Written by `set` and `unset` only, so it always reads back.
        crate::peer::actions(&self.encoded).unwrap_or_default()
    }

    /// The value set for `name` (any scope), decoded.
    pub fn get(&self, name: &str) -> Option<TypedData> {
        self.decoded()
            .into_iter()
            .find_map(|(_, n, v)| if n == name { v } else { None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn msg() -> Message {
        Message::new(
            "check",
            &[
                ("cookie", TypedData::String("a=b".into())),
                ("", TypedData::IPv4(Ipv4Addr::LOCALHOST)),
                ("auth", TypedData::Null),
                ("raw", TypedData::Binary(vec![0xff, 0xfe])),
                ("n", TypedData::UInt64(u64::MAX)),
            ],
        )
    }

    #[test]
    fn named_and_positional_access() {
        let m = msg();
        assert_eq!(m.str("cookie"), Ok(Some("a=b")));
        assert_eq!(m.name(), "check");
        assert_eq!(m.arg(1), Some(Value::IPv4(Ipv4Addr::LOCALHOST)));
        assert_eq!(m.args().count(), 5);
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
