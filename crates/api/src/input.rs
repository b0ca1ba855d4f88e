//! Request parameters the way GitLab takes them: from the query string, a
//! JSON body or a form body, merged into one typed value.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::error::ApiError;

/// Parameters of type `T` from the query string alone; a bad value is a
/// 400 in GitLab's shape (axum's own `Query` answers in plain text).
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, ApiError> {
        from_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

/// Parameters of type `T` from a query string.
pub fn from_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let mut map = Map::new();
    merge_form(&mut map, query.as_bytes());
    serde_json::from_value(Value::Object(map)).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Parameters of type `T` from a query string and a body (JSON or a
/// form), the body's fields winning.
pub fn from_query_and_body<T: DeserializeOwned>(query: Option<&str>, json: bool, body: &[u8]) -> Result<T, ApiError> {
    let mut map = Map::new();
    if let Some(query) = query {
        merge_form(&mut map, query.as_bytes());
    }
    if !body.is_empty() {
        if json {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(fields)) => map.extend(fields),
                Ok(_) => return Err(ApiError::BadRequest("the JSON body must be an object".into())),
                Err(e) => return Err(ApiError::BadRequest(format!("the JSON body is invalid: {e}"))),
            }
        } else {
            merge_form(&mut map, body);
        }
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Parameters of type `T`, from the query string and the body together.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let query = req.uri().query().map(str::to_string);
        let json = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(format!(
                    "the request body is larger than {} MiB, the limit of this API",
                    crate::MAX_BODY >> 20
                ))
            } else {
                ApiError::BadRequest(format!("could not read the request body: {e}"))
            }
        })?;
        from_query_and_body(query.as_deref(), json, &body).map(Params)
    }
}

/// Form and query values are strings; `key[]` repeats build arrays.
fn merge_form(map: &mut Map<String, Value>, raw: &[u8]) {
    for (key, value) in url::form_urlencoded::parse(raw) {
        if let Some(key) = key.strip_suffix("[]") {
            let entry = map.entry(key.to_string()).or_insert_with(|| Value::Array(vec![]));
            if let Value::Array(items) = entry {
                items.push(Value::String(value.into_owned()));
            }
        } else {
            map.insert(key.into_owned(), Value::String(value.into_owned()));
        }
    }
}

/// An integer given as a number or a string.
pub fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("expected an integer")),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an integer"))),
        Some(other) => Err(serde::de::Error::custom(format!("expected an integer, got {other}"))),
    }
}

/// A boolean given as a JSON boolean or as "true"/"false".
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) => match s.as_str() {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" | "" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom(format!("{s:?} is not a boolean"))),
        },
        Some(other) => Err(serde::de::Error::custom(format!("expected a boolean, got {other}"))),
    }
}

/// A list given as an array or a comma-separated string.
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                other => Err(serde::de::Error::custom(format!("expected a string, got {other}"))),
            })
            .collect(),
        Some(other) => Err(serde::de::Error::custom(format!("expected a list, got {other}"))),
    }
}

/// `page` and `per_page`, as GitLab reads them (per_page at most 100).
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default, deserialize_with = "opt_int")]
    pub page: Option<i64>,
    #[serde(default, deserialize_with = "opt_int")]
    pub per_page: Option<i64>,
}

impl PageQuery {
    pub fn page(&self) -> glagent_store::Page {
        glagent_store::Page {
            page: self.page.unwrap_or(1).max(1),
            per_page: self.per_page.unwrap_or(20).clamp(1, 100),
        }
    }
}

/// A field that may be absent (`None`) or present, `null` included
/// (`Some(Value::Null)`), for updates where `null` clears a field.
pub fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}
