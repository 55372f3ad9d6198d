//! The runtime against a raw SPOP peer over real TCP sockets.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use keyward_spoa::peer::{self, AgentFrame};
use keyward_spoa::{Limits, OWN_BUFFERS, StatusCode, TypedData};

#[tokio::test]
async fn hello_reply_announces_pipelining_only_and_negotiates_down() {
    let agent = start(Limits {
        max_frame_size: 8192,
        ..Limits::default()
    })
    .await;
    let mut p = Peer::connect(agent.addr).await;
    p.send(&peer::hello(
        16_380,
        "pipelining,async,fragmentation",
        false,
    ))
    .await;
    assert_eq!(
        p.recv().await,
        AgentFrame::Hello {
            version: "2.0".into(),
            max_frame_size: 8192,
            capabilities: "pipelining".into()
        }
    );
    let mut p = Peer::connect(agent.addr).await;
    p.send(&peer::hello(1024, "pipelining", false)).await;
    assert!(matches!(
        p.recv().await,
        AgentFrame::Hello {
            max_frame_size: 1024,
            ..
        }
    ));
    // The negotiated size is enforced on what HAProxy sends.
    p.send(&echo(1, 1, &"z".repeat(2000))).await;
    p.expect_disconnect(StatusCode::TooBig.to_u32()).await;
}

#[tokio::test]
async fn bytes_delivered_one_at_a_time() {
    let agent = start(Limits::default()).await;
    let mut p = Peer::connect(agent.addr).await;
    let mut all = peer::hello(16_380, "pipelining", false);
    for i in 0..3u64 {
        all.extend(echo(i, 100 + i, &format!("value-{i}")));
    }
    for b in all {
        p.send(&[b]).await;
        tokio::task::yield_now().await;
    }
    assert!(matches!(p.recv().await, AgentFrame::Hello { .. }));
    let mut got = HashMap::new();
    for _ in 0..3 {
        let ack = p.recv().await;
        let AgentFrame::Ack {
            stream_id,
            frame_id,
            ..
        } = &ack
        else {
            panic!("{ack:?}")
        };
        got.insert(
            (*stream_id, *frame_id),
            text(ack.var("echo").unwrap()).to_owned(),
        );
    }
    for i in 0..3u64 {
        assert_eq!(got[&(i, 100 + i)], format!("value-{i}"));
    }
}

#[tokio::test]
async fn twenty_pipelined_notifies_answered_with_their_own_ids() {
    let agent = start(Limits::default()).await;
    let mut p = Peer::handshake(agent.addr).await;
    let mut batch = Vec::new();
    // Later requests finish first: ACKs come back out of order.
    for i in 0..20u64 {
        let stream_id = 1_000_000 + i * 7919;
        let frame_id = u64::MAX - i;
        batch.extend(peer::notify(
            stream_id,
            frame_id,
            "check",
            &[
                ("mode", TypedData::String("sleep".into())),
                ("ms", TypedData::UInt32((20 - i as u32) * 5)),
                ("v", TypedData::String(format!("req-{i}"))),
            ],
        ));
    }
    p.send(&batch).await;
    let mut order = Vec::new();
    for _ in 0..20 {
        let ack = p.recv().await;
        let AgentFrame::Ack {
            stream_id,
            frame_id,
            ..
        } = ack
        else {
            panic!("{ack:?}")
        };
        let i = (stream_id - 1_000_000) / 7919;
        assert_eq!(frame_id, u64::MAX - i, "frame id echoed untouched");
        assert_eq!(text(ack.var("echo").unwrap()), format!("req-{i}"));
        order.push(i);
    }
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..20).collect::<Vec<_>>());
    assert_ne!(
        order, sorted,
        "handlers ran concurrently, so the slowest (first) finished last"
    );
}

#[tokio::test]
async fn failing_handlers_still_answer_at_once() {
    let agent = start(Limits {
        handler_timeout: Duration::from_millis(200),
        ..Limits::default()
    })
    .await;
    let mut p = Peer::handshake(agent.addr).await;
    for (i, mode) in ["error", "panic", "big"].iter().enumerate() {
        p.send(&with_mode(i as u64, mode, &[])).await;
        let ack = p.recv().await;
        assert_eq!(ack.var("reason").map(text), Some("error"), "{mode}");
        let expected = if *mode == "big" { "too_big" } else { mode };
        assert_eq!(ack.var("failure").map(text), Some(expected));
    }
    p.send(&with_mode(9, "sleep", &[("ms", TypedData::UInt32(5_000))]))
        .await;
    let ack = p.recv().await;
    assert_eq!(ack.var("failure").map(text), Some("timeout"));
    // The connection is still healthy afterwards.
    p.send(&echo(10, 1, "still here")).await;
    assert_eq!(p.recv().await.var("echo").map(text), Some("still here"));
}

#[tokio::test]
async fn malformed_frames_get_agent_disconnect_with_status() {
    let agent = start(Limits::default()).await;
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        ("notify before hello", echo(1, 1, "x"), StatusCode::Invalid),
        (
            "unknown frame type",
            peer::frame(42, 1, 0, 0, &[]),
            StatusCode::Invalid,
        ),
        (
            "agent frame type",
            peer::frame(peer::ACK, 1, 0, 0, &[]),
            StatusCode::Invalid,
        ),
        (
            "4 GiB claim",
            u32::MAX.to_be_bytes().to_vec(),
            StatusCode::TooBig,
        ),
        (
            "truncated body",
            vec![0, 0, 0, 3, 1, 0, 0],
            StatusCode::Invalid,
        ),
        (
            "fragmented",
            peer::frame(peer::HAPROXY_HELLO, 0, 0, 0, &[]),
            StatusCode::FragmentationNotSupported,
        ),
        (
            "bad varint",
            {
                let mut f = vec![0, 0, 0, 16, 1, 0, 0, 0, 1];
                f.extend([0xff; 11]);
                f
            },
            StatusCode::Invalid,
        ),
        (
            "hello without version",
            peer::frame(
                1,
                1,
                0,
                0,
                &peer::kv_list(&[
                    ("max-frame-size", TypedData::UInt32(1000)),
                    ("capabilities", TypedData::String(String::new())),
                ]),
            ),
            StatusCode::NoVersion,
        ),
        (
            "tiny frame size",
            peer::hello(100, "pipelining", false),
            StatusCode::BadFrameSize,
        ),
    ];
    for (name, bytes, status) in cases {
        let mut p = Peer::connect(agent.addr).await;
        p.send(&bytes).await;
        let message = p.expect_disconnect(status.to_u32()).await;
        assert!(!message.is_empty(), "{name}: disconnect explains itself");
    }
    // After a protocol error mid-session, other connections carry on.
    let mut good = Peer::handshake(agent.addr).await;
    let mut bad = Peer::handshake(agent.addr).await;
    bad.send(&peer::frame(42, 1, 0, 0, &[])).await;
    bad.expect_disconnect(StatusCode::Invalid.to_u32()).await;
    good.send(&echo(5, 5, "unaffected")).await;
    assert_eq!(good.recv().await.var("echo").map(text), Some("unaffected"));
}

#[tokio::test]
async fn healthcheck_hello_is_answered_then_closed() {
    let agent = start(Limits::default()).await;
    let mut p = Peer::connect(agent.addr).await;
    p.send(&peer::hello(16_380, "", true)).await;
    assert!(matches!(p.recv().await, AgentFrame::Hello { .. }));
    p.expect_closed().await;
}

#[tokio::test]
async fn haproxy_disconnect_gets_agent_disconnect() {
    let agent = start(Limits::default()).await;
    let mut p = Peer::handshake(agent.addr).await;
    p.send(&peer::disconnect(0, "normal")).await;
    p.expect_disconnect(0).await;
}

#[tokio::test]
async fn idle_and_hello_timeouts_disconnect() {
    let agent = start(Limits {
        hello_timeout: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut silent = Peer::connect(agent.addr).await;
    silent.send(&[0, 0]).await; // a slowloris start: half a length prefix
    silent.expect_disconnect(StatusCode::Timeout.to_u32()).await;
    let mut idle = Peer::handshake(agent.addr).await;
    idle.expect_disconnect(StatusCode::Timeout.to_u32()).await;
}

#[tokio::test]
async fn inflight_bound_stops_reading() {
    let agent = start(Limits {
        max_inflight: 2,
        ..Limits::default()
    })
    .await;
    let mut p = Peer::handshake(agent.addr).await;
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.extend(with_mode(i, "block", &[]));
    }
    p.send(&batch).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        agent.handler.started.load(Ordering::SeqCst),
        2,
        "only max_inflight handlers start"
    );
    agent.handler.gate.add_permits(10);
    let mut seen = Vec::new();
    for _ in 0..10 {
        let AgentFrame::Ack { stream_id, .. } = p.recv().await else {
            panic!()
        };
        seen.push(stream_id);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn connection_cap_closes_extra_connections() {
    let agent = start(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let _a = Peer::handshake(agent.addr).await;
    let _b = Peer::handshake(agent.addr).await;
    let mut c = Peer::connect(agent.addr).await;
    c.send(&peer::hello(16_380, "pipelining", false)).await;
    c.expect_closed().await;
    assert_eq!(agent.metrics.connections_rejected.get(), 1);
}

#[tokio::test]
async fn shutdown_finishes_inflight_then_disconnects() {
    let agent = start(Limits::default()).await;
    let mut p = Peer::handshake(agent.addr).await;
    p.send(&with_mode(
        1,
        "sleep",
        &[
            ("ms", TypedData::UInt32(300)),
            ("v", TypedData::String("done".into())),
        ],
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    agent.shutdown.cancel();
    assert_eq!(p.recv().await.var("echo").map(text), Some("done"));
    p.expect_disconnect(0).await;
    tokio::time::timeout(WAIT, agent.task)
        .await
        .expect("server stops")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(agent.addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn shutdown_answers_the_notifies_already_read() {
    let agent = start(Limits {
        max_inflight: 1,
        ..Limits::default()
    })
    .await;
    let mut p = Peer::handshake(agent.addr).await;
    // One write: the agent reads all three, then stops reading at its in-flight bound.
    let mut batch = Vec::new();
    for i in 1..=3 {
        batch.extend(with_mode(
            i,
            "sleep",
            &[
                ("ms", TypedData::UInt32(150)),
                ("v", TypedData::String(format!("r{i}"))),
            ],
        ));
    }
    p.send(&batch).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    agent.shutdown.cancel();
    let mut seen = Vec::new();
    for _ in 0..3 {
        match p.recv().await {
            AgentFrame::Ack { stream_id, .. } => seen.push(stream_id),
            other => panic!("ACK {} of 3 was {other:?}", seen.len() + 1),
        }
    }
    assert_eq!(seen, [1, 2, 3]);
    p.expect_disconnect(0).await;
    tokio::time::timeout(WAIT, agent.task)
        .await
        .expect("server stops")
        .unwrap();
}

#[tokio::test]
async fn unix_socket_listener() {
    use keyward_spoa::{CancellationToken, ListenAddr, Listener, Metrics, Server};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spoa.sock");
    // A stale socket from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let listener = Listener::bind(&ListenAddr::Unix(path.clone()))
        .await
        .unwrap();
    let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
    let server = Server::new(TestHandler::new(), Limits::default(), metrics);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(vec![listener], shutdown.clone()));
    let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut bytes = peer::hello(16_380, "pipelining", false);
    bytes.extend(echo(3, 4, "over unix"));
    s.write_all(&bytes).await.unwrap();
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    while frames.len() < 2 {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        while let Some((f, _, used)) = peer::read(&buf).unwrap() {
            buf.drain(..used);
            frames.push(f);
        }
    }
    assert_eq!(frames[1].var("echo").map(text), Some("over unix"));
    shutdown.cancel();
    task.await.unwrap();
    assert!(!path.exists(), "socket file removed on shutdown");
}

#[tokio::test]
async fn a_peer_that_never_reads_acks_is_throttled_and_others_are_served() {
    use tokio::io::AsyncWriteExt;
    let agent = start(Limits {
        max_inflight: 4,
        ..Limits::default()
    })
    .await;
    let mut flood = Peer::handshake(agent.addr).await;
    let frame = echo(1, 1, &"v".repeat(200));
    // Write NOTIFYs and never read an ACK: the agent must stop reading (its replies
    // back up), which blocks our writes well before 20 s.
    let mut blocked = false;
    for _ in 0..2_000_000 {
        match tokio::time::timeout(Duration::from_millis(500), flood.stream.write_all(&frame)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("agent dropped the connection: {e}"),
            Err(_) => {
                blocked = true;
                break;
            }
        }
    }
    assert!(blocked, "the agent kept reading a peer that never reads");
    let received = agent.metrics.rx_notify.get();
    let answered = agent.metrics.tx_ack.get();
    assert!(
        received - answered <= 4,
        "{received} received, {answered} answered: work queued beyond max_inflight"
    );
    assert!(agent.metrics.inflight.get() <= 4);
    // Other connections carry on.
    let mut other = Peer::handshake(agent.addr).await;
    other.send(&echo(9, 9, "still served")).await;
    assert_eq!(
        other.recv().await.var("echo").map(text),
        Some("still served")
    );
}

#[tokio::test]
async fn many_peers_that_never_read_hold_the_buffer_pool_and_no_more() {
    use tokio::io::AsyncWriteExt;
    const PEERS: usize = 60;
    const POOL: usize = 1024 * 1024;
    let agent = start(Limits {
        max_inflight: 4,
        max_buffered: POOL,
        ..Limits::default()
    })
    .await;
    // Each writes NOTIFYs whose ACKs are as large, and never reads one. Alone, each
    // would buffer up to the 256 KiB write high-water mark: 15 MiB in all.
    let frame = echo(1, 1, &"v".repeat(4_000));
    let mut floods = Vec::new();
    for _ in 0..PEERS {
        let mut peer = Peer::handshake(agent.addr).await;
        let frame = frame.clone();
        floods.push(tokio::spawn(async move {
            while let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_secs(2), peer.stream.write_all(&frame)).await
            {
            }
            peer
        }));
    }
    let mut peers = Vec::new();
    for flood in floods {
        peers.push(flood.await.unwrap());
    }
    let held = agent.metrics.buffer_bytes.get() as usize;
    // The pool, plus per peer its own share and the answers to one read past it.
    // Without the pool this was 32 MiB.
    let bound = POOL + PEERS * (OWN_BUFFERS + 32 * 1024);
    eprintln!("{PEERS} peers that never read hold {held} bytes of buffers (bound {bound})");
    assert!(held <= bound, "{held} bytes buffered, bound {bound}");
    assert!(held >= POOL, "the pool was used: {held}");
    // A new connection is served from its own share.
    let mut other = Peer::handshake(agent.addr).await;
    other.send(&echo(9, 9, "still served")).await;
    assert_eq!(
        other.recv().await.var("echo").map(text),
        Some("still served")
    );
    // Closed connections give everything back.
    drop(peers);
    drop(other);
    let gauge = agent.metrics.buffer_bytes.clone();
    tokio::time::timeout(Duration::from_secs(10), async move {
        while gauge.get() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("buffers given back when the connections closed");
}

#[tokio::test]
async fn a_frame_larger_than_the_default_share_is_answered_while_the_pool_is_spent() {
    use tokio::io::AsyncWriteExt;
    let agent = start(Limits {
        max_inflight: 4,
        max_frame_size: 128 * 1024,
        max_buffered: 256 * 1024,
        ..Limits::default()
    })
    .await;
    // Peers that never read take the whole pool.
    let mut floods = Vec::new();
    for _ in 0..4 {
        let mut flood = Peer::handshake(agent.addr).await;
        let frame = echo(1, 1, &"v".repeat(4_000));
        while let Ok(Ok(())) =
            tokio::time::timeout(Duration::from_secs(1), flood.stream.write_all(&frame)).await
        {
        }
        floods.push(flood);
    }
    assert!(agent.metrics.buffer_bytes.get() as usize >= 256 * 1024);

    // A connection's share holds one frame of the negotiated size and its answer, so
    // this one is read and answered without the pool, frame after frame.
    let mut big = Peer::connect(agent.addr).await;
    big.send(&peer::hello(128 * 1024, "", false)).await;
    assert!(matches!(big.recv().await, AgentFrame::Hello { .. }));
    for i in 0..3 {
        let value = format!("{i}{}", "b".repeat(OWN_BUFFERS + 60_000));
        big.send(&echo(2, i, &value)).await;
        let ack = big.recv().await;
        assert_eq!(ack.var("echo").map(text), Some(value.as_str()));
    }
    drop(floods);
}
