//! Child processes that die with the test binary.
//!
//! Linux delivers the parent-death signal when the *thread* that forked the
//! child exits, so all children are forked from one thread that lives as
//! long as the process.

#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type Request = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    // SAFETY: the closure runs between fork and exec and only
                    // makes the async-signal-safe prctl system call.
                    unsafe {
                        command.pre_exec(|| {
                            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                                .map_err(std::io::Error::from)
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
                // The sender lives in a static, so this thread never ends.
            })
            .expect("starting the child-spawner thread");
        Mutex::new(tx)
    })
}

/// Starts `command`; the child is killed if this process goes away.
pub fn spawn(command: Command) -> std::io::Result<Child> {
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((command, reply_tx))
        .expect("child-spawner thread is alive");
    reply_rx.recv().expect("child-spawner thread replies")
}

/// Sends SIGTERM and waits up to `grace`, then SIGKILL. Returns whether the
/// child exited on its own after SIGTERM.
pub fn terminate(child: &mut Child, grace: Duration) -> bool {
    if let Ok(Some(_)) = child.try_wait() {
        return true;
    }
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}
