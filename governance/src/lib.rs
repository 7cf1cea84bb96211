//! API governance over policy files: the public surface a file offers callers, its OpenAPI
//! document, contract review between two files, and the deep check that a channel's schema
//! and its mapping agree. Offline commands (`gateway openapi`, `gateway check --against`,
//! `gateway check --deep`) and the admin listener's `/openapi.json` use it; nothing here is on
//! the request path.

pub mod deep;
pub mod openapi;
pub mod review;
pub mod surface;

pub use surface::{Surface, SurfaceError};
