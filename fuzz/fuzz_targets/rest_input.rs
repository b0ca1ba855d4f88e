//! The REST API's input parsing: a query string, a content type and a
//! body into parameters, and pagination; any input is parameters or a 400
//! in words, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (query, kind, body) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let json = kind.starts_with('j');
    let _ = glagent_api::input::from_query_and_body::<serde_json::Value>(Some(query), json, body.as_bytes());
    if let Ok(page) = glagent_api::input::from_query::<glagent_api::input::PageQuery>(query) {
        let page = page.page();
        assert!(
            page.page >= 1 && (1..=100).contains(&page.per_page),
            "pagination stays in range"
        );
    }
});
