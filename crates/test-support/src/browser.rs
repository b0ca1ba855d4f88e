//! A real browser (Debian's chromium through playwright-core, script
//! `crates/e2e/tests/browser/driver.mjs`) that a test or a benchmark drives
//! one command at a time, changing the cluster between commands and asking
//! what the page shows.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use serde_json::Value;

/// Where the tests' screenshots go (docs/ui.md shows them).
pub const SCREENSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/ui");
const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/tests/browser/driver.mjs");

pub struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: Receiver<Value>,
}

impl Browser {
    pub fn start() -> Browser {
        let mut command = Command::new("node");
        command.arg(DRIVER).stdin(Stdio::piped()).stdout(Stdio::piped());
        // Dies with this process; chromium ends with its pipe to node.
        let mut child = crate::process::spawn(command).expect("running node");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(value);
                }
            }
        });
        Browser {
            child,
            stdin: Some(stdin),
            answers,
        }
    }

    /// Sends a command without waiting for its answer (see [`Self::answer`]).
    pub fn send(&mut self, command: &Value) {
        let stdin = self.stdin.as_mut().expect("the browser is running");
        writeln!(stdin, "{command}").expect("the browser is running");
    }

    /// The answer to the oldest command not answered yet.
    pub fn answer(&mut self) -> Result<Value, String> {
        let answer = self
            .answers
            .recv_timeout(Duration::from_secs(90))
            .expect("the browser answers within 90 s");
        if answer["ok"] == true {
            Ok(answer)
        } else {
            Err(answer["error"].as_str().unwrap_or_default().to_string())
        }
    }

    /// Runs one command; the answer, or the error the page gave.
    pub fn try_run(&mut self, command: Value) -> Result<Value, String> {
        self.send(&command);
        self.answer()
    }

    /// Runs one command, which must succeed.
    pub fn run(&mut self, command: Value) -> Value {
        let shown = command.to_string();
        self.try_run(command)
            .unwrap_or_else(|error| panic!("{shown} failed in the browser: {error}"))
    }

    pub fn screenshot(&mut self, name: &str) {
        self.run(serde_json::json!({"do": "screenshot", "path": format!("{SCREENSHOTS}/{name}")}));
    }
}

impl Drop for Browser {
    /// Closing its input lets the script close chromium; killed if it
    /// has not within five seconds.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
