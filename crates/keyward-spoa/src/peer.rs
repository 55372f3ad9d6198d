//! The HAProxy side of SPOP: builds the frames HAProxy sends and reads the frames an
//! agent answers with. For protocol tests, benchmarks and fuzz seeds; the agent itself
//! never uses it.

use spop::TypedData;
use spop::types::typed_data;
use spop::varint::{decode_varint, encode_varint_into};

use crate::proto::put_string;

pub const HAPROXY_HELLO: u8 = 1;
pub const HAPROXY_DISCONNECT: u8 = 2;
pub const NOTIFY: u8 = 3;
pub const AGENT_HELLO: u8 = 101;
pub const AGENT_DISCONNECT: u8 = 102;
pub const ACK: u8 = 103;

/// A whole frame: length prefix, type, flags, ids and `payload`.
pub fn frame(kind: u8, flags: u32, stream_id: u64, frame_id: u64, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(&flags.to_be_bytes());
    encode_varint_into(stream_id, &mut body);
    encode_varint_into(frame_id, &mut body);
    body.extend_from_slice(payload);
    let mut out = u32::try_from(body.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(&body);
    out
}

/// A KV-LIST payload.
pub fn kv_list(pairs: &[(&str, TypedData)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        put_string(name, &mut out);
        value.to_bytes(&mut out);
    }
    out
}

/// HAPROXY-HELLO as HAProxy 2.6 sends it.
pub fn hello(max_frame_size: u32, capabilities: &str, healthcheck: bool) -> Vec<u8> {
    let mut pairs = vec![
        ("supported-versions", TypedData::String("2.0".into())),
        ("max-frame-size", TypedData::UInt32(max_frame_size)),
        ("capabilities", TypedData::String(capabilities.into())),
        ("engine-id", TypedData::String("test-engine".into())),
    ];
    if healthcheck {
        pairs.push(("healthcheck", TypedData::Bool(true)));
    }
    frame(HAPROXY_HELLO, 1, 0, 0, &kv_list(&pairs))
}

/// HAPROXY-DISCONNECT.
pub fn disconnect(status: u32, message: &str) -> Vec<u8> {
    let payload = kv_list(&[
        ("status-code", TypedData::UInt32(status)),
        ("message", TypedData::String(message.into())),
    ]);
    frame(HAPROXY_DISCONNECT, 1, 0, 0, &payload)
}

/// A NOTIFY carrying one message.
pub fn notify(stream_id: u64, frame_id: u64, message: &str, args: &[(&str, TypedData)]) -> Vec<u8> {
    frame(
        NOTIFY,
        1,
        stream_id,
        frame_id,
        &message_payload(message, args),
    )
}

/// One message (name, argument count, arguments) as a NOTIFY payload carries it.
pub fn message_payload(message: &str, args: &[(&str, TypedData)]) -> Vec<u8> {
    let mut payload = Vec::new();
    put_string(message, &mut payload);
    payload.push(u8::try_from(args.len()).unwrap_or(u8::MAX));
    payload.extend_from_slice(&kv_list(args));
    payload
}

/// A frame an agent sent, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentFrame {
    Hello {
        version: String,
        max_frame_size: u32,
        capabilities: String,
    },
    Disconnect {
        status: u32,
        message: String,
    },
    Ack {
        stream_id: u64,
        frame_id: u64,
        /// (scope, name, value); `None` for unset-var.
        actions: Vec<(u8, String, Option<TypedData>)>,
    },
}

/// Why an agent frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed agent frame: {0}")]
pub struct Malformed(pub String);

/// Reads one agent frame from the front of `buf`: `Ok(None)` if incomplete, else the
/// frame, its FIN flag, and the bytes it used.
pub fn read(buf: &[u8]) -> Result<Option<(AgentFrame, bool, usize)>, Malformed> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let bad = |what: &str| Malformed(what.to_owned());
    let (&kind, rest) = body.split_first().ok_or_else(|| bad("empty"))?;
    let flags = rest.get(..4).ok_or_else(|| bad("flags"))?;
    let fin = flags[3] & 1 == 1;
    let (rest, stream_id) = decode_varint(&rest[4..]).map_err(|_| bad("stream-id"))?;
    let (mut rest, frame_id) = decode_varint(rest).map_err(|_| bad("frame-id"))?;
    let frame = match kind {
        AGENT_HELLO | AGENT_DISCONNECT => {
            let mut kv = std::collections::HashMap::new();
            while !rest.is_empty() {
                let (r, name) = read_str(rest).ok_or_else(|| bad("key"))?;
                let (r, value) = typed_data(r).map_err(|_| bad("value"))?;
                kv.insert(name, value);
                rest = r;
            }
            let text = |k: &str| match kv.get(k) {
                Some(TypedData::String(s)) => s.clone(),
                _ => String::new(),
            };
            let num = |k: &str| match kv.get(k) {
                Some(TypedData::UInt32(n)) => *n,
                _ => u32::MAX,
            };
            if kind == AGENT_HELLO {
                AgentFrame::Hello {
                    version: text("version"),
                    max_frame_size: num("max-frame-size"),
                    capabilities: text("capabilities"),
                }
            } else {
                AgentFrame::Disconnect {
                    status: num("status-code"),
                    message: text("message"),
                }
            }
        }
        ACK => AgentFrame::Ack {
            stream_id,
            frame_id,
            actions: actions(rest)?,
        },
        other => return Err(Malformed(format!("unknown frame type {other}"))),
    };
    Ok(Some((frame, fin, 4 + len)))
}

/// An ACK's LIST-OF-ACTIONS: (scope, name, value); `None` for unset-var.
pub fn actions(mut rest: &[u8]) -> Result<Vec<(u8, String, Option<TypedData>)>, Malformed> {
    let bad = |what: &str| Malformed(what.to_owned());
    let mut actions = Vec::new();
    while let Some((&action, r)) = rest.split_first() {
        let (&_nb_args, r) = r.split_first().ok_or_else(|| bad("action args"))?;
        let (&scope, r) = r.split_first().ok_or_else(|| bad("scope"))?;
        let (r, name) = read_str(r).ok_or_else(|| bad("var name"))?;
        if action == 1 {
            let (r, value) = typed_data(r).map_err(|_| bad("var value"))?;
            actions.push((scope, name, Some(value)));
            rest = r;
        } else {
            actions.push((scope, name, None));
            rest = r;
        }
    }
    Ok(actions)
}

fn read_str(input: &[u8]) -> Option<(&[u8], String)> {
    let (rest, len) = decode_varint(input).ok()?;
    let len = usize::try_from(len).ok()?;
    let bytes = rest.get(..len)?;
    Some((&rest[len..], String::from_utf8_lossy(bytes).into_owned()))
}

impl AgentFrame {
    /// The value of a set-var action called `name` in an ACK.
    pub fn var(&self, name: &str) -> Option<&TypedData> {
        match self {
            AgentFrame::Ack { actions, .. } => actions
                .iter()
                .find(|(_, n, _)| n == name)
                .and_then(|(_, _, v)| v.as_ref()),
            _ => None,
        }
    }
}
