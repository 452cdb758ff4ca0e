//! The per-attempt timeout: [`TimeoutLayer`], [`Timeout`] and its [`TimeoutConfig`].

mod config;
mod future;
mod layer;
mod service;

pub use config::TimeoutConfig;
pub use future::ResponseFuture;
pub use layer::TimeoutLayer;
pub use service::Timeout;
