//! The outside reference for the benchmarks: the simplest agent, written the way the
//! `spop` crate's own examples are (a task per connection, `Framed` with `SpopCodec`,
//! ACK each NOTIFY at once with `decision=allow`). Not keyward's runtime.
//!
//! Usage: `naive-agent <127.0.0.1:port>`

use futures_util::{SinkExt, StreamExt};
use spop::frame::{FramePayload, FrameType};
use spop::frames::{Ack, AgentHello, FrameCapabilities, HaproxyHello};
use spop::{SpopCodec, SpopFrame, VarScope};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).expect("usage: naive-agent <addr>");
    let listener = TcpListener::bind(&addr).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream));
    }
}

async fn connection(stream: TcpStream) {
    let mut socket = Framed::new(stream, SpopCodec::default());
    while let Some(Ok(frame)) = socket.next().await {
        let reply: Box<dyn SpopFrame> = match frame.frame_type() {
            FrameType::HaproxyHello => {
                let FramePayload::KVList(kv) = frame.payload() else {
                    return;
                };
                let Ok(hello) = HaproxyHello::try_from(FramePayload::KVList(kv)) else {
                    return;
                };
                let healthcheck = hello.healthcheck.unwrap_or(false);
                let _ = socket
                    .send(Box::new(AgentHello {
                        version: spop::SUPPORTED_VERSION,
                        max_frame_size: hello.max_frame_size.min(16_380),
                        capabilities: vec![FrameCapabilities::Pipelining],
                    }))
                    .await;
                if healthcheck {
                    return;
                }
                continue;
            }
            FrameType::Notify => {
                let meta = frame.metadata();
                Box::new(
                    Ack::new(meta.stream_id, meta.frame_id)
                        .set_var(VarScope::Transaction, "decision", "allow")
                        .set_var(VarScope::Transaction, "reason", "ok"),
                )
            }
            _ => return,
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}
