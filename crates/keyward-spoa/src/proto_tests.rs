use super::*;
use crate::peer;

fn status_of(bytes: &[u8], max: u32) -> StatusCode {
    match decode(bytes, max) {
        Err(e) => e.status,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn hello_decodes_with_all_fields() {
    let bytes = peer::hello(16_380, "pipelining,async", true);
    let (frame, used) = decode(&bytes, 16_384).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    let Frame::Hello(h) = frame else {
        panic!("not a hello")
    };
    assert_eq!(h.max_frame_size, 16_380);
    assert_eq!(h.capabilities, "pipelining,async");
    assert!(h.healthcheck);
    assert!(h.offers_v2());
}

#[test]
fn every_prefix_of_a_frame_is_incomplete() {
    let bytes = peer::notify(7, 9, "check", &[("a", TypedData::String("b".into()))]);
    for cut in 0..bytes.len() {
        assert_eq!(decode(&bytes[..cut], 16_384), Ok(None), "cut at {cut}");
    }
    let (frame, _) = decode(&bytes, 16_384).unwrap().unwrap();
    let Frame::Notify(n) = frame else { panic!() };
    assert_eq!((n.stream_id, n.frame_id), (7, 9));
    assert_eq!(n.messages[0].str("a"), Ok(Some("b")));
}

#[test]
fn oversized_length_is_refused_from_the_prefix_alone() {
    assert_eq!(
        status_of(&u32::MAX.to_be_bytes(), 16_384),
        StatusCode::TooBig
    );
    assert_eq!(
        status_of(&16_385u32.to_be_bytes(), 16_384),
        StatusCode::TooBig
    );
}

#[test]
fn malformed_frames_get_the_matching_status() {
    // Unknown type, and an agent-only type sent by the peer.
    assert_eq!(
        status_of(&peer::frame(9, 1, 0, 0, &[]), 16_384),
        StatusCode::Invalid
    );
    assert_eq!(
        status_of(&peer::frame(103, 1, 0, 0, &[]), 16_384),
        StatusCode::Invalid
    );
    // FIN missing: fragmentation.
    assert_eq!(
        status_of(&peer::frame(3, 0, 1, 1, &[]), 16_384),
        StatusCode::FragmentationNotSupported
    );
    // Body too short for metadata.
    assert_eq!(status_of(&[0, 0, 0, 2, 3, 0], 16_384), StatusCode::Invalid);
    assert_eq!(status_of(&[0, 0, 0, 0], 16_384), StatusCode::Invalid);
    // A varint that never ends.
    let mut bad = vec![3, 0, 0, 0, 1];
    bad.extend([0xff; 12]);
    let mut framed = (bad.len() as u32).to_be_bytes().to_vec();
    framed.extend(bad);
    assert_eq!(status_of(&framed, 16_384), StatusCode::Invalid);
    // A message whose argument count promises more than is there.
    let mut payload = vec![5];
    payload.extend(b"check");
    payload.push(3);
    assert_eq!(
        status_of(&peer::frame(3, 1, 1, 1, &payload), 16_384),
        StatusCode::Invalid
    );
    // A string length pointing past the end of the frame.
    let payload = [0x40, b'x'];
    assert_eq!(
        status_of(&peer::frame(3, 1, 1, 1, &payload), 16_384),
        StatusCode::Invalid
    );
}

#[test]
fn connection_frames_must_carry_zero_ids() {
    let hello = peer::kv_list(&[
        ("supported-versions", TypedData::String("2.0".into())),
        ("max-frame-size", TypedData::UInt32(16_380)),
        ("capabilities", TypedData::String("".into())),
    ]);
    let disconnect = peer::kv_list(&[
        ("status-code", TypedData::UInt32(0)),
        ("message", TypedData::String("bye".into())),
    ]);
    for (kind, payload) in [
        (peer::HAPROXY_HELLO, &hello),
        (peer::HAPROXY_DISCONNECT, &disconnect),
    ] {
        assert!(decode(&peer::frame(kind, 1, 0, 0, payload), 16_384).is_ok());
        for (stream, frame) in [(1, 0), (0, 1), (u64::MAX, u64::MAX)] {
            assert_eq!(
                status_of(&peer::frame(kind, 1, stream, frame, payload), 16_384),
                StatusCode::Invalid,
                "type {kind} with ids ({stream}, {frame})"
            );
        }
    }
}

#[test]
fn hello_without_mandatory_items_names_what_is_missing() {
    let only = |pairs: &[(&str, TypedData)]| peer::frame(1, 1, 0, 0, &peer::kv_list(pairs));
    let v = || ("supported-versions", TypedData::String("2.0".into()));
    let m = || ("max-frame-size", TypedData::UInt32(16_380));
    let c = || ("capabilities", TypedData::String("".into()));
    assert_eq!(status_of(&only(&[m(), c()]), 16_384), StatusCode::NoVersion);
    assert_eq!(
        status_of(&only(&[v(), c()]), 16_384),
        StatusCode::NoFrameSize
    );
    assert_eq!(
        status_of(&only(&[v(), m()]), 16_384),
        StatusCode::NoCapabilities
    );
    let (Frame::Hello(h), _) = decode(&only(&[v(), m(), c()]), 16_384).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(h.capabilities, "");
}

#[test]
fn version_offer_parsing() {
    let h = |v: &str| Hello {
        supported_versions: v.into(),
        max_frame_size: 256,
        capabilities: String::new(),
        healthcheck: false,
        engine_id: None,
    };
    assert!(h("2.0").offers_v2());
    assert!(h("1.0, 2.0").offers_v2());
    assert!(!h("1.0").offers_v2());
    assert!(!h("20.0").offers_v2());
}

#[test]
fn agent_frames_carry_fin_and_pipelining_only() {
    let mut out = Vec::new();
    encode_agent_hello(4096, false, &mut out);
    assert_eq!(
        peer::read(&out).unwrap().unwrap().0,
        peer::AgentFrame::Hello {
            version: "2.0".into(),
            max_frame_size: 4096,
            capabilities: String::new()
        }
    );
    out.clear();
    encode_agent_hello(4096, true, &mut out);
    let (frame, fin, used) = peer::read(&out).unwrap().unwrap();
    assert!(fin);
    assert_eq!(used, out.len());
    assert_eq!(
        frame,
        peer::AgentFrame::Hello {
            version: "2.0".into(),
            max_frame_size: 4096,
            capabilities: "pipelining".into()
        }
    );
    out.clear();
    encode_ack(u64::MAX, 1 << 40, &Actions::new(), &mut out);
    let (frame, fin, _) = peer::read(&out).unwrap().unwrap();
    assert!(fin);
    assert_eq!(
        frame,
        peer::AgentFrame::Ack {
            stream_id: u64::MAX,
            frame_id: 1 << 40,
            actions: vec![]
        }
    );
}

fn typed() -> impl Strategy<Value = TypedData> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    prop_oneof![
        Just(TypedData::Null),
        any::<bool>().prop_map(TypedData::Bool),
        any::<i32>().prop_map(TypedData::Int32),
        any::<u32>().prop_map(TypedData::UInt32),
        any::<i64>().prop_map(TypedData::Int64),
        any::<u64>().prop_map(TypedData::UInt64),
        any::<u32>().prop_map(|a| TypedData::IPv4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| TypedData::IPv6(Ipv6Addr::from(a))),
        ".{0,300}".prop_map(TypedData::String),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(TypedData::Binary),
    ]
}

use proptest::prelude::*;

proptest! {
    /// Our ACK is byte for byte what the `spop` crate's encoder writes for the same
    /// actions.
    #[test]
    fn ack_encoding_matches_the_spop_crate(
        stream_id in any::<u64>(),
        frame_id in any::<u64>(),
        vars in proptest::collection::vec(("[a-z_]{0,20}", 0u8..5, proptest::option::of(typed())), 0..12),
    ) {
        let scope = |s: u8| match s {
            0 => spop::VarScope::Process,
            1 => spop::VarScope::Session,
            2 => spop::VarScope::Transaction,
            3 => spop::VarScope::Request,
            _ => spop::VarScope::Response,
        };
        let mut ours = Actions::new();
        let mut theirs = spop::frames::Ack::new(stream_id, frame_id);
        for (name, s, value) in &vars {
            match value {
                Some(v) => {
                    ours.set(scope(*s), name, v);
                    theirs = theirs.set_var(scope(*s), name, v.clone());
                }
                None => {
                    ours.unset(scope(*s), name);
                    theirs = theirs.unset_var(scope(*s), name);
                }
            }
        }
        let mut a = Vec::new();
        encode_ack(stream_id, frame_id, &ours, &mut a);
        let mut b = Vec::new();
        theirs.serialize_into(&mut b).unwrap();
        prop_assert_eq!(&a, &b);
        // And the actions read back as they were set.
        let back = ours.decoded();
        prop_assert_eq!(back.len(), vars.len());
        for ((name, s, value), (bs, bname, bvalue)) in vars.iter().zip(back) {
            prop_assert_eq!((*s, name.clone(), value.clone()), (bs, bname, bvalue));
        }
    }

    /// NOTIFY arguments read in place give what the `spop` crate's decoder gives (text
    /// that is not UTF-8 included: replaced the same way).
    #[test]
    fn notify_arguments_match_the_spop_crate(
        args in proptest::collection::vec(("[a-z_]{0,12}", typed()), 0..12),
        bad_text in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut args = args;
        args.push(("bad".into(), TypedData::String(String::new())));
        let owned_args: Vec<(&str, TypedData)> =
            args.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        let mut bytes = peer::notify(1, 2, "m", &owned_args);
        // Replace the last (empty) string with arbitrary bytes, fixing the lengths.
        // (type byte and a zero length).
        bytes.truncate(bytes.len() - 2);
        bytes.push(TYPE_STRING);
        encode_varint_into(bad_text.len() as u64, &mut bytes);
        bytes.extend_from_slice(&bad_text);
        let len = (bytes.len() - 4) as u32;
        bytes[..4].copy_from_slice(&len.to_be_bytes());

        let (frame, used) = decode(&bytes, u32::MAX).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        let Frame::Notify(n) = frame else { panic!("not a NOTIFY") };
        let m = &n.messages[0];
        prop_assert_eq!(m.name(), "m");
        let got: Vec<(String, TypedData)> =
            m.args().map(|(n, v)| (n.to_owned(), TypedData::from(v))).collect();
        let mut want: Vec<(String, TypedData)> = args;
        want.pop();
        want.push(("bad".into(), TypedData::String(String::from_utf8_lossy(&bad_text).into_owned())));
        prop_assert_eq!(got, want);
    }
}

#[test]
fn disconnect_messages_quoting_the_peer_stay_short() {
    let quoted = format!("unknown argument {}", "é".repeat(5_000));
    let mut out = Vec::new();
    encode_agent_disconnect(StatusCode::Invalid, &quoted, &mut out);
    assert!(out.len() < 256, "{} bytes", out.len());
    let mut short = Vec::new();
    encode_agent_disconnect(StatusCode::Invalid, "idle timeout", &mut short);
    assert!(short.windows(12).any(|w| w == b"idle timeout"));
}
