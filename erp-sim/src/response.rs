//! The simulator's answers: JSON responses, and the body type that keeps a request counted in
//! flight until its answer has been written.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use serde_json::Value;

use crate::counters::InFlight;

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A whole body, holding its request's in-flight count until hyper has sent it and drops it
/// (or the connection dies).
pub(crate) struct SimBody {
    body: Full<Bytes>,
    _in_flight: Option<InFlight>,
}

impl SimBody {
    pub(crate) fn new(bytes: Bytes, in_flight: Option<InFlight>) -> SimBody {
        SimBody {
            body: Full::new(bytes),
            _in_flight: in_flight,
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
