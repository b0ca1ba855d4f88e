//! The REST API's entities, shared by kas, the CLI and the tests (being built).
