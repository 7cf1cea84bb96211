//! `gateway demo` from a clean checkout: it starts, prints a curl command, and that command goes
//! through the example chain to the ERP simulator and succeeds.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{gateway_binary, workspace_root};

#[test]
fn the_printed_request_goes_through_and_succeeds() {
    let mut child = Command::new(gateway_binary().unwrap())
        .current_dir(workspace_root())
        .args([
            "demo",
            "--http",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--erp",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("curl ") {
                let _ = tx.send(line);
            }
        }
    });
    let curl = rx.recv_timeout(Duration::from_secs(60));
    let result = curl.map(|line| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        (
            line,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.success(),
        )
    });
    let _ = child.kill();
    let _ = child.wait();
    let (line, out, ok) = result.expect("the demo printed no curl command");
    assert!(ok, "{line}\n{out}");
    let status_line = out.lines().next().unwrap_or_default();
    assert!(status_line.starts_with("HTTP/1.1 201"), "{line}\n{out}");
    assert!(out.contains("\"documentId\":\"ERP-ORD-000001\""), "{out}");
    let _ = Instant::now();
}
