//! The agent configuration parser: any bytes give a configuration or an
//! error in words, never a panic; a configuration it accepts is valid.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = glagent_core::agent_config::parse_config(".gitlab/agents/fuzz/config.yaml", data) {
        // What kas sends the agent must parse back the same.
        let text = serde_json::to_vec(&config).expect("an accepted configuration serialises");
        let again: glagent_core::agent_config::AgentConfig = serde_json::from_slice(&text).expect("and reads back");
        assert_eq!(format!("{config:?}"), format!("{again:?}"));
    }
});
