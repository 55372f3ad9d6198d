//! Faults under load, through real HAProxy: the agent killed (-9) or stopped (SIGTERM)
//! while requests flow. Nothing may reach the upstream without an allow decision, and
//! traffic comes back when the agent does, without touching HAProxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyward_tests::http::wait_for_ok;
use keyward_tests::load::{Tally, load};
use keyward_tests::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_forwards_nothing_without_allow_and_recovers() {
    let mut s = Stack::start(400).await;
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let workers = load(s.haproxy.addr, 8, stop.clone(), tally.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = s.haproxy.proc().pid();

    s.agent.kill();
    let refused_before = tally.refused.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        tally.refused.load(Ordering::SeqCst) > refused_before,
        "requests were refused while the agent was down"
    );
    let restarted = Instant::now();
    s.restart_agent(400);
    wait_for_ok(
        s.haproxy.addr,
        "/allow/probe",
        Duration::from_secs(15),
        "traffic to recover",
    )
    .await;
    eprintln!(
        "traffic recovered {:?} after the agent restarted",
        restarted.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let allowed = tally.allowed.load(Ordering::SeqCst);
    assert!(allowed > 0);
    assert_eq!(
        tally.wrong.load(Ordering::SeqCst),
        0,
        "a forwarded request carried another request's identity"
    );
    // What reached the upstream is exactly what was allowed: the workers' 200s and the
    // one probe that succeeded.
    assert_eq!(
        s.upstream.hits(),
        allowed + 1,
        "only allowed requests reached the upstream"
    );
    assert_eq!(s.haproxy.proc().pid(), pid, "HAProxy was not restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_forwards_nothing_without_a_decision() {
    let mut s = Stack::start(400).await;
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let workers = load(s.haproxy.addr, 8, stop.clone(), tally.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.agent.signal("TERM");
    let status = s
        .agent
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("agent exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert!(
        tally.refused.load(Ordering::SeqCst) > 0,
        "requests after the agent stopped were refused"
    );
    assert_eq!(tally.wrong.load(Ordering::SeqCst), 0);
    assert_eq!(
        s.upstream.hits(),
        tally.allowed.load(Ordering::SeqCst),
        "only allowed requests reached the upstream"
    );
}
