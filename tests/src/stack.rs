//! The scripted `test-agent` behind HAProxy (shipped config) with an echoing upstream:
//! the setup of the runtime's end-to-end and fault tests.

use std::process::Command;

use keyward_spoa::Pipelining;

use crate::haproxy::{Haproxy, Wiring};
use crate::process::Proc;
use crate::upstream::Upstream;
use crate::{free_port, loopback, sibling_bin, wait_listening};

/// Starts `test-agent` on `127.0.0.1:port` with `handler_timeout_ms`.
pub fn test_agent(port: u16, handler_timeout_ms: u64) -> Proc {
    test_agent_with(port, handler_timeout_ms, Pipelining::default())
}

fn test_agent_with(port: u16, handler_timeout_ms: u64, pipelining: Pipelining) -> Proc {
    Proc::spawn(
        "test-agent",
        Command::new(sibling_bin("test-agent"))
            .arg(format!("127.0.0.1:{port}"))
            .arg(handler_timeout_ms.to_string())
            .env("TEST_AGENT_PIPELINING", pipelining.to_string()),
    )
}

#[derive(Debug)]
pub struct Stack {
    pub haproxy: Haproxy,
    pub upstream: Upstream,
    pub agent: Proc,
    pub agent_port: u16,
}

impl Stack {
    pub async fn start(handler_timeout_ms: u64) -> Self {
        Self::start_with(handler_timeout_ms, Pipelining::default()).await
    }

    /// As [`start`](Self::start), with the agent's `pipelining` mode.
    pub async fn start_with(handler_timeout_ms: u64, pipelining: Pipelining) -> Self {
        let agent_port = free_port();
        let agent = test_agent_with(agent_port, handler_timeout_ms, pipelining);
        wait_listening(loopback(agent_port), "test agent").await;
        let upstream = Upstream::start().await;
        let haproxy = Haproxy::start(&Wiring {
            spoa: format!("127.0.0.1:{agent_port}"),
            upstream: upstream.addr,
            portal: None,
            edits: vec![],
        })
        .await;
        Self {
            haproxy,
            upstream,
            agent,
            agent_port,
        }
    }

    /// Starts the agent again on the same port (after it was killed).
    pub fn restart_agent(&mut self, handler_timeout_ms: u64) {
        self.agent = test_agent(self.agent_port, handler_timeout_ms);
    }
}
