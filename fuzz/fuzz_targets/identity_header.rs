//! The identity header codec between kas, replicas and agentk: any bytes
//! decode to an identity or an error; a decoded identity encodes back to
//! one that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(identity) = glagent_proto::forwarding::decode_identity(data) {
        let encoded = glagent_proto::forwarding::encode_identity(&identity);
        let again = glagent_proto::forwarding::decode_identity(encoded.as_bytes()).expect("its own encoding decodes");
        assert_eq!(identity, again);
    }
});
