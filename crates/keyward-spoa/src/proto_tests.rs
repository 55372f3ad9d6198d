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
    encode_agent_hello(4096, &mut out);
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
    encode_ack(u64::MAX, 1 << 40, vec![], &mut out);
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
