//! `GET /openapi.json`: the OpenAPI 3 description of this API ([`crate::OPENAPI`]), served
//! as it is.

use bytes::Bytes;
use http::StatusCode;

use crate::error::ApiError;
use crate::response::{Resp, text_response};

pub async fn document() -> Result<Resp, ApiError> {
    Ok(text_response(
        StatusCode::OK,
        "application/json",
        Bytes::from_static(crate::OPENAPI.as_bytes()),
    ))
}
