//! The redis-server harness itself: start, command, kill, restart.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use tests::RedisServer;

#[test]
fn a_real_redis_server_can_be_killed_and_restarted() {
    let mut r = RedisServer::start().unwrap();
    assert_eq!(r.command(&["SET", "k", "v"]).unwrap(), "+OK");
    assert_eq!(r.command(&["GET", "k"]).unwrap(), "$1");
    r.kill();
    assert!(
        r.command(&["PING"]).is_err(),
        "a killed server must not answer"
    );
    r.restart().unwrap();
    assert_eq!(r.command(&["GET", "k"]).unwrap(), "$-1", "restarted empty");
}
