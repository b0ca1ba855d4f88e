//! The end-to-end suite of glagent: tests that start the real binaries
//! (`kas`, `agentk`, `glagent`) next to real `kubectl`, `helm` and `kpt`
//! against a real kube-apiserver, and check the whole system as a user
//! sees it.
//!
//! The crate has no code of its own: the tests are in `tests/it` (one
//! test binary, one module per behaviour), the harness they build on is
//! `glagent-test-support`. The binaries come from the same target
//! directory, so build them first: `cargo build --bins`, then
//! `cargo test -p glagent-e2e --test it -- <filter>`.
