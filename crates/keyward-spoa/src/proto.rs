//! SPOP frame decoding and encoding, without any IO.
//!
//! The decoder works on whatever bytes have arrived so far: [`decode`] answers
//! `Ok(None)` ("incomplete, read more") until a whole frame is buffered, then the frame
//! and how many bytes it used. Every malformed input maps to the SPOP status code that
//! HAProxy expects in the AGENT-DISCONNECT we send back (SPOE.txt, "Errors & timeouts").
//!
//! Varints, scalar values, the handshake frames and the test peer use the `spop`
//! crate's codec. The frame envelope and the payload lists are walked here because the
//! agent needs the precise status of each failure; NOTIFY arguments are kept as
//! positions in one shared copy of the payload ([`Message`]) and ACKs are written from
//! the already-encoded [`Actions`], because the crate's owned frame types cost an
//! allocation per argument and per variable on every request.

use std::ops::Range;

use bytes::Bytes;
use spop::frames::{AgentDisconnect, AgentHello, FrameCapabilities};
use spop::types::typed_data;
use spop::varint::{decode_varint, encode_varint_into};
use spop::{SpopFrame, StatusCode, TypedData};

use crate::message::{Actions, Message, Slot, Value};

/// Smallest max-frame-size either side may announce (SPOE.txt 3.2.4).
pub const MIN_FRAME_SIZE: u32 = 256;

/// Frame types HAProxy sends. Agent frame types arriving from HAProxy are errors.
const TYPE_HAPROXY_HELLO: u8 = 1;
const TYPE_HAPROXY_DISCONNECT: u8 = 2;
const TYPE_NOTIFY: u8 = 3;
const TYPE_ACK: u8 = 103;

/// TYPED-DATA type ids with a length-prefixed body.
pub(crate) const TYPE_STRING: u8 = 8;
pub(crate) const TYPE_BINARY: u8 = 9;

const FLAG_FIN: u32 = 0x1;
const FLAG_ABORT: u32 = 0x2;

/// A frame received from HAProxy.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Hello(Hello),
    Disconnect { status: u32, message: String },
    Notify(Notify),
}

/// The HAPROXY-HELLO handshake, as announced by HAProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Raw `supported-versions`, e.g. `"2.0"`.
    pub supported_versions: String,
    pub max_frame_size: u32,
    /// Raw `capabilities`, e.g. `"pipelining,async"`. Unknown ones are ignored.
    pub capabilities: String,
    pub healthcheck: bool,
    pub engine_id: Option<String>,
}

impl Hello {
    /// Whether HAProxy offers a 2.x protocol version (the only one we speak).
    pub fn offers_v2(&self) -> bool {
        self.supported_versions
            .split(',')
            .map(str::trim)
            .any(|v| v == "2" || v.starts_with("2."))
    }

    /// Whether `capabilities` lists `name` (a comma-separated list, spaces allowed).
    pub fn offers(&self, name: &str) -> bool {
        self.capabilities.split(',').any(|c| c.trim() == name)
    }
}

/// A NOTIFY frame: the messages HAProxy sent for one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    /// Opaque to us: echoed back in the ACK untouched.
    pub stream_id: u64,
    /// Opaque to us: echoed back in the ACK untouched.
    pub frame_id: u64,
    pub messages: Vec<Message>,
}

/// Why a frame could not be accepted. Carries the status for AGENT-DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (SPOP status {})", status.to_u32())]
pub struct ProtoError {
    pub status: StatusCode,
    pub message: String,
}

impl ProtoError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::Invalid, message)
    }
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` while the frame is incomplete, `Ok(Some((frame, consumed)))` when a
/// whole frame was read. A length prefix above `max_frame_size` is rejected as soon as
/// the four length bytes are in, so a peer can never make us buffer more than that.
pub fn decode(buf: &[u8], max_frame_size: u32) -> Result<Option<(Frame, usize)>, ProtoError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if len > max_frame_size {
        return Err(ProtoError::new(
            StatusCode::TooBig,
            format!("frame of {len} bytes exceeds max-frame-size {max_frame_size}"),
        ));
    }
    let total = 4 + len as usize;
    let Some(body) = buf.get(4..total) else {
        return Ok(None);
    };
    decode_body(body).map(|frame| Some((frame, total)))
}

fn decode_body(body: &[u8]) -> Result<Frame, ProtoError> {
    let (&frame_type, rest) = body
        .split_first()
        .ok_or_else(|| ProtoError::invalid("empty frame"))?;
    let flags = rest
        .get(..4)
        .map(|f| u32::from_be_bytes([f[0], f[1], f[2], f[3]]))
        .ok_or_else(|| ProtoError::invalid("truncated frame metadata"))?;
    if flags & FLAG_FIN == 0 {
        return Err(ProtoError::new(
            StatusCode::FragmentationNotSupported,
            "fragmented frame (FIN not set); fragmentation is not supported",
        ));
    }
    if flags & FLAG_ABORT != 0 {
        return Err(ProtoError::new(
            StatusCode::FragmentationNotSupported,
            "ABORT flag set; fragmentation is not supported",
        ));
    }
    let rest = &rest[4..];
    let (rest, stream_id) = varint(rest, "stream-id")?;
    let (payload, frame_id) = varint(rest, "frame-id")?;
    // HELLO and DISCONNECT belong to the connection, not to a stream: SPOP has them carry
    // stream-id and frame-id 0, and a peer that sets either is not speaking it.
    let connection_frame = matches!(frame_type, TYPE_HAPROXY_HELLO | TYPE_HAPROXY_DISCONNECT);
    if connection_frame && (stream_id, frame_id) != (0, 0) {
        return Err(ProtoError::invalid(format!(
            "frame type {frame_type} must carry stream-id 0 and frame-id 0, \
             not {stream_id} and {frame_id}"
        )));
    }

    match frame_type {
        TYPE_HAPROXY_HELLO => decode_hello(payload).map(Frame::Hello),
        TYPE_HAPROXY_DISCONNECT => decode_disconnect(payload),
        TYPE_NOTIFY => Ok(Frame::Notify(Notify {
            stream_id,
            frame_id,
            // One copy of the payload; the messages point into it.
            messages: decode_messages(Bytes::copy_from_slice(payload))?,
        })),
        other => Err(ProtoError::invalid(format!(
            "unexpected frame type {other}"
        ))),
    }
}

fn varint<'a>(input: &'a [u8], what: &str) -> Result<(&'a [u8], u64), ProtoError> {
    decode_varint(input).map_err(|_| ProtoError::invalid(format!("bad varint in {what}")))
}

fn string<'a>(input: &'a [u8], what: &str) -> Result<(&'a [u8], String), ProtoError> {
    let (rest, len) = varint(input, what)?;
    let len = usize::try_from(len).map_err(|_| ProtoError::invalid(format!("{what} too long")))?;
    let bytes = rest
        .get(..len)
        .ok_or_else(|| ProtoError::invalid(format!("truncated {what}")))?;
    Ok((&rest[len..], String::from_utf8_lossy(bytes).into_owned()))
}

fn value<'a>(input: &'a [u8], name: &str) -> Result<(&'a [u8], TypedData), ProtoError> {
    typed_data(input).map_err(|_| ProtoError::invalid(format!("bad typed value for `{name}`")))
}

/// Walks a KV-LIST, calling `each` for every pair.
fn kv_list(
    mut input: &[u8],
    mut each: impl FnMut(String, TypedData) -> Result<(), ProtoError>,
) -> Result<(), ProtoError> {
    while !input.is_empty() {
        let (rest, name) = string(input, "key name")?;
        let (rest, val) = value(rest, &name)?;
        each(name, val)?;
        input = rest;
    }
    Ok(())
}

fn decode_hello(payload: &[u8]) -> Result<Hello, ProtoError> {
    let mut versions = None;
    let mut max_frame_size = None;
    let mut capabilities = None;
    let mut healthcheck = false;
    let mut engine_id = None;
    kv_list(payload, |name, val| {
        match (name.as_str(), val) {
            ("supported-versions", TypedData::String(s)) => versions = Some(s),
            ("max-frame-size", TypedData::UInt32(n)) => max_frame_size = Some(n),
            ("max-frame-size", TypedData::UInt64(n)) => {
                max_frame_size = Some(u32::try_from(n).unwrap_or(u32::MAX));
            }
            ("capabilities", TypedData::String(s)) => capabilities = Some(s),
            ("healthcheck", TypedData::Bool(b)) => healthcheck = b,
            ("engine-id", TypedData::String(s)) => engine_id = Some(s),
            _ => {}
        }
        Ok(())
    })?;
    let supported_versions = versions
        .ok_or_else(|| ProtoError::new(StatusCode::NoVersion, "HELLO has no supported-versions"))?;
    let max_frame_size = max_frame_size
        .ok_or_else(|| ProtoError::new(StatusCode::NoFrameSize, "HELLO has no max-frame-size"))?;
    let capabilities = capabilities
        .ok_or_else(|| ProtoError::new(StatusCode::NoCapabilities, "HELLO has no capabilities"))?;
    Ok(Hello {
        supported_versions,
        max_frame_size,
        capabilities,
        healthcheck,
        engine_id,
    })
}

fn decode_disconnect(payload: &[u8]) -> Result<Frame, ProtoError> {
    let mut status = 0;
    let mut message = String::new();
    kv_list(payload, |name, val| {
        match (name.as_str(), val) {
            ("status-code", TypedData::UInt32(n)) => status = n,
            ("message", TypedData::String(s)) => message = s,
            _ => {}
        }
        Ok(())
    })?;
    Ok(Frame::Disconnect { status, message })
}

/// The messages of a NOTIFY payload, as positions in `frame`.
pub(crate) fn decode_messages(frame: Bytes) -> Result<Vec<Message>, ProtoError> {
    let at = |rest: &[u8]| (frame.len() - rest.len()) as u32;
    // One message per request is the common case.
    let mut messages = Vec::with_capacity(1);
    let mut input = &frame[..];
    while !input.is_empty() {
        let (rest, name) = name_at(input, at(input), "message name")?;
        let (&nb_args, mut rest) = rest
            .split_first()
            .ok_or_else(|| ProtoError::invalid("truncated message: no argument count"))?;
        // Every argument takes at least two bytes, so a forged count cannot make us
        // reserve more than the frame could hold.
        let mut args = Vec::with_capacity(usize::from(nb_args).min(rest.len() / 2));
        for _ in 0..nb_args {
            let (r, arg_name) = name_at(rest, at(rest), "argument name")?;
            let (r, val) = slot(r, at(r), &frame).map_err(|()| {
                let name =
                    String::from_utf8_lossy(&frame[arg_name.start as usize..arg_name.end as usize]);
                ProtoError::invalid(format!("bad typed value for `{name}`"))
            })?;
            args.push((arg_name, val));
            rest = r;
        }
        messages.push(Message::from_parts(frame.clone(), name, args));
        input = rest;
    }
    Ok(messages)
}

/// A varint length and that many bytes, at offset `offset` of the frame: the rest, the
/// bytes and their position. `None` when truncated.
fn span(input: &[u8], offset: u32) -> Option<(&[u8], &[u8], Range<u32>)> {
    let (rest, len) = decode_varint(input).ok()?;
    let len = usize::try_from(len).ok()?;
    let bytes = rest.get(..len)?;
    let start = offset + (input.len() - rest.len()) as u32;
    Some((&rest[len..], bytes, start..start + len as u32))
}

/// A length-prefixed UTF-8 name at offset `offset`: the rest and its position.
fn name_at<'a>(
    input: &'a [u8],
    offset: u32,
    what: &str,
) -> Result<(&'a [u8], Range<u32>), ProtoError> {
    let (rest, bytes, range) =
        span(input, offset).ok_or_else(|| ProtoError::invalid(format!("truncated {what}")))?;
    std::str::from_utf8(bytes).map_err(|_| ProtoError::invalid(format!("{what} is not UTF-8")))?;
    Ok((rest, range))
}

/// A TYPED-DATA value at offset `offset`: text and bytes by position, scalars decoded.
fn slot<'a>(input: &'a [u8], offset: u32, frame: &Bytes) -> Result<(&'a [u8], Slot), ()> {
    let &first = input.first().ok_or(())?;
    let type_id = first & 0x0F;
    if type_id == TYPE_STRING || type_id == TYPE_BINARY {
        let (rest, bytes, range) = span(&input[1..], offset + 1).ok_or(())?;
        let slot = if type_id == TYPE_BINARY {
            Slot::Binary(range)
        } else {
            // Checked once here; a view of the frame, no copy.
            let view = frame.slice(range.start as usize..range.end as usize);
            Slot::Str(
                bytestring::ByteString::try_from(view)
                    .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned().into()),
            )
        };
        return Ok((rest, slot));
    }
    // Scalars: the crate's decoder allocates nothing for them.
    let (rest, value) = typed_data(input).map_err(|_| ())?;
    let scalar = match value {
        TypedData::Null => Value::Null,
        TypedData::Bool(b) => Value::Bool(b),
        TypedData::Int32(n) => Value::Int32(n),
        TypedData::UInt32(n) => Value::UInt32(n),
        TypedData::Int64(n) => Value::Int64(n),
        TypedData::UInt64(n) => Value::UInt64(n),
        TypedData::IPv4(a) => Value::IPv4(a),
        TypedData::IPv6(a) => Value::IPv6(a),
        TypedData::String(_) | TypedData::Binary(_) => return Err(()),
    };
    Ok((rest, Slot::Scalar(scalar)))
}

/// Appends a length-prefixed STRING body (no type byte): names in messages and actions.
pub(crate) fn put_string(s: &str, out: &mut Vec<u8>) {
    put_bytes(s.as_bytes(), out);
}

/// Appends a STRING or BINARY typed value.
pub(crate) fn put_typed_bytes(type_id: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(type_id);
    put_bytes(bytes, out);
}

fn put_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    encode_varint_into(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Appends an AGENT-HELLO announcing version 2.0, `max_frame_size`, and `pipelining`
/// when `pipelining` is set (no other capability, ever).
pub fn encode_agent_hello(max_frame_size: u32, pipelining: bool, out: &mut Vec<u8>) {
    let capabilities = if pipelining {
        vec![FrameCapabilities::Pipelining]
    } else {
        Vec::new()
    };
    let hello = AgentHello {
        version: spop::SUPPORTED_VERSION,
        max_frame_size,
        capabilities,
    };
    write(&hello, out);
}

/// Appends an AGENT-DISCONNECT with `status` and a human-readable `message`.
pub fn encode_agent_disconnect(status: StatusCode, message: &str, out: &mut Vec<u8>) {
    // Messages can quote the peer (an argument name, its versions): kept short, so the
    // frame always fits the smallest max-frame-size.
    let mut end = message.len().min(MAX_DISCONNECT_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let frame = AgentDisconnect {
        status_code: status.to_u32(),
        message: message[..end].to_owned(),
    };
    write(&frame, out);
}

/// Longest AGENT-DISCONNECT message sent (bytes).
pub const MAX_DISCONNECT_MESSAGE: usize = 200;

/// Appends an ACK for (`stream_id`, `frame_id`) carrying `actions`: the frame header,
/// then the actions as they were encoded.
pub fn encode_ack(stream_id: u64, frame_id: u64, actions: &Actions, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(TYPE_ACK);
    out.extend_from_slice(&FLAG_FIN.to_be_bytes());
    encode_varint_into(stream_id, out);
    encode_varint_into(frame_id, out);
    out.extend_from_slice(actions.encoded());
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn write(frame: &dyn SpopFrame, out: &mut Vec<u8>) {
    // Serialising into a Vec only fails for payload kinds agents never send.
    if let Err(err) = frame.serialize_into(out) {
        tracing::error!(%err, "could not encode an agent frame");
    }
}

#[cfg(test)]
#[path = "proto_tests.rs"]
mod tests;
