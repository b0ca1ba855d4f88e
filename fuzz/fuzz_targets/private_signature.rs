//! The private API's signed-request verifier: any signature text and
//! request is accepted only when it is the signer's own for exactly that
//! agent, identity, method and path.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let signer = glagent_proto::signing::RequestSigner::new(b"a secret of at least thirty-two bytes!!".to_vec());
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let (signature, identity, method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let agent_id = data.len() as i64;
    assert!(
        !signer.verify(signature, agent_id, identity, method, path),
        "a signature nobody made verified"
    );
    let own = signer.sign(agent_id, identity, method, path);
    assert!(signer.verify(&own, agent_id, identity, method, path));
    assert!(!signer.verify(&own, agent_id + 1, identity, method, path));
});
