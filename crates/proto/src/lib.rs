//! Wire messages between kas and agentk.
//!
//! Empty until the agent connection lands (issue 3): it will hold the
//! messages carried over the multiplexed tunnel, with no I/O of its own.
